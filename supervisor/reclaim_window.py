"""Which expired leases a worker just back from an outage may reclaim.

A worker that was itself cut off from the queue reclaims, for one lease after the
queue answers again, only the leases it saw expire since then: the other workers
were probably cut off too, and get a whole lease to come back and renew theirs.
"""

from __future__ import annotations


class ReclaimWindow:
    def __init__(self, lease_s: float) -> None:
        self.lease_s = lease_s
        # Since when the queue has answered again after an outage (None: no outage, or a lease
        # ago): until a lease has passed, only leases that expired since then are reclaimed.
        self.back_at: float | None = None
        self.away = False

    def queue_lost(self) -> None:
        """The queue did not answer a heartbeat."""
        self.away, self.back_at = True, None

    def seen_for(self, now: float) -> float | None:
        """How long the queue has been visible again after an outage; None: long enough to judge
        every expired lease. A worker that was itself cut off reclaims only leases it saw expire:
        the others' workers were probably cut off too, and get a whole lease to come back."""
        if self.away:
            self.away, self.back_at = False, now
        if self.back_at is None or now - self.back_at >= self.lease_s:
            self.back_at = None
            return None
        return now - self.back_at
