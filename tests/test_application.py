"""The application's side through the real command and a real daemon: submit --key, once keeping
history, enqueue from psql and from the Python API run by `docsuper run`, the completion webhook,
purge and retention."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from docsuper.supervisor import webhook
from docsuper.supervisor.client import Client, JobNotFound
from docsuper.supervisor.queue.base import NewJob

from .daemon import Env, parse_log, wait_for
from .queuekit import QueueSpec, backdate

# No-op and diagnostic jobs need no document libraries in the fork server.
LIGHT = {"DOCSUPER_WORKERS_PRELOAD": "json"}


def test_submit_with_a_key_gives_the_same_job_twice(env: Env) -> None:
    first = env.cli("submit", "--passes", "noop", "--key", "upload-17").stdout.split()
    again = env.cli("submit", "--passes", "noop", "--key", "upload-17").stdout.split()
    assert first == again and len(first) == 1
    with env.queue() as q:
        assert q.counts()["queued"] == 1
        assert q.get(first[0]).passes == ["noop"]
    many = env.cli("submit", "--passes", "noop", "--key", "k", "--count", "2", check=False)
    assert (many.returncode, many.stdout) == (2, "")
    assert many.stderr == "docsuper: --key names one job: give at most one PATH and no --count\n"
    refused = env.cli("submit", "--passes", "noop", "--priority", "5000", check=False)
    assert refused.returncode == 2
    assert refused.stderr == "docsuper: enqueue: priority must be between -1000 and 1000, not 5000\n"


def test_once_on_a_finished_job_keeps_its_results_unless_store(env: Env) -> None:
    env.set(**LIGHT)
    [job_id] = env.submit("pages", pages=2)
    env.drain()
    with env.queue() as q:
        before = q.get(job_id)
        stored = q.pages(job_id)
    assert before.status == "succeeded" and [r["attempt"] for _, _, r in stored] == [1, 1]

    replay = env.cli("once", job_id)
    assert "succeeded" in replay.stdout and "job is now succeeded" in replay.stdout
    with env.queue() as q:
        assert q.get(job_id) == before
        assert q.pages(job_id) == stored
        attempts = q.attempts(job_id)
        assert [(a.outcome, a.counted, a.replay) for a in attempts] == [
            ("succeeded", True, False), ("succeeded", False, True)]
        assert attempts[1].worker.startswith("once:") and attempts[1].last_page == 2

    env.cli("once", "--store", job_id)
    with env.queue() as q:
        after = q.get(job_id)
        assert (after.status, after.attempts) == ("succeeded", 2)
        assert [r["attempt"] for _, _, r in q.pages(job_id)] == [2, 2]  # the pages were done again and kept
        assert [(a.counted, a.replay) for a in q.attempts(job_id)] == [(True, False), (False, True), (True, False)]


@pytest.mark.postgres
def test_jobs_enqueued_from_psql_and_from_the_api_are_run_by_a_real_daemon(tmp_path: Path,
                                                                           postgres_spec: QueueSpec) -> None:
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    env = Env(tmp_path, url=postgres_spec.url, DOCSUPER_QUEUE_SCHEMA=postgres_spec.schema, **LIGHT)
    daemon = env.start()
    try:
        s = postgres_spec.schema
        from_psql = subprocess.run(
            ["psql", postgres_spec.url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c",
             f"""SELECT {s}.enqueue(NULL, '{{pages}}', '{{"pages": 3}}', idempotency_key => 'upload-1')"""],
            capture_output=True, text=True, timeout=60, check=True).stdout.strip()
        with Client.open(postgres_spec.url, schema=s) as docs:
            from_api = docs.enqueue(None, passes=["pages"], options={"pages": 2}, idempotency_key="upload-2")
            assert docs.enqueue(None, passes=["pages"], idempotency_key="upload-1") == from_psql
            for job_id, pages in ((from_psql, 3), (from_api, 2)):
                job = docs.wait(job_id, timeout_s=60)
                assert (job.status, job.progress_done, job.attempts) == ("succeeded", pages, 1)
                assert [p.text for p in docs.pages(job_id, "pages")] == [f"page {n}" for n in range(1, pages + 1)]
        # What an application reads: one SELECT for status and progress.
        rows = subprocess.run(
            ["psql", postgres_spec.url, "-X", "-At", "-F", "|", "-c",
             f"SELECT id, status, pages_done, pages_total FROM {s}.job_status ORDER BY pages_total"],
            capture_output=True, text=True, timeout=60, check=True).stdout.split()
        assert rows == [f"{from_api}|succeeded|2|2", f"{from_psql}|succeeded|3|3"]
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


# -- the completion webhook ----------------------------------------------------

class Receiver:
    """An HTTP endpoint on 127.0.0.1 that records every POST and answers from a script (then 200)."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = list(answers)
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.end_headers()
                with receiver.arrived:
                    receiver.posts.append((dict(self.headers), body))
                    receiver.arrived.notify_all()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/docsuper?token=abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 60) -> list[tuple[dict[str, str], bytes]]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.posts) >= n, timeout), self.posts
            return list(self.posts)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_final_state_is_posted_signed_and_retried_after_a_500(env: Env) -> None:
    receiver = Receiver([500])
    try:
        env.set(**LIGHT, DOCSUPER_NOTIFY_WEBHOOK_URL=receiver.url, DOCSUPER_NOTIFY_WEBHOOK_SECRET="whsec-test-1",
                DOCSUPER_NOTIFY_WEBHOOK_BACKOFF_S="0.2")
        [ok] = env.submit("pages", pages=2)
        [bad] = env.cli("submit", "--passes", "invalid", "--max-attempts", "1").stdout.split()
        log = env.drain()
        posts = receiver.wait_for(3)
    finally:
        receiver.close()
    bodies = [json.loads(body) for _, body in posts]
    # The first delivery answered 500 and came again, with the same delivery id.
    first, again = posts[0][0]["X-Docsuper-Delivery"], posts[1][0]["X-Docsuper-Delivery"]
    assert first == again and bodies[0] == bodies[1]
    by_job = {b["job_id"]: b for b in bodies}
    assert by_job[ok] == {"event": "job.finished", "job_id": ok, "status": "succeeded", "attempts": 1, "pages": 2}
    assert by_job[bad] == {"event": "job.finished", "job_id": bad, "status": "dead", "attempts": 1, "pages": None}
    for headers, body in posts:
        assert headers["Content-Type"] == "application/json" and headers["X-Docsuper-Event"] == "job.finished"
        assert webhook.verify("whsec-test-1", headers["X-Docsuper-Timestamp"], body, headers["X-Docsuper-Signature"])
        assert not webhook.verify("other-secret", headers["X-Docsuper-Timestamp"], body,
                                  headers["X-Docsuper-Signature"])
    failed = [r for r in log if r.get("event") == "webhook_failed"]
    assert [(r["status"], r["retrying"]) for r in failed] == [(500, True)]
    assert all("token" not in json.dumps(r) and "whsec" not in json.dumps(r) for r in log)


