"""The box budget's admission decisions in the log: why jobs wait, said once per change.

The loop asks the budget every 100 ms while it holds jobs back; the decision
(supervisor/budget.py) is logged only when it changes, once more when the budget
stops holding jobs back, and only while a job does wait: a budget that holds back
claims from an empty queue is not news.
"""

from __future__ import annotations

from typing import Callable

from .budget import Admission
from .logs import Logger


class AdmissionLog:
    def __init__(self, logger: Logger, has_queued: Callable[[], bool], recheck_s: float) -> None:
        """`has_queued()`: whether a job waits in the queue; `recheck_s`: how long a decision not
        logged (no job waited) stays unsaid before it is asked again (jobs may have come)."""
        self._log = logger
        self._has_queued = has_queued
        self._recheck_s = recheck_s
        # The decision last logged, and the last one not logged because no job waited.
        self.said: tuple[int, int, int, float, bool] | None = None
        self.unsaid: tuple[int, int, int, float, bool] | None = None
        self.recheck_at = 0.0

    def note(self, admission: Admission, claimed: int, now: float) -> None:
        """Say why jobs wait while the budget, not the concurrency, holds them back: once per
        change of decision (the loop asks every 100 ms while it holds), and once when it stops.
        Only when a job does wait: a budget that holds back claims from an empty queue is not news."""
        if not admission.limited:
            if self.said is not None:
                self.said = None
                self._record(admission)
            return
        key = admission.key()
        if key == self.said or (key == self.unsaid and now < self.recheck_at):
            return
        if claimed < admission.claim or not self._has_queued():  # nothing is left waiting
            self.unsaid, self.recheck_at = key, now + self._recheck_s
            return
        self.said = key
        self._record(admission)

    def _record(self, admission: Admission) -> None:
        self._log.info("admission", limited=admission.limited, claim=admission.claim,
                       free_slots=admission.free_slots, running=admission.running, held_mb=admission.held_mb,
                       next_job_mb=admission.next_job_mb, budget_mb=admission.budget_mb, reason=admission.reason())
