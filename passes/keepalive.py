"""A child's guard against a stalled parent: stop the job before its lease can pass to another worker.

The parent renews each running job's lease. While it is stopped (SIGSTOP, a
debugger, a loop wedged in a call) nobody does, and once the lease has run out
another worker may claim the job and run it beside this child. So the parent
writes, every turn of its loop, the moment until which a child may trust it
(`protocol.encode_keepalive`), and a thread here waits for the next one. When the
moment passes first, the thread kills every process of the job but this one and
exits with EXIT_PARENT_SILENT; the parent, when it runs again, records the attempt
`interrupted` (no attempt used: the job did nothing wrong), unless another worker
has the job by then, in which case its record is fenced off.

A thread, not the fork server, judges the silence so that both start methods get
the same guard. It needs the GIL only to wake up: a pass that holds the GIL in C
for seconds delays the stop by that long, which the margin between the last moment
and the end of the lease covers (supervisor.config: keepalive_s).
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time

from docsuper.supervisor.protocol import (
    EXIT_PARENT_SILENT,
    JOB_MARKER,
    children_of,
    descendants_of,
    environ_value,
    last_keepalive,
)

GUARD_STACK_BYTES = 512 * 1024  # thread stacks count towards RLIMIT_DATA; this loop needs little
KILL_ROUNDS = 5  # a process may fork while we kill: go round until none is left


def wait_for_silence(fd: int) -> bool:
    """Block until the parent's last moment passes (True) or its end of the pipe closes (False)."""
    deadline: float | None = None
    leftover = b""
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([fd], [], [], timeout)
        if not readable:
            return True
        data = os.read(fd, 4096)
        if not data:
            return False  # the parent is gone; PDEATHSIG (or the fork server) takes it from here
        until, leftover = last_keepalive(leftover + data)
        if until is not None:
            deadline = until


def job_processes(job_id: str, cgroup: str | None) -> set[int]:
    """Every other process of this job: its cgroup's, else those below this one and the
    orphans it left with the subreaper above it (the fork server, or a spawning parent)."""
    me = os.getpid()
    found: set[int] = set()
    if cgroup:
        try:
            with open(os.path.join(cgroup, "cgroup.procs")) as fh:
                found.update(int(p) for p in fh.read().split())
        except OSError:
            pass
    found.update(descendants_of(me))
    for pid in children_of(os.getppid()):
        if pid != me and environ_value(pid, JOB_MARKER) == job_id:
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


def _guard(fd: int, job_id: str, cgroup: str | None) -> None:
    # Nothing is printed: the parent's stderr may be a pipe nobody drains while it is stopped,
    # and a blocked write here would leave the pass running. The parent logs it when it runs again.
    if wait_for_silence(fd):
        stop_job(job_id, cgroup)


def start_guard(fd: int, job_id: str, cgroup: str | None) -> threading.Thread:
    previous = threading.stack_size(GUARD_STACK_BYTES)
    try:
        thread = threading.Thread(target=_guard, args=(fd, job_id, cgroup), name="docsuper-keepalive", daemon=True)
        thread.start()
    finally:
        threading.stack_size(previous)
    return thread
