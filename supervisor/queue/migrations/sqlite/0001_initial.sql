-- The first schema, as shipped. Never edit a shipped migration: add the next one.
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
