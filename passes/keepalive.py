"""A child's guard: stop the job before its lease can pass to another worker.

The parent renews each running job's lease every heartbeat. When it cannot (it is
stopped, its loop is stuck in a call, or it is cut off from a queue that other
workers still reach), the lease runs out and another worker may claim the job and
run it beside this child. So after each renewal the parent writes the moment until
which the lease is surely its own (`protocol.encode_keepalive`; the renewal's send
time + lease − one heartbeat), and a thread here waits for the next one. When the
moment passes first, the thread kills every process of the job but this one and
exits with EXIT_PARENT_SILENT; the parent records the attempt `interrupted` (no
attempt used: the job did nothing wrong), unless another worker has the job by
then, in which case its record is fenced off.

The same records say how many pages the job may read at once (`Lent`): one, unless
the parent lends the child cores that no other job uses (supervisor/lending.py).

A thread, not the fork server, keeps the guard so that both start methods get the
same one. It needs the GIL to wake: a pass that holds the GIL in C code delays the
stop by as long, which the heartbeat of margin before the lease ends covers only
for holds shorter than a heartbeat (15 s by default). A pass that closes the
descriptors it inherited gives up its guard; the thread then ends quietly.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import threading
import time

from docsuper.supervisor.protocol import EXIT_PARENT_SILENT, cgroup_pids, descendants_of, last_keepalive, orphans_of

GUARD_STACK_BYTES = 512 * 1024  # thread stacks count towards RLIMIT_DATA; this loop needs little
KILL_ROUNDS = 5  # a process may fork while we kill: go round until none is left


def _pipe_identity(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISFIFO(st.st_mode) else None


class Lent:
    """How many pages the parent lets this job read at once: 1 until it lends idle cores.
    Written by the guard thread, read by the pass (an int: one reference swap under the GIL)."""

    def __init__(self) -> None:
        self.readers = 1

    def __call__(self) -> int:
        return self.readers


def wait_for_silence(fd: int, lent: Lent | None = None) -> bool:
    """Block until the last moment read passes (True), or the pipe is no longer there to
    read (False): the parent closed its end (it is gone; PDEATHSIG or the fork server takes
    it from here), or a pass closed ours, and the number may since name another file.
    Each record's readers go to `lent`."""
    ours = _pipe_identity(fd)
    deadline: float | None = None
    leftover = b""
    while ours is not None:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            readable, _, _ = select.select([fd], [], [], timeout)
            if _pipe_identity(fd) != ours:
                return False
            if not readable:
                return True
            data = os.read(fd, 4096)
        except (OSError, ValueError):
            return False
        if not data:
            return False
        record, leftover = last_keepalive(leftover + data)
        if record is not None:
            deadline = record[0]
            if lent is not None:
                lent.readers = record[1]
    return False


def job_processes(job_id: str, cgroup: str | None) -> set[int]:
    """Every other process of this job: its cgroup's, else those below this one and the
    orphans it left with the subreaper above it (the fork server, or a spawning parent)."""
    me = os.getpid()
    found: set[int] = set()
    if cgroup:
        try:
            found.update(cgroup_pids(cgroup))
        except OSError:
            pass
    found.update(descendants_of(me))
    for pid in orphans_of(job_id, os.getppid()):
        found.add(pid)
        found.update(descendants_of(pid))
    found.discard(me)
    return found


def stop_job(job_id: str, cgroup: str | None) -> None:
    for _ in range(KILL_ROUNDS):
        others = job_processes(job_id, cgroup)
        if not others:
            break
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    os._exit(EXIT_PARENT_SILENT)


def _guard(fd: int, job_id: str, cgroup: str | None, lent: Lent | None) -> None:
    # Nothing is printed: the parent's stderr may be a pipe nobody drains while it is stopped,
    # and a blocked write here would leave the pass running. The parent logs it when it runs again.
    if wait_for_silence(fd, lent):
        stop_job(job_id, cgroup)
    if lent is not None:
        lent.readers = 1  # no parent left to lend cores


def start_guard(fd: int, job_id: str, cgroup: str | None, lent: Lent | None = None) -> threading.Thread:
    previous = threading.stack_size(GUARD_STACK_BYTES)
    try:
        thread = threading.Thread(target=_guard, args=(fd, job_id, cgroup, lent), name="docsuper-keepalive",
                                  daemon=True)
        thread.start()
    finally:
        threading.stack_size(previous)
    return thread
