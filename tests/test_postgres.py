"""PostgreSQL only: concurrent migrations, the claim plan at scale, NOTIFY, and surviving dropped connections."""

from __future__ import annotations

import json
import multiprocessing
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, NoReturn

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from docsuper.supervisor.queue.base import AttemptEnd, NewJob, QueueError, QueueUnavailable, SchemaOutdated
from docsuper.supervisor.queue.postgres import PostgresQueue

from .conftest import require_postgres
from .queuekit import QueueSpec, drop_schema, new_schema_name, run_migrate, submit_after
from .test_queue_contract import run_processes

pytestmark = pytest.mark.postgres


@pytest.fixture
def bare_spec() -> Iterator[QueueSpec]:
    """A schema name nobody has migrated yet (dropped afterwards)."""
    url = require_postgres()
    spec = QueueSpec("postgres", url, new_schema_name())
    try:
        yield spec
    finally:
        drop_schema(url, spec.schema)


def tagged(url: str, tag: str) -> str:
    """The URL with an application_name that lets a test find (and kill) exactly its own connections."""
    return f"{url}{'&' if '?' in url else '?'}application_name={tag}"


def terminate(url: str, tag: str) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        rows = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE application_name LIKE %s AND pid <> pg_backend_pid()", (tag + "%",)).fetchall()
    return len(rows)


def readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


# -- schema ----------------------------------------------------------------

def test_a_fresh_schema_is_not_created_on_open(bare_spec: QueueSpec) -> None:
    with bare_spec.open() as q:
        with pytest.raises(SchemaOutdated, match="docsuper migrate"):
            q.check_schema()
        with pytest.raises(SchemaOutdated, match="docsuper migrate"):
            q.submit([NewJob()])
        assert q.migrate() == ["0001_initial", "0002_application", "0003_attempt_plan"]
        q.check_schema()
        assert q.migrate() == []


def test_two_processes_migrating_at_once_both_succeed(bare_spec: QueueSpec) -> None:
    reports = run_processes(run_migrate, [(bare_spec,), (bare_spec,)])
    assert [r[1] for r in reports] == [None, None], "\n".join(r[1] for r in reports if r[1])
    assert sorted(r[0] for r in reports) == [[], ["0001_initial", "0002_application", "0003_attempt_plan"]]
    with bare_spec.open() as q:
        q.check_schema()


def test_schema_names_are_checked(bare_spec: QueueSpec) -> None:
    for bad in ("Docsuper", "a-b", "x;drop table jobs", "", "a" * 60):
        with pytest.raises(QueueError, match="queue.schema"):
            PostgresQueue(bare_spec.url, schema=bad)


# -- claim at scale ----------------------------------------------------------

def test_claim_uses_the_partial_index_with_100k_finished_jobs(postgres_spec: QueueSpec) -> None:
    s = f'"{postgres_spec.schema}"'
    with psycopg.connect(postgres_spec.url, autocommit=True) as db:
        db.execute(f"INSERT INTO {s}.jobs (id, status, passes, created_at, finished_at)"
                   " SELECT md5(g::text), 'succeeded', '[\"noop\"]', now() - interval '1 day', now()"
                   " FROM generate_series(1, 100000) g")
    with postgres_spec.open() as q:
        ids = q.submit([NewJob(priority=p) for p in (0, 2, 1)])

    def claim_plan() -> str:
        with psycopg.connect(postgres_spec.url, autocommit=True) as db:
            db.execute(f"ANALYZE {s}.jobs")  # what autovacuum would have done by now
            sql = PostgresQueue(postgres_spec.url, schema=postgres_spec.schema, listen=False).statement("claim_jobs")
            return "\n".join(r[0] for r in db.execute("EXPLAIN " + sql, {"limit": 5, "worker": "w", "lease": 60.0}))

    plan = claim_plan()
    assert "Index Scan using jobs_runnable" in plan, plan
    assert "Seq Scan" not in plan, plan
    with postgres_spec.open() as q:
        assert [j.id for j in q.claim("w", 5, 60)] == [ids[1], ids[2], ids[0]]
        assert q.counts()["succeeded"] == 100000
        # A backlog as well: still the index, read in order, no sort of the queued rows.
        q.submit([NewJob(priority=i % 3) for i in range(5000)])
    plan = claim_plan()
    assert "Index Scan using jobs_runnable" in plan, plan
    assert "Seq Scan" not in plan, plan


# -- NOTIFY ------------------------------------------------------------------

