"""Retention: finished jobs are deleted after a while, by `docsuper purge` or by the daemon itself.

Succeeded and cancelled jobs go after `retention.finished_days`, dead ones after
`retention.dead_days` (longer by default: a dead job is the one somebody still has to
look at); 0 keeps them forever. A job's attempts and pages go with it. The daemon
deletes in batches of `retention.batch`, one batch per `retention.interval_s` (sooner
while a backlog remains), and a batch only ever locks finished rows, which no claim
touches: claims never wait on it. A batch runs on the supervisor's loop, which must
keep renewing leases, so batches that take longer than a slice of a heartbeat get
smaller (`next_batch_size`), and a backlog takes at most half the loop's time.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Callable

from .queue.base import Queue, QueueError

DAY_S = 86400.0
_AGE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(d|h|m|s)?\s*")
_UNIT_S = {"d": DAY_S, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_age(text: str) -> float:
    """'30d', '12h', '90m', '45s' or a bare number of days → seconds; ValueError otherwise."""
    match = _AGE_RE.fullmatch(text or "")
    if not match:
        raise ValueError(f"{text!r} is not an age (e.g. 30d, 12h, 90m)")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "d"]


@dataclass(frozen=True)
class Cutoffs:
    """Jobs that finished before these Unix times may go; None keeps that kind forever."""

    finished_before: float | None  # succeeded and cancelled
    dead_before: float | None

    @property
    def anything(self) -> bool:
        return self.finished_before is not None or self.dead_before is not None


def cutoffs(now: float, finished_days: float, dead_days: float) -> Cutoffs:
    return Cutoffs(now - finished_days * DAY_S if finished_days > 0 else None,
                   now - dead_days * DAY_S if dead_days > 0 else None)


def purge_all(queue: Queue, limits: Cutoffs, batch: int) -> dict[str, int]:
    """`docsuper purge`: batch after batch until nothing is left to delete; how many of each state went."""
    total: dict[str, int] = {}
    while limits.anything:
        deleted = queue.purge(limits.finished_before, limits.dead_before, batch)
        for status, n in deleted.items():
            total[status] = total.get(status, 0) + n
        if sum(deleted.values()) < batch:
            break
    return total


def cli_cutoffs(now: float, finished_before: str | None, dead_before: str | None, finished_days: float,
                dead_days: float) -> Cutoffs:
    """`purge`'s options over the config: an age given wins; a kind without one keeps its retention setting.

    Raises ValueError (one line for the operator) for an age that is not one."""
    configured = cutoffs(now, finished_days, dead_days)
    return Cutoffs(
        now - parse_age(finished_before) if finished_before is not None else configured.finished_before,
        now - parse_age(dead_before) if dead_before is not None else configured.dead_before)


def next_batch_size(current: int, configured: int, took_s: float, budget_s: float) -> int:
    """Halve a batch that took longer than its time budget; grow one that took under a
    quarter of it back towards the configured size."""
    if took_s > budget_s:
        return max(1, current // 2)
    if took_s < budget_s / 4:
        return min(configured, current * 2)
    return current


class Retention:
    """The daemon's side: one small purge batch when one is due."""

    def __init__(self, queue: Queue, finished_days: float, dead_days: float, batch: int, interval_s: float,
                 log: Callable[..., None], clock: Callable[[], float] = time.time, budget_s: float = 0.5) -> None:
        self.queue = queue
        self.finished_days = finished_days
        self.dead_days = dead_days
        self.batch = batch
        self.size = batch  # this batch's size: smaller while batches take longer than budget_s
        self.budget_s = budget_s
        self.interval_s = interval_s
        self._log = log
        self._clock = clock
        self._next_at = 0.0

    def tick(self, now: float) -> int:
        """Purge one batch if due (`now` is monotonic); the number of jobs deleted."""
        if now < self._next_at:
            return 0
        limits = cutoffs(self._clock(), self.finished_days, self.dead_days)
        if not limits.anything:
            self._next_at = float("inf")
            return 0
        started, size = time.monotonic(), self.size
        try:
            deleted = self.queue.purge(limits.finished_before, limits.dead_before, size)
        except QueueError as exc:
            self._log("warning", "queue_unavailable", action="purge", error=str(exc))
            self._next_at = now + self.interval_s
            return 0
        took = time.monotonic() - started
        self.size = next_batch_size(size, self.batch, took, self.budget_s)
        total = sum(deleted.values())
        # A full batch means more are waiting: the next one after as long again (half the loop's time
        # at most), not an interval later.
        self._next_at = now + (took if total >= size else self.interval_s)
        if total:
            self._log("info", "jobs_purged", **deleted)
        return total
