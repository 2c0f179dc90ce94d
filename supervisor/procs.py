"""Linux process plumbing shared by the supervisor and the child side (standard library only)."""

from __future__ import annotations

import ctypes
import os
import signal

# Set in every job child's environment and inherited by all it starts, so a reaper
# can tell which finished job an orphan belongs to.
JOB_MARKER = "DOCSUPER_JOB_ID"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def children_of(pid: int) -> list[int]:
    """Direct children from /proc/PID/task/*/children: a look at this one process, where
    psutil's children() reads the parent of every process on the box."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
        except OSError:
            continue
    return found


def drain_pipe(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (signal wake-ups, SIGCHLD notes)."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def environ_value(pid: int, name: str) -> str | None:
    """One variable from the environment a process started with, or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in data.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def kill_orphans_of(job_id: str) -> list[int]:
    """Kill the processes a finished job left behind that were reparented to us (a subreaper).

    A grandchild that escaped into its own session is outside the job's process
    group; its parent is gone, so only the job marker in its environment names it."""
    killed = []
    for pid in children_of(os.getpid()):
        if environ_value(pid, JOB_MARKER) == job_id:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                continue
    return killed


def reap_jobs(jobs: dict[int, str]) -> list[tuple[int, int]]:
    """Reap every exited child of this process (a subreaper); for each job child among
    them (`jobs`: pid -> job id, updated), kill what the job left behind.

    Returns (pid, wait status) of the job children. Other children are orphans a job
    left and that were reparented here: reaping is all they need. Their group is
    killed right after the reap and before anyone is told, so no new child can have
    been given this pid as its group id yet."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        job_id = jobs.pop(pid, None)
        if job_id is None:
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        kill_orphans_of(job_id)
        reaped.append((pid, status))
    return reaped
