"""Work directories: one root, a directory per worker, one per job attempt; nothing left behind.

    <root>/<pid>-<random>/.lock          held (flock) by the worker for as long as it lives
    <root>/<pid>-<random>/<job>-<attempt>/   a job's private directory (downloads, scratch)

The parent creates a job's directory before it starts the child and removes it when
it reaps the job, whatever ended it (a SIGKILL, a timeout, an oom kill, a shutdown):
a worker that keeps killing jobs must not fill its disk. A worker's lock is released
by the kernel when the worker dies, however it dies, so a daemon starting on the host
removes the directories of workers whose lock it can take: they are gone.

A full disk under the root is the box's failure, not a job's: the worker claims nothing
while it lasts, and a job cut short by it (no space left, and still none once the job's
own files are gone) goes back to the queue without using an attempt.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

LOCK = ".lock"
# Below this much free space (or these few free inodes) the root's filesystem is full.
FULL_BELOW_BYTES = 1 << 20
FULL_BELOW_INODES = 64


def default_root() -> Path:
    return Path(tempfile.gettempdir()) / "docsuper"


def _take_lock(path: Path) -> int | None:
    """An exclusive flock on `path` (created if needed), or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class WorkDirs:
    def __init__(self, root: str | Path | None, worker: str) -> None:
        """`worker`: this worker's name on the host (pid and a random part)."""
        self.root = Path(root) if root else default_root()
        self.worker = worker
        self.mine: Path | None = None
        self._lock_fd: int | None = None
        self._gone: dict[str, int] = {}  # locks taken from gone workers, held until their removal

    def open(self) -> None:
        """Make this worker's directory and lock it."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.mine = self.root / self.worker
        self.mine.mkdir(mode=0o700)
        self._lock_fd = _take_lock(self.mine / LOCK)

    def gone_workers(self) -> list[str]:
        """Workers on this host whose directory is left and who no longer hold its lock.

        Their locks stay taken until remove_gone(), so two daemons starting at once
        do not both sweep the same worker."""
        for entry in self.root.iterdir():
            if not entry.is_dir() or entry == self.mine or entry.name in self._gone:
                continue
            fd = _take_lock(entry / LOCK) if (entry / LOCK).exists() else -1
            if fd is not None:
                self._gone[entry.name] = fd
        return sorted(self._gone)

    def remove_gone(self) -> list[Path]:
        removed = []
        for name, fd in self._gone.items():
            shutil.rmtree(self.root / name, ignore_errors=True)
            if fd >= 0:
                os.close(fd)
            removed.append(self.root / name)
        self._gone = {}
        return removed

    def full(self) -> str | None:
        """What is missing when the root's filesystem is full (space or inodes), else None."""
        try:
            st = os.statvfs(self.root)
        except OSError:
            return None  # cannot tell: let the job find out
        free = st.f_bavail * st.f_frsize
        if free < FULL_BELOW_BYTES:
            return f"{free >> 10} KB free on the filesystem of {self.root}"
        if st.f_files and st.f_favail < FULL_BELOW_INODES:
            return f"{st.f_favail} inodes free on the filesystem of {self.root}"
        return None

    def for_job(self, job_id: str, attempt: int) -> Path:
        assert self.mine is not None, "open() first"
        path = self.mine / f"{job_id}-{attempt}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def close(self) -> None:
        if self.mine is not None:
            shutil.rmtree(self.mine, ignore_errors=True)
            self.mine = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def remove(path: str | Path | None) -> None:
    if path:
        shutil.rmtree(path, ignore_errors=True)