def test_notify_wakes_a_listening_queue(postgres_spec: QueueSpec) -> None:
    listener = PostgresQueue(postgres_spec.url, schema=postgres_spec.schema, listen=True)
    other = postgres_spec.open()
    try:
        fd = listener.wakeup_fileno()
        assert fd is not None, listener.pop_warnings()
        assert listener.pop_warnings() == []
        assert listener.wakeup_fileno() == fd
        listener.consume_wakeups()
        assert not readable(fd, 0.05)

        # A submit from another process.
        ctx = multiprocessing.get_context("spawn")
        proc = ctx.Process(target=submit_after, args=(postgres_spec, 0.0))
        proc.start()
        assert readable(fd, 15)
        proc.join(10)
        listener.consume_wakeups()
        assert not readable(fd, 0.05)

        # Every way a job becomes runnable again notifies too.
        [job] = other.claim("w", 1, 60)
        other.finish(job.id, "w", AttemptEnd("interrupted"), 0)  # requeue after an interrupt
        assert readable(fd, 5)
        listener.consume_wakeups()
        [job] = other.claim("w", 1, 60)
        other.finish(job.id, "w", AttemptEnd("error"), 0)  # retry with backoff
        assert readable(fd, 5)
        listener.consume_wakeups()
        [job] = other.claim("w", 1, 0.01)
        time.sleep(0.05)
        assert other.reclaim_expired(0) == [job.id]  # reclaim of a lost lease
        assert readable(fd, 5)
        listener.consume_wakeups()
        [job] = other.claim("w", 1, 60)
        assert other.finish(job.id, "w", AttemptEnd("error"), 0) == "dead"
        listener.consume_wakeups()
        assert not readable(fd, 0.2)  # dead is not runnable: no wake-up
        other.retry([job.id])  # an operator's retry
        assert readable(fd, 5)
        listener.consume_wakeups()
        assert not readable(fd, 0.05)
    finally:
        listener.close()
        other.close()


def test_listen_off_and_transaction_pooler_fall_back_to_polling(postgres_spec: QueueSpec) -> None:
    with PostgresQueue(postgres_spec.url, schema=postgres_spec.schema, listen=False) as q:
        assert q.wakeup_fileno() is None
        q.consume_wakeups()
        assert q.pop_warnings() == []
    # Port 6543 is Supabase's transaction-mode pooler: no LISTEN, no prepared statements.
    pooled = PostgresQueue("postgresql://postgres@127.0.0.1:6543/postgres", listen=True)
    assert pooled.wakeup_fileno() is None
    [warning] = pooled.pop_warnings()
    assert "6543" in warning and "queue.listen" in warning
    assert pooled.pop_warnings() == []
    pooled.close()


# -- connections -------------------------------------------------------------

def test_a_dropped_connection_is_replaced(postgres_spec: QueueSpec) -> None:
    tag = f"dstest-{uuid.uuid4().hex[:8]}"
    q = PostgresQueue(tagged(postgres_spec.url, tag), schema=postgres_spec.schema, listen=False)
    try:
        ids = q.submit([NewJob() for _ in range(3)])
        calls = [
            lambda: q.counts(),
            lambda: q.submit([NewJob()]),
            lambda: q.claim("w", 1, 60),
            lambda: q.heartbeat("w", {ids[0]: (1, 2, 3.0)}, 60),
            lambda: q.record_page(ids[0], "w", "ocr", 1, {"t": 1}),
            lambda: q.finish(ids[0], "w", AttemptEnd("succeeded"), 0),
            lambda: q.get(ids[1]),
        ]
        for call in calls:
            assert terminate(postgres_spec.url, tag) == 1
            try:
                call()
            except QueueUnavailable:
                pass  # allowed once; the next call must work
            call()
        assert q.get(ids[0]).status == "succeeded"
        assert q.pages(ids[0]) == [("ocr", 1, {"t": 1})]
    finally:
        q.close()


def test_a_dropped_listen_connection_is_reopened(postgres_spec: QueueSpec) -> None:
    tag = f"dltest-{uuid.uuid4().hex[:8]}"
    q = PostgresQueue(tagged(postgres_spec.url, tag), schema=postgres_spec.schema, listen=True)
    other = postgres_spec.open()
    try:
        fd = q.wakeup_fileno()
        assert fd is not None
        assert terminate(postgres_spec.url, f"{tag}-listen") == 1
        assert readable(fd, 5)  # EOF: the caller's select() wakes up…
        q.consume_wakeups()     # …and this notices the loss instead of leaving the socket readable
        assert q.wakeup_fileno() is None
        assert any("LISTEN connection lost" in w for w in q.pop_warnings())
        deadline = time.monotonic() + 10
        while (fd := q.wakeup_fileno()) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fd is not None
        other.submit([NewJob()])
        assert readable(fd, 5)
        q.consume_wakeups()
    finally:
        q.close()
        other.close()


def test_an_unreachable_server_raises_queue_unavailable() -> None:
    q = PostgresQueue("postgresql://postgres@127.0.0.1:1/test", connect_timeout_s=2)
    for call in (q.counts, q.check_schema, q.migrate, lambda: q.claim("w", 1, 60), lambda: q.submit([NewJob()])):
        with pytest.raises(QueueUnavailable, match="cannot connect"):
            call()
    assert q.wakeup_fileno() is None
    assert any("LISTEN unavailable" in w for w in q.pop_warnings())
    q.close()


