"""The SQLite backend's own concerns: a file made by an older docsuper upgrades in place."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from docsuper.supervisor.queue import queries
from docsuper.supervisor.queue.base import AttemptEnd, QueueError
from docsuper.supervisor.queue.sqlite import SQLiteQueue


def make_first_schema_file(path: Path) -> None:
    """A queue file exactly as the first release left it: 0001 only, one job with two attempts."""
    [(name, script)] = queries.migrations("sqlite")[:1]
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(script)
    db.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (name, time.time()))
    now = time.time()
    # Attempt 1 was interrupted (not counted), attempt 2 failed: attempts = 1, two rows.
    db.execute("INSERT INTO jobs (id, status, passes, run_at, attempts, created_at, last_outcome)"
               " VALUES (?, 'queued', '[\"noop\"]', ?, 1, ?, 'error')", ("a" * 32, now, now))
    for number, outcome, counted in ((1, "interrupted", 0), (2, "error", 1)):
        db.execute("INSERT INTO attempts (job_id, number, worker, started_at, outcome, counted, ended_at)"
                   " VALUES (?, ?, 'old', ?, ?, ?, ?)", ("a" * 32, number, now, outcome, counted, now))
    db.execute("INSERT INTO pages (job_id, pass, page, result, stored_at) VALUES (?, 'noop', 1, '{}', ?)",
               ("a" * 32, now))
    db.close()


def test_a_first_release_file_upgrades_and_keeps_its_history(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    make_first_schema_file(path)
    with SQLiteQueue(f"sqlite:///{path}") as q:
        q.check_schema()
        job = q.get("a" * 32)
        assert (job.status, job.attempts, job.last_outcome) == ("queued", 1, "error")
        assert [(a.number, a.outcome, a.counted) for a in q.attempts(job.id)] == [
            (1, "interrupted", False), (2, "error", True)]
        assert q.pages(job.id) == [("noop", 1, {})]
        # Numbering carries on after the rows already there.
        [claimed] = q.claim("w", 1, 60)
        assert claimed.attempts == 2
        assert [a.number for a in q.attempts(job.id)] == [1, 2, 3]
        assert q.finish(job.id, "w", AttemptEnd("succeeded"), 0) == "succeeded"
    db = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            db.execute("UPDATE jobs SET status = 'paused'")
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert db.execute("PRAGMA foreign_keys").fetchone() == (0,)  # a fresh connection's default
    finally:
        db.close()


def test_a_file_with_a_job_in_an_unknown_state_does_not_upgrade_half_way(tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    make_first_schema_file(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("UPDATE jobs SET status = 'paused'")
    db.close()
    with pytest.raises(QueueError, match="cannot upgrade .*0002.*CHECK constraint failed.*not changed"):
        SQLiteQueue(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    try:
        # Rolled back whole: the old table with its row, and 0001 still the only migration.
        assert db.execute("SELECT status FROM jobs").fetchall() == [("paused",)]
        assert db.execute("SELECT name FROM schema_migrations").fetchall() == [("0001_initial",)]
        assert db.execute("SELECT count(*) FROM attempts").fetchone() == (2,)
    finally:
        db.close()
