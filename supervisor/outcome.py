"""How an attempt ended: the facts the supervisor gathered about it → one outcome.

Pure policy, no processes: the loop collects the facts (the wait status, the
child's last event, a stop it decided on, the memory it metered) and this module
names the outcome and writes the message an operator reads in `docsuper show`.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Any

from .protocol import EXIT_PARENT_SILENT
from .queue.base import AttemptEnd

OOM_MARGIN = 0.9  # a crash at 90 % of a memory cap or more is counted as out of memory


def describe_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) from a wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status), None


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


@dataclass(frozen=True)
class Ending:
    """What the supervisor knows about an attempt when its child is gone."""

    status: int | None  # wait status; None when the child was never seen to exit
    result: dict[str, Any] | None = None  # the child's `result` event
    failure: dict[str, Any] | None = None  # the child's `failure` event
    stop_outcome: str | None = None  # a stop the supervisor decided on (oom, timeout, …)
    stop_message: str | None = None
    no_status_reason: str | None = None  # why there is no wait status (the fork server died, …)
    peak_uss_mb: float | None = None  # None: never read (short jobs)
    peak_rss_mb: float = 0.0
    last_page: int | None = None
    plan: dict[str, Any] | None = None  # the memory plan the child said it runs (the ocr pass's)
    lease_lapsed: bool = False  # its lease went unrenewed past the child's keepalive moment
    keepalive_s: float = 0.0
    disk_full: str | None = None  # the work directories' disk still full once the job's own files are gone


def classify(ending: Ending, job_limit_mb: float, kernel_limit_mb: float) -> AttemptEnd:
    exit_code, signum = describe_status(ending.status) if ending.status is not None else (None, None)
    peak_uss = ending.peak_uss_mb or 0.0
    end = AttemptEnd("crashed", exit_code=exit_code, signal=signum,
                     peak_mb=round(ending.peak_uss_mb, 1) if ending.peak_uss_mb is not None else None,
                     peak_rss_mb=round(ending.peak_rss_mb, 1) if ending.peak_rss_mb else None,
                     last_page=ending.last_page)
    if ending.result is not None and exit_code == 0:  # a result beats any later decision to stop it
        end.outcome, end.result = "succeeded", ending.result
    elif ending.stop_outcome is not None:
        end.outcome, end.error = ending.stop_outcome, ending.stop_message
    elif ending.lease_lapsed and exit_code == EXIT_PARENT_SILENT:  # a pass exiting 75 alone is a crash
        end.outcome = "interrupted"
        end.error = (f"stopped itself: its lease had gone {ending.keepalive_s:g} s without renewal (the worker was "
                     "stopped, its loop stuck in a call, or the queue out of reach), and could soon pass to another worker")
    elif ending.failure is not None:
        end.outcome = ending.failure.get("outcome", "error")
        end.error = ending.failure.get("message")
        end.traceback = ending.failure.get("traceback")
        if ending.failure.get("no_space") and ending.disk_full:
            # The disk was full without the job's files: the box's failure. Had the job filled it
            # itself, there would be room once they are gone, and the attempt counts.
            end.outcome = "interrupted"
            end.error = (f"{end.error} - the work directories' disk is full ({ending.disk_full}) even without "
                         "the job's files: back to the queue without using an attempt")
    elif ending.no_status_reason is not None:
        end.error = ending.no_status_reason
    elif peak_uss >= OOM_MARGIN * job_limit_mb or ending.peak_rss_mb >= OOM_MARGIN * kernel_limit_mb:
        end.outcome = "oom"
        how = f"by {signal_name(signum)}" if signum else f"with exit code {exit_code}"
        end.error = (f"died {how} at {peak_uss:.0f} MB, near its {job_limit_mb:g} MB cap "
                     f"(kernel limit {kernel_limit_mb:g} MB)")
    elif signum is not None:
        end.error = f"killed by {signal_name(signum)} without a result"
    else:
        end.error = f"exited with code {exit_code} without a result"
    end.plan = ending.plan
    if end.outcome == "oom" and ending.plan is not None:
        # Memory is worth another try while the pass has a lighter plan; on its lightest, not.
        end.lighter_plan = not ending.plan.get("lightest", True)
        if not end.lighter_plan:
            end.error = (f"{end.error} on the lightest memory plan ({ending.plan.get('dpi')} dpi, "
                         f"{ending.plan.get('max_render_pixels')} pixels, {ending.plan.get('engine')})")
    return end
