"""The embedded queue: one SQLite file, nothing to set up.

Several processes (`run`, `submit`, `status`) share the file. WAL lets readers
run beside the one writer, and every write transaction starts with
`BEGIN IMMEDIATE`: a deferred transaction that reads first and then writes cannot
wait for the lock (SQLite refuses the upgrade with "database is locked" at once),
while an immediate one waits in the busy handler like any other writer. Holding
the one write lock is this backend's row locking: its `lock_*` statements are
plain reads. The statements are in `sqlite.sql`, the rules in `rules.py`.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

from . import queries, rules
from .base import NewJob
from .errors import QueueError, QueueUnavailable, SchemaOutdated
from .sqlqueue import SQLQueue, Tx

T = TypeVar("T")

# Also in sqlite.sql's busy_timeout (milliseconds there).
BUSY_TIMEOUT_S = 60.0
# UPDATE … FROM (3.33) and RETURNING (3.35).
MIN_SQLITE = (3, 35, 0)
# Below this much free space a "disk I/O error" is taken for a full disk (SQLite says so when it
# cannot grow its -shm or -wal file, where a full main file gives "database or disk is full").
FULL_BELOW_BYTES = 1 << 20

STATEMENTS = queries.load("sqlite.sql")
MIGRATIONS = queries.migrations("sqlite")

_JSON_FIELDS = ("passes", "options", "result", "plan")
_BOOL_FIELDS = ("cancel_requested", "counted", "replay")


def sqlite_path(url: str) -> str:
    """sqlite:///relative.db, sqlite:////absolute.db, or sqlite:///:memory: (tests only)."""
    if not url.startswith("sqlite:///"):
        raise QueueError(f"queue.url: {url!r} is not sqlite:///PATH")
    return url[len("sqlite:///"):]


def _statements(script: str) -> list[str]:
    """A migration script cut into complete statements (a `;` inside a trigger body does not end one)."""
    out, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current.strip())
            current = ""
    if current.strip() and not all(l.strip().startswith("--") or not l.strip() for l in current.splitlines()):
        raise QueueError(f"incomplete statement at the end of a migration: {current.strip()[:60]!r}")
    return out


