"""/healthz and /metrics on $PORT."""

from __future__ import annotations

import json
import signal
import socket
import urllib.error
import urllib.request

from .daemon import Env, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_health_and_metrics_on_port(env: Env):
    port = free_port()
    env.set(PORT=str(port), DOCSUPER_HTTP_HOST="127.0.0.1")
    env.submit("noop", count=3)
    env.submit("fail")
    daemon = env.start()
    base = f"http://127.0.0.1:{port}"
    try:
        status, body = wait_for(lambda: (r := get(f"{base}/healthz"))[0] and r, what="/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        def finished_metrics() -> str | None:
            text = get(f"{base}/metrics")[1]
            done = 'docsuper_attempts_total{outcome="succeeded"} 3.0' in text and 'outcome="error"' in text
            return text if done else None

        metrics = wait_for(finished_metrics, what="three successes and an error in /metrics")
        assert "docsuper_box_budget_mb" in metrics and "docsuper_attempt_peak_mb_bucket" in metrics
        assert get(f"{base}/nope")[0] == 404
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0


def test_a_port_in_use_is_one_clear_line(env: Env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env.set(PORT=str(taken.getsockname()[1]), DOCSUPER_HTTP_HOST="127.0.0.1")
        result = env.cli("run", "--drain", check=False)
    assert result.returncode == 1
    assert "cannot serve HTTP on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr
