-- The SQLite backend's statements, by name (see queries.py). Parameters are :named.
-- Every write runs inside BEGIN IMMEDIATE (the one writer holds the file), so the
-- "lock_*" statements are plain reads here; their PostgreSQL twins lock rows.
-- Times are Unix seconds passed in as :now.

-- busy_timeout --
-- How long a writer waits for the file's one write lock (sqlite.py's BUSY_TIMEOUT_S).
PRAGMA busy_timeout = 60000

-- journal_wal --
-- Readers run beside the one writer.
PRAGMA journal_mode = WAL

-- synchronous_normal --
-- Safe with WAL: a power cut may lose the last commits, never corrupt the file.
PRAGMA synchronous = NORMAL

-- begin_write --
-- Takes the write lock at once: a deferred transaction that reads and then writes
-- cannot wait for it (SQLite refuses the upgrade with "database is locked").
BEGIN IMMEDIATE

-- commit --
COMMIT

-- rollback --
ROLLBACK

-- create_migrations_table --
CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)

-- applied_migrations --
SELECT name FROM schema_migrations

-- record_migration --
INSERT INTO schema_migrations (name, applied_at) VALUES (:name, :now)

-- check_foreign_keys --
-- After a migration rebuilt a table with foreign keys off: any row pointing nowhere.
PRAGMA foreign_key_check

-- foreign_keys_off --
PRAGMA foreign_keys = OFF

-- foreign_keys_on --
PRAGMA foreign_keys = ON

-- insert_job --
-- Nothing (0 rows) when a job already holds this idempotency key: job_by_key finds it.
INSERT INTO jobs (id, source, passes, options, priority, run_at, max_attempts, created_at, idempotency_key)
VALUES (:id, :source, :passes, :options, :priority, coalesce(:run_at, :now), :max_attempts, :now, :key)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING

-- job_by_key --
SELECT id FROM jobs WHERE idempotency_key = :key

-- register_pass --
INSERT INTO passes (name, seen_at) VALUES (:name, :now)
ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at

-- registered_passes --
SELECT name FROM passes ORDER BY name

-- resolve_prefix --
-- At most two ids: one is the answer, two mean the prefix is ambiguous.
SELECT id FROM jobs WHERE id LIKE :prefix ORDER BY id LIMIT 2

-- job --
SELECT * FROM jobs WHERE id = :id

-- job_attempts --
SELECT * FROM attempts WHERE job_id = :id ORDER BY number

-- job_pages --
SELECT pass, page, result FROM pages WHERE job_id = :id AND (:pass IS NULL OR pass = :pass) ORDER BY pass, page

-- count_by_state --
SELECT status, count(*) AS n FROM jobs GROUP BY status

-- list_jobs --
SELECT * FROM jobs ORDER BY created_at DESC LIMIT :limit

-- list_jobs_in_state --
SELECT * FROM jobs WHERE status = :status ORDER BY created_at DESC LIMIT :limit

-- list_dead_jobs --
SELECT * FROM jobs WHERE status = 'dead' ORDER BY dead_at DESC LIMIT :limit

-- expired_leases --
SELECT * FROM jobs WHERE status = 'running' AND lease_expires_at < :now ORDER BY lease_expires_at

-- oldest_due_wait --
-- How long the longest-waiting due job has waited (NULL when none is due): the backlog alert.
SELECT :now - min(run_at) AS wait_s FROM jobs WHERE status = 'queued' AND run_at <= :now

-- any_queued --
SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'queued') AS any

-- lock_job --
SELECT status, lease_owner, lease_expires_at - :now AS lease_left_s, attempts, max_attempts, attempt_seq
FROM jobs WHERE id = :id

-- lock_dead_jobs --
SELECT id FROM jobs WHERE status = 'dead' ORDER BY id

-- requeue_job --
UPDATE jobs SET status = 'queued', attempts = 0, run_at = :now, dead_at = NULL, finished_at = NULL,
    cancel_requested = 0
WHERE id = :id

-- cancel_queued_job --
UPDATE jobs SET status = 'cancelled', finished_at = :now WHERE id = :id
RETURNING attempts, progress_done

-- request_cancel --
UPDATE jobs SET cancel_requested = 1 WHERE id = :id

-- claim_jobs --
-- Due queued jobs, highest priority then oldest run_at, started under a lease.
-- The attempt rows are opened by open_attempt, numbered by attempt_seq.
UPDATE jobs
SET status = 'running', attempts = attempts + 1, attempt_seq = attempt_seq + 1,
    lease_owner = :worker, lease_expires_at = :now + :lease, started_at = :now,
    finished_at = NULL, dead_at = NULL, cancel_requested = 0
WHERE id IN (SELECT id FROM jobs WHERE status = 'queued' AND run_at <= :now
             ORDER BY priority DESC, run_at LIMIT :limit)
RETURNING *

-- start_job --
UPDATE jobs
SET status = 'running', attempts = attempts + 1, attempt_seq = attempt_seq + 1,
    lease_owner = :worker, lease_expires_at = :now + :lease, started_at = :now,
    finished_at = NULL, dead_at = NULL, cancel_requested = 0
WHERE id = :id
RETURNING *

-- open_attempt --
INSERT INTO attempts (job_id, number, worker, started_at) VALUES (:id, :number, :worker, :now)

