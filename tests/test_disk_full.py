"""A full disk under the SQLite queue is an outage, not a crash (issue 9.5): on a real, small tmpfs."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from .daemon import Env, job_children, parse_log, wait_for


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

