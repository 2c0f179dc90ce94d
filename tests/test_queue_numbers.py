"""The queue's numbers behind the backlog alert, on both backends."""

from __future__ import annotations

import time

from docsuper.supervisor.queue.base import NewJob, Queue


def test_oldest_due_wait_counts_due_queued_jobs_only(queue: Queue):
    assert queue.oldest_due_wait_s() is None
    queue.submit([NewJob(passes=["noop"], run_at=time.time() + 3600)])  # not due: not a backlog
    assert queue.oldest_due_wait_s() is None
    queue.submit([NewJob(passes=["noop"], run_at=time.time() - 30), NewJob(passes=["noop"], run_at=time.time() - 5)])
    wait = queue.oldest_due_wait_s()
    assert wait is not None and 29 <= wait <= 60
    claimed = queue.claim("w1", 1, 60)
    assert claimed and claimed[0].run_at < time.time() - 20  # the oldest went first
    wait = queue.oldest_due_wait_s()
    assert wait is not None and 4 <= wait < 29