-- renew_leases --
-- :beats is a JSON array of {id, done, total, peak}; only leases this worker still holds move.
UPDATE jobs
SET lease_expires_at = :now + :lease,
    progress_done = coalesce(b.done, jobs.progress_done),
    progress_total = coalesce(b.total, jobs.progress_total),
    peak_mb = CASE WHEN b.peak IS NULL THEN jobs.peak_mb ELSE max(coalesce(jobs.peak_mb, 0), b.peak) END
FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.done') AS done,
             json_extract(value, '$.total') AS total, json_extract(value, '$.peak') AS peak
      FROM json_each(:beats)) AS b
WHERE jobs.id = b.id AND jobs.lease_owner = :worker AND jobs.status = 'running'

-- leases_to_stop --
-- Of :ids (a JSON array), those this worker no longer holds or was asked to cancel.
SELECT given.value AS id FROM json_each(:ids) AS given
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = given.value AND lease_owner = :worker
                  AND status = 'running' AND NOT cancel_requested)
  AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.job_id = given.value AND a.worker = :worker
                  AND a.replay AND a.outcome IS NULL)

-- store_page --
INSERT OR REPLACE INTO pages (job_id, pass, page, result, stored_at)
SELECT id, :pass, :page, :result, :now FROM jobs WHERE id = :id AND lease_owner = :worker AND status = 'running'

-- lock_owned_job --
SELECT attempt_seq FROM jobs WHERE id = :id AND lease_owner = :worker AND status = 'running'

-- close_attempt --
UPDATE attempts
SET outcome = :outcome, counted = :counted, exit_code = :exit_code, signal = :signal, peak_mb = :peak_mb,
    peak_rss_mb = :peak_rss_mb, ended_at = :now, duration_s = :now - started_at, last_page = :last_page,
    error = :error, traceback = :traceback, plan = :plan
WHERE job_id = :id AND number = :number

-- move_job --
-- After an attempt closed: the state, attempts and times the rules decided.
UPDATE jobs
SET status = :state, attempts = :attempts, lease_owner = NULL, lease_expires_at = NULL, last_outcome = :outcome,
    last_error = CASE WHEN :outcome = 'succeeded' THEN last_error ELSE :error END,
    peak_mb = CASE WHEN :peak IS NULL THEN peak_mb WHEN peak_mb IS NULL THEN :peak ELSE max(peak_mb, :peak) END,
    result = coalesce(:result, result), run_at = :now + :delay,
    finished_at = CASE WHEN :final THEN :now END, dead_at = CASE WHEN :dead THEN :now END,
    cancel_requested = 0
WHERE id = :id
RETURNING attempts, progress_done

-- attempt_outcome --
SELECT outcome FROM attempts WHERE job_id = :id AND number = :number AND worker = :worker

-- lock_expired_leases --
-- within_s: only leases that expired that recently (NULL: any); worker: whose leases to leave alone.
SELECT id, lease_owner FROM jobs WHERE status = 'running' AND lease_expires_at < :now
  AND (:within_s IS NULL OR lease_expires_at >= :now - :within_s)
  AND (:worker IS NULL OR lease_owner IS NOT :worker) ORDER BY id

-- count_jobs_among --
SELECT count(*) AS n FROM jobs WHERE id IN (SELECT value FROM json_each(:ids))

-- upsert_worker --
INSERT OR REPLACE INTO workers (id, host, pid, version, started_at, last_seen, running)
VALUES (:id, :host, :pid, :version, :started_at, :last_seen, :running)

-- worker_seen --
UPDATE workers SET last_seen = :now, running = :running WHERE id = :id

-- forget_workers --
DELETE FROM workers WHERE last_seen < :now - :after_s

-- delete_worker --
DELETE FROM workers WHERE id = :id

-- list_workers --
SELECT * FROM workers ORDER BY started_at, id

-- delete_pages --
DELETE FROM pages WHERE job_id = :id

-- bump_attempt_seq --
UPDATE jobs SET attempt_seq = attempt_seq + 1 WHERE id = :id RETURNING attempt_seq

-- open_replay_attempt --
-- `docsuper once` on a finished job: an attempt of its own, not counted, the job untouched.
INSERT INTO attempts (job_id, number, worker, started_at, counted, replay)
VALUES (:id, :number, :worker, :now, 0, 1)

-- open_replay --
SELECT number FROM attempts
WHERE job_id = :id AND worker = :worker AND replay AND outcome IS NULL
ORDER BY number DESC LIMIT 1

-- purge_finished --
-- One batch, oldest first; attempts and pages go with their job (ON DELETE CASCADE).
-- Queued and running jobs are never candidates, so claims are never in the way.
DELETE FROM jobs WHERE id IN (
    SELECT id FROM jobs
    WHERE status IN ('succeeded', 'dead', 'cancelled')
      AND ((status = 'dead' AND finished_at < :dead_before)
           OR (status <> 'dead' AND finished_at < :finished_before))
    ORDER BY finished_at LIMIT :limit)
RETURNING status

-- count_purgeable --
SELECT status, count(*) AS n FROM jobs
WHERE status IN ('succeeded', 'dead', 'cancelled')
  AND ((status = 'dead' AND finished_at < :dead_before)
       OR (status <> 'dead' AND finished_at < :finished_before))
GROUP BY status
