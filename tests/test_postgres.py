"""PostgreSQL only: concurrent migrations, the claim plan at scale, NOTIFY, and surviving dropped connections."""

from __future__ import annotations

import multiprocessing
import select
import time
import uuid
from typing import Iterator

import psycopg
import pytest

from docsuper.supervisor.queue.base import AttemptEnd, NewJob, QueueError, QueueUnavailable, SchemaOutdated
from docsuper.supervisor.queue.postgres import CLAIM_SQL, JOB_COLUMNS, PostgresQueue

from .conftest import require_postgres
from .queuekit import QueueSpec, drop_schema, new_schema_name, run_migrate, submit_after
from .test_queue_contract import run_processes

pytestmark = pytest.mark.postgres


@pytest.fixture
def bare_spec() -> Iterator[QueueSpec]:
    """A schema name nobody has migrated yet (dropped afterwards)."""
    url = require_postgres()
    spec = QueueSpec("postgres", url, new_schema_name())
    try:
        yield spec
    finally:
        drop_schema(url, spec.schema)


def tagged(url: str, tag: str) -> str:
    """The URL with an application_name that lets a test find (and kill) exactly its own connections."""
    return f"{url}{'&' if '?' in url else '?'}application_name={tag}"


def terminate(url: str, tag: str) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE application_name LIKE %s AND pid <> pg_backend_pid()", (tag + "%",)).fetchall()
    return len(rows)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


# -- schema ----------------------------------------------------------------

def test_a_fresh_schema_is_not_created_on_open(bare_spec: QueueSpec) -> None:
    with bare_spec.open() as q:
        with pytest.raises(SchemaOutdated, match="docsuper migrate"):
            q.check_schema()
        with pytest.raises(SchemaOutdated, match="docsuper migrate"):
            q.submit([NewJob()])
        assert q.migrate() == ["0001_initial"]
        q.check_schema()
        assert q.migrate() == []


def test_two_processes_migrating_at_once_both_succeed(bare_spec: QueueSpec) -> None:
    reports = run_processes(run_migrate, [(bare_spec,), (bare_spec,)])
    assert [r[1] for r in reports] == [None, None], "\n".join(r[1] for r in reports if r[1])
    assert sorted(r[0] for r in reports) == [[], ["0001_initial"]]
    with bare_spec.open() as q:
        q.check_schema()


def test_schema_names_are_checked(bare_spec: QueueSpec) -> None:
    for bad in ("Docsuper", "a-b", "x;drop table jobs", "", "a" * 60):
        with pytest.raises(QueueError, match="queue.schema"):
            PostgresQueue(bare_spec.url, schema=bad)


# -- claim at scale ----------------------------------------------------------

def test_claim_uses_the_partial_index_with_100k_finished_jobs(postgres_spec: QueueSpec) -> None:
    s = f'"{postgres_spec.schema}"'
    with psycopg.connect(postgres_spec.url, autocommit=True) as db:
        db.execute(f"INSERT INTO {s}.jobs (id, status, passes, created_at, finished_at)"
                   " SELECT md5(g::text), 'succeeded', '[\"noop\"]', now() - interval '1 day', now()"
                   " FROM generate_series(1, 100000) g")
    with postgres_spec.open() as q:
        ids = q.submit([NewJob(priority=p) for p in (0, 2, 1)])

    def claim_plan() -> str:
        with psycopg.connect(postgres_spec.url, autocommit=True) as db:
            db.execute(f"ANALYZE {s}.jobs")  # what autovacuum would have done by now
            sql = CLAIM_SQL.format(s=s, job_columns=JOB_COLUMNS)
            return "\n".join(r[0] for r in db.execute("EXPLAIN " + sql, {"limit": 5, "worker": "w", "lease": 60.0}))

    plan = claim_plan()
    assert "Index Scan using jobs_runnable" in plan, plan
    assert "Seq Scan" not in plan, plan
    with postgres_spec.open() as q:
        assert [j.id for j in q.claim("w", 5, 60)] == [ids[1], ids[2], ids[0]]
        assert q.counts()["succeeded"] == 100000
        # A backlog as well: still the index, read in order, no sort of the queued rows.
        q.submit([NewJob(priority=i % 3) for i in range(5000)])
    plan = claim_plan()
    assert "Index Scan using jobs_runnable" in plan, plan
    assert "Seq Scan" not in plan, plan


# -- NOTIFY ------------------------------------------------------------------

