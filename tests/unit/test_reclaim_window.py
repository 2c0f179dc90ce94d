"""After an outage, a worker reclaims for one lease only the leases it saw expire."""

from __future__ import annotations

from docsuper.supervisor.reclaim_window import ReclaimWindow


def test_without_an_outage_every_expired_lease_is_judged():
    window = ReclaimWindow(lease_s=60)
    assert window.seen_for(100.0) is None


def test_for_a_lease_after_the_queue_is_back_only_leases_seen_to_expire_are_reclaimed():
    window = ReclaimWindow(lease_s=60)
    window.queue_lost()
    window.queue_lost()  # however many heartbeats fail, the window opens at the first that answers
    assert window.seen_for(200.0) == 0.0
    assert window.seen_for(230.0) == 30.0
    assert window.seen_for(260.0) is None  # a whole lease: every worker had its chance to renew
    assert window.seen_for(261.0) is None
    window.queue_lost()
    assert window.seen_for(300.0) == 0.0
