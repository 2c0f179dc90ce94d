"""Running the real `docsuper` command against a throwaway SQLite queue, for the tests."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

from docsuper.supervisor.config import SCHEMA
from docsuper.supervisor.queue.base import Queue, open_queue

# Fast timings so lease expiry, retries and shutdown happen in seconds.
FAST = {
    "DOCSUPER_QUEUE_POLL_INTERVAL_S": "0.1",
    "DOCSUPER_QUEUE_HEARTBEAT_S": "0.3",
    "DOCSUPER_QUEUE_LEASE_S": "3",
    "DOCSUPER_RETRY_BACKOFF_BASE_S": "0.05",
    "DOCSUPER_RETRY_BACKOFF_MAX_S": "0.2",
    "DOCSUPER_WORKERS_TERM_GRACE_S": "0.5",
    "DOCSUPER_WORKERS_SHUTDOWN_GRACE_S": "1",
    "DOCSUPER_LOG_LEVEL": "debug",
}

# Diagnostic jobs need no document library in the fork server, and preloading the OCR
# stack costs every daemon a second or more at start. A test that submits an OCR job
# gets the default preload back (see Env.cli), unless it chose a preload itself.
PRELOAD = "DOCSUPER_WORKERS_PRELOAD"
LIGHT_PRELOAD = "docsuper.passes.diagnostic"
DEFAULT_PRELOAD = ",".join(SCHEMA["workers"]["preload"].default)


class Env:
    """A queue URL, the environment for `docsuper`, and ways to run it."""

    def __init__(self, root: Path, url: str | None = None, **overrides: str) -> None:
        self.root = root
        self.url = url or f"sqlite:///{root / 'queue.db'}"
        self.vars = {k: v for k, v in os.environ.items() if not k.startswith(("DOCSUPER_", "WORKER_CONCURRENCY"))}
        self.vars.pop("DATABASE_URL", None)
        self.vars.pop("PORT", None)
        self.vars.update(FAST)
        self.vars["DOCSUPER_QUEUE_URL"] = self.url
        self.vars["DOCSUPER_CONFIG"] = str(root / "none.toml")
        self.vars["DOCSUPER_INPUTS_ALLOWED_ROOTS"] = str(root)  # the tests' documents live here
        (root / "none.toml").write_text("")
        self.vars[PRELOAD] = LIGHT_PRELOAD
        self.vars["DOCSUPER_WORKERS_WORK_DIR"] = str(root / "work")
        self.preload_chosen = False
        self.set(**overrides)

    def set(self, **overrides: str) -> None:
        self.preload_chosen = self.preload_chosen or PRELOAD in overrides
        self.vars.update(overrides)

    def queue(self) -> Queue:
        return open_queue(self.url, self.vars.get("DOCSUPER_QUEUE_SCHEMA", "docsuper"))

    def cli(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[:1] == ("submit",) and not self.preload_chosen and _submits_ocr(args):
            self.vars[PRELOAD] = DEFAULT_PRELOAD
        result = subprocess.run([sys.executable, "-m", "docsuper.supervisor.cli", *args], env=self.vars,
                                cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"docsuper {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def submit(self, passes: str, count: int = 1, **options: Any) -> list[str]:
        args = ["submit", "--passes", passes, "--count", str(count)]
        for key, value in options.items():
            args += ["--option", f"{key}={json.dumps(value)}"]
        return self.cli(*args).stdout.split()

    def drain(self, timeout: float = 120) -> list[dict[str, Any]]:
        """`docsuper run --drain`; returns its log records. It exits 1 exactly when a job it
        processed ended dead (checked here), 0 otherwise."""
        result = self.cli("run", "--drain", timeout=timeout, check=False)
        records = parse_log(result.stdout)
        dead = any(r["event"] == "job_finished" and r.get("state") == "dead" for r in records)
        if result.returncode != (1 if dead else 0):
            raise AssertionError(f"docsuper run --drain exited {result.returncode} (a job dead: {dead}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        assert result.stderr.count("docsuper: drained:") == 1, result.stderr
        return records

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "docsuper.supervisor.cli", "run", *args], env=self.vars,
                                cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _submits_ocr(args: tuple[str, ...]) -> bool:
    if "--passes" not in args:
        return True  # the default pass is ocr
    return "ocr" in args[args.index("--passes") + 1].split(",")


def stop_daemon(daemon: subprocess.Popen[str], timeout: float = 30) -> None:
    """A fixture's tear-down: SIGTERM (the daemon's own shutdown), SIGKILL if it does not end in time."""
    daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout)
    except subprocess.TimeoutExpired:
        daemon.kill()


def log_records(daemon: subprocess.Popen[str], timeout: float = 30) -> Iterator[dict[str, Any]]:
    """A running daemon's log records (its stdout, unbuffered) as they come, none lost between
    two reads; the iteration ends when the log does or `timeout` has passed since it began."""
    assert daemon.stdout is not None
    fd = daemon.stdout.fileno()
    deadline = time.monotonic() + timeout
    buffer = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            return
        *lines, buffer = (buffer + chunk).split(b"\n")
        yield from (json.loads(line) for line in lines if line.startswith(b"{"))


def wait_for_log(daemon: subprocess.Popen[str], event: str, timeout: float = 30) -> dict[str, Any]:
    """Read a running daemon's log until a record of `event` appears."""
    for record in log_records(daemon, timeout):
        if record.get("event") == event:
            return record
    raise AssertionError(f"no {event!r} in the daemon's log within {timeout} s")


def parse_log(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def job_children(daemon_pid: int) -> list[psutil.Process]:
    """The job processes under a daemon (below its fork server, or directly when spawned)."""
    try:
        direct = psutil.Process(daemon_pid).children()
        servers = [p for p in direct if "docsuper.passes.forkserver" in " ".join(p.cmdline())]
        return [c for s in servers for c in s.children()] if servers else direct
    except psutil.NoSuchProcess:
        return []
