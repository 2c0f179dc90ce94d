#!/usr/bin/env python3
"""The PostgreSQL queue under real `docsuper run` processes: wake-up latency, throughput, purge.

    .venv/bin/python scripts/bench_queue.py [--url postgresql://…] [--jobs 600] [--samples 40]
        [--only latency,throughput,purge] [--purge-jobs 100000]

Prints, measured now against the given server (a throwaway schema, dropped at the end):
  - enqueue → child running its first pass, median and p95, for a worker that is idle
    when the job arrives, the job enqueued the way an application does it: one
    `SELECT docsuper.enqueue(…)` on a connection of its own. Woken by the function's
    NOTIFY, and found by polling alone (queue.listen = false on the host, the
    queue.poll_interval_s of the deployment, default 5 s);
  - no-op jobs per second with one host and with three hosts on one queue
    (workers.concurrency each), from the first claim to the last finish;
  - purge: `--purge-jobs` finished jobs (each with an attempt and a page, finished 40
    days ago) deleted in batches of 1000 as `docsuper purge` does, while a host claims
    jobs arriving at random: jobs deleted per second, and enqueue → claim for the jobs
    that arrived meanwhile against the same measured with no purge running.

Enqueue → claim comes from the database (the attempt's start minus the job's
creation, one clock); claim → first pass from the supervisor's own `start_ms`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docsuper.supervisor.queue.base import NewJob  # noqa: E402
from docsuper.supervisor.queue.postgres import PostgresQueue  # noqa: E402


def host_env(url: str, schema: str, home: Path, concurrency: int, listen: bool, poll_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCSUPER_", "WORKER_CONCURRENCY"))}
    env.pop("DATABASE_URL", None)
    (home / "none.toml").write_text("")
    env.update({
        "DOCSUPER_QUEUE_URL": url,
        "DOCSUPER_QUEUE_SCHEMA": schema,
        "DOCSUPER_CONFIG": str(home / "none.toml"),
        "DOCSUPER_QUEUE_LISTEN": "true" if listen else "false",
        "DOCSUPER_QUEUE_POLL_INTERVAL_S": str(poll_s),
        "WORKER_CONCURRENCY": str(concurrency),
        "DOCSUPER_WORKERS_PRELOAD": "json",  # no-op jobs need no document libraries
        "DOCSUPER_LOG_LEVEL": "info",
        # The purge run measures `docsuper purge`; the host's own retention stays out of it.
        "DOCSUPER_RETENTION_FINISHED_DAYS": "0",
        "DOCSUPER_RETENTION_DEAD_DAYS": "0",
    })
    return env


def start_host(url: str, schema: str, workdir: Path, name: str, concurrency: int, listen: bool, poll_s: float,
               drain: bool) -> tuple[subprocess.Popen[bytes], Path]:
    home = workdir / name
    home.mkdir(parents=True, exist_ok=True)
    log = home / "log.jsonl"
    args = [sys.executable, "-m", "docsuper.supervisor.cli", "run"] + (["--drain"] if drain else [])
    with open(log, "ab") as out:
        proc = subprocess.Popen(args, env=host_env(url, schema, home, concurrency, listen, poll_s), cwd=home,
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_ms(logs: list[Path]) -> dict[str, float]:
    """job id → claim-to-first-pass milliseconds, from the hosts' job_finished records."""
    out: dict[str, float] = {}
    for log in logs:
        for line in log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == "job_finished" and record.get("start_ms") is not None:
                    out[record["job_id"]] = record["start_ms"]
    return out


