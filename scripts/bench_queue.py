#!/usr/bin/env python3
"""The PostgreSQL queue under real `docsuper run` processes: wake-up latency and throughput.

    .venv/bin/python scripts/bench_queue.py [--url postgresql://…] [--jobs 600] [--samples 40]

Prints, measured now against the given server (a throwaway schema, dropped at the end):
  - enqueue → child running its first pass, median and p95, for a worker that is idle
    when the job arrives: woken by NOTIFY, and found by polling alone
    (queue.poll_interval_s, default 5 s, as deployed);
  - no-op jobs per second with one host and with three hosts on one queue
    (workers.concurrency each), from the first claim to the last finish.

The polling run submits without NOTIFY as well as setting queue.listen = false,
so nothing but the poll can find its jobs.

Enqueue → claim comes from the database (the attempt's start minus the job's
creation, one clock); claim → first pass from the supervisor's own `start_ms`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docsuper.supervisor.queue.base import NewJob  # noqa: E402
from docsuper.supervisor.queue.postgres import PostgresQueue  # noqa: E402


class SilentQueue(PostgresQueue):
    """Submits without NOTIFY, so only polling can find the job (the `queue.listen = false` case)."""

    def _wake(self, tx: Any) -> None:
        pass


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


def latency(url: str, schema: str, workdir: Path, samples: int, notify: bool, poll_s: float,
            concurrency: int, gap_s: float = 0.5) -> list[float]:
    """Seconds from enqueue to the child running its first pass, for jobs arriving at random to an idle host."""
    q = PostgresQueue(url, schema=schema, listen=False)
    submitter = PostgresQueue(url, schema=schema, listen=False) if notify else SilentQueue(url, schema=schema)
    proc, log = start_host(url, schema, workdir, f"latency-{'notify' if notify else 'poll'}", concurrency,
                           listen=notify, poll_s=poll_s, drain=False)
    try:
        wait_registered(q, 1)
        ids = []
        base = q.counts()["succeeded"]
        rng = random.Random(7)
        for _ in range(samples):
            # Random arrivals (a Poisson stream, mean gap `gap_s`): a job lands at a random
            # point of the poll cycle, as it would in production. The host is never
            # saturated (no-op jobs take tens of ms), so each job meets an idle slot.
            time.sleep(rng.expovariate(1 / gap_s))
            ids += submitter.submit([NewJob(passes=["noop"])])
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
    submitter.close()
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
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = PostgresQueue(args.url, schema=schema, listen=False)
    admin.migrate()
    report: dict[str, Any] = {"concurrency": args.concurrency, "cpus": os.cpu_count()}
    try:
        with tempfile.TemporaryDirectory(prefix="bench_queue_") as tmp:
            workdir = Path(tmp)
            for name, notify in (("notify", True), ("poll", False)):
                values = latency(args.url, schema, workdir, args.samples, notify, args.poll, args.concurrency)
                report[f"latency_{name}"] = {"median_ms": statistics.median(values) * 1000,
                                             "p95_ms": pct(values, 0.95) * 1000, "n": len(values)}
            for hosts in (1, 3):
                report[f"throughput_{hosts}_hosts"] = throughput(args.url, schema, workdir, args.jobs, hosts,
                                                                 args.concurrency)
    finally:
        with psycopg.connect(args.url, autocommit=True) as db:
            db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()

    if args.json:
        print(json.dumps(report))
        return
    print(f"PostgreSQL queue, {report['cpus']} CPUs, workers.concurrency {args.concurrency}")
    for name, label in (("notify", "NOTIFY"), (f"poll", f"polling only (every {args.poll:g} s)")):
        r = report[f"latency_{name}"]
        print(f"  enqueue → first pass, {label:<28} median {r['median_ms']:8.1f} ms   p95 {r['p95_ms']:8.1f} ms"
              f"   (n={r['n']})")
    for hosts in (1, 3):
        r = report[f"throughput_{hosts}_hosts"]
        print(f"  no-op jobs/s, {hosts} host{'s' if hosts > 1 else ' '}: {r['jobs_per_s']:7.1f} "
              f"(first claim → last finish; {r['wall_jobs_per_s']:.1f}/s counting host start-up)")


if __name__ == "__main__":
    main()
