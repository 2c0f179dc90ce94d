"""`docsuper selftest`: push one misbehaving job of each kind through the real supervisor.

It runs `docsuper run` as a separate process against a throwaway SQLite queue,
with this box's memory settings (cap, kernel limit, start method, watchdog
interval) and short timeouts, then checks each job's attempt record and that no
process of any job is left. A row is contained when the outcome is the expected
one, memory never passed the kernel limit (the cap plus its headroom: the watchdog
samples, so a bomb that grows 1.6 GB/s on a busy box can pass the cap by tens of MB
before it is killed, but never the kernel's RLIMIT_DATA), and nothing survived.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from .config import Config
from .containment import cgroup_problem
from .queue.base import NewJob, Queue, open_queue

TIMEOUT_S = 3.0
COPIED_ON_WRITE_MB = 16


def _scenarios(workdir: Path) -> list[tuple[str, str, dict[str, Any], str]]:
    return [
        ("normal", "noop", {}, "succeeded"),
        ("memory_bomb", "alloc", {"alloc_mb": 100_000, "alloc_step_mb": 8, "alloc_step_s": 0.005}, "oom"),
        ("timeout", "sleep", {"sleep_s": 600}, "timeout"),
        ("crash", "signal", {"signal": "SIGSEGV"}, "crashed"),
        ("grandchildren", "grandchildren", {"grandchildren": 2, "pid_file": str(workdir / "grandchildren.pids")},
         "timeout"),
        ("exception", "fail", {"message": "selftest exception"}, "error"),
    ]


def _environment(cfg: Config, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PORT")}
    if cfg.source is not None:
        env["DOCSUPER_CONFIG"] = str(Path(cfg.source).resolve())
    env.update({
        "DOCSUPER_QUEUE_URL": url,
        "DOCSUPER_QUEUE_POLL_INTERVAL_S": "0.1",
        "DOCSUPER_QUEUE_HEARTBEAT_S": "0.5",
        "DOCSUPER_WORKERS_JOB_TIMEOUT_S": str(TIMEOUT_S),
        "DOCSUPER_WORKERS_TERM_GRACE_S": "0.5",
        "DOCSUPER_WORKERS_SHUTDOWN_GRACE_S": "0.5",
        "DOCSUPER_WORKERS_CONCURRENCY": "6",
        "DOCSUPER_RETRY_MAX_ATTEMPTS": "1",
        "DOCSUPER_HTTP_PORT": "0",
        "DOCSUPER_LOG_LEVEL": "warning",
    })
    return env


def _survivors(job_ids: set[str]) -> list[int]:
    """Processes anywhere on the box that still carry one of these jobs' marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("DOCSUPER_JOB_ID") in job_ids and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _row(queue: Queue, scenario: str, job_id: str, expected: str, limit_mb: int) -> dict[str, Any]:
    job = queue.get(job_id)
    attempts = queue.attempts(job_id)
    last = attempts[-1] if attempts else None
    outcome = last.outcome if last else None
    peak = last.peak_mb if last else None
    contained = outcome == expected and (peak is None or peak <= limit_mb)
    note = ""
    if outcome != expected:
        note = f"job is {job.status}: {last.error if last else 'never ran'}"
    elif peak is not None and peak > limit_mb:
        note = f"peak {peak:.0f} MB passed the {limit_mb} MB kernel limit"
    return {"scenario": scenario, "expected": expected, "outcome": outcome, "peak_mb": peak,
            "seconds": round(last.duration_s or 0.0, 2) if last else 0.0, "contained": contained, "note": note}


