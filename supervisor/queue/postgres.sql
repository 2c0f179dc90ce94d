-- The PostgreSQL backend's statements, by name (see queries.py). Parameters are
-- %(named)s; {s} is the quoted schema. Times come from the database clock (now()),
-- so hosts whose clocks disagree still agree on who holds a lease.

-- lock_migrations --
-- Serialises concurrent `docsuper migrate` runs (several hosts deploying at once):
-- the second waits here, then finds everything applied.
SELECT pg_advisory_xact_lock(%(key)s)

-- create_schema --
CREATE SCHEMA IF NOT EXISTS {s}

-- create_migrations_table --
CREATE TABLE IF NOT EXISTS {s}.schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())

-- migrations_table_exists --
SELECT to_regclass('{s}.schema_migrations') IS NOT NULL AS present

-- applied_migrations --
SELECT name FROM {s}.schema_migrations

-- record_migration --
INSERT INTO {s}.schema_migrations (name) VALUES (%(name)s)

-- notify --
-- Delivered when the transaction commits, and only then: a worker woken by it
-- always finds the job claimable.
SELECT pg_notify(%(channel)s, '')

-- notify_probe --
SELECT pg_notify(%(channel)s, 'probe')

-- listen --
LISTEN {channel}

-- unlisten --
UNLISTEN {channel}

-- ping --
SELECT 1

-- enqueue_batch --
-- Python's submit(): the batch through the SQL function every client uses, in order.
SELECT {s}.enqueue(j.source, j.passes, j.options, j.priority, j.idempotency_key, j.max_attempts,
                   to_timestamp(j.run_at)) AS id
FROM ROWS FROM (jsonb_to_recordset(%(jobs)s::jsonb)
                AS (source text, passes text[], options jsonb, priority integer, idempotency_key text,
                    max_attempts integer, run_at double precision))
     WITH ORDINALITY AS j(source, passes, options, priority, idempotency_key, max_attempts, run_at, n)
ORDER BY j.n

-- register_pass --
INSERT INTO {s}.passes (name) VALUES (%(name)s)
ON CONFLICT (name) DO UPDATE SET seen_at = now()

-- registered_passes --
SELECT name FROM {s}.passes ORDER BY name

-- count_jobs_among --
-- After a break during COMMIT: did these (freshly made) ids land?
SELECT count(*) AS n FROM {s}.jobs WHERE id = ANY(%(ids)s::text[])

-- resolve_prefix --
-- At most two ids: one is the answer, two mean the prefix is ambiguous. The "C"
-- collation of id lets LIKE 'prefix%' use the primary key.
SELECT id FROM {s}.jobs WHERE id LIKE %(prefix)s ORDER BY id LIMIT 2

-- job --
SELECT * FROM {s}.jobs WHERE id = %(id)s

-- job_attempts --
SELECT * FROM {s}.attempts WHERE job_id = %(id)s ORDER BY number

-- job_pages --
SELECT pass, page, result FROM {s}.pages
WHERE job_id = %(id)s AND (%(pass)s::text IS NULL OR pass = %(pass)s)
ORDER BY pass, page

-- count_by_state --
SELECT status, count(*) AS n FROM {s}.jobs GROUP BY status

-- list_jobs --
SELECT * FROM {s}.jobs ORDER BY created_at DESC LIMIT %(limit)s

-- list_jobs_in_state --
-- A separate statement rather than an optional filter, so the plan (even a generic
-- one for a prepared statement) can use the partial indexes.
SELECT * FROM {s}.jobs WHERE status = %(status)s ORDER BY created_at DESC LIMIT %(limit)s

-- list_dead_jobs --
SELECT * FROM {s}.jobs WHERE status = 'dead' ORDER BY dead_at DESC NULLS LAST LIMIT %(limit)s

-- expired_leases --
SELECT * FROM {s}.jobs WHERE status = 'running' AND lease_expires_at < now() ORDER BY lease_expires_at

-- oldest_due_wait --
-- How long the longest-waiting due job has waited (NULL when none is due): the backlog alert.
-- Reads only queued rows, through the partial index of runnable jobs.
SELECT extract(epoch FROM now() - min(run_at))::float8 AS wait_s
FROM {s}.jobs WHERE status = 'queued' AND run_at <= now()

-- any_queued --
SELECT EXISTS (SELECT 1 FROM {s}.jobs WHERE status = 'queued') AS any

