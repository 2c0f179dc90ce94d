-- The first schema, as shipped. Never edit a shipped migration: add the next one.
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