def test_an_unanswering_webhook_never_holds_up_the_jobs(env: Env) -> None:
    # A listener that accepts connections and never answers stands in for an unreachable host.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        env.set(**LIGHT, DOCSUPER_NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{silent.getsockname()[1]}/",
                DOCSUPER_NOTIFY_WEBHOOK_SECRET="whsec-test-2", DOCSUPER_NOTIFY_WEBHOOK_TIMEOUT_S="0.5",
                DOCSUPER_NOTIFY_WEBHOOK_RETRIES="1", DOCSUPER_NOTIFY_WEBHOOK_BACKOFF_S="0.1")
        env.submit("noop", count=5)
        log = env.drain()
    finally:
        silent.close()
    assert sum(1 for r in log if r.get("event") == "job_finished") == 5
    failed = [r for r in log if r.get("event") == "webhook_failed"]
    assert failed and all(r["status"] is None for r in failed)
    # Each delivery ends once: given up after its retry, or dropped at shutdown (logged, counted).
    given_up = sum(1 for r in failed if not r["retrying"])
    dropped = sum(r["deliveries"] for r in log if r.get("event") == "webhook_dropped")
    assert given_up + dropped == 5


def test_a_webhook_without_a_secret_is_refused_at_start(env: Env) -> None:
    env.set(DOCSUPER_NOTIFY_WEBHOOK_URL="https://app.example/hook")
    result = env.cli("run", "--drain", check=False)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("notify.webhook_secret (default): required when notify.webhook_url is set")


# -- retention -------------------------------------------------------------------

def test_purge_from_the_command_line(env: Env) -> None:
    env.set(**LIGHT)
    old, new = env.submit("noop", count=2)
    [dead] = env.cli("submit", "--passes", "invalid", "--max-attempts", "1").stdout.split()
    env.drain()
    spec = QueueSpec("sqlite", env.url)
    backdate(spec, old, 40)
    backdate(spec, dead, 40)
    [queued] = env.submit("noop")
    dry = env.cli("purge", "--finished-before", "30d", "--dry-run")
    assert dry.stdout == "would delete 1 job(s): 1 succeeded, 0 cancelled, 0 dead\n"  # dead: kept 90 days
    done = env.cli("purge", "--finished-before", "30d", "--dead-before", "35d")
    assert done.stdout == "deleted 2 job(s): 1 succeeded, 0 cancelled, 1 dead\n"
    with env.queue() as q:
        assert {j.id for j in q.list_jobs()} == {new, queued}
    bad = env.cli("purge", "--finished-before", "a month", check=False)
    assert (bad.returncode, bad.stderr) == (2, "docsuper: purge: 'a month' is not an age (e.g. 30d, 12h, 90m)\n")


def test_the_daemon_applies_retention_by_itself_without_touching_live_jobs(env: Env) -> None:
    # Finished jobs may stay 0.5 s; dead ones forever.
    env.set(**LIGHT, DOCSUPER_RETENTION_FINISHED_DAYS=str(0.5 / 86400), DOCSUPER_RETENTION_DEAD_DAYS="0",
            DOCSUPER_RETENTION_INTERVAL_S="1", DOCSUPER_RETENTION_BATCH="2")
    done = env.submit("noop", count=5)
    [dead] = env.cli("submit", "--passes", "invalid", "--max-attempts", "1").stdout.split()
    [long_running] = env.submit("sleep", sleep_s=60)
    daemon = env.start()
    try:
        with env.queue() as q:
            wait_for(lambda: q.counts()["succeeded"] == 0 and q.counts()["dead"] == 1 and q.get(long_running).status
                     == "running", timeout=60, what="the finished jobs purged")
            assert q.get(dead).status == "dead"
            for job_id in done:
                with pytest.raises(JobNotFound):
                    q.get(job_id)
            [later] = q.submit([NewJob(passes=["noop"], run_at=time.time() + 3600)])  # queued, not due
            q.cancel(long_running)
            wait_for(lambda: q.counts()["cancelled"] == 0 and q.counts()["running"] == 0, timeout=60,
                     what="the cancelled job purged")
            assert q.get(later).status == "queued"
    finally:
        daemon.terminate()
        out, _ = daemon.communicate(timeout=30)
    purged = [r for r in parse_log(out) if r.get("event") == "jobs_purged"]
    assert sum(r.get("succeeded", 0) for r in purged) == 5 and all(r.get("succeeded", 0) <= 2 for r in purged)
