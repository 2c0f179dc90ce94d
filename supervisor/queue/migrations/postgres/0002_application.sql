-- The application's side (issue 10): enqueue() for any client, idempotency keys, the
-- passes workers have registered, replays that keep history, the completion NOTIFY,
-- the stable views, and an index for purging finished jobs.

-- Every pass a docsuper host has found installed (`docsuper migrate`, a worker
-- starting, the Python API): what enqueue() accepts.
CREATE TABLE {s}.passes (
    name text COLLATE "C" PRIMARY KEY,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- The same key twice gives the first job's id; the key is free again once that job is purged.
ALTER TABLE {s}.jobs ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX jobs_idempotency_key ON {s}.jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- A replay (`docsuper once` on a finished job) records its attempt without touching the job.
ALTER TABLE {s}.attempts ADD COLUMN replay boolean NOT NULL DEFAULT false;

-- purge(): final jobs, oldest first.
CREATE INDEX jobs_finished ON {s}.jobs (finished_at) WHERE status IN ('succeeded', 'dead', 'cancelled');

-- enqueue(): the one way in for every client (psql, node-postgres, Supabase rpc(), a
-- trigger). Checks its arguments with the same messages as the Python API (rules.py),
-- and wakes idle workers. Returns the job's id (32 hex digits), or the id of the job
-- already queued under the same idempotency key.
CREATE FUNCTION {s}.enqueue(
    source text,
    passes text[] DEFAULT '{ocr}',
    options jsonb DEFAULT '{}',
    priority integer DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    max_attempts integer DEFAULT 3,
    run_at timestamptz DEFAULT NULL
) RETURNS text
LANGUAGE plpgsql
-- Nothing resolved through the caller's search_path: every name below is qualified.
SET search_path = pg_catalog, pg_temp
AS $$
-- A bare name is a column; the arguments are always written enqueue.<name>.
#variable_conflict use_column
DECLARE
    new_id text;
    unknown text;
    registered text;
BEGIN
    IF enqueue.passes IS NULL OR cardinality(enqueue.passes) = 0 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'enqueue: passes must name at least one pass';
    END IF;
    SELECT string_agg(p.name, ', ' ORDER BY p.name) INTO registered FROM {s}.passes p;
    IF registered IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'enqueue: no pass is registered yet: run `docsuper migrate` or start a worker';
    END IF;
    SELECT given.name INTO unknown FROM unnest(enqueue.passes) WITH ORDINALITY AS given(name, n)
    WHERE given.name IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.passes p WHERE p.name = given.name)
    ORDER BY given.n LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('enqueue: unknown pass "%s" (registered: %s)', coalesce(unknown, 'NULL'), registered);
    END IF;
    IF enqueue.priority IS NULL OR enqueue.priority NOT BETWEEN -1000 AND 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('enqueue: priority must be between -1000 and 1000, not %s',
                             coalesce(enqueue.priority::text, 'NULL'));
    END IF;
    IF enqueue.max_attempts IS NULL OR enqueue.max_attempts NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('enqueue: max_attempts must be between 1 and 100, not %s',
                             coalesce(enqueue.max_attempts::text, 'NULL'));
    END IF;
    IF enqueue.options IS NULL OR jsonb_typeof(enqueue.options) <> 'object' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('enqueue: options must be a JSON object, not %s',
                             coalesce(jsonb_typeof(enqueue.options), 'NULL'));
    END IF;
    IF enqueue.source = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'enqueue: source must not be empty (NULL for a job without a document)';
    END IF;
    IF enqueue.idempotency_key IS NOT NULL AND length(enqueue.idempotency_key) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'enqueue: idempotency_key must be 1 to 200 characters';
    END IF;

    new_id := replace(gen_random_uuid()::text, '-', '');
    -- A concurrent enqueue with the same key waits here on the unique index until the
    -- other commits, then does nothing; the SELECT below (a new snapshot) finds its job.
    INSERT INTO {s}.jobs (id, source, passes, options, priority, run_at, max_attempts, idempotency_key)
    VALUES (new_id, enqueue.source, to_jsonb(enqueue.passes), enqueue.options, enqueue.priority,
            coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.idempotency_key)
    ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING;
    IF NOT FOUND THEN
        SELECT j.id INTO new_id FROM {s}.jobs j WHERE j.idempotency_key = enqueue.idempotency_key;
        RETURN new_id;
    END IF;
    -- Delivered at commit, and only then: a worker woken by it finds the job claimable.
    PERFORM pg_notify('{schema}_jobs', '');
    RETURN new_id;
END
$$;

-- The completion signal: one NOTIFY on "<schema>_done" per job reaching a final state,
-- whoever wrote it, with {"id": …, "status": …} as its payload (JSON).
CREATE FUNCTION {s}.notify_job_done() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_notify('{schema}_done', json_build_object('id', NEW.id, 'status', NEW.status)::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_done_notify AFTER UPDATE OF status ON {s}.jobs
FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'dead', 'cancelled') AND OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION {s}.notify_job_done();

-- The views an application reads (docs/integration.md). Their columns are a contract:
-- new ones may be added, none renamed or removed, whatever happens to the tables.
CREATE VIEW {s}.job_status AS
SELECT j.id, j.status, j.source, j.passes, j.options, j.priority, j.idempotency_key,
       j.attempts, j.max_attempts, j.progress_done AS pages_done, j.progress_total AS pages_total,
       j.peak_mb, j.last_outcome, j.last_error, j.result AS summary,
       j.created_at, j.started_at, j.finished_at,
       -- Computed only when selected: the planner drops unused columns of a view.
       (SELECT string_agg(coalesce(p.result ->> 'text', ''), E'\f' ORDER BY p.page)
        FROM {s}.pages p WHERE p.job_id = j.id AND p.pass = 'ocr') AS text
FROM {s}.jobs j;

CREATE VIEW {s}.job_pages AS
SELECT p.job_id, p.pass, p.page, p.result ->> 'text' AS text, p.result, p.stored_at
FROM {s}.pages p;