def test_url_options_pass_through(postgres_spec: QueueSpec) -> None:
    require_postgres()
    with psycopg.connect(postgres_spec.url) as db:
        ssl = db.execute("SHOW ssl").fetchone()[0]
    url = f"{postgres_spec.url}{'&' if '?' in postgres_spec.url else '?'}sslmode=require"
    q = PostgresQueue(url, schema=postgres_spec.schema, listen=False)
    try:
        if ssl == "on":
            q.check_schema()
        else:  # the test server has no TLS: the refusal proves sslmode reached libpq
            with pytest.raises(QueueUnavailable, match="SSL"):
                q.counts()
    finally:
        q.close()


# -- behind a transaction-mode pooler (a real PgBouncer) ------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def pgbouncer_url() -> Iterator[str]:
    """A private PgBouncer in transaction mode in front of the test database (like Supabase's port 6543)."""
    url = require_postgres()
    binary = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    params = conninfo_to_dict(url)
    port = _free_port()
    # Not under pytest's tmp_path: PgBouncer refuses to run as root, and the user it
    # switches to must be able to reach its files.
    work = Path(tempfile.mkdtemp(prefix="docsuper-pgbouncer-"))
    os.chmod(work, 0o755)
    (work / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"{params.get('dbname', 'test')} = host={params.get('host', '127.0.0.1')} port={params.get('port', 5432)}"
        f" dbname={params.get('dbname', 'test')} user={params.get('user', 'postgres')}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        # Several server connections used in turn, so consecutive transactions of one
        # client land on different ones, as on a busy pooler.
        "auth_type = any\npool_mode = transaction\ndefault_pool_size = 3\nmin_pool_size = 3\n"
        "server_round_robin = 1\n"
        f"logfile = {work}/pgbouncer.log\npidfile = {work}/pgbouncer.pid\n")
    cmd = [binary, str(work / "pgbouncer.ini")]
    if os.geteuid() == 0:
        shutil.chown(work, "postgres")
        cmd[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pooled = f"postgresql://{params.get('user', 'postgres')}@127.0.0.1:{port}/{params.get('dbname', 'test')}"
    try:
        deadline = time.monotonic() + 15

        def give_up(what: str) -> NoReturn:
            log = work / "pgbouncer.log"
            pytest.fail(f"pgbouncer {what}: {proc.stderr.read().decode() if proc.stderr else ''}"
                        f"{log.read_text() if log.exists() else ''}")

        while True:
            client = None
            try:
                client = psycopg.connect(pooled, connect_timeout=2)
                client.execute("SELECT 1")
                break
            except psycopg.Error:
                if client is not None:
                    client.close()
                if proc.poll() is not None or time.monotonic() > deadline:
                    give_up("did not start")
                time.sleep(0.1)
        # PgBouncer opens the min_pool_size server connections one per maintenance round
        # (about a third of a second each) and only while a client is connected: until then
        # every transaction lands on the one server connection, where a prepared statement
        # never goes missing. Hold the client until SHOW POOLS counts all three.
        console = pooled.rsplit("/", 1)[0] + "/pgbouncer"
        with client, psycopg.connect(console, autocommit=True,
                                     cursor_factory=psycopg.ClientCursor) as admin:  # simple protocol only
            while True:
                cur = admin.execute("SHOW POOLS")
                names = [c.name for c in cur.description or []]
                pools = [dict(zip(names, row)) for row in cur.fetchall()]
                servers = sum(pool["sv_active"] + pool["sv_idle"] + pool["sv_used"]
                              for pool in pools if pool["database"] == params.get("dbname", "test"))
                if servers >= 3:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    give_up(f"opened {servers} of its 3 server connections: {pools}")
                time.sleep(0.05)
        yield pooled
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def exercise(q: PostgresQueue, rounds: int = 12) -> None:
    """Every statement well past psycopg's prepare threshold (5 runs)."""
    before = q.counts()["succeeded"]
    for i in range(rounds):
        [job_id] = q.submit([NewJob(passes=["noop"])])
        jobs = q.claim(f"w{i}", 1, 60)
        assert [j.id for j in jobs] == [job_id]
        assert q.heartbeat(f"w{i}", {job_id: (1, 1, 1.0)}, 60) == set()
        assert q.record_page(job_id, f"w{i}", "noop", 1, {"i": i})
        assert q.finish(job_id, f"w{i}", AttemptEnd("succeeded"), 0) == "succeeded"
        assert q.get(job_id).status == "succeeded"
        if i % 2:
            # An odd number of transactions every other round, so the pooler's rotation
            # cannot line a statement up with the one server connection it was prepared on.
            assert not q.has_queued()
    assert q.counts()["succeeded"] == before + rounds


def test_behind_a_transaction_pooler_listen_falls_back_to_polling(postgres_spec: QueueSpec, pgbouncer_url: str) -> None:
    q = PostgresQueue(pgbouncer_url, schema=postgres_spec.schema, listen=True)
    try:
        # Not port 6543, so only the probe can tell that notifications do not come through.
        assert q.wakeup_fileno() is None
        [warning] = q.pop_warnings()
        assert "does not work on this connection" in warning
        assert q.wakeup_fileno() is None and q.pop_warnings() == []
        exercise(q)
    finally:
        q.close()


def test_behind_a_transaction_pooler_prepared_statements_are_turned_off(postgres_spec: QueueSpec,
                                                                         pgbouncer_url: str) -> None:
    # listen = false, as docs/postgres.md says for a transaction pooler: never prepares.
    with PostgresQueue(pgbouncer_url, schema=postgres_spec.schema, listen=False) as q:
        exercise(q)
    # listen left on and never asked for (no probe ran): psycopg starts preparing after
    # five runs, the pooler loses the statements, and the queue notices and stops.
    with PostgresQueue(pgbouncer_url, schema=postgres_spec.schema, listen=True) as q:
        exercise(q)
        assert q._prepare_threshold is None  # the failure was seen and preparing stopped


# -- the application's side: enqueue() in SQL, the completion NOTIFY -----------------

def psql(url: str, sql: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    return subprocess.run(["psql", url, "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                          capture_output=True, text=True, timeout=60)


def test_enqueue_from_psql_checks_its_arguments_wakes_workers_and_honours_keys(postgres_spec: QueueSpec) -> None:
    s = postgres_spec.schema
    listener = PostgresQueue(postgres_spec.url, schema=s, listen=True)
    try:
        fd = listener.wakeup_fileno()
        assert fd is not None, listener.pop_warnings()
        listener.consume_wakeups()
        done = psql(postgres_spec.url, f"SELECT {s}.enqueue('https://files.example/scan.pdf', '{{noop}}',"
                                       " '{\"lang\": \"de\"}', priority => 2, idempotency_key => 'upload-1')")
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.strip()
        assert readable(fd, 5)  # idle workers woke
        job = listener.get(job_id)
        assert (job.source, job.passes, job.options, job.priority, job.max_attempts, job.status) == (
            "https://files.example/scan.pdf", ["noop"], {"lang": "de"}, 2, 3, "queued")
        again = psql(postgres_spec.url, f"SELECT {s}.enqueue('other.pdf', idempotency_key => 'upload-1')")
        assert again.stdout.strip() == job_id
        defaults = psql(postgres_spec.url, f"SELECT {s}.enqueue(NULL)")
        assert listener.get(defaults.stdout.strip()).passes == ["ocr"]

        refused = psql(postgres_spec.url, f"SELECT {s}.enqueue('a.pdf', '{{ocr,orc}}')")
        assert refused.returncode != 0
        assert 'ERROR:  enqueue: unknown pass "orc" (registered: ' in refused.stderr, refused.stderr
        refused = psql(postgres_spec.url, f"SELECT {s}.enqueue('a.pdf', priority => 99999)")
        assert "enqueue: priority must be between -1000 and 1000, not 99999" in refused.stderr
        assert listener.counts()["queued"] == 2
    finally:
        listener.close()


def test_a_final_state_sends_the_completion_notify(postgres_spec: QueueSpec) -> None:
    channel = f"{postgres_spec.schema}_done"
    with psycopg.connect(postgres_spec.url, autocommit=True) as watcher, postgres_spec.open() as q:
        watcher.execute(f'LISTEN "{channel}"')

        def heard(timeout: float = 5) -> list[dict[str, str]]:
            notes = []
            for note in watcher.notifies(timeout=timeout, stop_after=1):
                notes.append(json.loads(note.payload))
            for note in watcher.notifies(timeout=0.2):  # and nothing more
                notes.append(json.loads(note.payload))
            return notes

        ok, failing, queued = q.submit([NewJob(passes=["noop"], max_attempts=2) for _ in range(3)])
        q.claim("w", 2, 60)
        q.finish(ok, "w", AttemptEnd("succeeded"), 0)
        assert heard() == [{"id": ok, "status": "succeeded"}]
        q.finish(failing, "w", AttemptEnd("error"), 0)  # attempts left: queued again, not final
        assert heard(0.3) == []
        q.cancel(queued)
        assert heard() == [{"id": queued, "status": "cancelled"}]
        q.claim("w", 1, 60)
        q.finish(failing, "w", AttemptEnd("error"), 0)
        assert heard() == [{"id": failing, "status": "dead"}]
