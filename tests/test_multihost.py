"""Several `docsuper run` processes ("hosts") on one PostgreSQL queue, end to end.

Real daemons, real children, a real server: the shared test server in the first test, a
throwaway cluster of the test's own (restarted under the hosts) in the second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from docsuper.supervisor.queue.base import NewJob, Queue

from .daemon import FAST, parse_log
from .pgcluster import ThrowawayCluster, cluster_problem
from .queuekit import QueueSpec, new_schema_name

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

HOSTS = 3
JOBS = 300


def host_env(spec: QueueSpec, root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCSUPER_", "WORKER_CONCURRENCY"))}
    env.pop("DATABASE_URL", None)
    env.update(FAST)
    env.update({
        "DOCSUPER_QUEUE_URL": spec.url,
        "DOCSUPER_QUEUE_SCHEMA": spec.schema,
        "DOCSUPER_CONFIG": str(root / "none.toml"),
        "DOCSUPER_LOG_LEVEL": "info",
        # No document libraries: these jobs are `noop`, and three fork servers
        # preloading the OCR stack would only slow the start.
        "DOCSUPER_WORKERS_PRELOAD": "json",
    })
    env.update(extra)
    (root / "none.toml").write_text("")
    return env


def start_hosts(spec: QueueSpec, root: Path, n: int, **extra: str) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """n daemons, each with its own log file (a pipe nobody reads would fill and stall it)."""
    hosts = []
    for i in range(n):
        home = root / f"host{i}"
        home.mkdir()
        log = home / "log.jsonl"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "docsuper.supervisor.cli", "run", "--drain"],
                                    env=host_env(spec, home, **extra), cwd=home, stdout=out,
                                    stderr=subprocess.STDOUT)
        hosts.append((proc, log))
    return hosts


def wait_hosts(hosts: list[tuple[subprocess.Popen[bytes], Path]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    try:
        for proc, log in hosts:
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            assert code == 0, f"host exited {code}:\n{log.read_text()[-4000:]}"
    finally:
        for proc, _ in hosts:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def assert_each_succeeded_once(q: Queue, ids: list[str], one_attempt: bool) -> Counter[str]:
    """Every job succeeded, by exactly one succeeded attempt; returns jobs per worker."""
    counts = q.counts()
    assert counts["succeeded"] == len(ids), counts
    by_worker: Counter[str] = Counter()
    for job_id in ids:
        attempts = q.attempts(job_id)
        succeeded = [a for a in attempts if a.outcome == "succeeded"]
        assert len(succeeded) == 1, (job_id, attempts)
        assert all(a.outcome is not None for a in attempts), (job_id, attempts)  # none left open
        if one_attempt:
            assert len(attempts) == 1, (job_id, attempts)
        by_worker[succeeded[0].worker] += 1
    return by_worker


def test_three_hosts_run_every_job_exactly_once(postgres_spec: QueueSpec, tmp_path: Path) -> None:
    with postgres_spec.open() as q:
        ids = q.submit([NewJob(passes=["noop"]) for _ in range(JOBS)])
    hosts = start_hosts(postgres_spec, tmp_path, HOSTS)
    wait_hosts(hosts, timeout=240)
    with postgres_spec.open() as q:
        by_worker = assert_each_succeeded_once(q, ids, one_attempt=True)
        assert q.workers() == []  # each unregistered on the way out
    assert sum(by_worker.values()) == JOBS
    assert len(by_worker) >= 2, by_worker  # the hosts shared the work
    for _, log in hosts:
        records = parse_log(log.read_text())
        assert not [r for r in records if r.get("event") == "job_result_discarded"]


def test_jobs_survive_a_postgres_restart(tmp_path: Path) -> None:
    """Three hosts on a throwaway cluster of the test's own, restarted under them."""
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    with ThrowawayCluster() as cluster:
        spec = QueueSpec("postgres", cluster.url, new_schema_name())
        with spec.open() as q:
            q.migrate()
            # Jobs that take a moment, so some are running when the server goes away.
            ids = q.submit([NewJob(passes=["sleep"], options={"sleep_s": 0.05}) for _ in range(JOBS)])
        hosts = start_hosts(spec, tmp_path, HOSTS)
        try:
            with spec.open() as q:
                deadline = time.monotonic() + 120
                while q.counts()["succeeded"] < JOBS // 4:
                    assert time.monotonic() < deadline, "the hosts made no progress"
                    time.sleep(0.1)
            cluster.restart()
        finally:
            wait_hosts(hosts, timeout=240)
        with spec.open() as q:
            assert_each_succeeded_once(q, ids, one_attempt=False)
            assert q.counts()["queued"] == q.counts()["running"] == 0
            assert q.expired_leases() == []
    assert not cluster.root.exists()
    logged = [r for _, log in hosts for r in parse_log(log.read_text())]
    assert any(r.get("event") == "queue_unavailable" for r in logged), "the restart went unnoticed?"


def test_a_worker_back_from_an_outage_longer_than_the_lease_reclaims_no_healthy_work(tmp_path: Path) -> None:
    """Two hosts with running jobs; the database goes away for longer than the lease. The first
    host back must renew its own leases and leave the other's alone: none `lost`, none run
    twice, no attempt used by the outage (issue 8.3). A job whose lease went unrenewed for
    lease - heartbeat stopped itself meanwhile (no worker can tell an outage all see from one
    only it sees: README, "A stalled or cut-off supervisor"), so it may have a first attempt
    `interrupted`, uncounted."""
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)
    with ThrowawayCluster() as cluster:
        spec = QueueSpec("postgres", cluster.url, new_schema_name())
        with spec.open() as q:
            q.migrate()
            ids = q.submit([NewJob(passes=["sleep"], options={"sleep_s": 8}) for _ in range(6)])
        hosts = start_hosts(spec, tmp_path, 2, DOCSUPER_WORKERS_CONCURRENCY="3", DOCSUPER_QUEUE_LEASE_S="3")
        try:
            with spec.open() as q:
                deadline = time.monotonic() + 60
                while q.counts()["running"] < 6:
                    assert time.monotonic() < deadline, "the hosts did not start every job"
                    time.sleep(0.1)
            cluster.stop()
            time.sleep(5)  # the outage itself: longer than the 3 s lease
            cluster.start()
        finally:
            wait_hosts(hosts, timeout=120)
        with spec.open() as q:
            assert_each_succeeded_once(q, ids, one_attempt=False)
            for job_id in ids:
                *before, last = q.attempts(job_id)
                assert [(a.outcome, a.counted) for a in before] in ([], [("interrupted", False)]), before
                assert last.outcome == "succeeded" and q.get(job_id).attempts == 1
    logged = [r for _, log in hosts for r in parse_log(log.read_text())]
    assert not [r for r in logged if r.get("event") == "lease_reclaimed"]
