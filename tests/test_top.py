"""`docsuper top` in a real terminal (tmux) while three jobs run, and `status` from a job's first seconds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .daemon import Env, stop_daemon, wait_for
from .test_http import free_port

SCREEN = Path(os.environ.get("DOCSUPER_TOP_CAPTURE", "/tmp/docsuper-top-capture.txt"))
SERVER = f"docsuper-test-{os.getpid()}"  # a tmux server of the test's own: nobody else's sessions


def tmux(*args: str, check: bool = True) -> str:
    return subprocess.run(["tmux", "-L", SERVER, *args], capture_output=True, text=True, timeout=10,
                          check=check).stdout


@pytest.fixture
def three_jobs(env: Env, tmp_path: Path):
    """A daemon with HTTP on, three documents each held by a job at ~60-120 MB for a while."""
    port = free_port()
    env.set(PORT=str(port), DOCSUPER_HTTP_HOST="127.0.0.1", DOCSUPER_WORKERS_CONCURRENCY="3",
            DOCSUPER_WORKERS_PRELOAD="docsuper", DOCSUPER_QUEUE_HEARTBEAT_S="15", DOCSUPER_QUEUE_LEASE_S="60",
            DOCSUPER_WORKERS_SHUTDOWN_GRACE_S="0", DOCSUPER_MEMORY_BOX_BUDGET_MB="1400")  # three jobs at their cap
    names = ["intake-scan-0412.pdf", "referral-letter.pdf", "lab-results-march.tiff"]
    ids = []
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"%PDF-1.4 not read by the alloc pass\n")
        ids += env.cli("submit", str(tmp_path / name), "--passes", "alloc", "--option", f"alloc_mb={60 + 30 * i}",
                       "--option", "alloc_step_mb=5", "--option", "alloc_step_s=0.05", "--option", "hold_s=60"
                       ).stdout.split()
    env.cli("submit", "--passes", "invalid", "--priority", "9", "--option", 'message="the scanner sent an empty page"')
    daemon = env.start()
    try:
        yield env, port, ids, names, daemon
    finally:
        stop_daemon(daemon)


@pytest.mark.slow
def test_top_under_tmux_shows_three_running_jobs_with_memory(three_jobs):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (scripts/test installs it)")
    env, port, ids, names, daemon = three_jobs
    session = f"docsuper-top-{os.getpid()}"
    environment = " ".join(f"{k}={_quote(v)}" for k, v in env.vars.items() if k.startswith(("DOCSUPER_", "PORT")))
    # The tmux server inherits pytest's environment, whose COLUMNS=80 would override the window's width.
    command = (f"cd {_quote(str(env.root))} && env -u COLUMNS -u LINES {environment} "
               f"{sys.executable} -m docsuper.supervisor.cli top")
    tmux("new-session", "-d", "-s", session, "-x", "150", "-y", "45", command)
    try:
        last = [""]

        def screen_with_three_bars() -> str | None:
            text = last[0] = tmux("capture-pane", "-p", "-t", session)
            bars = re.findall(r"█+░*\s+(\d+)/450 MB", text)
            done = (len(bars) == 3 and all(int(b) >= 50 for b in bars) and all(n in text for n in names)
                    and "dead letters (1)" in text)
            return text if done else None

        try:
            screen = wait_for(screen_with_three_bars, timeout=60, what="three running jobs with memory bars in top")
        except AssertionError:
            size = tmux("display", "-p", "-t", session, "#{window_width}x#{window_height}")
            raise AssertionError(f"top never showed three jobs with memory bars; its last screen ({size}):\n{last[0]}")
        first = re.search(r"\d\d:\d\d:\d\d", screen).group(0)
        # It redraws by itself every second: the clock moves without a key pressed.
        wait_for(lambda: first not in tmux("capture-pane", "-p", "-t", session).splitlines()[0],
                 timeout=10, what="top to redraw")
        SCREEN.write_text(screen)
        assert "box" in screen and "budget" in screen
        assert re.search(r"fork server [1-9]\d* MB", screen)  # what holds the box besides the jobs
        assert re.search(r"queued \d+\s+running 3", screen)
        assert "the scanner sent an empty page" in screen  # the dead letter's error
        for job_id in ids:
            assert job_id[:8] in screen
        assert "alloc" in screen  # the pass each job is in
        tmux("send-keys", "-t", session, "C-c")
        wait_for(lambda: session not in tmux("ls", check=False), what="top to exit on Ctrl-C")
    finally:
        tmux("kill-server", check=False)


@pytest.mark.slow
def test_status_shows_progress_and_peak_from_a_jobs_first_seconds(three_jobs):
    """With the production heartbeat (15 s) a running job used to read `progress -  peak 0 MB` for 15 s."""
    env, port, ids, names, daemon = three_jobs
    started = time.monotonic()

    def peaks() -> list[int] | None:
        out = env.cli("status").stdout
        found = [int(p) for p in re.findall(r"peak (\d+) MB", out)]
        return found if len(found) == 3 and all(p > 0 for p in found) else None

    wait_for(peaks, timeout=15, what="every running job with a peak in status")
    assert time.monotonic() - started < 15
    status = env.cli("status").stdout
    assert "peak 0 MB" not in status and "progress -" not in status
    for name in names:
        assert name in status


def test_top_once_without_a_worker_reads_the_queue(env: Env):
    env.submit("noop", count=2)
    result = env.cli("top", "--once")
    assert "no live memory" in result.stdout and "queued 2" in result.stdout


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"
