"""The production queue: PostgreSQL (Supabase or any server), shared by many hosts.

Every table lives in one schema (`queue.schema`, default `docsuper`) so the queue
never collides with an application's tables and stays out of Supabase's Data API.
The schema is created and brought up to date only by `docsuper migrate`; opening
the queue never changes it (several hosts starting at once must not race on DDL).

Times are `timestamptz` set from the database clock (`now()`), so hosts whose
clocks disagree still agree on who holds a lease; the dataclasses carry them as
Unix-second floats like the SQLite backend.

Connections: one autocommit connection for all work, plus (when `listen` is on)
a second one that only LISTENs, so its socket can sit in the caller's select().
A dropped connection is replaced on the next call. Every public method either
succeeds or raises QueueError (QueueUnavailable when the server cannot be
reached), never a psycopg exception, so the supervisor can keep its children
running and try again later.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import fields
from typing import Any, Callable, Iterable, Sequence, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from .base import (
    JOB_STATES,
    NOT_COUNTED,
    OUTCOMES,
    Attempt,
    AttemptEnd,
    Job,
    JobNotFound,
    NewJob,
    Queue,
    QueueError,
    QueueUnavailable,
    SchemaOutdated,
    WorkerInfo,
    next_state,
)

T = TypeVar("T")

# The port Supabase (and most hosted PgBouncer set-ups) give the transaction-mode pooler.
TRANSACTION_POOLER_PORT = "6543"
# How long the LISTEN connection waits for its own test notification before deciding
# that notifications do not reach it (a transaction-mode pooler in the way).
LISTEN_PROBE_S = 2.0
# After LISTEN fails for a transient reason (server restarting), try again after
# 1 s, then 2, 4 … up to this: quick after a restart, quiet during a long outage.
LISTEN_RETRY_MAX_S = 30.0

_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,46}")

# Versioned migrations; `{s}` is the quoted schema name. Never edit one that has
# shipped: add a new one.
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_initial", """
CREATE TABLE {s}.jobs (
    -- 32 hex digits like the SQLite backend; "C" collation lets `LIKE 'prefix%'` use the key.
    id text COLLATE "C" PRIMARY KEY,
    status text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    source text,
    passes jsonb NOT NULL,
    options jsonb NOT NULL DEFAULT jsonb_build_object(),
    priority integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3,
    -- Number of the latest attempt row: `attempts` is reset by retry and not
    -- bumped by interrupted attempts, so it cannot number the rows.
    attempt_seq integer NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at timestamptz,
    progress_done integer,
    progress_total integer,
    last_outcome text,
    last_error text,
    peak_mb double precision,
    result jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    dead_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false
);
-- claim(): only queued rows are in it, so it stays small however many jobs have finished.
CREATE INDEX jobs_runnable ON {s}.jobs (priority DESC, run_at) WHERE status = 'queued';
-- reclaim_expired() and expired_leases().
CREATE INDEX jobs_leases ON {s}.jobs (lease_expires_at) WHERE status = 'running';
-- list_jobs(). The first leaves queued rows out on purpose: were they in it, the
-- planner could pick it for claim() (status = 'queued', then a sort) over jobs_runnable.
CREATE INDEX jobs_done ON {s}.jobs (status, created_at) WHERE status <> 'queued';
CREATE INDEX jobs_created ON {s}.jobs (created_at);
CREATE INDEX jobs_dead ON {s}.jobs (dead_at) WHERE status = 'dead';
CREATE TABLE {s}.attempts (
    job_id text COLLATE "C" NOT NULL REFERENCES {s}.jobs (id) ON DELETE CASCADE,
    number integer NOT NULL,
    worker text NOT NULL,
    started_at timestamptz NOT NULL,
    outcome text,
    counted boolean NOT NULL DEFAULT true,
    exit_code integer,
    signal integer,
    peak_mb double precision,
    peak_rss_mb double precision,
    ended_at timestamptz,
    duration_s double precision,
    last_page integer,
    error text,
    traceback text,
    PRIMARY KEY (job_id, number)
);
CREATE TABLE {s}.pages (
    job_id text COLLATE "C" NOT NULL REFERENCES {s}.jobs (id) ON DELETE CASCADE,
    pass text COLLATE "C" NOT NULL,
    page integer NOT NULL,
    result jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, pass, page)
);
CREATE TABLE {s}.workers (
    id text PRIMARY KEY,
    host text NOT NULL,
    pid integer NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    running integer NOT NULL DEFAULT 0
);
"""),
]

_JOB_TIMES = {"run_at", "lease_expires_at", "created_at", "started_at", "finished_at", "dead_at"}
_ATTEMPT_TIMES = {"started_at", "ended_at"}


def _select_list(cls: type, times: set[str], prefix: str = "") -> str:
    """Columns of a dataclass, timestamps turned into Unix seconds in the query itself."""
    return ", ".join(
        f"extract(epoch FROM {prefix}{f.name})::float8 AS {f.name}" if f.name in times else f"{prefix}{f.name}"
        for f in fields(cls)
    )


JOB_COLUMNS = _select_list(Job, _JOB_TIMES)
ATTEMPT_COLUMNS = _select_list(Attempt, _ATTEMPT_TIMES)
WORKER_COLUMNS = _select_list(WorkerInfo, {"started_at", "last_seen"})

# The one statement behind claim(): pick due queued jobs (skipping rows another
# claimer has locked, so hosts never wait on each other or get the same job),
# start them, and open their attempt rows. Kept here so the tests EXPLAIN exactly it.
CLAIM_SQL = """
WITH picked AS (
    SELECT id FROM {s}.jobs
    WHERE status = 'queued' AND run_at <= now()
    ORDER BY priority DESC, run_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {s}.jobs j
    SET status = 'running', attempts = j.attempts + 1, attempt_seq = j.attempt_seq + 1,
        lease_owner = %(worker)s, lease_expires_at = now() + make_interval(secs => %(lease)s),
        started_at = now(), finished_at = NULL, dead_at = NULL, cancel_requested = false
    FROM picked WHERE j.id = picked.id
    RETURNING j.*
), opened AS (
    INSERT INTO {s}.attempts (job_id, number, worker, started_at)
    SELECT id, attempt_seq, %(worker)s, now() FROM claimed
)
SELECT {job_columns} FROM claimed ORDER BY priority DESC, run_at
"""

# heartbeat() in one round trip whatever the number of jobs: the arrays become a
# table, the renewal touches only rows this worker still owns, and the outer
# select reports every id that was not renewed or that an operator cancelled.
HEARTBEAT_SQL = """
WITH beat AS (
    SELECT * FROM unnest(%(ids)s::text[], %(done)s::int[], %(total)s::int[], %(peak)s::float8[])
        AS b(id, done, total, peak)
), renewed AS (
    UPDATE {s}.jobs j
    SET lease_expires_at = now() + make_interval(secs => %(lease)s),
        progress_done = coalesce(b.done, j.progress_done),
        progress_total = coalesce(b.total, j.progress_total),
        peak_mb = greatest(j.peak_mb, b.peak)
    FROM beat b
    WHERE j.id = b.id AND j.lease_owner = %(worker)s AND j.status = 'running'
    RETURNING j.id, j.cancel_requested
)
SELECT b.id FROM beat b LEFT JOIN renewed r ON r.id = b.id
WHERE r.id IS NULL OR r.cancel_requested
"""


def _id_prefix(job_id: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F-]{4,36}", job_id or ""):
        raise JobNotFound(f"no job {job_id!r}: a job id is 4 to 32 hex digits")
    return job_id.replace("-", "").lower()


def _lock_key(schema: str) -> int:
    """A stable 64-bit advisory-lock key per schema, so two queues in one database do not block each other."""
    return int.from_bytes(hashlib.sha256(f"docsuper.migrate:{schema}".encode()).digest()[:8], "big", signed=True)


def _redacted(conninfo: str) -> str:
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "<unparseable URL>"
    return f"{params.get('host', 'localhost')}:{params.get('port', '5432')}/{params.get('dbname', '')}"


class PostgresQueue(Queue):
    def __init__(self, url: str, schema: str = "docsuper", listen: bool = True,
                 connect_timeout_s: float = 10.0) -> None:
        if not _SCHEMA_RE.fullmatch(schema):
            raise QueueError(f"queue.schema: {schema!r} must be lower-case letters, digits and _ (at most 47)")
        self.url = url
        self.schema = schema
        self.channel = f"{schema}_jobs"
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise QueueError(f"queue.url: not a valid PostgreSQL URL: {exc}") from None
        behind_pooler = str(params.get("port", "")) == TRANSACTION_POOLER_PORT
        # URL settings win; these only fill gaps. Keepalives notice a dead server or
        # a silently dropped NAT mapping in about a minute instead of hours.
        defaults = {"connect_timeout": str(max(1, int(connect_timeout_s))), "application_name": "docsuper",
                    "keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10",
                    "keepalives_count": "3"}
        if psycopg.pq.version() >= 120000:
            # Keepalives only probe an idle socket; a request sent into a dead link
            # would otherwise wait out TCP retransmission (~15 min) with the loop stuck.
            defaults["tcp_user_timeout"] = "60000"
        self._conn_kwargs = {k: v for k, v in defaults.items() if k not in params}
        self._listen_name = f"{params.get('application_name', 'docsuper')}-listen"
        self._listen = listen and not behind_pooler
        # A transaction-mode pooler hands each transaction to any server connection,
        # where psycopg's server-side prepared statements do not exist: turn them off.
        self._prepare_threshold: int | None = 5 if self._listen else None
        self._warnings: list[str] = []
        if listen and behind_pooler:
            self._warnings.append(
                f"queue.url uses port {TRANSACTION_POOLER_PORT} (a transaction-mode pooler): LISTEN/NOTIFY cannot work "
                "there, so idle workers poll every queue.poll_interval_s; use the session pooler or the direct "
                "connection (port 5432) for instant wake-ups, or set queue.listen = false to silence this")
        self._conn: psycopg.Connection[Any] | None = None
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_retry_at = 0.0
        self._listen_backoff_s = 1.0
        self._s = f'"{schema}"'
        self._claim_sql = CLAIM_SQL.format(s=self._s, job_columns=JOB_COLUMNS)
        self._heartbeat_sql = HEARTBEAT_SQL.format(s=self._s)

    # -- connections -----------------------------------------------------
    def _connect(self, **extra: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.url, autocommit=True, prepare_threshold=self._prepare_threshold,
                                   **{**self._conn_kwargs, **extra})
        except psycopg.Error as exc:
            raise QueueUnavailable(f"cannot connect to PostgreSQL at {_redacted(self.url)}: "
                                   f"{str(exc).strip() or type(exc).__name__}") from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._drop()
            self._conn = self._connect()
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close; it is gone either way
                pass

    def _sql(self, text: str) -> str:
        return text.format(s=self._s)

    def _run(self, fn: Callable[[psycopg.Cursor[Any]], T], verify: Callable[[psycopg.Cursor[Any]], T] | None = None) -> T:
        """Run `fn` in one transaction, reconnecting once when the connection turns out to be dead.

        A transaction that breaks before COMMIT is sent was rolled back by the server,
        so it is safe to run again on a fresh connection. A break during COMMIT is
        ambiguous: `verify` (when given) looks on a fresh connection whether the change
        was stored and returns what `fn` would have; otherwise QueueUnavailable says so.
        """
        for attempt in range(3):
            conn = self._connection()
            committing = False
            try:
                with conn.transaction():
                    with conn.cursor(row_factory=dict_row) as cur:
                        result = fn(cur)
                    committing = True
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                # Two hosts locked the same rows in opposite orders; the server rolled
                # one back, and running it again is the documented cure.
                if attempt == 2:
                    raise QueueUnavailable("the queue stayed busy (deadlock); try again") from None
                continue
            except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName, pg_errors.UndefinedColumn):
                raise SchemaOutdated(self._outdated_message()) from None
            except (pg_errors.InvalidSqlStatementName, pg_errors.DuplicatePreparedStatement):
                # Prepared statements vanish behind a transaction-mode pooler (PgBouncer,
                # Supavisor): stop preparing and run the statement again.
                self._prepare_threshold = None
                conn.prepare_threshold = None
                if attempt == 2:
                    raise QueueError("prepared statements keep failing: is a pooler in the way?") from None
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if not (conn.closed or conn.broken):
                    raise QueueError(f"PostgreSQL: {str(exc).strip()}") from None
                self._drop()
                if committing:
                    if verify is not None:
                        try:
                            return self._run(verify)
                        except QueueUnavailable:
                            pass
                    raise QueueUnavailable(f"connection lost while committing; the change may not be stored: "
                                           f"{str(exc).strip()}") from None
                if attempt >= 1:
                    raise QueueUnavailable(f"lost the connection to PostgreSQL: {str(exc).strip()}") from None
            except QueueError:
                raise
            except psycopg.Error as exc:
                raise QueueError(f"PostgreSQL: {str(exc).strip()}") from None
        raise QueueUnavailable("lost the connection to PostgreSQL")  # pragma: no cover - the loop returns or raises

    def _outdated_message(self) -> str:
        return (f"the queue's tables are missing or out of date in schema {self.schema!r} of "
                f"{_redacted(self.url)}: run `docsuper migrate`")

    def _notify(self, cur: psycopg.Cursor[Any]) -> None:
        # Delivered when the transaction commits, and only then: a worker woken by it
        # always finds the job claimable.
        cur.execute("SELECT pg_notify(%s, '')", (self.channel,))

    # -- schema --------------------------------------------------------
    def migrate(self) -> list[str]:
        def apply(cur: psycopg.Cursor[Any]) -> list[str]:
            # Serialises concurrent `docsuper migrate` runs (several hosts deploying at
            # once): the second waits here, then finds everything applied.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(self.schema),))
            cur.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            cur.execute(self._sql("CREATE TABLE IF NOT EXISTS {s}.schema_migrations "
                                  "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"))
            cur.execute(self._sql("SELECT name FROM {s}.schema_migrations"))
            done = {r["name"] for r in cur.fetchall()}
            applied = []
            for name, ddl in MIGRATIONS:
                if name in done:
                    continue
                cur.execute(self._sql(ddl))
                cur.execute(self._sql("INSERT INTO {s}.schema_migrations (name) VALUES (%s)"), (name,))
                applied.append(name)
            return applied

        return self._run(apply)

    def check_schema(self) -> None:
        def missing(cur: psycopg.Cursor[Any]) -> list[str]:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (f"{self._s}.schema_migrations",))
            if not cur.fetchone()["present"]:
                return [name for name, _ in MIGRATIONS]
            cur.execute(self._sql("SELECT name FROM {s}.schema_migrations"))
            done = {r["name"] for r in cur.fetchall()}
            return [name for name, _ in MIGRATIONS if name not in done]

        pending = self._run(missing)
        if pending:
            raise SchemaOutdated(f"the queue's schema {self.schema!r} in {_redacted(self.url)} is out of date "
                                 f"({', '.join(pending)} missing): run `docsuper migrate`")

    # -- producers and operators -----------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        ids = [uuid.uuid4().hex for _ in jobs]

        def insert(cur: psycopg.Cursor[Any]) -> list[str]:
            # One statement for the whole batch: arrays in, one row per element out.
            cur.execute(self._sql(
                "INSERT INTO {s}.jobs (id, source, passes, options, priority, run_at, max_attempts)"
                " SELECT id, source, passes::jsonb, options::jsonb, priority,"
                "        coalesce(to_timestamp(run_at), now()), max_attempts"
                " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::float8[], %s::int[])"
                "   AS n(id, source, passes, options, priority, run_at, max_attempts)"),
                (ids, [j.source for j in jobs], [json.dumps(j.passes) for j in jobs],
                 [json.dumps(j.options) for j in jobs], [j.priority for j in jobs],
                 [j.run_at for j in jobs], [j.max_attempts for j in jobs]))
            self._notify(cur)
            return ids

        # A break during COMMIT: the ids were made here, so a look tells whether they landed.
        def landed(cur: psycopg.Cursor[Any]) -> list[str]:
            cur.execute(self._sql("SELECT count(*) AS n FROM {s}.jobs WHERE id = ANY(%s)"), (ids,))
            if cur.fetchone()["n"] != len(ids):
                raise QueueUnavailable("connection lost while submitting: the jobs were not stored")
            return ids

        return self._run(insert, verify=landed)

    def _resolve(self, cur: psycopg.Cursor[Any], job_id: str) -> str:
        prefix = _id_prefix(job_id)
        cur.execute(self._sql("SELECT id FROM {s}.jobs WHERE id LIKE %s ORDER BY id LIMIT 2"), (prefix + "%",))
        rows = cur.fetchall()
        if not rows:
            raise JobNotFound(f"no job {job_id!r}")
        if len(rows) > 1:
            raise JobNotFound(f"job id prefix {job_id!r} is ambiguous: give more digits")
        return rows[0]["id"]

    def _job(self, cur: psycopg.Cursor[Any], full_id: str) -> Job:
        cur.execute(self._sql(f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs WHERE id = %s"), (full_id,))
        return Job(**cur.fetchone())

    def get(self, job_id: str) -> Job:
        return self._run(lambda cur: self._job(cur, self._resolve(cur, job_id)))

    def attempts(self, job_id: str) -> list[Attempt]:
        def read(cur: psycopg.Cursor[Any]) -> list[Attempt]:
            full = self._resolve(cur, job_id)
            cur.execute(self._sql(f"SELECT {ATTEMPT_COLUMNS} FROM {{s}}.attempts WHERE job_id = %s ORDER BY number"),
                        (full,))
            return [Attempt(**r) for r in cur.fetchall()]

        return self._run(read)

    def pages(self, job_id: str, pass_name: str | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        def read(cur: psycopg.Cursor[Any]) -> list[tuple[str, int, dict[str, Any]]]:
            full = self._resolve(cur, job_id)
            cur.execute(self._sql(
                "SELECT pass, page, result FROM {s}.pages WHERE job_id = %s AND (%s::text IS NULL OR pass = %s)"
                " ORDER BY pass, page"), (full, pass_name, pass_name))
            return [(r["pass"], r["page"], r["result"]) for r in cur.fetchall()]

        return self._run(read)

    def counts(self) -> dict[str, int]:
        def read(cur: psycopg.Cursor[Any]) -> dict[str, int]:
            cur.execute(self._sql("SELECT status, count(*) AS n FROM {s}.jobs GROUP BY status"))
            counts = dict.fromkeys(JOB_STATES, 0)
            counts.update({r["status"]: r["n"] for r in cur.fetchall()})
            return counts

        return self._run(read)

    def list_jobs(self, status: str | None = None, limit: int = 50) -> list[Job]:
        order = "dead_at DESC NULLS LAST" if status == "dead" else "created_at DESC"

        # The status test is left out rather than made optional in SQL, so the plan
        # (even a generic one for a prepared statement) can use the partial indexes.
        where = "WHERE status = %s" if status is not None else ""
        params = (status, limit) if status is not None else (limit,)

        def read(cur: psycopg.Cursor[Any]) -> list[Job]:
            cur.execute(self._sql(f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs {where} ORDER BY {order} LIMIT %s"), params)
            return [Job(**r) for r in cur.fetchall()]

        return self._run(read)

    def expired_leases(self) -> list[Job]:
        def read(cur: psycopg.Cursor[Any]) -> list[Job]:
            cur.execute(self._sql(f"SELECT {JOB_COLUMNS} FROM {{s}}.jobs"
                                  " WHERE status = 'running' AND lease_expires_at < now() ORDER BY lease_expires_at"))
            return [Job(**r) for r in cur.fetchall()]

        return self._run(read)

    def has_queued(self) -> bool:
        def read(cur: psycopg.Cursor[Any]) -> bool:
            cur.execute(self._sql("SELECT EXISTS (SELECT 1 FROM {s}.jobs WHERE status = 'queued') AS any"))
            return bool(cur.fetchone()["any"])

        return self._run(read)

    def retry(self, job_ids: Iterable[str] | None) -> list[str]:
        given = None if job_ids is None else list(job_ids)

        def requeue(cur: psycopg.Cursor[Any]) -> list[str]:
            if given is None:
                cur.execute(self._sql("SELECT id FROM {s}.jobs WHERE status = 'dead' ORDER BY id FOR UPDATE"))
                ids = [r["id"] for r in cur.fetchall()]
            else:
                ids = []
                for job_id in given:
                    full = self._resolve(cur, job_id)
                    cur.execute(self._sql("SELECT status FROM {s}.jobs WHERE id = %s FOR UPDATE"), (full,))
                    status = cur.fetchone()["status"]
                    if status not in ("dead", "cancelled"):
                        raise QueueError(f"job {full} is {status}: only dead or cancelled jobs can be retried")
                    ids.append(full)
            if ids:
                cur.execute(self._sql(
                    "UPDATE {s}.jobs SET status = 'queued', attempts = 0, run_at = now(), dead_at = NULL,"
                    " finished_at = NULL, cancel_requested = false WHERE id = ANY(%s)"), (ids,))
                self._notify(cur)
            return ids

        return self._run(requeue)

    def cancel(self, job_id: str) -> str:
        def stop(cur: psycopg.Cursor[Any]) -> str:
            full = self._resolve(cur, job_id)
            cur.execute(self._sql("SELECT status FROM {s}.jobs WHERE id = %s FOR UPDATE"), (full,))
            status = cur.fetchone()["status"]
            if status == "queued":
                cur.execute(self._sql("UPDATE {s}.jobs SET status = 'cancelled', finished_at = now() WHERE id = %s"),
                            (full,))
                return "cancelled"
            if status == "running":
                cur.execute(self._sql("UPDATE {s}.jobs SET cancel_requested = true WHERE id = %s"), (full,))
                return "running"
            raise QueueError(f"job {full} is already {status}")

        return self._run(stop)

    # -- workers ---------------------------------------------------------
    def claim(self, worker_id: str, limit: int, lease_s: float) -> list[Job]:
        if limit <= 0:
            return []

        def take(cur: psycopg.Cursor[Any]) -> list[Job]:
            cur.execute(self._claim_sql, {"limit": limit, "worker": worker_id, "lease": float(lease_s)})
            return [Job(**r) for r in cur.fetchall()]

        return self._run(take)

    def claim_one(self, job_id: str, worker_id: str, lease_s: float) -> Job:
        def take(cur: psycopg.Cursor[Any]) -> Job:
            full = self._resolve(cur, job_id)
            cur.execute(self._sql(
                "SELECT status, lease_owner, extract(epoch FROM lease_expires_at - now())::float8 AS left_s"
                " FROM {s}.jobs WHERE id = %s FOR UPDATE"), (full,))
            row = cur.fetchone()
            if row["status"] == "running" and row["left_s"] is not None and row["left_s"] >= 0:
                raise QueueError(f"job {full} is running on {row['lease_owner']} (lease valid for "
                                 f"{row['left_s']:.0f} s more)")
            if row["status"] == "running":
                self._close_attempt(cur, full, AttemptEnd("lost", error="lease expired: its worker stopped renewing it"),
                                    0.0)
            cur.execute(self._sql(
                "UPDATE {s}.jobs SET status = 'running', attempts = attempts + 1, attempt_seq = attempt_seq + 1,"
                " lease_owner = %s, lease_expires_at = now() + make_interval(secs => %s), started_at = now(),"
                " finished_at = NULL, dead_at = NULL, cancel_requested = false WHERE id = %s"
                " RETURNING attempt_seq"), (worker_id, float(lease_s), full))
            number = cur.fetchone()["attempt_seq"]
            cur.execute(self._sql("INSERT INTO {s}.attempts (job_id, number, worker, started_at)"
                                  " VALUES (%s, %s, %s, now())"), (full, number, worker_id))
            return self._job(cur, full)

        return self._run(take)

    def heartbeat(self, worker_id: str, progress: dict[str, tuple[int | None, int | None, float | None]],
                  lease_s: float) -> set[str]:
        if not progress:
            return set()
        ids = list(progress)
        params = {"ids": ids, "done": [progress[i][0] for i in ids], "total": [progress[i][1] for i in ids],
                  "peak": [progress[i][2] for i in ids], "worker": worker_id, "lease": float(lease_s)}

        def beat(cur: psycopg.Cursor[Any]) -> set[str]:
            cur.execute(self._heartbeat_sql, params)
            return {r["id"] for r in cur.fetchall()}

        return self._run(beat)

    def record_page(self, job_id: str, worker_id: str, pass_name: str, page: int, result: dict[str, Any]) -> bool:
        def store(cur: psycopg.Cursor[Any]) -> bool:
            # FOR SHARE holds off a concurrent reclaim or finish until the page is in,
            # so a page is only ever stored under a live lease.
            cur.execute(self._sql(
                "INSERT INTO {s}.pages (job_id, pass, page, result)"
                " SELECT id, %s, %s, %s FROM {s}.jobs"
                "  WHERE id = %s AND lease_owner = %s AND status = 'running' FOR SHARE"
                " ON CONFLICT (job_id, pass, page) DO UPDATE SET result = excluded.result, stored_at = now()"),
                (pass_name, page, Jsonb(result), job_id, worker_id))
            return cur.rowcount > 0

        return self._run(store)

    def _close_attempt(self, cur: psycopg.Cursor[Any], job_id: str, end: AttemptEnd, retry_delay_s: float) -> str:
        """Close the job's open attempt with `end` and move the job on; the row must be locked."""
        cur.execute(self._sql("SELECT attempts, max_attempts, attempt_seq FROM {s}.jobs WHERE id = %s"), (job_id,))
        job = cur.fetchone()
        counted = end.outcome not in NOT_COUNTED
        attempts = job["attempts"] if counted else job["attempts"] - 1
        state = next_state(end.outcome, attempts, job["max_attempts"])
        cur.execute(self._sql(
            "UPDATE {s}.attempts SET outcome = %s, counted = %s, exit_code = %s, signal = %s, peak_mb = %s,"
            " peak_rss_mb = %s, ended_at = now(), duration_s = extract(epoch FROM now() - started_at)::float8,"
            " last_page = %s, error = %s, traceback = %s WHERE job_id = %s AND number = %s"),
            (end.outcome, counted, end.exit_code, end.signal, end.peak_mb, end.peak_rss_mb, end.last_page,
             end.error, end.traceback, job_id, job["attempt_seq"]))
        terminal = state in ("succeeded", "dead", "cancelled")
        cur.execute(self._sql(
            "UPDATE {s}.jobs SET status = %(state)s, attempts = %(attempts)s, lease_owner = NULL,"
            " lease_expires_at = NULL, last_outcome = %(outcome)s,"
            " last_error = CASE WHEN %(outcome)s = 'succeeded' THEN last_error ELSE %(error)s END,"
            " peak_mb = greatest(peak_mb, %(peak)s::float8), result = coalesce(%(result)s, result),"
            " run_at = now() + make_interval(secs => %(delay)s),"
            " finished_at = CASE WHEN %(terminal)s THEN now() END,"
            " dead_at = CASE WHEN %(state)s = 'dead' THEN now() END, cancel_requested = false"
            " WHERE id = %(id)s"),
            {"state": state, "attempts": attempts, "outcome": end.outcome, "error": end.error, "peak": end.peak_mb,
             "result": Jsonb(end.result) if end.result is not None else None,
             "delay": float(retry_delay_s) if counted else 0.0, "terminal": terminal, "id": job_id})
        if state == "queued":
            self._notify(cur)
        return state

    def finish(self, job_id: str, worker_id: str, end: AttemptEnd, retry_delay_s: float) -> str | None:
        if end.outcome not in OUTCOMES:
            raise QueueError(f"unknown outcome {end.outcome!r}")
        closed: dict[str, Any] = {}

        def close(cur: psycopg.Cursor[Any]) -> str | None:
            # The lock makes the lease check and the update one step: a reclaim on
            # another host either happens before (and we see the lease gone) or waits.
            cur.execute(self._sql("SELECT attempt_seq FROM {s}.jobs"
                                  " WHERE id = %s AND lease_owner = %s AND status = 'running' FOR UPDATE"),
                        (job_id, worker_id))
            row = cur.fetchone()
            if row is None:
                return None
            closed["number"] = row["attempt_seq"]
            closed["state"] = self._close_attempt(cur, job_id, end, retry_delay_s)
            return closed["state"]

        def stored(cur: psycopg.Cursor[Any]) -> str | None:
            # COMMIT broke: the attempt row says whether it went through.
            cur.execute(self._sql("SELECT outcome FROM {s}.attempts WHERE job_id = %s AND number = %s AND worker = %s"),
                        (job_id, closed.get("number"), worker_id))
            row = cur.fetchone()
            if row is None or row["outcome"] != end.outcome:
                raise QueueUnavailable("connection lost while finishing the job: not stored yet")
            return closed["state"]

        return self._run(close, verify=stored)

    def reclaim_expired(self, retry_delay_s: float) -> list[str]:
        def reclaim(cur: psycopg.Cursor[Any]) -> list[str]:
            # SKIP LOCKED: a row locked right now is being finished or renewed by its
            # owner, so it is not abandoned; and two hosts reclaiming at once split the work.
            cur.execute(self._sql("SELECT id, lease_owner FROM {s}.jobs"
                                  " WHERE status = 'running' AND lease_expires_at < now()"
                                  " ORDER BY id FOR UPDATE SKIP LOCKED"))
            rows = cur.fetchall()
            for row in rows:
                self._close_attempt(cur, row["id"], AttemptEnd(
                    "lost", error=f"lease expired: worker {row['lease_owner']} stopped renewing it"), retry_delay_s)
            return [r["id"] for r in rows]

        return self._run(reclaim)

    def register_worker(self, info: WorkerInfo) -> None:
        def upsert(cur: psycopg.Cursor[Any]) -> None:
            cur.execute(self._sql(
                "INSERT INTO {s}.workers (id, host, pid, version, started_at, last_seen, running)"
                " VALUES (%s, %s, %s, %s, to_timestamp(%s), to_timestamp(%s), %s)"
                " ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                " version = excluded.version, started_at = excluded.started_at, last_seen = excluded.last_seen,"
                " running = excluded.running"),
                (info.id, info.host, info.pid, info.version, info.started_at, info.last_seen, info.running))

        self._run(upsert)

    def worker_seen(self, worker_id: str, running: int) -> None:
        self._run(lambda cur: cur.execute(
            self._sql("UPDATE {s}.workers SET last_seen = now(), running = %s WHERE id = %s"), (running, worker_id)))

    def unregister_worker(self, worker_id: str) -> None:
        self._run(lambda cur: cur.execute(self._sql("DELETE FROM {s}.workers WHERE id = %s"), (worker_id,)))

    def workers(self) -> list[WorkerInfo]:
        def read(cur: psycopg.Cursor[Any]) -> list[WorkerInfo]:
            cur.execute(self._sql(f"SELECT {WORKER_COLUMNS} FROM {{s}}.workers ORDER BY started_at, id"))
            return [WorkerInfo(**r) for r in cur.fetchall()]

        return self._run(read)

    # -- waiting ---------------------------------------------------------
    def wakeup_fileno(self) -> int | None:
        if not self._listen:
            return None
        if self._listener is not None and (self._listener.closed or self._listener.broken):
            self._close_listener()
        if self._listener is None:
            if time.monotonic() < self._listen_retry_at:
                return None
            self._start_listening()
            if self._listener is None:
                return None
        return self._listener.fileno()

    def _start_listening(self) -> None:
        """Open the LISTEN connection and prove that a notification reaches it.

        The proof matters: behind a transaction-mode pooler LISTEN succeeds but the
        notifications go to whichever client holds the server connection next, so
        without it workers would wait for wake-ups that never come."""
        probe = f"{self.schema}_probe_{uuid.uuid4().hex[:12]}"
        try:
            listener = self._connect(application_name=self._listen_name)
        except QueueUnavailable as exc:
            self._listen_later()
            self._warnings.append(f"LISTEN unavailable, polling for now: {exc}")
            return
        try:
            listener.execute(f'LISTEN "{self.channel}"')
            listener.execute(f'LISTEN "{probe}"')
            self._run(lambda cur: cur.execute("SELECT pg_notify(%s, 'probe')", (probe,)))
            arrived = False
            deadline = time.monotonic() + LISTEN_PROBE_S
            while not arrived and (left := deadline - time.monotonic()) > 0:
                # A job notification may come first; only the probe proves delivery.
                for note in listener.notifies(timeout=left, stop_after=1):
                    arrived = note.channel == probe
            listener.execute(f'UNLISTEN "{probe}"')
        except (psycopg.Error, QueueError) as exc:
            listener.close()
            self._listen_later()
            self._warnings.append(f"LISTEN failed, polling for now: {str(exc).strip()}")
            return
        if not arrived:
            listener.close()
            self._listen = False
            self._prepare_threshold = None
            if self._conn is not None:
                self._conn.prepare_threshold = None
            self._warnings.append(
                "LISTEN/NOTIFY does not work on this connection (a transaction-mode pooler?): falling back to "
                "polling every queue.poll_interval_s; use the direct connection or the session pooler for "
                "instant wake-ups, or set queue.listen = false")
            return
        self._listener = listener
        self._listen_backoff_s = 1.0

    def _listen_later(self) -> None:
        self._listen_retry_at = time.monotonic() + self._listen_backoff_s
        self._listen_backoff_s = min(self._listen_backoff_s * 2, LISTEN_RETRY_MAX_S)

    def consume_wakeups(self) -> None:
        listener = self._listener
        if listener is None:
            return
        try:
            if not sum(1 for _ in listener.notifies(timeout=0)):
                # Readable with no notification: usually the server closed the
                # connection (restart, pg_terminate_backend) and the socket is at EOF.
                # psycopg only notices on a round trip; without one the socket stays
                # readable and the caller's select() would spin.
                listener.execute("SELECT 1")
        except psycopg.Error as exc:
            # The socket turned readable because the connection died (server restart):
            # drop it so select() stops firing, and LISTEN again after a pause.
            self._close_listener()
            self._listen_later()
            self._warnings.append(f"LISTEN connection lost, listening again shortly: {str(exc).strip()}")

    def pop_warnings(self) -> list[str]:
        warnings, self._warnings = self._warnings, []
        return warnings

    def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass

    def close(self) -> None:
        self._drop()
        self._close_listener()
