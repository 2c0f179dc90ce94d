"""Lending idle cores: how many pages each running job may read at once.

One child reads one page at a time. When fewer jobs run than there are cores, say a
142-page scan left alone at the end of a burst, the other cores sit idle however high
WORKER_CONCURRENCY is. So the parent lends them: a child that said it could read
several pages at once (a `readers` event: an OCR pass with scans left, on an engine
that reads in parallel) gets more readers, one per idle core, and gives them back as
soon as another job starts (the loop recomputes the loan every turn).

The rule, `lend_readers`, is a pure function of what the loop knows:
- readers in all never exceed `slots` = min(WORKER_CONCURRENCY, usable cores), except
  that every running child keeps its one (a loan never holds back a job: a claim is
  decided by the children's count, as before, and the loan shrinks to make room);
- a child gets no more readers than it asked for;
- each lent reader needs `reader_mb` of the memory budget's room (an engine and a page
  in flight), so a loan never makes the box budget overcommit;
- loans stay where they are while they fit (no reader moves between children from one
  turn to the next); new ones go to the child that has waited longest.

At WORKER_CONCURRENCY=1 nothing is ever lent: concurrency bounds the pages read at
once, across jobs or within one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .budget import own_cgroup_files

# What one more reader adds to a job's memory: a Tesseract instance (~20 MB with its model
# and dictionaries) and a page in flight; measured +41 MB RSS on dense 300 dpi pages
# (scripts/bench_ocr.py --readers, docs/ocr.md "One job on a lent core").
READER_MB = 60.0


@dataclass(frozen=True)
class Reading:
    """One running child, as the loan sees it."""

    job_id: str
    wanted: int  # pages it said it could read at once (1: nothing to lend it)
    lent: int  # readers it may run now (1 when nothing is lent)


def lend_readers(children: list[Reading], slots: int, room_mb: float, reader_mb: float) -> dict[str, int]:
    """Readers each child may run, by job id, in the order given (oldest first).

    `room_mb` is the budget's room with every lent reader counted in what the children hold."""
    spare = max(0, slots - len(children))
    if reader_mb > 0:
        held = sum(c.lent - 1 for c in children)  # the readers lent now: their room is theirs
        spare = min(spare, max(0, math.floor(room_mb / reader_mb)) + held)
    readers = {c.job_id: 1 for c in children}
    # Keep what is lent while it fits; then lend the rest to the oldest that asked.
    for keep in (True, False):
        for child in children:
            if spare <= 0:
                return readers
            want = min(child.wanted, child.lent) if keep else child.wanted
            more = min(spare, max(0, want - readers[child.job_id]))
            readers[child.job_id] += more
            spare -= more
    return readers


def usable_cores() -> int:
    """Cores this process may use: its CPU affinity, lowered by a cgroup CPU quota (a Render
    instance of half a CPU sees the host's cores but gets 0.5 of one)."""
    cores = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        cores = min(cores, max(1, math.floor(quota)))
    return max(1, cores)


def _cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time the cgroup may use (cpu.max in v2, cfs quota in v1), or None."""
    for candidate in own_cgroup_files("cpu.max", "cpu", "cpu.cfs_quota_us"):
        try:
            if candidate.name == "cpu.max":
                quota, period = candidate.read_text().split()
                if quota != "max":
                    return int(quota) / int(period)
            else:
                quota_us = int(candidate.read_text())
                if quota_us > 0:
                    return quota_us / int((candidate.parent / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
    return None
