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
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import queries
from .base import Job, NewJob
from .errors import InvalidJob, QueueError, QueueUnavailable, SchemaOutdated
from .rules import FINAL_STATES
from .sqlqueue import SQLQueue, Tx

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

def _lock_key(schema: str) -> int:
    """A stable 64-bit advisory-lock key per schema, so two queues in one database do not block each other."""
    return int.from_bytes(hashlib.sha256(f"docsuper.migrate:{schema}".encode()).digest()[:8], "big", signed=True)


def _done_id(payload: str) -> str | None:
    try:
        value = json.loads(payload).get("id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _redacted(conninfo: str) -> str:
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "<unparseable URL>"
    return f"{params.get('host', 'localhost')}:{params.get('port', '5432')}/{params.get('dbname', '')}"


class _PostgresTx:
    def __init__(self, cur: psycopg.Cursor[Any], statements: dict[str, str]) -> None:
        self._cur = cur
        self._statements = statements

    def all(self, name: str, /, **params: Any) -> list[dict[str, Any]]:
        self._cur.execute(self._statements[name], params)
        return self._cur.fetchall() if self._cur.description else []

    def one(self, name: str, /, **params: Any) -> dict[str, Any] | None:
        self._cur.execute(self._statements[name], params)
        return self._cur.fetchone() if self._cur.description else None

    def run(self, name: str, /, **params: Any) -> int:
        self._cur.execute(self._statements[name], params)
        return self._cur.rowcount

    def many(self, name: str, /, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self._cur.executemany(self._statements[name], rows)

    def script(self, text: str) -> None:
        """Several statements at once (a migration); sent without parameters, so `%` is plain text."""
        self._cur.execute(text)


class PostgresQueue(SQLQueue):
    opens_attempts_in_claim = True

    def __init__(self, url: str, schema: str = "docsuper", listen: bool = True,
                 connect_timeout_s: float = 10.0) -> None:
        if not _SCHEMA_RE.fullmatch(schema):
            raise QueueError(f"queue.schema: {schema!r} must be lower-case letters, digits and _ (at most 47)")
        self.url = url
        self.schema = schema
        self.channel = f"{schema}_jobs"
        self.done_channel = f"{schema}_done"  # {"id": …, "status": …} when a job becomes final
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
        quoted = f'"{schema}"'  # safe: _SCHEMA_RE allows no quote
        self._statements = queries.load("postgres.sql", s=quoted)
        self._migrations = queries.migrations("postgres", s=quoted, schema=schema)

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

    def statement(self, name: str) -> str:
        """The text of one named statement for this schema (the tests EXPLAIN claim_jobs)."""
        return self._statements[name]

    def _transaction(self, fn: Callable[[Tx], T], verify: Callable[[Tx], T] | None = None,
                     write: bool = True) -> T:
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
                        result = fn(_PostgresTx(cur, self._statements))
                    committing = True
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                # Two hosts locked the same rows in opposite orders; the server rolled
                # one back, and running it again is the documented cure.
                if attempt == 2:
                    raise QueueUnavailable("the queue stayed busy (deadlock); try again") from None
                continue
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
                    return self._after_broken_commit(verify, exc)
                if attempt >= 1:
                    raise QueueUnavailable(f"lost the connection to PostgreSQL: {str(exc).strip()}") from None
            except QueueError:
                raise
            except psycopg.Error as exc:
                raise self._refusal(exc) from None
        raise QueueUnavailable("lost the connection to PostgreSQL")  # pragma: no cover - the loop returns or raises

    def _after_broken_commit(self, verify: Callable[[Tx], T] | None, exc: psycopg.Error) -> T:
        if verify is not None:
            try:
                return self._transaction(verify)
            except QueueUnavailable:
                pass
        raise QueueUnavailable(f"connection lost while committing; the change may not be stored: "
                               f"{str(exc).strip()}") from None

    def _refusal(self, exc: psycopg.Error) -> QueueError:
        """What a statement the server refused means to the caller."""
        if isinstance(exc, (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName, pg_errors.UndefinedColumn,
                            pg_errors.UndefinedFunction)):
            return SchemaOutdated(self._outdated_message())
        if isinstance(exc, pg_errors.InvalidParameterValue):
            # enqueue() refusing its arguments: its message is written for a person.
            return InvalidJob(exc.diag.message_primary or str(exc).strip())
        return QueueError(f"PostgreSQL: {str(exc).strip()}")

    def _outdated_message(self) -> str:
        return (f"the queue's tables are missing or out of date in schema {self.schema!r} of "
                f"{_redacted(self.url)}: run `docsuper migrate`")

    def _wake(self, tx: Tx) -> None:
        tx.run("notify", channel=self.channel)

    def _enqueue(self, tx: Tx, jobs: Sequence[NewJob]) -> list[str]:
        batch = [{"source": j.source, "passes": list(j.passes), "options": j.options, "priority": j.priority,
                  "idempotency_key": j.idempotency_key, "max_attempts": j.max_attempts, "run_at": j.run_at}
                 for j in jobs]
        return [r["id"] for r in tx.all("enqueue_batch", jobs=Jsonb(batch))]

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.5) -> Job:
        """Block until the job is final, woken by the completion NOTIFY (and looking again every
        few seconds anyway, in case a pooler swallows notifications)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        listener = self._connect(application_name=self._listen_name)
        try:
            listener.execute(self._on_channel("listen", self.done_channel))
            while True:
                job = self.get(job_id)  # after LISTEN: a completion from now on cannot be missed
                if job.status in FINAL_STATES:
                    return job
                left = 5.0 if deadline is None else min(5.0, deadline - time.monotonic())
                if left <= 0:
                    raise TimeoutError(f"job {job.id} is still {job.status} after {timeout_s:g} s")
                for note in listener.notifies(timeout=left):
                    if _done_id(note.payload) == job.id:
                        break
        except psycopg.Error as exc:
            raise QueueUnavailable(f"lost the connection to PostgreSQL while waiting: {str(exc).strip()}") from None
        finally:
            listener.close()

    def _decode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        # jsonb arrives as Python values already; timestamptz as datetime.
        return {k: v.timestamp() if isinstance(v, datetime) else v for k, v in row.items()}

    def _json(self, value: Any) -> Any:
        return Jsonb(value)

    def _ids(self, ids: Sequence[str]) -> Any:
        return list(ids)

    # -- schema --------------------------------------------------------
    def migrate(self) -> list[str]:
        def apply(tx: Tx) -> list[str]:
            tx.run("lock_migrations", key=_lock_key(self.schema))
            tx.run("create_schema")
            tx.run("create_migrations_table")
            done = {r["name"] for r in tx.all("applied_migrations")}
            applied = []
            for name, script in self._migrations:
                if name not in done:
                    assert isinstance(tx, _PostgresTx)
                    tx.script(script)
                    tx.run("record_migration", name=name)
                    applied.append(name)
            self._register_installed_passes(tx)
            return applied

        return self._transaction(apply)

    def check_schema(self) -> None:
        def missing(tx: Tx) -> list[str]:
            present = tx.one("migrations_table_exists")
            done = {r["name"] for r in tx.all("applied_migrations")} if present and present["present"] else set()
            return [name for name, _ in self._migrations if name not in done]

        pending = self._transaction(missing, write=False)
        if pending:
            raise SchemaOutdated(f"the queue's schema {self.schema!r} in {_redacted(self.url)} is out of date "
                                 f"({', '.join(pending)} missing): run `docsuper migrate`")

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
            listener.execute(self._on_channel("listen", self.channel))
            listener.execute(self._on_channel("listen", probe))
            self._transaction(lambda tx: tx.run("notify_probe", channel=probe))
            arrived = False
            deadline = time.monotonic() + LISTEN_PROBE_S
            while not arrived and (left := deadline - time.monotonic()) > 0:
                # A job notification may come first; only the probe proves delivery.
                for note in listener.notifies(timeout=left, stop_after=1):
                    arrived = note.channel == probe
            listener.execute(self._on_channel("unlisten", probe))
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

    def _on_channel(self, name: str, channel: str) -> sql.Composed:
        return sql.SQL(self._statements[name]).format(channel=sql.Identifier(channel))

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
                listener.execute(self._statements["ping"])
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