def _run_supervisor(env: dict[str, str], workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "docsuper.supervisor.cli", "run", *args], env=env, cwd=workdir,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_selftest(cfg: Config, keep: str | None = None) -> list[dict[str, Any]]:
    workdir = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="docsuper-selftest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{workdir / 'selftest.db'}"
    env = _environment(cfg, url)
    # The kernel limit is room to grow beyond what a child inherited (docs/memory.md); its USS
    # may also hold a few inherited pages it wrote to (copy-on-write), which that room does not count.
    limit = cfg.kernel_limit_mb + COPIED_ON_WRITE_MB
    rows: list[dict[str, Any]] = []
    try:
        with open_queue(url) as queue:
            scenarios = _scenarios(workdir)
            ids = queue.submit([NewJob(passes=[p], options=o, max_attempts=1) for _, p, o, _ in scenarios])
            daemon = _run_supervisor(env, workdir, "--drain")
            try:
                _, stderr = daemon.communicate(timeout=45)
            except subprocess.TimeoutExpired:
                daemon.kill()
                _, stderr = daemon.communicate()
            time.sleep(0.2)
            left = set(_survivors(set(ids)))
            for (name, _, _, expected), job_id in zip(scenarios, ids):
                row = _row(queue, name, job_id, expected, limit)
                if daemon.returncode not in (0, 1):  # 1: some jobs ended dead, as most scenarios do
                    row["contained"], row["note"] = False, f"supervisor exited {daemon.returncode}: {stderr[-300:]}"
                stray = [p for p in left if _marker(p) == job_id]
                if name == "grandchildren":
                    pid_file = workdir / "grandchildren.pids"
                    pids = [int(p) for p in pid_file.read_text().split()] if pid_file.exists() else []
                    stray += [p for p in pids if psutil.pid_exists(p) and _alive(p)]
                    if not pids:
                        row["contained"], row["note"] = False, "the pass never started its grandchildren"
                if stray:
                    row["contained"], row["note"] = False, f"processes left running: {sorted(set(stray))}"
                rows.append(row)
            seen: list[str] = []
            rows.append(_shutdown_row(queue, env, workdir, seen))
            rows.append(_containment_row(seen))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def _marker(pid: int) -> str | None:
    try:
        return psutil.Process(pid).environ().get("DOCSUPER_JOB_ID")
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _containment_row(seen: list[str]) -> dict[str, Any]:
    """Which containment this box gets: a cgroup per job (killed whole with the job), or,
    without a writable cgroup v2, the sweep at start of what gone workers left running."""
    problem = cgroup_problem()
    expected = "cgroup" if problem is None else "sweep"
    outcome = seen[0] if seen else None
    return {"scenario": "containment", "expected": expected, "outcome": outcome, "peak_mb": None,
            "seconds": 0.0, "contained": outcome == expected, "note": problem or ""}


def _job_containment(daemon_pid: int) -> str:
    """'cgroup' when the daemon's job processes run in cgroups of their own, else 'sweep'."""
    try:
        for proc in psutil.Process(daemon_pid).children(recursive=True):
            if "/docsuper-" in Path(f"/proc/{proc.pid}/cgroup").read_text():
                return "cgroup"
    except (OSError, psutil.Error):
        pass
    return "sweep"


def _shutdown_row(queue: Queue, env: dict[str, str], workdir: Path, containment: list[str]) -> dict[str, Any]:
    """SIGTERM with a job in flight: it must go back to the queue without using an attempt."""
    [job_id] = queue.submit([NewJob(passes=["sleep"], options={"sleep_s": 600}, max_attempts=1)])
    started = time.monotonic()
    daemon = _run_supervisor(env, workdir)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and queue.get(job_id).status != "running":
        time.sleep(0.05)
    time.sleep(0.3)  # let the child get going
    containment.append(_job_containment(daemon.pid))
    daemon.send_signal(signal.SIGTERM)
    try:
        code = daemon.wait(timeout=20)
    except subprocess.TimeoutExpired:
        daemon.kill()
        code = daemon.wait()
    job = queue.get(job_id)
    attempts = queue.attempts(job_id)
    outcome = attempts[-1].outcome if attempts else None
    stray = _survivors({job_id})
    contained = (code == 0 and outcome == "interrupted" and job.status == "queued" and job.attempts == 0
                 and not stray)
    note = "" if contained else (f"supervisor exit {code}, job {job.status} with {job.attempts} attempt(s) used, "
                                 f"processes left: {stray}")
    queue.cancel(job_id)
    return {"scenario": "shutdown", "expected": "interrupted", "outcome": outcome,
            "peak_mb": attempts[-1].peak_mb if attempts else None,
            "seconds": round(time.monotonic() - started, 2), "contained": contained, "note": note}


def rows_as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps([{k: r[k] for k in ("scenario", "expected", "outcome", "peak_mb", "seconds", "contained")}
                       for r in rows])
