"""The child side of one job: limits first, then the passes, then exit.

A child is made either by the fork server (forked from a preloaded, single
threaded process) or spawned as `python -m docsuper.passes.child SPEC_FD EVENT_FD …`.
Both paths end in `run_job`, so the two start methods behave the same, the guard
against a stalled parent (passes/keepalive.py) included.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import sys
import traceback
from typing import Any

from docsuper.supervisor.protocol import JOB_MARKER, PR_SET_PDEATHSIG, ChildLimits, JobSpec, join_cgroup, prctl

from . import keepalive
from .api import InvalidInput, PassContext, UnknownPass, find_pass, is_allocation_failure, peak_rss_mb

TRACEBACK_TAIL_CHARS = 4000

def die_with_parent(expected_parent: int, signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to kill us when our parent dies, and close the race where it already has."""
    prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != expected_parent:
        os._exit(1)


def apply_limits(limits: ChildLimits) -> None:
    """Kernel limits for this child: its job's cgroup first (everything it starts is inside),
    then RLIMIT_DATA, not RLIMIT_AS: see docs/memory.md.

    RLIMIT_DATA counts the data a forked child inherited from the fork server (~110 MB with
    the OCR stack preloaded) though it shares those pages, so the limit is what the child
    holds now plus `kernel_limit_mb`: the same room to grow whatever the server preloaded."""
    if limits.cgroup:
        join_cgroup(limits.cgroup)
    data_bytes = data_size_bytes() + int(limits.kernel_limit_mb * 1024 * 1024)
    resource.setrlimit(resource.RLIMIT_DATA, (data_bytes, data_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def data_size_bytes() -> int:
    """This process's data size as RLIMIT_DATA counts it (VmData), in bytes."""
    with open("/proc/self/status", "rb") as fh:
        for line in fh:
            if line.startswith(b"VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


def data_limit_mb() -> float:
    """The RLIMIT_DATA this child runs under, in MB (reported to the parent with `started`)."""
    return round(resource.getrlimit(resource.RLIMIT_DATA)[0] / 2**20, 1)


def stdout_to_stderr() -> None:
    # Anything a pass prints must not interleave with the supervisor's JSON log on stdout.
    os.dup2(2, 1)


def _failure(outcome: str, message: str, exc: BaseException | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "failure", "outcome": outcome, "message": message, "peak_rss_mb": peak_rss_mb()}
    if exc is not None:
        event["traceback"] = "".join(traceback.format_exception(exc))[-TRACEBACK_TAIL_CHARS:]
        if _no_space(exc):
            event["no_space"] = True  # the parent judges whether the disk or the job is to blame
    return event


def _no_space(exc: BaseException) -> bool:
    """Whether a write that found the disk full (ENOSPC, or a quota) is behind this exception."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        current = current.__cause__ or current.__context__
    return False


def run_job(spec: JobSpec, event_fd: int, keepalive_fd: int | None = None, cgroup: str | None = None) -> int:
    """Run the job's passes in order; report one result or one failure. Returns the exit code.
    With `keepalive_fd`, the job stops itself when the parent goes silent (passes/keepalive.py)."""
    # Inherited by every process the job starts: how the reaper recognises its orphans.
    os.environ[JOB_MARKER] = spec.job_id
    lent = keepalive.Lent()
    if keepalive_fd is not None:
        keepalive.start_guard(keepalive_fd, spec.job_id, cgroup, lent)
    ctx = PassContext(spec, event_fd, readers=lent)
    try:
        ctx.emit({"type": "started", "pid": os.getpid(), "data_limit_mb": data_limit_mb()})
        for name in spec.passes:
            ctx.pass_name = name
            ctx.results[name] = find_pass(name)(ctx) or {}
        ctx.emit({"type": "result", "summary": ctx.results, "peak_rss_mb": peak_rss_mb()})
        return 0
    except InvalidInput as exc:
        ctx.emit(_failure("invalid_input", str(exc)))
    except UnknownPass as exc:
        ctx.emit(_failure("invalid_input", str(exc)))
    except MemoryError as exc:
        ctx.emit(_failure("oom", f"MemoryError in pass {ctx.pass_name!r} under the kernel memory limit", exc))
    except BaseException as exc:  # a pass may raise anything, SystemExit included
        outcome = "oom" if is_allocation_failure(str(exc)) else "error"
        ctx.emit(_failure(outcome, f"{type(exc).__name__} in pass {ctx.pass_name!r}: {exc}", exc))
    finally:
        if ctx.owns_workdir and ctx._workdir is not None:
            shutil.rmtree(ctx._workdir, ignore_errors=True)
    return 1


def main(argv: list[str] | None = None) -> None:
    """Entry point of a spawned child:
    `python -m docsuper.passes.child SPEC_FD EVENT_FD KEEPALIVE_FD PARENT_PID LIMITS_MB [CGROUP]`."""
    args = sys.argv[1:] if argv is None else argv
    spec_fd, event_fd, keepalive_fd, parent_pid, kernel_limit_mb = (int(a) for a in args[:5])
    cgroup = args[5] if len(args) > 5 else ""
    die_with_parent(parent_pid)
    apply_limits(ChildLimits(kernel_limit_mb, cgroup or None))
    stdout_to_stderr()
    with os.fdopen(spec_fd, "rb") as fh:
        spec = JobSpec.from_json(fh.read())
    code = run_job(spec, event_fd, keepalive_fd, cgroup or None)
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