-- lock_job --
SELECT status, lease_owner, extract(epoch FROM lease_expires_at - now())::float8 AS lease_left_s,
       attempts, max_attempts, attempt_seq
FROM {s}.jobs WHERE id = %(id)s FOR UPDATE

-- lock_dead_jobs --
SELECT id FROM {s}.jobs WHERE status = 'dead' ORDER BY id FOR UPDATE

-- requeue_job --
UPDATE {s}.jobs SET status = 'queued', attempts = 0, run_at = now(), dead_at = NULL, finished_at = NULL,
    cancel_requested = false
WHERE id = %(id)s

-- cancel_queued_job --
UPDATE {s}.jobs SET status = 'cancelled', finished_at = now() WHERE id = %(id)s
RETURNING attempts, progress_done

-- request_cancel --
UPDATE {s}.jobs SET cancel_requested = true WHERE id = %(id)s

-- claim_jobs --
-- One statement: pick due queued jobs (skipping rows another claimer has locked, so
-- hosts never wait on each other or get the same job), start them, and open their
-- attempt rows, numbered by attempt_seq.
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
SELECT * FROM claimed ORDER BY priority DESC, run_at

-- start_job --
-- claim_one: start this (locked) job and open its attempt row.
WITH started AS (
    UPDATE {s}.jobs
    SET status = 'running', attempts = attempts + 1, attempt_seq = attempt_seq + 1,
        lease_owner = %(worker)s, lease_expires_at = now() + make_interval(secs => %(lease)s),
        started_at = now(), finished_at = NULL, dead_at = NULL, cancel_requested = false
    WHERE id = %(id)s
    RETURNING *
), opened AS (
    INSERT INTO {s}.attempts (job_id, number, worker, started_at)
    SELECT id, attempt_seq, %(worker)s, now() FROM started
)
SELECT * FROM started

-- renew_leases --
-- %(beats)s is a JSON array of {id, done, total, peak}: one statement whatever the
-- number of jobs; only leases this worker still holds move.
UPDATE {s}.jobs j
SET lease_expires_at = now() + make_interval(secs => %(lease)s),
    progress_done = coalesce(b.done, j.progress_done),
    progress_total = coalesce(b.total, j.progress_total),
    peak_mb = greatest(j.peak_mb, b.peak)
FROM jsonb_to_recordset(%(beats)s::jsonb) AS b(id text, done integer, total integer, peak double precision)
WHERE j.id = b.id AND j.lease_owner = %(worker)s AND j.status = 'running'

-- leases_to_stop --
-- Of %(ids)s, those this worker no longer holds or was asked to cancel.
SELECT given.id FROM unnest(%(ids)s::text[]) AS given(id)
WHERE NOT EXISTS (SELECT 1 FROM {s}.jobs j WHERE j.id = given.id AND j.lease_owner = %(worker)s
                  AND j.status = 'running' AND NOT j.cancel_requested)
  AND NOT EXISTS (SELECT 1 FROM {s}.attempts a WHERE a.job_id = given.id AND a.worker = %(worker)s
                  AND a.replay AND a.outcome IS NULL)

-- store_page --
-- FOR SHARE holds off a concurrent reclaim or finish until the page is in, so a
-- page is only ever stored under a live lease.
INSERT INTO {s}.pages (job_id, pass, page, result)
SELECT id, %(pass)s, %(page)s, %(result)s FROM {s}.jobs
WHERE id = %(id)s AND lease_owner = %(worker)s AND status = 'running' FOR SHARE
ON CONFLICT (job_id, pass, page) DO UPDATE SET result = excluded.result, stored_at = now()

-- lock_owned_job --
-- The lock makes the lease check and the update one step: a reclaim on another
-- host either happens before (and the lease is gone) or waits.
SELECT attempt_seq FROM {s}.jobs
WHERE id = %(id)s AND lease_owner = %(worker)s AND status = 'running' FOR UPDATE

-- close_attempt --
UPDATE {s}.attempts
SET outcome = %(outcome)s, counted = %(counted)s, exit_code = %(exit_code)s, signal = %(signal)s,
    peak_mb = %(peak_mb)s, peak_rss_mb = %(peak_rss_mb)s, ended_at = now(),
    duration_s = extract(epoch FROM now() - started_at)::float8, last_page = %(last_page)s,
    error = %(error)s, traceback = %(traceback)s, plan = %(plan)s
WHERE job_id = %(id)s AND number = %(number)s

