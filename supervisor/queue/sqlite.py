"""The embedded queue: one SQLite file, nothing to set up.

Several processes (`run`, `submit`, `status`) share the file. WAL lets readers
run beside the one writer, and every write transaction starts with
`BEGIN IMMEDIATE`: a deferred transaction that reads first and then writes cannot
wait for the lock (SQLite refuses the upgrade with "database is locked" at once),
while an immediate one waits in the busy handler like any other writer.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from .base import (
    JOB_STATES,
    NOT_COUNTED,
    Attempt,
    AttemptEnd,
    Job,
    JobNotFound,
    NewJob,
    Queue,
    QueueError,
    SchemaOutdated,
    WorkerInfo,
    next_state,
)

BUSY_TIMEOUT_S = 60.0

MIGRATIONS: list[tuple[str, str]] = [
    ("0001_initial", """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'queued',
    source TEXT,
    passes TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    lease_owner TEXT,
    lease_expires_at REAL,
    progress_done INTEGER,
    progress_total INTEGER,
    last_outcome TEXT,
    last_error TEXT,
    peak_mb REAL,
    result TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    dead_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at) WHERE status = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_status ON jobs (status, finished_at);
CREATE TABLE attempts (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    worker TEXT NOT NULL,
    started_at REAL NOT NULL,
    outcome TEXT,
    counted INTEGER NOT NULL DEFAULT 1,
    exit_code INTEGER,
    signal INTEGER,
    peak_mb REAL,
    peak_rss_mb REAL,
    ended_at REAL,
    duration_s REAL,
    last_page INTEGER,
    error TEXT,
    traceback TEXT,
    PRIMARY KEY (job_id, number)
);
CREATE TABLE pages (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    pass TEXT NOT NULL,
    page INTEGER NOT NULL,
    result TEXT NOT NULL,
    stored_at REAL NOT NULL,
    PRIMARY KEY (job_id, pass, page)
);
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    started_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    running INTEGER NOT NULL DEFAULT 0
);
"""),
]

_JSON_FIELDS = ("passes", "options", "result")


def sqlite_path(url: str) -> str:
    """sqlite:///relative.db, sqlite:////absolute.db, or sqlite:///:memory: (tests only)."""
    if not url.startswith("sqlite:///"):
        raise QueueError(f"queue.url: {url!r} is not sqlite:///PATH")
    return url[len("sqlite:///"):]


def _row_to_job(row: sqlite3.Row) -> Job:
    data = dict(row)
    for name in _JSON_FIELDS:
        data[name] = json.loads(data[name]) if data[name] is not None else None
    data["cancel_requested"] = bool(data["cancel_requested"])
    return Job(**data)


def _row_to_attempt(row: sqlite3.Row) -> Attempt:
    data = dict(row)
    data["counted"] = bool(data["counted"])
    return Attempt(**data)


def _id_prefix(job_id: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F-]{4,36}", job_id or ""):
        raise JobNotFound(f"no job {job_id!r}: a job id is 4 to 32 hex digits")
    # Ids are stored in lower case; one pasted from a UUID tool may be upper case.
    return job_id.replace("-", "").lower()


