"""`run --drain`: when a batch is done, and the one line that says how it went.

Done means nothing queued and nothing running anywhere: a job whose worker is gone
comes back when its lease expires (the heartbeat reclaims it), and a job another
worker runs may fail back into the queue. A worker killed a moment ago still looks
alive, so waiting for every running job is the only rule that cannot exit early.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from .queue.base import Job


@dataclass(frozen=True)
class Waiting:
    jobs: int
    of_gone_workers: int
    reclaimable_in_s: float | None  # the soonest lease of a gone worker's job to expire


def waiting_for(running: Iterable[Job], live_workers: set[str], now: float) -> Waiting | None:
    """What a drain still waits for; None when nothing runs."""
    running = list(running)
    if not running:
        return None
    gone = [j for j in running if j.lease_owner not in live_workers]
    expires = min((j.lease_expires_at or now for j in gone), default=None)
    return Waiting(len(running), len(gone), round(max(0.0, expires - now), 1) if expires is not None else None)


@dataclass
class Tally:
    """The state each job this run finished an attempt of was left in: its last attempt's
    (a job retried three times is one job, counted once, in the state its last end left it)."""

    last_state: dict[str, str] = field(default_factory=dict)  # by job id

    def add(self, job_id: str, state: str) -> None:
        self.last_state.pop(job_id, None)  # insertion order follows the latest end
        self.last_state[job_id] = state

    @property
    def states(self) -> Counter[str]:
        return Counter(self.last_state.values())

    def summary(self, attempts: int, interrupted: Interrupted | None = None) -> tuple[str, int]:
        """The line for stderr, and the exit code: 1 when a job ended dead; 128 + the signal
        when a signal cut the drain short (the batch is not done, whatever ended dead)."""
        states = self.states
        left = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        dead = states.get("dead", 0)
        verb = f"drain interrupted by {interrupted.signal}" if interrupted else "drained"
        line = f"docsuper: {verb}: {attempts} attempt(s) ended; jobs left {left}"
        if dead:
            line += f"; {dead} dead (docsuper list --status dead)"
        if interrupted is None:
            return line, 1 if dead else 0
        if interrupted.unfinished is None:
            line += "; the queue could not be asked what is left"
        else:
            unfinished = ", ".join(f"{n} {state}" for state, n in sorted(interrupted.unfinished.items()) if n)
            line += f"; still in the queue: {unfinished or 'nothing'}"
        return line, 128 + interrupted.signum


@dataclass(frozen=True)
class Interrupted:
    """A drain a signal cut short, and what the queue still held when it stopped."""

    signal: str  # SIGTERM
    signum: int
    unfinished: dict[str, int] | None  # queued and running jobs by state; None: the queue did not answer
