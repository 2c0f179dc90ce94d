"""Queue back-ends for the tests, and the bodies of the processes the concurrency tests start.

Kept apart from the test modules (and free of pytest) so a process started with
`spawn` imports only this and the queue package: it starts fast, and it opens
its own connection the way a real second host would.
"""

from __future__ import annotations

import os
import sqlite3
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from docsuper.supervisor.queue.base import AttemptEnd, NewJob, Queue
from docsuper.supervisor.queue.postgres import PostgresQueue
from docsuper.supervisor.queue.sqlite import SQLiteQueue

POSTGRES_URL = os.environ.get("DOCSUPER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class QueueSpec:
    """Enough to open the same queue again in another process."""

    kind: str  # "sqlite" or "postgres"
    url: str
    schema: str = "docsuper"

    def open(self, listen: bool = False) -> Queue:
        if self.kind == "sqlite":
            return SQLiteQueue(self.url)
        return PostgresQueue(self.url, schema=self.schema, listen=listen)


def raw_sql(spec: QueueSpec, statement: str) -> list[tuple[Any, ...]]:
    """Run SQL straight on the backend's database, past the queue (to test the schema's own rules).

    `{t}` in the statement is the tables' prefix: the quoted schema on PostgreSQL, nothing on SQLite."""
    if spec.kind == "sqlite":
        db = sqlite3.connect(spec.url[len("sqlite:///"):], isolation_level=None)
        try:
            return db.execute(statement.replace("{t}", "")).fetchall()
        finally:
            db.close()
    with psycopg.connect(spec.url, autocommit=True) as conn:
        cur = conn.execute(statement.replace("{t}", f'"{spec.schema}".'))
        return cur.fetchall() if cur.description else []


def backdate(spec: QueueSpec, job_id: str, days: float) -> None:
    """Make a finished job look as if it finished `days` earlier (for retention)."""
    if spec.kind == "sqlite":
        raw_sql(spec, f"UPDATE jobs SET finished_at = finished_at - {days * 86400} WHERE id = '{job_id}'")
    else:
        raw_sql(spec, f"UPDATE {{t}}jobs SET finished_at = finished_at - interval '{days} days' WHERE id = '{job_id}'")


def postgres_problem(url: str = POSTGRES_URL) -> str | None:
    """None when the test server answers, else why not."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {url} is not available: {str(exc).strip()}"
    return None


def new_schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- process bodies (module level so `spawn` can find them) ----------------

def claim_until_empty(spec: QueueSpec, worker: str, batch: int, barrier: Any, results: Any) -> None:
    """Claim and finish jobs until none is left; report every id claimed."""
    claimed: list[str] = []
    try:
        with spec.open() as q:
            barrier.wait(timeout=60)
            empty_rounds = 0
            while empty_rounds < 3:
                jobs = q.claim(worker, batch, 60)
                if not jobs:
                    empty_rounds += 1
                    time.sleep(0.01)
                    continue
                empty_rounds = 0
                for job in jobs:
                    claimed.append(job.id)
                    q.finish(job.id, worker, AttemptEnd("succeeded"), 0)
        results.put((worker, claimed, None))
    except BaseException:  # noqa: BLE001 - reported to the test, which fails with it
        results.put((worker, claimed, traceback.format_exc()))


def submit_and_work(spec: QueueSpec, worker: str, rounds: int, per_round: int, barrier: Any, results: Any) -> None:
    """Open the queue, then submit, claim, heartbeat, store pages and finish, all at once with the others."""
    submitted: list[str] = []
    try:
        barrier.wait(timeout=60)
        with spec.open() as q:  # opening (and, on SQLite, migrating) races the others too
            for _ in range(rounds):
                submitted += q.submit([NewJob(passes=["noop"]) for _ in range(per_round)])
                jobs = q.claim(worker, per_round, 60)
                if jobs:
                    q.heartbeat(worker, {j.id: (0, 1, 10.0) for j in jobs}, 60)
                for job in jobs:
                    q.record_page(job.id, worker, "noop", 1, {"w": worker})
                    q.finish(job.id, worker, AttemptEnd("succeeded"), 0)
                q.counts()
                q.list_jobs(limit=5)
        results.put((worker, submitted, None))
    except BaseException:  # noqa: BLE001
        results.put((worker, submitted, traceback.format_exc()))


def submit_with_key(spec: QueueSpec, key: str, rounds: int, barrier: Any, results: Any) -> None:
    """Submit the same idempotency key `rounds` times, racing the other processes doing the same."""
    ids: list[str] = []
    try:
        with spec.open() as q:
            barrier.wait(timeout=60)
            for _ in range(rounds):
                ids += q.submit([NewJob(passes=["noop"], idempotency_key=key)])
        results.put((ids, None))
    except BaseException:  # noqa: BLE001
        results.put((ids, traceback.format_exc()))


def run_migrate(spec: QueueSpec, barrier: Any, results: Any) -> None:
    try:
        with spec.open() as q:
            barrier.wait(timeout=60)
            applied = q.migrate()
        results.put((applied, None))
    except BaseException:  # noqa: BLE001
        results.put((None, traceback.format_exc()))


def submit_after(spec: QueueSpec, delay_s: float) -> None:
    time.sleep(delay_s)
    with spec.open() as q:
        q.submit([NewJob(passes=["noop"])])
