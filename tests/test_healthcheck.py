"""`docsuper healthcheck [--worker]`: exit 0 when healthy, otherwise one line saying what failed."""

from __future__ import annotations

import signal
import socket

import pytest

from .conftest import require_postgres
from .daemon import Env, wait_for
from .queuekit import drop_schema, new_schema_name


def one_line_failure(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("docsuper: unhealthy: ")
    return lines[0]


def test_a_reachable_current_queue_is_healthy(env: Env):
    env.cli("migrate")
    result = env.cli("healthcheck")
    assert result.stdout.strip() == "ok: queue reachable, schema current"


def test_an_unreachable_queue_is_one_line(env: Env):
    with socket.socket() as silent:  # a local listener that never answers stands in for an unreachable host
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        env.set(DOCSUPER_QUEUE_URL=f"postgresql://docsuper@127.0.0.1:{port}/x?connect_timeout=1")
        line = one_line_failure(env.cli("healthcheck", check=False, timeout=30))
    assert "queue unreachable" in line


def test_an_outdated_schema_is_one_line(env: Env):
    url = require_postgres()
    schema = new_schema_name()
    env.set(DOCSUPER_QUEUE_URL=url, DOCSUPER_QUEUE_SCHEMA=schema)
    try:
        line = one_line_failure(env.cli("healthcheck", check=False))
        assert "docsuper migrate" in line
        env.cli("migrate")
        assert env.cli("healthcheck").returncode == 0
    finally:
        drop_schema(url, schema)


def test_a_configuration_error_is_exit_2(env: Env):
    env.set(WORKER_CONCURRENCY="lots")
    result = env.cli("healthcheck", check=False)
    assert result.returncode == 2 and "workers.concurrency" in result.stderr


@pytest.mark.slow
def test_worker_flag_needs_a_live_worker_on_this_host(env: Env):
    env.set(DOCSUPER_WORKERS_PRELOAD="docsuper")
    env.cli("migrate")
    line = one_line_failure(env.cli("healthcheck", "--worker", check=False))
    assert f"no worker registered on {socket.gethostname()}" in line
    daemon = env.start()
    try:
        ok = wait_for(lambda: (r := env.cli("healthcheck", "--worker", check=False)).returncode == 0 and r,
                      what="healthcheck --worker to pass")
        assert "heartbeated" in ok.stdout
        # A stopped (wedged) worker stops heartbeating: the check fails once its heartbeat is too old.
        daemon.send_signal(signal.SIGSTOP)
        stale = wait_for(lambda: (r := env.cli("healthcheck", "--worker", "--max-age", "1", check=False)).returncode
                         and r, what="healthcheck --worker to notice the stopped worker")
        assert "the last heartbeat" in one_line_failure(stale)
        daemon.send_signal(signal.SIGCONT)
    finally:
        daemon.send_signal(signal.SIGCONT)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    assert "no worker registered" in one_line_failure(env.cli("healthcheck", "--worker", check=False))
