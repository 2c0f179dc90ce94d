-- The schema rules PostgreSQL had from the start: a status CHECK, and attempts numbered
-- by a column (`attempts` is reset by retry and not bumped by interrupted attempts, so
-- it cannot number the rows). SQLite cannot add a CHECK to a table, so the table is
-- rebuilt (https://sqlite.org/lang_altertable.html#otheralter); the migration runner
-- turns foreign keys off around it, or dropping `jobs` would cascade to attempts and pages.
CREATE TABLE jobs_new (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'dead', 'cancelled')),
    source TEXT,
    passes TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    priority INTEGER NOT NULL DEFAULT 0,
    run_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3,
    attempt_seq INTEGER NOT NULL DEFAULT 0,
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
INSERT INTO jobs_new (id, status, source, passes, options, priority, run_at, attempts, max_attempts, attempt_seq,
                      lease_owner, lease_expires_at, progress_done, progress_total, last_outcome, last_error,
                      peak_mb, result, created_at, started_at, finished_at, dead_at, cancel_requested)
SELECT id, status, source, passes, options, priority, run_at, attempts, max_attempts,
       coalesce((SELECT max(number) FROM attempts a WHERE a.job_id = jobs.id), 0),
       lease_owner, lease_expires_at, progress_done, progress_total, last_outcome, last_error,
       peak_mb, result, created_at, started_at, finished_at, dead_at, cancel_requested
FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE INDEX jobs_runnable ON jobs (priority DESC, run_at) WHERE status = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE status = 'running';
CREATE INDEX jobs_status ON jobs (status, finished_at);
