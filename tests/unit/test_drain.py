"""When a drain is done, and its summary line."""

from __future__ import annotations

from docsuper.supervisor.drain import Interrupted, Tally, Waiting, waiting_for
from docsuper.supervisor.queue.base import Job


def running(owner: str, expires: float) -> Job:
    return Job(id=f"{owner}-{expires}", status="running", source=None, passes=["noop"], options={}, priority=0,
               run_at=0.0, attempts=1, max_attempts=3, lease_owner=owner, lease_expires_at=expires,
               progress_done=None, progress_total=None, last_outcome=None, last_error=None, peak_mb=None,
               result=None, created_at=0.0, started_at=0.0, finished_at=None, dead_at=None, cancel_requested=False)


def test_nothing_running_is_done():
    assert waiting_for([], {"a"}, now=100.0) is None


def test_a_live_workers_job_is_waited_for_without_a_reclaim_time():
    assert waiting_for([running("a", 130.0)], {"a"}, now=100.0) == Waiting(1, 0, None)


def test_a_gone_workers_jobs_are_reclaimable_when_the_soonest_lease_expires():
    jobs = [running("gone", 112.5), running("gone", 105.0), running("a", 130.0)]
    assert waiting_for(jobs, {"a"}, now=100.0) == Waiting(3, 2, 5.0)
    assert waiting_for([running("gone", 90.0)], set(), now=100.0) == Waiting(1, 1, 0.0)


def test_the_summary_exits_1_only_when_a_job_ended_dead():
    tally = Tally()
    assert tally.summary(0) == ("docsuper: drained: 0 attempt(s) ended; jobs left none", 0)
    for job_id, state in (("a", "succeeded"), ("b", "succeeded"), ("c", "queued"), ("d", "dead")):
        tally.add(job_id, state)
    line, code = tally.summary(4)
    assert code == 1
    assert line == ("docsuper: drained: 4 attempt(s) ended; jobs left 1 dead, 1 queued, 2 succeeded; "
                    "1 dead (docsuper list --status dead)")


def test_the_summary_counts_each_job_once_in_the_state_its_last_attempt_left_it():
    tally = Tally()
    # A bomb that ended oom three times then dead, one job retried into success, one left queued.
    for job_id, state in (("bomb", "queued"), ("ok", "queued"), ("bomb", "queued"), ("ok", "succeeded"),
                          ("bomb", "queued"), ("bomb", "dead"), ("later", "queued")):
        tally.add(job_id, state)
    line, code = tally.summary(7)
    assert code == 1
    assert line == ("docsuper: drained: 7 attempt(s) ended; jobs left 1 dead, 1 queued, 1 succeeded; "
                    "1 dead (docsuper list --status dead)")


def test_a_drain_cut_short_by_a_signal_says_so_and_what_is_left_and_exits_128_plus_the_signal():
    tally = Tally()
    tally.add("a", "queued")  # failed once, due again later
    line, code = tally.summary(1, Interrupted("SIGTERM", 15, {"queued": 1, "running": 0}))
    assert code == 143
    assert line == ("docsuper: drain interrupted by SIGTERM: 1 attempt(s) ended; jobs left 1 queued; "
                    "still in the queue: 1 queued")
    line, code = Tally().summary(0, Interrupted("SIGINT", 2, None))
    assert code == 130 and line.endswith("jobs left none; the queue could not be asked what is left")
    tally.add("b", "dead")
    assert tally.summary(2, Interrupted("SIGINT", 2, {"queued": 0, "running": 0}))[1] == 130
