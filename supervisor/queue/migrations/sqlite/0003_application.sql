-- The application's side (issue 10), as on PostgreSQL: idempotency keys, the passes
-- registered, replays that keep history, the stable views, an index for purging.
-- enqueue's checks run in Python here (rules.check_new_job): SQLite has no functions.
CREATE TABLE passes (
    name TEXT PRIMARY KEY,
    seen_at REAL NOT NULL
);
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
ALTER TABLE attempts ADD COLUMN replay INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE status IN ('succeeded', 'dead', 'cancelled');

-- The views an application reads (docs/integration.md); their columns are a contract.
-- Times are Unix seconds here, timestamptz on PostgreSQL.
CREATE VIEW job_status AS
SELECT j.id, j.status, j.source, j.passes, j.options, j.priority, j.idempotency_key,
       j.attempts, j.max_attempts, j.progress_done AS pages_done, j.progress_total AS pages_total,
       j.peak_mb, j.last_outcome, j.last_error, j.result AS summary,
       j.created_at, j.started_at, j.finished_at,
       (SELECT group_concat(coalesce(json_extract(p.result, '$.text'), ''), char(12))
        FROM (SELECT result FROM pages WHERE job_id = j.id AND pass = 'ocr' ORDER BY page) AS p) AS text
FROM jobs j;

CREATE VIEW job_pages AS
SELECT p.job_id, p.pass, p.page, json_extract(p.result, '$.text') AS text, p.result, p.stored_at
FROM pages p;