def test_notify_wakes_a_listening_queue(postgres_spec: QueueSpec) -> None:
    listener = PostgresQueue(postgres_spec.url, schema=postgres_spec.schema, listen=True)
    other = postgres_spec.open()
    try:
        fd = listener.wakeup_fileno()
        assert fd is not None, listener.pop_warnings()
        assert listener.pop_warnings() == []
        assert listener.wakeup_fileno() == fd
        listener.consume_wakeups()
        assert not readable(fd, 0.05)

        # A submit from another process.
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=submit_after, args=(postgres_spec, 0.0))
        proc.start()
        assert readable(fd, 15)
        proc.join(10)
        listener.consume_wakeups()
        assert not readable(fd, 0.05)

        # Every way a job becomes runnable again notifies too.
        [job] = other.claim("w", 1, 60)
        other.finish(job.id, "w", AttemptEnd("interrupted"), 0)  # requeue after an interrupt
        assert readable(fd, 5)
        listener.consume_wakeups()
        [job] = other.claim("w", 1, 60)
        other.finish(job.id, "w", AttemptEnd("error"), 0)  # retry with backoff
        assert readable(fd, 5)
        listener.consume_wakeups()
        [job] = other.claim("w", 1, 0.01)
        time.sleep(0.05)
        assert other.reclaim_expired(0) == [job.id]  # reclaim of a lost lease
        assert readable(fd, 5)
        listener.consume_wakeups()
        [job] = other.claim("w", 1, 60)
        assert other.finish(job.id, "w", AttemptEnd("error"), 0) == "dead"
        listener.consume_wakeups()
        assert not readable(fd, 0.2)  # dead is not runnable: no wake-up
        other.retry([job.id])  # an operator's retry
        assert readable(fd, 5)
        listener.consume_wakeups()
        assert not readable(fd, 0.05)
    finally:
        listener.close()
        other.close()


def test_listen_off_and_transaction_pooler_fall_back_to_polling(postgres_spec: QueueSpec) -> None:
    with PostgresQueue(postgres_spec.url, schema=postgres_spec.schema, listen=False) as q:
        assert q.wakeup_fileno() is None
        q.consume_wakeups()
        assert q.pop_warnings() == []
    # Port 6543 is Supabase's transaction-mode pooler: no LISTEN, no prepared statements.
    pooled = PostgresQueue("postgresql://postgres@127.0.0.1:6543/postgres", listen=True)
    assert pooled.wakeup_fileno() is None
    [warning] = pooled.pop_warnings()
    assert "6543" in warning and "queue.listen" in warning
    assert pooled.pop_warnings() == []
    pooled.close()


# -- connections -------------------------------------------------------------

def test_a_dropped_connection_is_replaced(postgres_spec: QueueSpec) -> None:
    tag = f"dstest-{uuid.uuid4().hex[:8]}"
    q = PostgresQueue(tagged(postgres_spec.url, tag), schema=postgres_spec.schema, listen=False)
    try:
        ids = q.submit([NewJob() for _ in range(3)])
        calls = [
            lambda: q.counts(),
            lambda: q.submit([NewJob()]),
            lambda: q.claim("w", 1, 60),
            lambda: q.heartbeat("w", {ids[0]: (1, 2, 3.0)}, 60),
            lambda: q.record_page(ids[0], "w", "ocr", 1, {"t": 1}),
            lambda: q.finish(ids[0], "w", AttemptEnd("succeeded"), 0),
            lambda: q.get(ids[1]),
        ]
        for call in calls:
            assert terminate(postgres_spec.url, tag) == 1
            try:
                call()
            except QueueUnavailable:
                pass  # allowed once; the next call must work
            call()
        assert q.get(ids[0]).status == "succeeded"
        assert q.pages(ids[0]) == [("ocr", 1, {"t": 1})]
    finally:
        q.close()


def test_a_dropped_listen_connection_is_reopened(postgres_spec: QueueSpec) -> None:
    tag = f"dltest-{uuid.uuid4().hex[:8]}"
    q = PostgresQueue(tagged(postgres_spec.url, tag), schema=postgres_spec.schema, listen=True)
    other = postgres_spec.open()
    try:
        fd = q.wakeup_fileno()
        assert fd is not None
        assert terminate(postgres_spec.url, f"{tag}-listen") == 1
        assert readable(fd, 5)  # EOF: the caller's select() wakes up…
        q.consume_wakeups()     # …and this notices the loss instead of leaving the socket readable
        assert q.wakeup_fileno() is None
        assert any("LISTEN connection lost" in w for w in q.pop_warnings())
        deadline = time.monotonic() + 10
        while (fd := q.wakeup_fileno()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fd is not None
        other.submit([NewJob()])
        assert readable(fd, 5)
        q.consume_wakeups()
    finally:
        q.close()
        other.close()


def test_an_unreachable_server_raises_queue_unavailable() -> None:
    q = PostgresQueue("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=2)
    for call in (q.counts, q.check_schema, q.migrate, lambda: q.claim("w", 1, 60), lambda: q.submit([NewJob()])):
        with pytest.raises(QueueUnavailable, match="cannot connect"):
            call()
    assert q.wakeup_fileno() is None
    assert any("LISTEN unavailable" in w for w in q.pop_warnings())
    q.close()


def test_url_options_pass_through(postgres_spec: QueueSpec) -> None:
    require_postgres()
    with psycopg.connect(postgres_spec.url) as db:
        ssl = db.execute("SHOW ssl").fetchone()[0]
    url = f"{postgres_spec.url}{'&' if '?' in postgres_spec.url else '?'}sslmode=require"
    q = PostgresQueue(url, schema=postgres_spec.schema, listen=False)
    try:
        if ssl == "on":
            q.check_schema()
        else:  # the test server has no TLS: the refusal proves sslmode reached libpq
            with pytest.raises(QueueUnavailable, match="SSL"):
                q.counts()
    finally:
        q.close()