-- move_job --
-- After an attempt closed: the state, attempts and times the rules decided.
UPDATE {s}.jobs
SET status = %(state)s, attempts = %(attempts)s, lease_owner = NULL, lease_expires_at = NULL,
    last_outcome = %(outcome)s,
    last_error = CASE WHEN %(outcome)s = 'succeeded' THEN last_error ELSE %(error)s END,
    peak_mb = greatest(peak_mb, %(peak)s::float8), result = coalesce(%(result)s, result),
    run_at = now() + make_interval(secs => %(delay)s),
    finished_at = CASE WHEN %(final)s THEN now() END, dead_at = CASE WHEN %(dead)s THEN now() END,
    cancel_requested = false
WHERE id = %(id)s
RETURNING attempts, progress_done

-- attempt_outcome --
-- After a break during COMMIT: the attempt row says whether finish() went through.
SELECT outcome FROM {s}.attempts WHERE job_id = %(id)s AND number = %(number)s AND worker = %(worker)s

-- lock_expired_leases --
-- SKIP LOCKED: a row locked right now is being finished or renewed by its owner, so
-- it is not abandoned; and two hosts reclaiming at once split the work.
-- within_s: only leases that expired that recently (NULL: any); worker: whose leases to leave alone.
SELECT id, lease_owner FROM {s}.jobs
WHERE status = 'running' AND lease_expires_at < now()
  AND (%(within_s)s::float8 IS NULL OR lease_expires_at >= now() - make_interval(secs => %(within_s)s::float8))
  AND (%(worker)s::text IS NULL OR lease_owner IS DISTINCT FROM %(worker)s::text)
ORDER BY id FOR UPDATE SKIP LOCKED

-- upsert_worker --
INSERT INTO {s}.workers (id, host, pid, version, started_at, last_seen, running)
VALUES (%(id)s, %(host)s, %(pid)s, %(version)s, to_timestamp(%(started_at)s), to_timestamp(%(last_seen)s),
        %(running)s)
ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, version = excluded.version,
    started_at = excluded.started_at, last_seen = excluded.last_seen, running = excluded.running

-- worker_seen --
UPDATE {s}.workers SET last_seen = now(), running = %(running)s WHERE id = %(id)s

-- forget_workers --
DELETE FROM {s}.workers WHERE last_seen < now() - make_interval(secs => %(after_s)s::float8)

-- delete_worker --
DELETE FROM {s}.workers WHERE id = %(id)s

-- list_workers --
SELECT * FROM {s}.workers ORDER BY started_at, id

-- delete_pages --
DELETE FROM {s}.pages WHERE job_id = %(id)s

-- bump_attempt_seq --
UPDATE {s}.jobs SET attempt_seq = attempt_seq + 1 WHERE id = %(id)s RETURNING attempt_seq

-- open_replay_attempt --
-- `docsuper once` on a finished job: an attempt of its own, not counted, the job untouched.
INSERT INTO {s}.attempts (job_id, number, worker, started_at, counted, replay)
VALUES (%(id)s, %(number)s, %(worker)s, now(), false, true)

-- open_replay --
SELECT number FROM {s}.attempts
WHERE job_id = %(id)s AND worker = %(worker)s AND replay AND outcome IS NULL
ORDER BY number DESC LIMIT 1

-- purge_finished --
-- One batch, oldest first, through jobs_finished; attempts and pages go with their job
-- (ON DELETE CASCADE). Only final rows are locked, and SKIP LOCKED leaves one being
-- retried right now for a later batch: a claim (queued rows only) never waits on it.
WITH doomed AS (
    SELECT id FROM {s}.jobs
    WHERE status IN ('succeeded', 'dead', 'cancelled')
      AND finished_at < to_timestamp(greatest(%(finished_before)s::float8, %(dead_before)s::float8))
      AND ((status = 'dead' AND finished_at < to_timestamp(%(dead_before)s::float8))
           OR (status <> 'dead' AND finished_at < to_timestamp(%(finished_before)s::float8)))
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {s}.jobs j USING doomed WHERE j.id = doomed.id
RETURNING j.status

-- count_purgeable --
SELECT status, count(*) AS n FROM {s}.jobs
WHERE status IN ('succeeded', 'dead', 'cancelled')
  AND ((status = 'dead' AND finished_at < to_timestamp(%(dead_before)s::float8))
       OR (status <> 'dead' AND finished_at < to_timestamp(%(finished_before)s::float8)))
GROUP BY status
