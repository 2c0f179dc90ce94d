"""The queue contract: every test runs against SQLite and PostgreSQL alike (fixture `queue`)."""

from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter

import pytest

from docsuper.passes.api import available_passes
from docsuper.supervisor.queue.base import (
    JOB_STATES,
    AttemptEnd,
    InvalidJob,
    Job,
    JobNotFound,
    NewJob,
    Queue,
    QueueError,
    WorkerInfo,
)

from .queuekit import QueueSpec, backdate, claim_until_empty, raw_sql, submit_and_work, submit_with_key

SLACK_S = 1.0  # database clock against time.time(), plus a slow CI box


def submit_one(q: Queue, **fields) -> str:
    return q.submit([NewJob(**fields)])[0]


def claimed_job(q: Queue, worker: str = "w1", lease_s: float = 60, **fields) -> Job:
    job_id = submit_one(q, **fields)
    [job] = q.claim(worker, 1, lease_s)
    assert job.id == job_id
    return job


def run_processes(target, args_list: list[tuple], timeout: float = 60) -> list[tuple]:
    """Start one spawned process per args tuple, released together by a barrier; return what each reported."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_list))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in args_list]
    for p in procs:
        p.start()
    try:
        reports = [results.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return reports


# -- submit and look up ------------------------------------------------------

def test_submit_then_get_returns_every_field(queue: Queue) -> None:
    before = time.time()
    [a, b] = queue.submit([
        NewJob(source="/docs/a.pdf", passes=["ocr", "noop"], options={"lang": "de", "n": [1, 2]}, priority=3,
               max_attempts=5),
        NewJob(),
    ])
    assert a != b and len(a) == 32
    job = queue.get(a)
    assert (job.id, job.status, job.source, job.passes, job.options) == (
        a, "queued", "/docs/a.pdf", ["ocr", "noop"], {"lang": "de", "n": [1, 2]})
    assert (job.priority, job.attempts, job.max_attempts) == (3, 0, 5)
    assert before - SLACK_S <= job.created_at <= time.time() + SLACK_S
    assert abs(job.run_at - job.created_at) < SLACK_S
    assert job.lease_owner is job.lease_expires_at is job.started_at is job.finished_at is job.dead_at is None
    assert job.cancel_requested is False and job.result is None
    other = queue.get(b)
    assert (other.passes, other.options, other.priority, other.max_attempts) == (["ocr"], {}, 0, 3)
    assert queue.submit([]) == []


def test_get_by_prefix_and_unknown_ids(queue: Queue) -> None:
    job_id = submit_one(queue)
    assert queue.get(job_id[:8]).id == job_id
    assert queue.get(job_id.upper()).id == job_id
    dashed = f"{job_id[:8]}-{job_id[8:12]}-{job_id[12:16]}-{job_id[16:20]}-{job_id[20:]}"
    assert queue.get(dashed).id == job_id
    for bad in ("", "abc", "not-hex!", "0" * 32):
        with pytest.raises(JobNotFound):
            queue.get(bad)


def test_an_ambiguous_prefix_is_refused(queue: Queue) -> None:
    # 1500 random ids share some 4-digit prefix with near certainty (birthday bound).
    ids = queue.submit([NewJob() for _ in range(1500)])
    shared = Counter(i[:4] for i in ids).most_common(1)[0]
    assert shared[1] > 1
    with pytest.raises(JobNotFound, match="ambiguous"):
        queue.get(shared[0])


# -- enqueue: checks and idempotency keys (the SQL function on PostgreSQL, Python on SQLite) ----

def test_migrate_registers_the_installed_passes(queue: Queue) -> None:
    assert set(available_passes()) <= set(queue.registered_passes())
    queue.register_passes(["vision", "ocr"])
    assert {"vision", "ocr", "noop"} <= set(queue.registered_passes())
    [job_id] = queue.submit([NewJob(passes=["ocr", "vision"])])
    assert queue.get(job_id).passes == ["ocr", "vision"]


@pytest.mark.parametrize(("fields", "message"), [
    ({"passes": []}, "enqueue: passes must name at least one pass"),
    ({"passes": ["ocr", "orc"]}, 'enqueue: unknown pass "orc" (registered: '),
    ({"priority": 1001}, "enqueue: priority must be between -1000 and 1000, not 1001"),
    ({"priority": -5000}, "enqueue: priority must be between -1000 and 1000, not -5000"),
    ({"max_attempts": 0}, "enqueue: max_attempts must be between 1 and 100, not 0"),
    ({"options": ["a"]}, "enqueue: options must be a JSON object, not array"),
    ({"options": "x"}, "enqueue: options must be a JSON object, not string"),
    ({"source": ""}, "enqueue: source must not be empty"),
    ({"idempotency_key": ""}, "enqueue: idempotency_key must be 1 to 200 characters"),
    ({"idempotency_key": "k" * 201}, "enqueue: idempotency_key must be 1 to 200 characters"),
])
def test_enqueue_refuses_bad_arguments_with_the_same_message_on_both_backends(queue: Queue, fields: dict,
                                                                               message: str) -> None:
    good = submit_one(queue)
    with pytest.raises(InvalidJob) as refused:
        queue.submit([NewJob(passes=["noop"]), NewJob(**fields)])
    assert str(refused.value).startswith(message), str(refused.value)
    assert [j.id for j in queue.list_jobs()] == [good]  # all or nothing


def test_an_idempotency_key_gives_the_first_job_again(queue: Queue) -> None:
    [first] = queue.submit([NewJob(source="a.pdf", idempotency_key="upload-1")])
    # Again, with other arguments, in a batch that repeats it and adds a new key.
    again, other, twice = queue.submit([NewJob(source="b.pdf", idempotency_key="upload-1"),
                                        NewJob(idempotency_key="upload-2"), NewJob(idempotency_key="upload-2")])
    assert again == first and twice == other != first
    assert queue.get(first).source == "a.pdf"
    assert queue.counts()["queued"] == 2
    # A finished job still holds its key.
    [job] = queue.claim("w1", 1, 60)
    queue.finish(job.id, "w1", AttemptEnd("succeeded"), 0)
    assert queue.submit([NewJob(idempotency_key="upload-1")]) == [first]
    assert queue.submit([NewJob(), NewJob()]) != queue.submit([NewJob(), NewJob()])  # no key: always new


def test_concurrent_submits_with_one_key_from_processes_make_one_job(queue_spec: QueueSpec, queue: Queue) -> None:
    reports = run_processes(submit_with_key, [(queue_spec, "one-upload", 5) for _ in range(6)])
    errors = [r[1] for r in reports if r[1]]
    assert not errors, "\n".join(errors)
    ids = {job_id for r in reports for job_id in r[0]}
    assert len(ids) == 1
    assert queue.counts()["queued"] == 1


# -- the application's views -------------------------------------------------

def test_the_status_view_answers_status_progress_peak_and_text_in_one_select(queue_spec: QueueSpec,
                                                                              queue: Queue) -> None:
    job = claimed_job(queue, source="scan.pdf", idempotency_key="upload-7")
    for page in (2, 1):
        assert queue.record_page(job.id, "w1", "ocr", page, {"text": f"text of page {page}", "chars": 14})
    queue.record_page(job.id, "w1", "other", 1, {"text": "not OCR"})
    queue.heartbeat("w1", {job.id: (2, 3, 123.5)}, 60)
    [row] = raw_sql(queue_spec, "SELECT status, pages_done, pages_total, peak_mb, text, idempotency_key, source"
                                f" FROM {{t}}job_status WHERE id = '{job.id}'")
    assert row == ("running", 2, 3, 123.5, "text of page 1\ftext of page 2", "upload-7", "scan.pdf")
    queue.finish(job.id, "w1", AttemptEnd("succeeded", result={"ocr": {"pages": 2}}), 0)
    [(status, summary, finished)] = raw_sql(
        queue_spec, f"SELECT status, summary, finished_at FROM {{t}}job_status WHERE id = '{job.id}'")
    assert status == "succeeded" and finished is not None
    assert (summary if isinstance(summary, dict) else json.loads(summary)) == {"ocr": {"pages": 2}}
    pages = raw_sql(queue_spec, f"SELECT pass, page, text FROM {{t}}job_pages WHERE job_id = '{job.id}'"
                                " ORDER BY pass, page")
    assert pages == [("ocr", 1, "text of page 1"), ("ocr", 2, "text of page 2"), ("other", 1, "not OCR")]
    [(text,)] = raw_sql(queue_spec, f"SELECT text FROM {{t}}job_status WHERE id = '{submit_one(queue)}'")
    assert text is None  # nothing stored yet


# -- retention -----------------------------------------------------------------

def finished_job(q: Queue, outcome: str, **fields) -> str:
    job = claimed_job(q, **fields)
    q.record_page(job.id, "w1", "ocr", 1, {"text": "x"})
    if outcome == "cancelled":
        q.cancel(job.id)
    q.finish(job.id, "w1", AttemptEnd(outcome), 0)
    return job.id


def test_purge_deletes_old_finished_jobs_with_their_history_and_nothing_else(queue_spec: QueueSpec,
                                                                             queue: Queue) -> None:
    now = time.time()
    old_ok = finished_job(queue, "succeeded", idempotency_key="upload-1")
    old_cancelled = finished_job(queue, "cancelled")
    old_dead = finished_job(queue, "invalid_input")
    older_dead = finished_job(queue, "invalid_input")
    new_ok = finished_job(queue, "succeeded")
    for job_id, days in ((old_ok, 40), (old_cancelled, 40), (old_dead, 40), (older_dead, 100)):
        backdate(queue_spec, job_id, days)
    running = claimed_job(queue)
    backdate(queue_spec, running.id, 400)  # no finished_at: stays NULL
    queued = submit_one(queue)
    day = 86400

    assert queue.purgeable(now - 30 * day, now - 90 * day) == {"succeeded": 1, "cancelled": 1, "dead": 1}
    # Oldest first: the dead one of 100 days, then those of 40.
    assert queue.purge(now - 30 * day, now - 90 * day, limit=2) == {"dead": 1, "succeeded": 1}
    assert queue.purge(now - 30 * day, now - 90 * day, limit=2) == {"cancelled": 1}
    assert queue.purge(now - 30 * day, now - 90 * day, limit=2) == {}
    for gone in (old_ok, old_cancelled, older_dead):
        with pytest.raises(JobNotFound):
            queue.get(gone)
    assert {j.id for j in queue.list_jobs(limit=100)} == {old_dead, new_ok, running.id, queued}
    [(attempts, pages)] = raw_sql(queue_spec, "SELECT (SELECT count(*) FROM {t}attempts), (SELECT count(*) FROM {t}pages)")
    assert (attempts, pages) == (3, 2)  # old_dead's and new_ok's and the running one's; their pages
    # None keeps a kind forever; the purged job's idempotency key is free again.
    assert queue.purge(None, now - 30 * day, limit=10) == {"dead": 1}
    assert queue.purge(None, None, limit=10) == {}
    assert queue.submit([NewJob(idempotency_key="upload-1")]) != [old_ok]


# -- once: a replay keeps the job's history ------------------------------------

def test_a_replay_of_a_finished_job_records_its_own_attempt_and_changes_nothing_else(queue: Queue) -> None:
    job = claimed_job(queue)
    queue.record_page(job.id, "w1", "ocr", 1, {"text": "stored"})
    queue.heartbeat("w1", {job.id: (1, 1, 50.0)}, 60)
    queue.finish(job.id, "w1", AttemptEnd("succeeded", peak_mb=50.0, result={"ocr": {"pages": 1}}), 0)
    before = queue.get(job.id)

    replay = queue.replay(job.id[:8], "once:1", 60)
    # The run it is: a fresh first attempt with nothing stored to resume from.
    assert (replay.id, replay.status, replay.attempts, replay.progress_done) == (job.id, "running", 1, None)
    assert queue.heartbeat("once:1", {job.id: (1, 1, 80.0)}, 60) == set()  # not told to stop
    assert queue.record_page(job.id, "once:1", "ocr", 1, {"text": "replayed"}) is True
    assert queue.finish(job.id, "once:1", AttemptEnd("succeeded", peak_mb=80.0, result={"ocr": {}}), 0) == "succeeded"

    assert queue.get(job.id) == before
    assert queue.pages(job.id) == [("ocr", 1, {"text": "stored"})]
    attempts = queue.attempts(job.id)
    assert [(a.number, a.worker, a.outcome, a.counted, a.replay) for a in attempts] == [
        (1, "w1", "succeeded", True, False), (2, "once:1", "succeeded", False, True)]
    assert attempts[1].peak_mb == 80.0
    # Closed: the same worker cannot finish it twice.
    assert queue.finish(job.id, "once:1", AttemptEnd("error"), 0) is None


def test_a_replay_with_store_replaces_the_results(queue: Queue) -> None:
    job = claimed_job(queue)
    queue.record_page(job.id, "w1", "ocr", 1, {"text": "old"})
    queue.record_page(job.id, "w1", "ocr", 2, {"text": "old"})
    queue.finish(job.id, "w1", AttemptEnd("succeeded", result={"v": 1}), 0)
    replay = queue.replay(job.id, "once:1", 60, store=True)
    assert (replay.status, replay.attempts, replay.lease_owner) == ("running", 2, "once:1")
    assert queue.pages(job.id) == []  # nothing to resume from: all the work is done again
    assert queue.record_page(job.id, "once:1", "ocr", 1, {"text": "new"})
    assert queue.finish(job.id, "once:1", AttemptEnd("succeeded", result={"v": 2}), 0) == "succeeded"
    assert queue.get(job.id).result == {"v": 2}
    assert queue.pages(job.id) == [("ocr", 1, {"text": "new"})]
    assert [(a.counted, a.replay) for a in queue.attempts(job.id)] == [(True, False), (True, False)]


def test_a_replay_of_a_job_not_yet_final_is_a_claim(queue: Queue) -> None:
    job_id = submit_one(queue)
    replay = queue.replay(job_id, "once:1", 60)
    assert (replay.status, replay.attempts, replay.lease_owner) == ("running", 1, "once:1")
    with pytest.raises(QueueError, match="is running on once:1"):
        queue.replay(job_id, "once:2", 60)


# -- claim -----------------------------------------------------------------

def test_claim_takes_highest_priority_then_oldest_run_at(queue: Queue) -> None:
    now = time.time()
    ids = queue.submit([
        NewJob(source="low-old", priority=0, run_at=now - 30),
        NewJob(source="high-new", priority=5, run_at=now - 10),
        NewJob(source="low-new", priority=0, run_at=now - 5),
        NewJob(source="high-old", priority=5, run_at=now - 20),
        NewJob(source="negative", priority=-1, run_at=now - 100),
    ])
    first = queue.claim("w1", 2, 60)
    assert [j.source for j in first] == ["high-old", "high-new"]
    rest = queue.claim("w1", 10, 60)
    assert [j.source for j in rest] == ["low-old", "low-new", "negative"]
    assert {j.id for j in first + rest} == set(ids)
    assert queue.claim("w1", 10, 60) == []


def test_claim_starts_an_attempt_under_a_lease(queue: Queue) -> None:
    job_id = submit_one(queue)
    before = time.time()
    [job] = queue.claim("w1", 5, 30)
    assert (job.id, job.status, job.attempts, job.lease_owner) == (job_id, "running", 1, "w1")
    assert before + 30 - SLACK_S <= job.lease_expires_at <= time.time() + 30 + SLACK_S
    assert before - SLACK_S <= job.started_at <= time.time() + SLACK_S
    [attempt] = queue.attempts(job_id)
    assert (attempt.job_id, attempt.number, attempt.worker, attempt.outcome) == (job_id, 1, "w1", None)
    assert queue.get(job_id).status == "running"


def test_claim_skips_jobs_due_later(queue: Queue) -> None:
    later = submit_one(queue, run_at=time.time() + 3600)
    assert queue.claim("w1", 10, 60) == []
    assert queue.has_queued()
    now_id = submit_one(queue)
    assert [j.id for j in queue.claim("w1", 10, 60)] == [now_id]
    assert queue.get(later).status == "queued"


def test_claim_respects_the_limit(queue: Queue) -> None:
    queue.submit([NewJob() for _ in range(7)])
    assert len(queue.claim("w1", 3, 60)) == 3
    assert queue.claim("w1", 0, 60) == []
    assert len(queue.claim("w2", 10, 60)) == 4
    assert queue.counts()["running"] == 7


def test_concurrent_claims_from_processes_never_share_a_job(queue_spec: QueueSpec, queue: Queue) -> None:
    ids = queue.submit([NewJob(passes=["noop"]) for _ in range(240)])
    reports = run_processes(claim_until_empty, [(queue_spec, f"w{i}", 5) for i in range(4)])
    assert [r[2] for r in reports] == [None] * 4, "\n".join(r[2] for r in reports if r[2])
    claimed = [job_id for r in reports for job_id in r[1]]
    assert len(claimed) == len(set(claimed)) == 240
    assert set(claimed) == set(ids)
    assert queue.counts()["succeeded"] == 240
    for job_id in ids[::40]:
        assert len(queue.attempts(job_id)) == 1


def test_claim_one_takes_a_given_job_unless_a_live_lease_holds_it(queue: Queue) -> None:
    job_id = submit_one(queue, run_at=time.time() + 3600)
    job = queue.claim_one(job_id[:10], "once", 60)
    assert (job.id, job.status, job.lease_owner, job.attempts) == (job_id, "running", "once", 1)
    with pytest.raises(QueueError, match="running on once"):
        queue.claim_one(job_id, "other", 60)
    # An expired lease: the old attempt is closed as lost and a new one starts.
    short = claimed_job(queue, "w1", lease_s=0.05)
    time.sleep(0.1)
    job = queue.claim_one(short.id, "once", 60)
    assert (job.lease_owner, job.attempts) == ("once", 2)
    assert [(a.number, a.worker, a.outcome) for a in queue.attempts(short.id)] == [(1, "w1", "lost"), (2, "once", None)]
    # A finished job can be replayed too.
    assert queue.finish(short.id, "once", AttemptEnd("succeeded"), 0) == "succeeded"
    assert queue.claim_one(short.id, "once", 60).status == "running"


# -- heartbeat -------------------------------------------------------------

def test_heartbeat_renews_leases_and_stores_progress(queue: Queue) -> None:
    a = claimed_job(queue, lease_s=5)
    b = claimed_job(queue, lease_s=5)
    assert queue.heartbeat("w1", {a.id: (2, 10, 120.5), b.id: (None, None, None)}, 300) == set()
    ja, jb = queue.get(a.id), queue.get(b.id)
    assert ja.lease_expires_at > a.lease_expires_at + 200
    assert jb.lease_expires_at > b.lease_expires_at + 200
    assert (ja.progress_done, ja.progress_total, ja.peak_mb) == (2, 10, 120.5)
    assert (jb.progress_done, jb.progress_total) == (None, None)
    # Unknown values keep the stored ones; the peak only ever goes up.
    assert queue.heartbeat("w1", {a.id: (None, None, 80.0)}, 300) == set()
    ja = queue.get(a.id)
    assert (ja.progress_done, ja.progress_total, ja.peak_mb) == (2, 10, 120.5)
    queue.heartbeat("w1", {a.id: (5, None, 200.0)}, 300)
    ja = queue.get(a.id)
    assert (ja.progress_done, ja.progress_total, ja.peak_mb) == (5, 10, 200.0)
    assert queue.heartbeat("w1", {}, 300) == set()


def test_heartbeat_names_cancelled_and_lost_jobs(queue: Queue) -> None:
    mine = claimed_job(queue, "w1")
    cancelled = claimed_job(queue, "w1")
    theirs = claimed_job(queue, "w2")
    done = claimed_job(queue, "w1")
    queue.finish(done.id, "w1", AttemptEnd("succeeded"), 0)
    assert queue.cancel(cancelled.id) == "running"
    stop = queue.heartbeat("w1", {mine.id: (1, 2, None), cancelled.id: (1, 2, None), theirs.id: (0, 1, None),
                                  done.id: (1, 1, None), "f" * 32: (0, 0, None)}, 60)
    assert stop == {cancelled.id, theirs.id, done.id, "f" * 32}
    # The other worker's lease was not touched.
    assert queue.get(theirs.id).lease_expires_at == pytest.approx(theirs.lease_expires_at, abs=1e-3)


# -- finish ----------------------------------------------------------------

def test_finish_succeeded(queue: Queue) -> None:
    job = claimed_job(queue)
    end = AttemptEnd("succeeded", exit_code=0, peak_mb=150.0, peak_rss_mb=210.0, last_page=4,
                     result={"pages": 4, "chars": 1234})
    assert queue.finish(job.id, "w1", end, 10) == "succeeded"
    done = queue.get(job.id)
    assert (done.status, done.attempts, done.last_outcome, done.result, done.peak_mb) == (
        "succeeded", 1, "succeeded", {"pages": 4, "chars": 1234}, 150.0)
    assert done.lease_owner is done.lease_expires_at is done.dead_at is None
    assert done.finished_at is not None
    [attempt] = queue.attempts(job.id)
    assert (attempt.outcome, attempt.counted, attempt.exit_code, attempt.peak_mb, attempt.peak_rss_mb,
            attempt.last_page) == ("succeeded", True, 0, 150.0, 210.0, 4)
    assert attempt.ended_at >= attempt.started_at and attempt.duration_s >= 0
    assert queue.claim("w1", 10, 60) == []


def test_finish_error_with_attempts_left_requeues_later(queue: Queue) -> None:
    job = claimed_job(queue, max_attempts=3)
    before = time.time()
    end = AttemptEnd("error", error="ValueError: boom", traceback="Traceback…", last_page=2)
    assert queue.finish(job.id, "w1", end, 30) == "queued"
    again = queue.get(job.id)
    assert (again.status, again.attempts, again.last_outcome, again.last_error) == (
        "queued", 1, "error", "ValueError: boom")
    assert again.run_at >= before + 30 - SLACK_S
    assert again.lease_owner is None and again.finished_at is None
    [attempt] = queue.attempts(job.id)
    assert (attempt.outcome, attempt.counted, attempt.error, attempt.traceback, attempt.last_page) == (
        "error", True, "ValueError: boom", "Traceback…", 2)
    assert queue.claim("w1", 10, 60) == []  # not due yet


@pytest.mark.parametrize("outcome", ["error", "oom", "timeout", "crashed"])
def test_finish_failure_at_max_attempts_is_dead(queue: Queue, outcome: str) -> None:
    job_id = submit_one(queue, max_attempts=2)
    queue.claim("w1", 1, 60)
    assert queue.finish(job_id, "w1", AttemptEnd(outcome, error="first"), 0) == "queued"
    [job] = queue.claim("w1", 1, 60)
    assert job.attempts == 2
    assert queue.finish(job_id, "w1", AttemptEnd(outcome, error="second"), 0) == "dead"
    dead = queue.get(job_id)
    assert (dead.status, dead.attempts, dead.last_error) == ("dead", 2, "second")
    assert dead.dead_at is not None and dead.finished_at is not None
    assert [a.outcome for a in queue.attempts(job_id)] == [outcome, outcome]
    assert [j.id for j in queue.list_jobs("dead")] == [job_id]


def test_finish_invalid_input_is_dead_at_once(queue: Queue) -> None:
    job = claimed_job(queue, max_attempts=5)
    assert queue.finish(job.id, "w1", AttemptEnd("invalid_input", error="encrypted PDF"), 10) == "dead"
    dead = queue.get(job.id)
    assert (dead.status, dead.attempts, dead.last_outcome, dead.last_error) == (
        "dead", 1, "invalid_input", "encrypted PDF")
    assert dead.dead_at is not None


@pytest.mark.parametrize("outcome", ["interrupted", "preempted"])
def test_finish_interrupted_requeues_now_without_using_an_attempt(queue: Queue, outcome: str) -> None:
    job = claimed_job(queue, max_attempts=1)
    assert queue.finish(job.id, "w1", AttemptEnd(outcome, last_page=3), 600) == "queued"
    again = queue.get(job.id)
    assert (again.status, again.attempts, again.last_outcome) == ("queued", 0, outcome)
    assert again.run_at <= time.time() + SLACK_S
    [attempt] = queue.attempts(job.id)
    assert (attempt.outcome, attempt.counted, attempt.last_page) == (outcome, False, 3)
    # Claimable at once, and the one real attempt is still left.
    [job] = queue.claim("w2", 1, 60)
    assert job.attempts == 1
    assert [a.number for a in queue.attempts(job.id)] == [1, 2]
    assert queue.finish(job.id, "w2", AttemptEnd("error"), 0) == "dead"


def test_finish_cancelled_after_a_cancel_request(queue: Queue) -> None:
    job = claimed_job(queue)
    assert queue.cancel(job.id) == "running"
    assert queue.get(job.id).cancel_requested is True
    assert queue.finish(job.id, "w1", AttemptEnd("cancelled"), 0) == "cancelled"
    done = queue.get(job.id)
    assert (done.status, done.cancel_requested) == ("cancelled", False)
    assert done.finished_at is not None


def test_finish_without_the_lease_writes_nothing(queue: Queue) -> None:
    job = claimed_job(queue, "w1")
    assert queue.finish(job.id, "intruder", AttemptEnd("succeeded", result={"x": 1}), 0) is None
    assert queue.get(job.id) == job
    assert queue.attempts(job.id)[0].outcome is None
    assert queue.finish(job.id, "w1", AttemptEnd("succeeded"), 0) == "succeeded"
    after = queue.get(job.id)
    # Finishing twice is refused, and changes nothing.
    assert queue.finish(job.id, "w1", AttemptEnd("error", error="late"), 0) is None
    assert queue.get(job.id) == after
    assert [a.outcome for a in queue.attempts(job.id)] == ["succeeded"]


def test_finish_refuses_an_unknown_outcome_and_writes_nothing(queue: Queue) -> None:
    # Drift: only PostgreSQL used to refuse one; SQLite stored it and requeued the job.
    job = claimed_job(queue)
    with pytest.raises(QueueError, match="unknown outcome 'exploded'"):
        queue.finish(job.id, "w1", AttemptEnd("exploded"), 0)
    assert queue.get(job.id) == job
    assert queue.attempts(job.id)[0].outcome is None


def test_attempt_numbers_never_repeat_across_interruptions_reclaims_and_retries(queue: Queue) -> None:
    # Drift: attempts were numbered by a column on PostgreSQL and by max(number) on
    # SQLite. `attempts` itself is given back by interruptions and reset by retry, so
    # it cannot number the rows; both now keep attempt_seq.
    job = claimed_job(queue, max_attempts=1, lease_s=0.05)
    time.sleep(0.15)
    assert queue.claim_one(job.id, "w2", 60).attempts == 2       # 1 closed as lost
    assert queue.finish(job.id, "w2", AttemptEnd("interrupted"), 0) == "queued"  # 2
    [again] = queue.claim("w3", 1, 60)                             # 3
    assert queue.finish(again.id, "w3", AttemptEnd("error"), 0) == "dead"
    assert queue.retry([job.id]) == [job.id]
    queue.claim("w4", 1, 60)                                       # 4
    attempts = queue.attempts(job.id)
    assert [(a.number, a.worker, a.outcome) for a in attempts] == [
        (1, "w1", "lost"), (2, "w2", "interrupted"), (3, "w3", "error"), (4, "w4", None)]
    assert queue.get(job.id).attempts == 1


def test_the_schema_refuses_an_unknown_job_status(queue_spec: QueueSpec, queue: Queue) -> None:
    # Drift: only PostgreSQL's schema had the status CHECK.
    job_id = submit_one(queue)
    with pytest.raises(Exception, match="(?i)check"):
        raw_sql(queue_spec, f"UPDATE {{t}}jobs SET status = 'paused' WHERE id = '{job_id}'")
    assert queue.get(job_id).status == "queued"


def test_both_backends_have_the_same_tables_views_and_columns(sqlite_spec: QueueSpec, postgres_spec: QueueSpec) -> None:
    with sqlite_spec.open():
        pass  # opening the SQLite queue migrates it
    lite = {(t, c) for t, c in raw_sql(sqlite_spec, "SELECT m.name, p.name FROM sqlite_master m, "
                                                    "pragma_table_info(m.name) p WHERE m.type IN ('table', 'view')")}
    pg = {(t, c) for t, c in raw_sql(postgres_spec, "SELECT table_name, column_name FROM information_schema.columns "
                                                    f"WHERE table_schema = '{postgres_spec.schema}'")}
    assert lite == pg


def test_list_jobs_refuses_an_unknown_state(queue: Queue) -> None:
    with pytest.raises(QueueError, match="unknown job state 'finished'"):
        queue.list_jobs("finished")


# -- lost leases -----------------------------------------------------------

def test_reclaim_expired_closes_the_attempt_as_lost(queue: Queue) -> None:
    job = claimed_job(queue, "w1", lease_s=0.05, max_attempts=2)
    live = claimed_job(queue, "w2", lease_s=60)
    time.sleep(0.15)
    assert [j.id for j in queue.expired_leases()] == [job.id]
    assert queue.reclaim_expired(20) == [job.id]
    again = queue.get(job.id)
    assert (again.status, again.attempts, again.last_outcome, again.lease_owner) == ("queued", 1, "lost", None)
    assert "w1" in again.last_error
    assert again.run_at >= time.time() + 20 - SLACK_S - 1
    [attempt] = queue.attempts(job.id)
    assert (attempt.outcome, attempt.counted) == ("lost", True)
    assert queue.get(live.id).status == "running"
    assert queue.reclaim_expired(20) == [] and queue.expired_leases() == []
    # The worker that lost it can no longer write about it.
    assert queue.finish(job.id, "w1", AttemptEnd("succeeded"), 0) is None
    assert queue.record_page(job.id, "w1", "ocr", 1, {"text": "late"}) is False
    assert queue.heartbeat("w1", {job.id: (1, 1, None)}, 60) == {job.id}
    assert queue.get(job.id) == again


def test_reclaim_only_leases_that_expired_recently_when_asked(queue: Queue) -> None:
    # A worker back from an outage reclaims only the leases it saw expire.
    job = claimed_job(queue, "w1", lease_s=0.05)
    time.sleep(0.3)  # the lease expires, then a while passes (waiting on the clock, not on a process)
    assert queue.reclaim_expired(0, expired_within_s=0.1) == []
    assert queue.get(job.id).status == "running"
    assert queue.reclaim_expired(0, expired_within_s=30) == [job.id]


def test_a_worker_never_reclaims_its_own_expired_lease(queue: Queue) -> None:
    # Back from a stall, a worker finishes its own jobs itself: reclaiming them would use an attempt.
    job = claimed_job(queue, "w1", lease_s=0.05)
    time.sleep(0.15)
    assert queue.reclaim_expired(0, except_worker="w1") == []
    assert queue.finish(job.id, "w1", AttemptEnd("interrupted"), 0) == "queued"
    [attempt] = queue.attempts(job.id)
    assert (attempt.outcome, attempt.counted) == ("interrupted", False)
    [again] = queue.claim("w1", 1, 0.05)  # back at once: the interruption used no attempt
    time.sleep(0.15)
    assert queue.reclaim_expired(0, except_worker="w2") == [again.id] == [job.id]  # another's: reclaimed


def test_reclaim_at_max_attempts_is_dead(queue: Queue) -> None:
    job = claimed_job(queue, lease_s=0.05, max_attempts=1)
    time.sleep(0.15)
    assert queue.reclaim_expired(0) == [job.id]
    dead = queue.get(job.id)
    assert (dead.status, dead.last_outcome) == ("dead", "lost")
    assert dead.dead_at is not None


# -- pages -----------------------------------------------------------------

def test_record_page_and_resume_data(queue: Queue) -> None:
    job = claimed_job(queue, "w1")
    assert queue.record_page(job.id, "w1", "ocr", 2, {"text": "two"})
    assert queue.record_page(job.id, "w1", "ocr", 1, {"text": "one"})
    assert queue.record_page(job.id, "w1", "ocr", 10, {"text": "ten"})
    assert queue.record_page(job.id, "w1", "classify", 1, {"label": "invoice"})
    assert queue.record_page(job.id, "w1", "ocr", 2, {"text": "two, again"})  # a re-run page replaces
    assert queue.record_page(job.id, "w2", "ocr", 3, {"text": "not mine"}) is False
    assert queue.pages(job.id) == [("classify", 1, {"label": "invoice"}), ("ocr", 1, {"text": "one"}),
                                   ("ocr", 2, {"text": "two, again"}), ("ocr", 10, {"text": "ten"})]
    assert [p[1] for p in queue.pages(job.id[:12], "ocr")] == [1, 2, 10]
    assert queue.pages(job.id, "missing") == []
    # Interrupted: the pages stay for the next attempt to resume from.
    queue.finish(job.id, "w1", AttemptEnd("interrupted", last_page=10), 0)
    [again] = queue.claim("w2", 1, 60)
    assert len(queue.pages(again.id)) == 4
    assert queue.record_page(again.id, "w2", "ocr", 11, {"text": "eleven"})
    assert queue.record_page(again.id, "w1", "ocr", 12, {"text": "stale"}) is False
    assert [p[1] for p in queue.pages(again.id, "ocr")] == [1, 2, 10, 11]


# -- operators ---------------------------------------------------------------

def dead_job(q: Queue) -> str:
    job = q.claim_one(submit_one(q, max_attempts=1), "w1", 60)
    assert q.finish(job.id, "w1", AttemptEnd("error", error="boom"), 0) == "dead"
    return job.id


def test_retry_puts_dead_jobs_back_with_a_fresh_budget(queue: Queue) -> None:
    first, second = dead_job(queue), dead_job(queue)
    assert queue.retry([first[:8]]) == [first]
    job = queue.get(first)
    assert (job.status, job.attempts, job.dead_at, job.finished_at) == ("queued", 0, None, None)
    assert job.run_at <= time.time() + SLACK_S
    assert queue.get(second).status == "dead"
    [claimed] = queue.claim("w1", 5, 60)
    assert (claimed.id, claimed.attempts) == (first, 1)
    assert [a.number for a in queue.attempts(first)] == [1, 2]
    third = dead_job(queue)
    assert sorted(queue.retry(None)) == sorted([second, third])
    assert queue.counts()["dead"] == 0
    assert queue.retry(None) == []


def test_retry_refuses_live_jobs_and_takes_cancelled_ones(queue: Queue) -> None:
    queued = submit_one(queue)
    with pytest.raises(QueueError, match="only dead or cancelled"):
        queue.retry([queued])
    running = queue.claim_one(submit_one(queue), "w1", 60)
    with pytest.raises(QueueError, match="is running"):
        queue.retry([running.id])
    with pytest.raises(JobNotFound):
        queue.retry(["abcdef0123"])
    queue.cancel(queued)
    assert queue.retry([queued]) == [queued]
    assert queue.get(queued).status == "queued"


def test_cancel_queued_and_running_jobs(queue: Queue) -> None:
    queued = submit_one(queue)
    assert queue.cancel(queued) == "cancelled"
    job = queue.get(queued)
    assert job.status == "cancelled" and job.finished_at is not None
    assert queue.claim("w1", 10, 60) == []
    with pytest.raises(QueueError, match="already cancelled"):
        queue.cancel(queued)
    running = claimed_job(queue)
    assert queue.cancel(running.id[:9]) == "running"
    job = queue.get(running.id)
    assert (job.status, job.cancel_requested) == ("running", True)
    queue.finish(running.id, "w1", AttemptEnd("succeeded"), 0)
    with pytest.raises(QueueError, match="already succeeded"):
        queue.cancel(running.id)
    with pytest.raises(JobNotFound):
        queue.cancel("0123456789abcdef")


def test_counts_has_queued_and_list_jobs(queue: Queue) -> None:
    assert queue.counts() == dict.fromkeys(JOB_STATES, 0)
    assert not queue.has_queued()
    ids = [submit_one(queue, source=str(i)) for i in range(5)]
    queue.claim("w1", 1, 60)                                        # ids[0] running
    [j] = queue.claim("w1", 1, 60)                                  # ids[1] succeeded
    queue.finish(j.id, "w1", AttemptEnd("succeeded"), 0)
    queue.cancel(ids[2])
    [j] = queue.claim("w1", 1, 60)
    queue.finish(j.id, "w1", AttemptEnd("invalid_input"), 0)        # ids[3] dead
    assert queue.counts() == {"queued": 1, "running": 1, "succeeded": 1, "dead": 1, "cancelled": 1}
    assert queue.has_queued()
    assert [j.id for j in queue.list_jobs()] == ids[::-1]
    assert [j.id for j in queue.list_jobs(limit=2)] == ids[:2:-1]
    assert [j.id for j in queue.list_jobs("queued")] == [ids[4]]
    assert [j.id for j in queue.list_jobs("running")] == [ids[0]]
    assert queue.list_jobs("running")[0].lease_owner == "w1"
    later_dead = dead_job(queue)
    assert [j.id for j in queue.list_jobs("dead")] == [later_dead, ids[3]]


# -- workers ---------------------------------------------------------------

def test_workers_table(queue: Queue) -> None:
    now = time.time()
    queue.register_worker(WorkerInfo("host-a:1", "host-a", 101, "0.1.0", now - 5, now - 5, 0))
    queue.register_worker(WorkerInfo("host-b:2", "host-b", 202, "0.1.0", now, now, 0))
    workers = queue.workers()
    assert [(w.id, w.host, w.pid, w.version, w.running) for w in workers] == [
        ("host-a:1", "host-a", 101, "0.1.0", 0), ("host-b:2", "host-b", 202, "0.1.0", 0)]
    assert workers[0].started_at == pytest.approx(now - 5, abs=1e-3)
    queue.worker_seen("host-a:1", 3)
    a = queue.workers()[0]
    assert a.running == 3 and a.last_seen >= now - SLACK_S
    # Registering again (a restart with the same id) replaces the row.
    queue.register_worker(WorkerInfo("host-a:1", "host-a", 303, "0.2.0", now - 5, now, 1))
    assert [(w.pid, w.version) for w in queue.workers() if w.id == "host-a:1"] == [(303, "0.2.0")]
    queue.unregister_worker("host-a:1")
    queue.unregister_worker("never-registered")
    queue.worker_seen("never-registered", 1)
    assert [w.id for w in queue.workers()] == ["host-b:2"]


# -- schema ----------------------------------------------------------------

def test_migrate_is_idempotent(queue_spec: QueueSpec, queue: Queue) -> None:
    queue.check_schema()
    job_id = submit_one(queue)
    assert queue.migrate() == []
    with queue_spec.open() as again:
        assert again.migrate() == []
        again.check_schema()
        assert again.get(job_id).status == "queued"


# -- SQLite only: many processes on one file -----------------------------------

def test_sqlite_processes_sharing_a_file_never_see_database_is_locked(sqlite_spec: QueueSpec) -> None:
    reports = run_processes(submit_and_work, [(sqlite_spec, f"w{i}", 8, 5) for i in range(6)])
    errors = [r[2] for r in reports if r[2]]
    assert not errors, "\n".join(errors)
    submitted = [job_id for r in reports for job_id in r[1]]
    assert len(submitted) == 6 * 8 * 5
    with sqlite_spec.open() as q:
        counts = q.counts()
        assert counts["queued"] + counts["succeeded"] == len(submitted)
        for job in q.claim("main", 1000, 60):  # whatever the others left queued
            q.finish(job.id, "main", AttemptEnd("succeeded"), 0)
        assert q.counts()["succeeded"] == len(submitted)