def wait_registered(q: PostgresQueue, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(q.workers()) < n:
        if time.monotonic() > deadline:
            raise SystemExit("the hosts did not start (see their logs)")
        time.sleep(0.1)
    time.sleep(0.5)  # past the first claim, idle in select()


def wait_done(q: PostgresQueue, total: int, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while q.counts()["succeeded"] < total:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {q.counts()} after {timeout} s")
        time.sleep(0.1)


def enqueue_sql(db: psycopg.Connection[Any], schema: str) -> str:
    """What an application runs (psql, node-postgres, a trigger): one call of the SQL function."""
    row = db.execute(f'SELECT "{schema}".enqueue(NULL, %s)', (["noop"],)).fetchone()
    assert row is not None
    return str(row[0])


def arrivals(db: psycopg.Connection[Any], schema: str, count: int | None, gap_s: float, rng: random.Random,
             stop: threading.Event | None = None) -> list[str]:
    """Jobs enqueued at random (a Poisson stream, mean gap `gap_s`): each lands at a random point of
    the poll cycle, as in production. No-op jobs take tens of ms, so each meets an idle slot."""
    ids: list[str] = []
    while (count is None or len(ids) < count) and not (stop is not None and stop.is_set()):
        time.sleep(rng.expovariate(1 / gap_s))
        ids.append(enqueue_sql(db, schema))
    return ids


def claim_latencies(q: PostgresQueue, ids: list[str]) -> list[float]:
    """Enqueue → claim from the database's own clock."""
    out = []
    for job_id in ids:
        job = q.get(job_id)
        out.append(q.attempts(job_id)[0].started_at - job.created_at)
    return out


def latency(url: str, schema: str, workdir: Path, samples: int, notify: bool, poll_s: float,
            concurrency: int, gap_s: float = 0.5) -> list[float]:
    """Seconds from enqueue to the child running its first pass, for jobs arriving at random to an idle host."""
    q = PostgresQueue(url, schema=schema, listen=False)
    proc, log = start_host(url, schema, workdir, f"latency-{'notify' if notify else 'poll'}", concurrency,
                           listen=notify, poll_s=poll_s, drain=False)
    try:
        wait_registered(q, 1)
        base = q.counts()["succeeded"]
        with psycopg.connect(url, autocommit=True) as app:
            ids = arrivals(app, schema, samples, gap_s, random.Random(7))
        wait_done(q, base + samples, timeout=poll_s * 3 + 60)
        deadline = time.monotonic() + 10
        starts = start_ms([log])
        while len(starts) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
            starts = start_ms([log])
    finally:
        stop(proc)
    result = []
    for job_id in ids:
        job = q.get(job_id)
        [attempt] = q.attempts(job_id)
        result.append(attempt.started_at - job.created_at + starts[job_id] / 1000)
    q.close()
    return result


def throughput(url: str, schema: str, workdir: Path, jobs: int, hosts: int, concurrency: int) -> dict[str, float]:
    q = PostgresQueue(url, schema=schema, listen=False)
    ids = q.submit([NewJob(passes=["noop"]) for _ in range(jobs)])
    wall = time.monotonic()
    procs = [start_host(url, schema, workdir, f"throughput-{hosts}-{i}", concurrency, listen=True, poll_s=5.0,
                        drain=True) for i in range(hosts)]
    try:
        for proc, log in procs:
            if proc.wait(timeout=900) != 0:
                raise SystemExit(f"a host exited {proc.returncode}: see {log}")
    finally:
        for proc, _ in procs:
            stop(proc)
    wall = time.monotonic() - wall
    with psycopg.connect(url) as db:
        first, last, n = db.execute(
            f'SELECT extract(epoch FROM min(a.started_at))::float8, extract(epoch FROM max(a.ended_at))::float8,'
            f' count(*) FROM "{schema}".attempts a WHERE a.job_id = ANY(%s) AND a.outcome = %s',
            (ids, "succeeded")).fetchone()
    q.close()
    if n != jobs:
        raise SystemExit(f"{n} of {jobs} jobs succeeded")
    return {"jobs_per_s": jobs / (last - first), "wall_jobs_per_s": jobs / wall, "seconds": last - first}


def purge_while_claiming(url: str, schema: str, workdir: Path, finished: int, batch: int, concurrency: int,
                         samples: int, gap_s: float = 0.05) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as db:
        s = f'"{schema}"'
        db.execute(f"INSERT INTO {s}.jobs (id, status, passes, attempts, attempt_seq, created_at, started_at,"
                   " finished_at, progress_done, progress_total, result)"
                   " SELECT md5('purge' || g), 'succeeded', '[\"ocr\"]', 1, 1, now() - interval '41 days',"
                   " now() - interval '41 days', now() - interval '40 days', 1, 1, '{\"ocr\": {\"pages\": 1}}'"
                   " FROM generate_series(1, %s) g", (finished,))
        db.execute(f"INSERT INTO {s}.attempts (job_id, number, worker, started_at, outcome, ended_at, duration_s)"
                   f" SELECT id, 1, 'old-host', started_at, 'succeeded', finished_at, 1.0 FROM {s}.jobs"
                   " WHERE id LIKE '%%' AND status = 'succeeded' AND finished_at < now() - interval '30 days'")
        db.execute(f"INSERT INTO {s}.pages (job_id, pass, page, result)"
                   f" SELECT id, 'ocr', 1, jsonb_build_object('text', repeat('Befund unauffällig ', 100))"
                   f" FROM {s}.jobs WHERE status = 'succeeded' AND finished_at < now() - interval '30 days'")
        db.execute(f"ANALYZE {s}.jobs")
        db.execute(f"ANALYZE {s}.attempts")
        db.execute(f"ANALYZE {s}.pages")
    q = PostgresQueue(url, schema=schema, listen=False)
    proc, _ = start_host(url, schema, workdir, "purge", concurrency, listen=True, poll_s=5.0, drain=False)
    try:
        wait_registered(q, 1)
        with psycopg.connect(url, autocommit=True) as app:
            idle_ids = arrivals(app, schema, samples, gap_s, random.Random(11))
        halt = threading.Event()
        during: list[str] = []

        def stream() -> None:
            with psycopg.connect(url, autocommit=True) as app:
                during.extend(arrivals(app, schema, None, gap_s, random.Random(13), halt))

        feeder = threading.Thread(target=stream)
        feeder.start()
        cutoff = time.time() - 30 * 86400
        purger = PostgresQueue(url, schema=schema, listen=False)
        started = time.monotonic()
        deleted = 0
        while True:
            n = sum(purger.purge(cutoff, cutoff, batch).values())
            deleted += n
            if n < batch:
                break
        seconds = time.monotonic() - started
        halt.set()
        feeder.join()
        purger.close()
        wait_done(q, len(idle_ids) + len(during))  # the old jobs are gone: these are all that succeeded
        idle = claim_latencies(q, idle_ids)
        busy = claim_latencies(q, during)
    finally:
        stop(proc)
    q.close()
    return {"deleted": deleted, "seconds": seconds, "jobs_per_s": deleted / seconds, "batch": batch,
            "claim_idle_ms": {"median": statistics.median(idle) * 1000, "p95": pct(idle, 0.95) * 1000,
                              "n": len(idle)},
            "claim_during_ms": {"median": statistics.median(busy) * 1000, "p95": pct(busy, 0.95) * 1000,
                                "max": max(busy) * 1000, "n": len(busy)}}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("DOCSUPER_TEST_POSTGRES_URL",
                                                        "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--jobs", type=int, default=600, help="no-op jobs per throughput run")
    parser.add_argument("--samples", type=int, default=40, help="jobs per latency measurement")
    parser.add_argument("--poll", type=float, default=5.0, help="queue.poll_interval_s of the polling run")
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--purge-jobs", type=int, default=100_000, help="finished jobs the purge run deletes")
    parser.add_argument("--purge-batch", type=int, default=1000, help="jobs per purge statement")
    parser.add_argument("--only", default="latency,throughput,purge", help="comma-separated runs to do")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()
    runs = set(args.only.split(","))

    report: dict[str, Any] = {"concurrency": args.concurrency, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench_queue_") as tmp:
        workdir = Path(tmp)
        if "latency" in runs:
            with throwaway_schema(args.url) as schema:
                for name, notify in (("notify", True), ("poll", False)):
                    values = latency(args.url, schema, workdir, args.samples, notify, args.poll, args.concurrency)
                    report[f"latency_{name}"] = {"median_ms": statistics.median(values) * 1000,
                                                 "p95_ms": pct(values, 0.95) * 1000, "n": len(values)}
        if "throughput" in runs:
            with throwaway_schema(args.url) as schema:
                for hosts in (1, 3):
                    report[f"throughput_{hosts}_hosts"] = throughput(args.url, schema, workdir, args.jobs, hosts,
                                                                     args.concurrency)
        if "purge" in runs:
            with throwaway_schema(args.url) as schema:
                report["purge"] = purge_while_claiming(args.url, schema, workdir, args.purge_jobs, args.purge_batch,
                                                       args.concurrency, args.samples)

    if args.json:
        print(json.dumps(report))
        return
    print(f"PostgreSQL queue, {report['cpus']} CPUs, workers.concurrency {args.concurrency}")
    for name, label in (("notify", "NOTIFY"), ("poll", f"polling only (every {args.poll:g} s)")):
        if f"latency_{name}" in report:
            r = report[f"latency_{name}"]
            print(f"  SELECT enqueue() → first pass, {label:<28} median {r['median_ms']:8.1f} ms   "
                  f"p95 {r['p95_ms']:8.1f} ms   (n={r['n']})")
    for hosts in (1, 3):
        if f"throughput_{hosts}_hosts" in report:
            r = report[f"throughput_{hosts}_hosts"]
            print(f"  no-op jobs/s, {hosts} host{'s' if hosts > 1 else ' '}: {r['jobs_per_s']:7.1f} "
                  f"(first claim → last finish; {r['wall_jobs_per_s']:.1f}/s counting host start-up)")
    if "purge" in report:
        r = report["purge"]
        idle, busy = r["claim_idle_ms"], r["claim_during_ms"]
        print(f"  purge: {r['deleted']} finished jobs (+ attempts and pages) in {r['seconds']:.1f} s = "
              f"{r['jobs_per_s']:.0f} jobs/s, batches of {r['batch']}, while a host claimed")
        print(f"  enqueue → claim, no purge:     median {idle['median']:6.1f} ms   p95 {idle['p95']:6.1f} ms"
              f"   (n={idle['n']})")
        print(f"  enqueue → claim, during purge: median {busy['median']:6.1f} ms   p95 {busy['p95']:6.1f} ms"
              f"   max {busy['max']:6.1f} ms   (n={busy['n']})")


@contextlib.contextmanager
def throwaway_schema(url: str) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = PostgresQueue(url, schema=schema, listen=False)
    admin.migrate()
    try:
        yield schema
    finally:
        admin.close()
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
