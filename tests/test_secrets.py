"""No secret in any output (issue 9.2): a distinct secret in every place a user can put one,
then every surface docsuper has is searched for all of them."""

from __future__ import annotations

import http.server
import json
import signal
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from .conftest import require_postgres
from .daemon import Env, wait_for
from .queuekit import drop_schema, new_schema_name, raw_sql, QueueSpec

# One distinct secret per place a user can put one.
SECRETS = {
    "database password (user-info)": "pgUserinfoSecret41",
    "database password (query)": "pgQuerySecret42",
    "source URL password": "srcUserinfoSecret43",
    "source URL signed-query token": "srcTokenSecret44",
    "source URL S3 signature": "srcSignatureSecret45",
    "bearer token (environment)": "bearerEnvSecret46",
    "job option named like a key": "optionApiKeySecret47",
}


class _EchoingServer(http.server.BaseHTTPRequestHandler):
    """A careless server: refuses every download and echoes the credentials it got in its reason."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(401, f"unauthorized {self.headers.get('Authorization', '')} {self.path}")
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def echoing_server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingServer)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _leaks(surface: str, text: str) -> list[str]:
    return [f"{surface}: {place}" for place, secret in SECRETS.items() if secret in text]


def test_no_secret_reaches_any_surface(tmp_path: Path, echoing_server: int):
    base = require_postgres()  # postgresql://postgres@127.0.0.1:5432/test, trust: any password is accepted
    schema = new_schema_name()
    url = base.replace("postgres@", f"postgres:{SECRETS['database password (user-info)']}@") + \
        f"?password={SECRETS['database password (query)']}"
    port = _free_port()
    env = Env(tmp_path, url=url, DOCSUPER_QUEUE_SCHEMA=schema, DATABASE_URL=url, DOCSUPER_HTTP_PORT=str(port),
              DOCSUPER_INPUTS_BEARER_TOKEN_ENV="DOCS_TOKEN", DOCS_TOKEN=SECRETS["bearer token (environment)"],
              DOCSUPER_RETRY_MAX_ATTEMPTS="1")
    env.vars.pop("DOCSUPER_QUEUE_URL")  # the deployment's name for it: DATABASE_URL
    seen: dict[str, str] = {}
    source = (f"http://alice:{SECRETS['source URL password']}@127.0.0.1:{echoing_server}/docs/a.pdf"
              f"?token={SECRETS['source URL signed-query token']}"
              f"&X-Amz-Signature={SECRETS['source URL S3 signature']}")
    try:
        seen["migrate"] = env.cli("migrate").stdout
        seen["config"] = env.cli("config").stdout
        submitted = env.cli("submit", source, "--json", "--option",
                            f"api_key={SECRETS['job option named like a key']}")
        seen["submit --json"] = submitted.stdout + submitted.stderr
        [job] = json.loads(submitted.stdout)

        daemon = env.start()
        try:
            wait_for(lambda: "dead 1" in env.cli("status").stdout, timeout=60, what="the download refused")
            seen["/healthz"] = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10).read().decode()
            seen["/metrics"] = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        finally:
            daemon.send_signal(signal.SIGTERM)
            out, err = daemon.communicate(timeout=60)
        seen["log (stdout)"], seen["daemon stderr"] = out, err
        assert '"event":"job_finished"' in out and "supervisor_started" in out

        for args in (["status"], ["status", "--json"], ["list"], ["list", "--json"], ["show", job["id"]],
                     ["show", job["id"], "--json"], ["show", job["id"], "--text"]):
            result = env.cli(*args)
            seen[" ".join(args)] = result.stdout + result.stderr
        shown = seen[f"show {job['id']}"]
        assert "HTTP 401" in shown and "http://***@127.0.0.1" in shown  # the error is there, masked

        # Error lines: a malformed URL, a bad value in a config file, an unknown job, a bad source.
        bad_config = tmp_path / "bad.toml"
        bad_config.write_text(f'[queue]\nurl = "{url.replace("5432", "99999")}"\n')
        for name, args in {"error: bad port in the queue URL": ["--config", str(bad_config), "status"],
                           "error: unknown job": ["show", "abcdef12"],
                           "error: malformed source URL": ["submit", source.replace("/docs", ":99999/docs")]}.items():
            if "--config" in args:
                env.vars.pop("DATABASE_URL")  # the environment would win over the file
            result = env.cli(*args, check=False)
            env.set(DATABASE_URL=url)
            assert result.returncode != 0 and len(result.stderr.splitlines()) == 1, (name, result.stderr)
            seen[name] = result.stdout + result.stderr
        secret = SECRETS["database password (user-info)"]
        env.set(DATABASE_URL=url.replace(secret, f"{secret} x"))  # libpq refuses it, quoting the password
        result = env.cli("status", check=False)
        assert result.returncode == 2
        seen["error: unparseable queue URL"] = result.stderr
        env.set(DATABASE_URL=url)

        # What the queue stores for people to read later.
        spec = QueueSpec("postgres", base, schema)
        seen["stored job row"] = repr(raw_sql(spec, f"SELECT last_error FROM {{t}}jobs WHERE id = '{job['id']}'"))
        seen["stored attempt rows"] = repr(raw_sql(spec, "SELECT error, traceback FROM {t}attempts"))

        selftest = env.cli("selftest", timeout=180, check=False)
        seen["selftest"] = selftest.stdout + selftest.stderr
    finally:
        drop_schema(base, schema)

    leaks = [leak for surface, text in seen.items() for leak in _leaks(surface, text)]
    assert leaks == []
    # Each surface was really looked at (a pass's stderr and the OCR text may rightly be empty).
    may_be_empty = {"daemon stderr", f"show {job['id']} --text"}
    assert [name for name, text in seen.items() if not text.strip() and name not in may_be_empty] == []
