"""systemd: the notify protocol on a real datagram socket, and the unit file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from docsuper.supervisor.sdnotify import Notifier, socket_address, watchdog_interval_s

from .daemon import Env, parse_log, wait_for

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "docsuper.service"


class NotifySocket:
    """What systemd does: a datagram socket that collects what the service sends."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)
        self.messages: list[tuple[float, str]] = []

    def read(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [m for _, m in self.messages]

    def lines(self) -> list[str]:
        return [line for m in self.read() for line in m.split("\n")]

    def close(self) -> None:
        self.sock.close()


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid_only():
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval_s({}, 7) is None
    assert socket_address("@docsuper/notify") == b"\0docsuper/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_notifier_without_systemd_does_nothing_and_takes_the_variables_away():
    env = {"WATCHDOG_USEC": "1000000", "PATH": "/bin"}
    notifier = Notifier(env, pid=1)
    notifier.ready("x")
    notifier.ping()
    assert not notifier.enabled and env == {"PATH": "/bin"}


def test_notifier_reaches_an_abstract_namespace_socket():
    name = f"@docsuper-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifySocket(socket_address(name))
    try:
        env = {"NOTIFY_SOCKET": name}
        notifier = Notifier(env, pid=1)
        notifier.ready("starting")
        notifier.status("starting")  # unchanged: not sent again
        notifier.status("busy")
        notifier.stopping()
        assert "NOTIFY_SOCKET" not in env
        got = wait_for(lambda: (m := listener.read()) and len(m) >= 3 and m, what="three datagrams")
        assert got[0].split("\n")[:2] == ["READY=1", "STATUS=starting"]
        assert got[1:] == ["STATUS=busy", "STOPPING=1"]
    finally:
        listener.close()


@pytest.mark.slow
def test_the_daemon_speaks_sd_notify_on_a_real_socket(env: Env, tmp_path: Path):
    path = str(tmp_path / "notify.sock")
    listener = NotifySocket(path)
    watchdog_usec = 1_000_000
    env.set(NOTIFY_SOCKET=path, WATCHDOG_USEC=str(watchdog_usec), DOCSUPER_WORKERS_CONCURRENCY="2",
            DOCSUPER_WORKERS_PRELOAD="docsuper", DOCSUPER_WORKERS_SHUTDOWN_GRACE_S="5")
    env.submit("sleep", count=3, sleep_s=2)
    daemon = env.start()
    try:
        wait_for(lambda: "READY=1" in listener.lines(), what="READY=1")
        # READY=1 comes only once the fork server is up: after launcher_ready, before any job finished.
        status = wait_for(lambda: next((l for l in listener.lines() if re.match(r"STATUS=2/2 running, \d+ queued", l)),
                                       None), what="STATUS= with two jobs running and the queue's count")
        assert "children" in status and "MB" in status
        # WATCHDOG=1 keeps coming from the loop at half of WATCHDOG_USEC.
        wait_for(lambda: listener.lines().count("WATCHDOG=1") >= 4, what="four watchdog pings")
        pings = [t for t, m in listener.messages if m == "WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < watchdog_usec / 1e6, gaps  # systemd would have killed it otherwise
        # A loop that stops turning stops the pings (systemd then kills and restarts the service).
        daemon.send_signal(signal.SIGSTOP)
        listener.read()
        count = len(listener.messages)
        time.sleep(1.5 * watchdog_usec / 1e6)  # the interval under test: no condition to wait on
        assert len(listener.read()) == count
        daemon.send_signal(signal.SIGCONT)
        wait_for(lambda: "WATCHDOG=1" in listener.read()[count:], what="pings again after SIGCONT")
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
    finally:
        if daemon.poll() is None:
            daemon.kill()
        lines = listener.lines()
        listener.close()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert any(l.startswith("MAINPID=") for l in lines)
    stopping_status = lines[lines.index("STOPPING=1") + 1]
    assert stopping_status.startswith("STATUS=stopping: ")
    events = [r["event"] for r in parse_log(out)]
    assert events.index("launcher_ready") < events.index("supervisor_stopped")
    # No job child saw the socket: a child's message would count as the service's.
    print("\n".join(m for _, m in listener.messages))


def _unit_for(tmp_path: Path) -> Path:
    """The shipped unit with its paths pointed at this checkout, as an installer would."""
    docsuper = Path(sys.executable).with_name("docsuper")
    text = UNIT.read_text().replace("/srv/docsuper/.venv/bin/docsuper", str(docsuper))
    unit = tmp_path / "docsuper.service"
    unit.write_text(text)
    return unit


def test_unit_has_the_settings_that_matter():
    text = UNIT.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["Type"] == "notify" and settings["NotifyAccess"] == "main"
    assert int(settings["WatchdogSec"].rstrip("s")) >= 10
    assert settings["OOMPolicy"] == "continue"
    assert settings["Restart"] == "on-failure" and settings["RestartPreventExitStatus"] == "2"
    assert settings["KillMode"] == "mixed"
    # Stop timeout covers the shutdown grace, the children's SIGTERM grace and the final writes.
    assert int(settings["TimeoutStopSec"]) >= 25 + 3 + 5


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = _unit_for(tmp_path)

    def verify(path: Path) -> tuple[int, str]:
        result = subprocess.run([analyze, "verify", "--man=no", str(path)], capture_output=True, text=True,
                                timeout=60)
        return result.returncode, (result.stdout + result.stderr).strip()

    assert verify(unit) == (0, "")
    # The check can fail: systemd-analyze only warns about a misspelt setting, and the warning is a problem.
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("OOMPolicy=continue", "OOMPolicy=carry-on"))
    assert "carry-on" in verify(broken)[1]