class _SQLiteTx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def all(self, name: str, /, **params: Any) -> list[dict[str, Any]]:
        return [dict(r) for r in self._db.execute(STATEMENTS[name], params)]

    def one(self, name: str, /, **params: Any) -> dict[str, Any] | None:
        row = self._db.execute(STATEMENTS[name], params).fetchone()
        return None if row is None else dict(row)

    def run(self, name: str, /, **params: Any) -> int:
        return self._db.execute(STATEMENTS[name], params).rowcount

    def many(self, name: str, /, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            self._db.executemany(STATEMENTS[name], rows)


class SQLiteQueue(SQLQueue):
    def __init__(self, url: str) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise QueueError(f"the SQLite queue needs SQLite {'.'.join(map(str, MIN_SQLITE))} or newer; "
                             f"this Python has {sqlite3.sqlite_version}")
        self.url = url
        path = self._path = sqlite_path(url)
        with self._full_disk_is_an_outage():
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                           check_same_thread=False)
            except sqlite3.Error as exc:
                raise QueueError(f"cannot open the SQLite queue at {path}: {exc}") from None
            self._db.row_factory = sqlite3.Row
            self._tx = _SQLiteTx(self._db)
            self._tx.run("busy_timeout")
            self._with_busy_retry(lambda: self._tx.run("journal_wal"))
            self._tx.run("synchronous_normal")
            self._tx.run("foreign_keys_on")
            # The embedded queue needs no set-up step: it brings its own schema up to date.
            self.migrate()

    @contextmanager
    def _full_disk_is_an_outage(self) -> Iterator[None]:
        """A full filesystem is the queue being away, not a bug: QueueUnavailable, which the
        daemon rides out through its outbox and the CLI prints as one line."""
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            if not self._disk_full(exc):
                raise
            raise QueueUnavailable(f"disk full: the SQLite queue at {Path(self._path).resolve()} cannot be "
                                   f"written ({exc}); free space on its filesystem") from None

    def _disk_full(self, exc: BaseException) -> bool:
        if "full" in str(exc).lower() or getattr(exc, "errno", None) == 28:  # ENOSPC
            return True
        try:
            return shutil.disk_usage(Path(self._path).resolve().parent).free < FULL_BELOW_BYTES
        except OSError:
            return False

    def _with_busy_retry(self, fn: Callable[[], T]) -> T:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _transaction(self, fn: Callable[[Tx], T], verify: Callable[[Tx], T] | None = None,
                     write: bool = True) -> T:
        # `verify` is for a connection lost during COMMIT, which a file cannot do.
        with self._full_disk_is_an_outage():
            if not write:
                return fn(self._tx)
            self._with_busy_retry(lambda: self._tx.run("begin_write"))
            try:
                result = fn(self._tx)
                self._tx.run("commit")  # a COMMIT that finds the disk full leaves the transaction open
            except BaseException:
                if self._db.in_transaction:
                    self._tx.run("rollback")
                raise
            return result

    def _decode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        data = dict(row)
        for name in _JSON_FIELDS:
            if data.get(name) is not None:
                data[name] = json.loads(data[name])
        for name in _BOOL_FIELDS:
            if name in data:
                data[name] = bool(data[name])
        return data

    def _json(self, value: Any) -> Any:
        return json.dumps(value)

    def _ids(self, ids: Sequence[str]) -> Any:
        return json.dumps(list(ids))

    def _enqueue(self, tx: Tx, jobs: Sequence[NewJob]) -> list[str]:
        registered = {r["name"] for r in tx.all("registered_passes")}
        for job in jobs:
            rules.check_new_job(job.source, job.passes, job.options, job.priority, job.max_attempts,
                                job.idempotency_key, registered)
        now = time.time()
        ids = []
        for job in jobs:
            new_id = uuid.uuid4().hex
            # The write lock is held (BEGIN IMMEDIATE), so no other process can slip a
            # job with the same key in between the insert and the look-up.
            if tx.run("insert_job", id=new_id, source=job.source, passes=self._json(job.passes),
                      options=self._json(job.options), priority=job.priority, run_at=job.run_at,
                      max_attempts=job.max_attempts, now=now, key=job.idempotency_key):
                ids.append(new_id)
            else:
                ids.append(self._one(tx, "job_by_key", key=job.idempotency_key)["id"])
        return ids

    # -- schema --------------------------------------------------------
    def _applied(self, tx: Tx) -> set[str]:
        tx.run("create_migrations_table")
        return {r["name"] for r in tx.all("applied_migrations")}

    def migrate(self) -> list[str]:
        # A migration may rebuild a table (SQLite cannot add a CHECK any other way);
        # with foreign keys on, dropping the old `jobs` would delete every attempt
        # and page. The pragma is a no-op inside a transaction, hence out here.
        self._tx.run("foreign_keys_off")
        try:
            return self._transaction(self._apply_migrations)
        finally:
            self._tx.run("foreign_keys_on")

    def _apply_migrations(self, tx: Tx) -> list[str]:
        done = self._applied(tx)
        applied = []
        for name, script in MIGRATIONS:
            if name in done:
                continue
            try:
                for statement in _statements(script):
                    self._db.execute(statement)
            except sqlite3.Error as exc:
                raise QueueError(f"cannot upgrade the SQLite queue ({name}): {exc}; the file was not changed") from None
            tx.run("record_migration", name=name, now=time.time())
            applied.append(name)
        self._register_installed_passes(tx)
        if applied and tx.all("check_foreign_keys"):
            raise QueueError(f"migrations {', '.join(applied)} left rows pointing at missing jobs; nothing was changed")
        return applied

    def check_schema(self) -> None:
        done = self._transaction(self._applied)
        missing = [name for name, _ in MIGRATIONS if name not in done]
        if missing:
            raise SchemaOutdated(f"the queue's schema is out of date ({', '.join(missing)} missing): run `docsuper migrate`")

    def close(self) -> None:
        self._db.close()