class SQLiteQueue(Queue):
    def __init__(self, url: str) -> None:
        self.url = url
        path = sqlite_path(url)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise QueueError(f"cannot open the SQLite queue at {path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._with_busy_retry(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute("PRAGMA foreign_keys = ON")
        # The embedded queue needs no set-up step: it brings its own schema up to date.
        self.migrate()

    def _with_busy_retry(self, fn: Any) -> Any:
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._with_busy_retry(lambda: self._db.execute("BEGIN IMMEDIATE"))
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # -- schema --------------------------------------------------------
    def _applied(self) -> set[str]:
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
        return {r[0] for r in self._db.execute("SELECT name FROM schema_migrations")}

    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self._write() as db:
            done = self._applied()
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, time.time()))
                applied.append(name)
        return applied

    def check_schema(self) -> None:
        missing = [name for name, _ in MIGRATIONS if name not in self._applied()]
        if missing:
            raise SchemaOutdated(f"the queue's schema is out of date ({', '.join(missing)} missing): run `docsuper migrate`")

    # -- producers and operators -----------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        now = time.time()
        ids = [uuid.uuid4().hex for _ in jobs]
        with self._write() as db:
            db.executemany(
                "INSERT INTO jobs (id, source, passes, options, priority, run_at, max_attempts, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(i, j.source, json.dumps(j.passes), json.dumps(j.options), j.priority,
                  j.run_at if j.run_at is not None else now, j.max_attempts, now) for i, j in zip(ids, jobs)],
            )
        return ids

    def _resolve(self, job_id: str) -> str:
        rows = self._db.execute("SELECT id FROM jobs WHERE id LIKE ? LIMIT 2", (_id_prefix(job_id) + "%",)).fetchall()
        if not rows:
            raise JobNotFound(f"no job {job_id!r}")
        if len(rows) > 1:
            raise JobNotFound(f"job id prefix {job_id!r} is ambiguous: give more digits")
        return rows[0][0]

    def get(self, job_id: str) -> Job:
        full = self._resolve(job_id)
        return _row_to_job(self._db.execute("SELECT * FROM jobs WHERE id = ?", (full,)).fetchone())

    def attempts(self, job_id: str) -> list[Attempt]:
        full = self._resolve(job_id)
        rows = self._db.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY number", (full,))
        return [_row_to_attempt(r) for r in rows]

    def pages(self, job_id: str, pass_name: str | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        full = self._resolve(job_id)
        rows = self._db.execute(
            "SELECT pass, page, result FROM pages WHERE job_id = ? AND (? IS NULL OR pass = ?) ORDER BY pass, page",
            (full, pass_name, pass_name),
        )
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(JOB_STATES, 0)
        for status, n in self._db.execute("SELECT status, count(*) FROM jobs GROUP BY status"):
            counts[status] = n
        return counts

    def list_jobs(self, status: str | None = None, limit: int = 50) -> list[Job]:
        order = "dead_at DESC" if status == "dead" else "created_at DESC"
        rows = self._db.execute(
            f"SELECT * FROM jobs WHERE (? IS NULL OR status = ?) ORDER BY {order} LIMIT ?", (status, status, limit)
        )
        return [_row_to_job(r) for r in rows]

    def expired_leases(self) -> list[Job]:
        rows = self._db.execute("SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < ?", (time.time(),))
        return [_row_to_job(r) for r in rows]

    def has_queued(self) -> bool:
        return self._db.execute("SELECT 1 FROM jobs WHERE status = 'queued' LIMIT 1").fetchone() is not None

    def retry(self, job_ids: Iterable[str] | None) -> list[str]:
        now = time.time()
        with self._write() as db:
            if job_ids is None:
                ids = [r[0] for r in db.execute("SELECT id FROM jobs WHERE status = 'dead'")]
            else:
                ids = []
                for given in job_ids:
                    full = self._resolve(given)
                    status = db.execute("SELECT status FROM jobs WHERE id = ?", (full,)).fetchone()[0]
                    if status not in ("dead", "cancelled"):
                        raise QueueError(f"job {full} is {status}: only dead or cancelled jobs can be retried")
                    ids.append(full)
            db.executemany(
                "UPDATE jobs SET status = 'queued', attempts = 0, run_at = ?, dead_at = NULL, finished_at = NULL,"
                " cancel_requested = 0 WHERE id = ?",
                [(now, i) for i in ids],
            )
        return ids

    def cancel(self, job_id: str) -> str:
        full = self._resolve(job_id)
        with self._write() as db:
            status = db.execute("SELECT status FROM jobs WHERE id = ?", (full,)).fetchone()[0]
            if status == "queued":
                db.execute("UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?", (time.time(), full))
                return "cancelled"
            if status == "running":
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (full,))
                return "running"
        raise QueueError(f"job {full} is already {status}")

    # -- workers ---------------------------------------------------------
    def _start_attempt(self, db: sqlite3.Connection, job_id: str, worker_id: str, lease_s: float, now: float) -> Job:
        db.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?, lease_expires_at = ?,"
            " started_at = ?, finished_at = NULL, dead_at = NULL, cancel_requested = 0 WHERE id = ?",
            (worker_id, now + lease_s, now, job_id),
        )
        number = db.execute("SELECT coalesce(max(number), 0) + 1 FROM attempts WHERE job_id = ?", (job_id,)).fetchone()[0]
        db.execute("INSERT INTO attempts (job_id, number, worker, started_at) VALUES (?, ?, ?, ?)",
                   (job_id, number, worker_id, now))
        return _row_to_job(db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

    def claim(self, worker_id: str, limit: int, lease_s: float) -> list[Job]:
        if limit <= 0:
            return []
        now = time.time()
        with self._write() as db:
            ids = [r[0] for r in db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' AND run_at <= ? ORDER BY priority DESC, run_at LIMIT ?",
                (now, limit),
            )]
            return [self._start_attempt(db, i, worker_id, lease_s, now) for i in ids]

    def claim_one(self, job_id: str, worker_id: str, lease_s: float) -> Job:
        full = self._resolve(job_id)
        now = time.time()
        with self._write() as db:
            row = db.execute("SELECT status, lease_owner, lease_expires_at FROM jobs WHERE id = ?", (full,)).fetchone()
            if row["status"] == "running" and row["lease_expires_at"] >= now:
                raise QueueError(f"job {full} is running on {row['lease_owner']} (lease valid for "
                                 f"{row['lease_expires_at'] - now:.0f} s more)")
            if row["status"] == "running":
                self._close_attempt(db, full, "lost", "lease expired: its worker stopped renewing it", now)
            return self._start_attempt(db, full, worker_id, lease_s, now)

    def heartbeat(self, worker_id: str, progress: dict[str, tuple[int | None, int | None, float | None]],
                  lease_s: float) -> set[str]:
        if not progress:
            return set()
        now = time.time()
        with self._write() as db:
            db.executemany(
                "UPDATE jobs SET lease_expires_at = ?, progress_done = coalesce(?, progress_done),"
                " progress_total = coalesce(?, progress_total),"
                " peak_mb = CASE WHEN ? IS NULL THEN peak_mb ELSE max(coalesce(peak_mb, 0), ?) END"
                " WHERE id = ? AND lease_owner = ? AND status = 'running'",
                [(now + lease_s, done, total, peak, peak, job_id, worker_id)
                 for job_id, (done, total, peak) in progress.items()],
            )
            marks = ",".join("?" * len(progress))
            still_ours = {r[0]: r[1] for r in db.execute(
                f"SELECT id, cancel_requested FROM jobs WHERE id IN ({marks}) AND lease_owner = ? AND status = 'running'",
                (*progress, worker_id),
            )}
        return {job_id for job_id in progress if job_id not in still_ours or still_ours[job_id]}

    def record_page(self, job_id: str, worker_id: str, pass_name: str, page: int, result: dict[str, Any]) -> bool:
        with self._write() as db:
            owned = db.execute("SELECT 1 FROM jobs WHERE id = ? AND lease_owner = ? AND status = 'running'",
                               (job_id, worker_id)).fetchone()
            if not owned:
                return False
            db.execute("INSERT OR REPLACE INTO pages (job_id, pass, page, result, stored_at) VALUES (?, ?, ?, ?, ?)",
                       (job_id, pass_name, page, json.dumps(result), time.time()))
        return True

    def _close_attempt(self, db: sqlite3.Connection, job_id: str, outcome: str, error: str | None, now: float,
                       end: AttemptEnd | None = None, retry_delay_s: float = 0.0) -> str:
        job = db.execute("SELECT attempts, max_attempts, peak_mb FROM jobs WHERE id = ?", (job_id,)).fetchone()
        counted = outcome not in NOT_COUNTED
        attempts = job["attempts"] if counted else job["attempts"] - 1
        state = next_state(outcome, attempts, job["max_attempts"])
        end = end or AttemptEnd(outcome=outcome, error=error)
        number = db.execute("SELECT max(number) FROM attempts WHERE job_id = ?", (job_id,)).fetchone()[0]
        db.execute(
            "UPDATE attempts SET outcome = ?, counted = ?, exit_code = ?, signal = ?, peak_mb = ?, peak_rss_mb = ?,"
            " ended_at = ?, duration_s = ? - started_at, last_page = ?, error = ?, traceback = ?"
            " WHERE job_id = ? AND number = ?",
            (outcome, counted, end.exit_code, end.signal, end.peak_mb, end.peak_rss_mb, now, now, end.last_page,
             end.error, end.traceback, job_id, number),
        )
        peaks = [p for p in (job["peak_mb"], end.peak_mb) if p is not None]
        terminal = state in ("succeeded", "dead", "cancelled")
        db.execute(
            "UPDATE jobs SET status = ?, attempts = ?, lease_owner = NULL, lease_expires_at = NULL, last_outcome = ?,"
            " last_error = CASE WHEN ? = 'succeeded' THEN last_error ELSE ? END, peak_mb = ?,"
            " result = coalesce(?, result), run_at = ?, finished_at = ?, dead_at = ?, cancel_requested = 0"
            " WHERE id = ?",
            (state, attempts, outcome, outcome, end.error, max(peaks) if peaks else None,
             json.dumps(end.result) if end.result is not None else None,
             now + (retry_delay_s if counted else 0.0), now if terminal else None,
             now if state == "dead" else None, job_id),
        )
        return state

    def finish(self, job_id: str, worker_id: str, end: AttemptEnd, retry_delay_s: float) -> str | None:
        with self._write() as db:
            owned = db.execute("SELECT 1 FROM jobs WHERE id = ? AND lease_owner = ? AND status = 'running'",
                               (job_id, worker_id)).fetchone()
            if not owned:
                return None
            return self._close_attempt(db, job_id, end.outcome, end.error, time.time(), end, retry_delay_s)

    def reclaim_expired(self, retry_delay_s: float) -> list[str]:
        now = time.time()
        with self._write() as db:
            rows = db.execute("SELECT id, lease_owner FROM jobs WHERE status = 'running' AND lease_expires_at < ?",
                              (now,)).fetchall()
            for job_id, owner in rows:
                self._close_attempt(db, job_id, "lost", f"lease expired: worker {owner} stopped renewing it", now,
                                    retry_delay_s=retry_delay_s)
        return [r[0] for r in rows]

    def register_worker(self, info: WorkerInfo) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (info.id, info.host, info.pid, info.version, info.started_at, info.last_seen, info.running))

    def worker_seen(self, worker_id: str, running: int) -> None:
        with self._write() as db:
            db.execute("UPDATE workers SET last_seen = ?, running = ? WHERE id = ?", (time.time(), running, worker_id))

    def unregister_worker(self, worker_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers(self) -> list[WorkerInfo]:
        return [WorkerInfo(**dict(r)) for r in self._db.execute("SELECT * FROM workers ORDER BY started_at")]

    def close(self) -> None:
        self._db.close()
