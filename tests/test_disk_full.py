"""A full disk under the SQLite queue is an outage, not a crash (issue 9.5): on a real, small tmpfs."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from .daemon import Env, job_children, parse_log, wait_for, wait_for_log


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of the filesystem; returns the file to delete to give them back."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        block = b"\0" * (64 << 10)
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    # Single bytes too: the last partial block.
    with open(filler, "ab", buffering=0) as fh:
        try:
            while fh.write(b"\0"):
                pass
        except OSError:
            pass
    return filler


def test_a_full_disk_is_an_outage_the_daemon_rides_out(tmp_path: Path, small_disk: Path):
    # A lease longer than the outage: what happens to leases that expire during one is issue 8.3's test.
    env = Env(tmp_path, url=f"sqlite:///{small_disk / 'queue.db'}", DOCSUPER_QUEUE_LEASE_S="60")
    ids = env.submit("sleep", count=3, sleep_s=1.5)
    daemon = env.start()
    try:
        wait_for(lambda: "running 3" in env.cli("status").stdout, what="three running jobs")
        filler = fill(small_disk)

        # The operator's commands: one line that says what is wrong.
        submitted = env.cli("submit", "--passes", "noop", check=False)
        assert submitted.returncode == 1 and "Traceback" not in submitted.stderr
        assert len(submitted.stderr.splitlines()) == 1 and "disk full" in submitted.stderr, submitted.stderr
        status = env.cli("status", check=False)
        assert "Traceback" not in status.stderr and "disk full" in status.stderr, status.stderr
        assert len(status.stderr.splitlines()) == 1

        # The jobs end while nothing can be written; the daemon waits, it does not crash.
        wait_for(lambda: daemon.poll() is not None or not job_children(daemon.pid), timeout=30,
                 what="the jobs' children to end while the disk is full")
        assert daemon.poll() is None, daemon.communicate()
        held = env.cli("status", check=False)  # their results wait in the outbox
        assert "running 3" in held.stdout or held.stderr.startswith("docsuper: disk full"), held

        filler.unlink()  # space comes back
        wait_for(lambda: "succeeded 3" in env.cli("status").stdout, timeout=60, what="the held results stored")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    assert "Traceback" not in err
    records = parse_log(out)
    # Said once when it began and once when it ended, not at every heartbeat, claim and retry.
    outage = [r for r in records if r["event"] in ("queue_unavailable", "queue_available")]
    assert [r["event"] for r in outage] == ["queue_unavailable", "queue_available"], outage
    assert "disk full" in outage[0]["error"] and outage[1]["failures"] >= 2
    with env.queue() as q:
        for job_id in ids:
            job = q.get(job_id)
            assert (job.status, job.attempts) == ("succeeded", 1), job



def test_a_job_cut_short_by_a_full_work_disk_uses_no_attempt(tmp_path: Path, small_disk: Path):
    # The queue elsewhere (PostgreSQL in production); the jobs' work directories on the small disk.
    env = Env(tmp_path, DOCSUPER_WORKERS_WORK_DIR=str(small_disk / "jobs"))
    go = tmp_path / "go"
    [job_id] = env.cli("submit", "--passes", "sleep", "--max-attempts", "1", "--option", "fill_mb=1",
                       "--option", f"fill_when={json.dumps(str(go))}", "--option", "sleep_s=0.2").stdout.split()
    daemon = env.start()
    try:
        wait_for(lambda: env.queue().get(job_id).progress_done == 0, what="the job waiting to write")
        filler = fill(small_disk)  # the disk fills up under the running job…
        go.touch()  # …which then writes its document: ENOSPC

        # Not the job's failure: back to the queue without using its one attempt…
        wait_for(lambda: env.queue().get(job_id).status != "running", what="the attempt to end")
        with env.queue() as q:
            job, attempts = q.get(job_id), q.attempts(job_id)
        assert (job.status, job.attempts) == ("queued", 0), (job, attempts)
        assert [(a.outcome, a.counted) for a in attempts] == [("interrupted", False)], attempts
        assert "No space left on device" in attempts[0].error and "disk" in attempts[0].error
        # …and not claimed again while the disk stays full (it would only fail again).
        wait_for_log(daemon, "work_dir_full")
        assert len(env.queue().attempts(job_id)) == 1

        filler.unlink()  # space comes back: the job runs again, and succeeds
        wait_for(lambda: env.queue().get(job_id).status == "succeeded", timeout=60, what="the job to succeed")
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, err
    with env.queue() as q:
        assert q.get(job_id).attempts == 1
        assert [a.outcome for a in q.attempts(job_id)] == ["interrupted", "succeeded"]


def test_a_job_that_fills_the_disk_itself_uses_its_attempts(tmp_path: Path, small_disk: Path):
    # Its own files were what filled the disk (there is room once they are gone): its failure,
    # counted, or it would be retried for ever.
    env = Env(tmp_path, DOCSUPER_WORKERS_WORK_DIR=str(small_disk / "jobs"))
    [job_id] = env.submit("sleep", fill_mb=8, sleep_s=0.1)
    records = env.drain()
    with env.queue() as q:
        job, attempts = q.get(job_id), q.attempts(job_id)
    assert job.status == "dead" and len(attempts) == job.max_attempts, (job, attempts)
    assert all(a.outcome == "error" and a.counted and "No space left" in a.error for a in attempts), attempts
    assert not [r for r in records if r["event"] == "work_dir_full"]
