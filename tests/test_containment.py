"""Faults at the edges: a stopped or crashed fork server, shutdown under it, the loop's CPU.

Real daemons, real fork servers stopped with SIGSTOP and killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from docsuper.supervisor.containment import cgroup_problem

from .daemon import Env, job_children, parse_log, wait_for, wait_for_log

ACK_S = 5.0  # ForkServerLauncher.ACK_TIMEOUT_S
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def start_ready(env: Env) -> subprocess.Popen[str]:
    """A daemon whose fork server has preloaded and that has started its loop."""
    daemon = env.start()
    wait_for_log(daemon, "supervisor_started")
    return daemon


def fork_server(daemon_pid: int) -> psutil.Process:
    def find() -> psutil.Process | None:
        for proc in psutil.Process(daemon_pid).children():
            if "docsuper.passes.forkserver" in " ".join(proc.cmdline()):
                return proc
        return None

    return wait_for(find, what="the fork server")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_share(pid: int, seconds: float) -> float:
    """The share of one core the process used over the next `seconds`."""
    before, started = cpu_ticks(pid), time.monotonic()
    time.sleep(seconds)  # a measurement window, not synchronisation
    return (cpu_ticks(pid) - before) / TICKS_PER_S / (time.monotonic() - started)


def attempts_of(env: Env, job_id: str):
    with env.queue() as q:
        return q.get(job_id), q.attempts(job_id)


def test_a_stopped_fork_server_is_replaced_and_the_job_it_never_started_goes_back_unspent(env: Env):
    env.set(DOCSUPER_RETRY_MAX_ATTEMPTS="1", DOCSUPER_LOG_LEVEL="info")
    daemon = start_ready(env)
    try:
        server = fork_server(daemon.pid)
        server.suspend()
        [job_id] = env.submit("noop")
        wait_for(lambda: env.queue().get(job_id).status == "succeeded", timeout=ACK_S + 20,
                 what="the job to run on a new fork server")
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, err
    job, attempts = attempts_of(env, job_id)
    assert [(a.outcome, a.counted) for a in attempts] == [("interrupted", False), ("succeeded", True)]
    assert "never started" in attempts[0].error and job.attempts == 1
    replaced = [r for r in parse_log(out) if r["event"] == "launcher_replaced"]
    assert replaced and "did not acknowledge a start" in replaced[0]["reason"]


def test_a_result_sent_while_the_fork_server_was_stopped_is_a_success(env: Env):
    # The job's timeout passes while the server is stopped: the result it sent first still wins.
    env.set(DOCSUPER_RETRY_MAX_ATTEMPTS="1", DOCSUPER_WORKERS_JOB_TIMEOUT_S="4")
    [job_id] = env.submit("sleep", sleep_s=1.0)
    daemon = start_ready(env)
    try:
        child = wait_for(lambda: job_children(daemon.pid), what="a running child")[0]
        fork_server(daemon.pid).suspend()
        wait_for(lambda: env.queue().get(job_id).status != "running", timeout=ACK_S + 20,
                 what="the job to end")
        assert not psutil.pid_exists(child.pid)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    job, attempts = attempts_of(env, job_id)
    assert [(a.outcome, a.exit_code) for a in attempts] == [("succeeded", 0)], attempts
    assert job.status == "succeeded"


def test_a_fork_server_crash_does_not_use_an_attempt(env: Env):
    env.set(DOCSUPER_RETRY_MAX_ATTEMPTS="1")
    [job_id] = env.submit("pages", pages=6, page_s=0.3)
    daemon = start_ready(env)
    try:
        wait_for(lambda: (env.queue().get(job_id).progress_done or 0) >= 1, what="a page done")
        fork_server(daemon.pid).kill()
        wait_for(lambda: env.queue().get(job_id).status == "succeeded", timeout=30, what="the job to succeed")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.communicate(timeout=30)
    job, attempts = attempts_of(env, job_id)
    assert [(a.outcome, a.counted) for a in attempts] == [("interrupted", False), ("succeeded", True)], attempts
    assert "fork server" in attempts[0].error and job.attempts == 1
    assert job.result["pages"]["resumed_pages"] >= 1  # and it resumed where the first attempt stopped


def ticks_until_exit(pid: int, timeout: float) -> tuple[int, float]:
    """Follow a process until it is a zombie: its CPU ticks at the end, and the seconds it took."""
    started, last = time.monotonic(), [cpu_ticks(pid)]

    def exited() -> bool:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        last[0] = int(stat[11]) + int(stat[12])
        return stat[0] == "Z"

    wait_for(exited, timeout=timeout, what="the daemon to exit")
    return last[0], time.monotonic() - started


@pytest.mark.slow
def test_no_busy_loop_idle_with_a_stopped_fork_server_or_during_shutdown(env: Env):
    grace, term = 1.0, 0.5
    env.set(DOCSUPER_WORKERS_SHUTDOWN_GRACE_S=str(grace), DOCSUPER_WORKERS_TERM_GRACE_S=str(term))
    daemon = start_ready(env)
    try:
        server = fork_server(daemon.pid)
        idle = cpu_share(daemon.pid, 2.0)
        [job_id] = env.submit("sleep", sleep_s=120)
        wait_for(lambda: job_children(daemon.pid), what="a running child")
        server.suspend()
        stopped = cpu_share(daemon.pid, 3.0)
        wait_for(lambda: fork_server(daemon.pid).pid != server.pid, timeout=ACK_S + 10, what="a new fork server")
        wait_for(lambda: job_children(daemon.pid), timeout=20, what="the job running again")
        fork_server(daemon.pid).suspend()
        before = cpu_ticks(daemon.pid)
        daemon.send_signal(signal.SIGTERM)
        after, shutdown_s = ticks_until_exit(daemon.pid, timeout=grace + term + ACK_S + 10)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.communicate(timeout=30)
    assert daemon.returncode == 0
    # The shutdown deadline holds with the fork server stopped: grace, term grace, a second more.
    assert shutdown_s < grace + term + 1 + 2, shutdown_s
    during_shutdown = (after - before) / TICKS_PER_S / shutdown_s
    assert idle < 0.2 and stopped < 0.2 and during_shutdown < 0.3, (idle, stopped, during_shutdown)
    job, attempts = attempts_of(env, job_id)
    assert job.status == "queued" and {a.outcome for a in attempts} == {"interrupted"}


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("options, outcome", [
    ({"sleep_s": 60}, "timeout"),
    ({"sleep_s": 0}, "succeeded"),
])
def test_a_jobs_work_directory_goes_with_the_job_whatever_ended_it(env: Env, options, outcome):
    env.set(DOCSUPER_WORKERS_JOB_TIMEOUT_S="1.5", DOCSUPER_RETRY_MAX_ATTEMPTS="1")
    [job_id] = env.submit("sleep", fill_mb=2, **options)
    records = env.drain()
    job, [attempt] = attempts_of(env, job_id)
    assert attempt.outcome == outcome
    assert leftovers(env.root / "work") == []
    assert not [r for r in records if r["event"] == "workdir_removed"]


def test_a_daemon_starting_removes_the_work_directories_of_dead_workers(env: Env):
    [job_id] = env.submit("sleep", sleep_s=60, fill_mb=2)
    first = start_ready(env)
    child = wait_for(lambda: job_children(first.pid), what="a running child")[0]
    wait_for(lambda: list((env.root / "work").rglob("source")), what="the job's file on disk")
    [left] = [p.parent.parent for p in (env.root / "work").rglob("source")]
    first.kill()
    first.communicate(timeout=30)
    wait_for(lambda: not psutil.pid_exists(child.pid), what="the child to die with its parent")
    assert left.exists()  # SIGKILL: nobody could clean up
    second = start_ready(env)
    try:
        assert not left.exists()
        assert [p.parent for p in (env.root / "work").glob("*/.lock")] != [left]
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
    assert leftovers(env.root / "work") == []
    del job_id


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_no_process_of_a_job_outlives_a_killed_parent(env: Env, tmp_path: Path, start_method: str):
    """Grandchildren in the job's group and in sessions of their own; the parent is SIGKILLed.
    They are gone at once (the fork server kills its jobs' cgroups or trees), or at the latest
    when the next daemon starts on the host (spawn: nobody was left to kill them)."""
    env.set(DOCSUPER_WORKERS_START_METHOD=start_method)
    pid_file = tmp_path / "grandchildren.pids"
    env.submit("grandchildren", grandchildren=4, pid_file=str(pid_file), sleep_s=3600)
    first = start_ready(env)
    pids = wait_for(lambda: pid_file.exists() and [int(p) for p in pid_file.read_text().split()],
                    what="the grandchildren")
    assert len(alive(pids)) == 4
    if cgroup_problem() is None:  # this box gives each job a cgroup: all four are in it
        groups = {Path(f"/proc/{pid}/cgroup").read_text().split("0::", 1)[1].strip() for pid in pids}
        assert len(groups) == 1 and "/docsuper-" in groups.pop()
    first.kill()
    first.communicate(timeout=30)
    second = start_ready(env)
    try:
        wait_for(lambda: not alive(pids), timeout=5, what="every grandchild to die")
    finally:
        second.send_signal(signal.SIGTERM)
        second.communicate(timeout=30)
