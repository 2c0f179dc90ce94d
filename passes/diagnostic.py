"""Passes that misbehave on purpose, for `docsuper selftest` and the tests.

Each reads its knobs from the job's options, so an operator can run one by hand:
    docsuper submit --passes alloc --option alloc_mb=800
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from .api import InvalidInput, PassContext


def noop(ctx: PassContext) -> dict[str, Any]:
    return {}


def introspect(ctx: PassContext) -> dict[str, Any]:
    """What a pass is given: its config sections, and the environment names its child holds."""
    return {"config": ctx.config, "environ": sorted(os.environ), "pid": os.getpid()}


def alloc(ctx: PassContext) -> dict[str, Any]:
    """Grow to `alloc_mb` in `alloc_step_mb` steps, touching every page, then hold `hold_s`."""
    target = float(ctx.options.get("alloc_mb", 600))
    step = float(ctx.options.get("alloc_step_mb", 10))
    pause = float(ctx.options.get("alloc_step_s", 0.01))
    blocks: list[bytearray] = []
    held = 0.0
    reported = 0.0
    while held < target:
        block = bytearray(int(step * 1e6))
        block[::4096] = b"\x01" * len(range(0, len(block), 4096))  # touch every page: resident, not reserved
        blocks.append(block)
        held += step
        if held - reported >= 50 or held >= target:
            ctx.progress(int(held), int(target), unit="MB")
            reported = held
        time.sleep(pause)
    time.sleep(float(ctx.options.get("hold_s", 0)))
    return {"allocated_mb": held}


def sleep(ctx: PassContext) -> dict[str, Any]:
    """Sleep `sleep_s`; with `fill_mb`, first write that much into the work directory, as a
    download would (with `fill_when`, a path: once that file exists). With `tick_file`, append
    "PID MONOTONIC" to it every `tick_s` while sleeping: a record of when each run of the job
    was alive, on the host's one clock."""
    seconds = float(ctx.options.get("sleep_s", 1.0))
    if ctx.options.get("fill_when"):
        ctx.progress(0, None, waiting_for=str(ctx.options["fill_when"]))
        while not os.path.exists(str(ctx.options["fill_when"])):
            time.sleep(0.02)
    if ctx.options.get("fill_mb"):
        (ctx.workdir / "source").write_bytes(b"\0" * int(float(ctx.options["fill_mb"]) * (1 << 20)))
        ctx.progress(0, None, workdir=str(ctx.workdir))
    if not ctx.options.get("tick_file"):
        time.sleep(seconds)
        return {"slept_s": seconds}
    tick_s = float(ctx.options.get("tick_s", 0.05))
    end = time.monotonic() + seconds
    with open(ctx.options["tick_file"], "a", buffering=1) as ticks:
        while (now := time.monotonic()) < end:
            ticks.write(f"{os.getpid()} {now:.6f}\n")
            time.sleep(min(tick_s, end - now))
    return {"slept_s": seconds}


def die_by_signal(ctx: PassContext) -> dict[str, Any]:
    signum = signal.Signals[str(ctx.options.get("signal", "SIGSEGV"))]
    os.kill(os.getpid(), signum)
    time.sleep(5)  # a handled signal lands here; the test then sees no signal death
    return {}


def grandchildren(ctx: PassContext) -> dict[str, Any]:
    """Start processes that outlive the pass unless the supervisor kills them.

    One stays in the child's process group, one escapes into its own session, so
    a group kill alone would miss it. Their pids go out as progress so tests can
    check them afterwards; then the pass sleeps `sleep_s` (0: return at once).
    """
    count = int(ctx.options.get("grandchildren", 2))
    code = "import time; time.sleep(3600)"
    pids = []
    for i in range(count):
        proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=(i % 2 == 1),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pids.append(proc.pid)
    ctx.progress(0, None, grandchildren=pids)
    if ctx.options.get("pid_file"):
        with open(ctx.options["pid_file"], "w") as fh:
            fh.write(" ".join(map(str, pids)))
    time.sleep(float(ctx.options.get("sleep_s", 3600)))
    return {"grandchildren": pids}


def fail(ctx: PassContext) -> dict[str, Any]:
    raise RuntimeError(str(ctx.options.get("message", "diagnostic failure")))


def invalid(ctx: PassContext) -> dict[str, Any]:
    raise InvalidInput(str(ctx.options.get("message", "diagnostic: this input can never succeed")))


def exit_without_result(ctx: PassContext) -> dict[str, Any]:
    os._exit(int(ctx.options.get("exit_code", 3)))


def pages(ctx: PassContext) -> dict[str, Any]:
    """A paged pass without a document: `pages` pages of `page_s` each, resuming like OCR.

    With `crash_at_page` the child kills itself there on attempts up to
    `crash_attempts` (default 1), which is how the resume tests stop a job midway.
    """
    total = int(ctx.options.get("pages", 10))
    page_s = float(ctx.options.get("page_s", 0.0))
    crash_at = ctx.options.get("crash_at_page")
    crash_attempts = int(ctx.options.get("crash_attempts", 1))
    done = ctx.resumed()
    computed = []
    for page in range(1, total + 1):
        if page in done:
            continue
        if crash_at is not None and page == int(crash_at) and ctx.attempt <= crash_attempts:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(page_s)
        ctx.page_result(page, {"text": f"page {page}", "attempt": ctx.attempt})
        computed.append(page)
        ctx.progress(len(done) + len(computed), total)
    return {"pages": total, "computed": len(computed), "resumed_pages": len(done)}
