"""Which children to stop now: over the memory cap, past the deadline, or the box over budget.

A pure function of what the loop metered; the loop carries the stops out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Running:
    """What the stop decision sees of one child."""

    job_id: str
    uss_mb: float
    uss_exact: bool  # a reading, not an estimate: only a reading kills for memory
    processes: int
    started_at: float
    deadline: float
    measured: bool  # its tree is known (the fork was reported)
    stopping: bool  # a stop was already decided


@dataclass(frozen=True)
class Stop:
    job_id: str
    outcome: str  # oom, timeout or preempted
    message: str
    at_once: bool  # SIGKILL now; otherwise SIGTERM, then SIGKILL after the grace


def decide_stops(children: Sequence[Running], now: float, job_limit_mb: float, job_timeout_s: float,
                 budget_mb: float) -> list[Stop]:
    stops: list[Stop] = []
    for child in children:
        if child.stopping:
            continue
        if child.measured and child.uss_exact and child.uss_mb > job_limit_mb:
            stops.append(Stop(child.job_id, "oom", f"used {child.uss_mb:.0f} MB (USS of {child.processes} "
                                                   f"processes), over its {job_limit_mb:g} MB cap", True))
        elif now >= child.deadline:
            stops.append(Stop(child.job_id, "timeout", f"ran longer than {job_timeout_s:g} s", False))
    total = sum(c.uss_mb for c in children if c.measured)
    if total > budget_mb and len(children) > 1:
        stopped = {s.job_id for s in stops}
        candidates = [c for c in children if not c.stopping and c.job_id not in stopped]
        if candidates:
            youngest = max(candidates, key=lambda c: c.started_at)
            stops.append(Stop(youngest.job_id, "preempted", f"children used {total:.0f} MB together, over the "
                                                            f"box budget of {budget_mb:.0f} MB", True))
    return stops
