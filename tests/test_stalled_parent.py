"""A supervisor stopped with SIGSTOP past its lease: its jobs must not run on beside another worker's.

Real daemons on one SQLite queue, stopped and continued with real signals. A job
stops itself when its lease has gone unrenewed for lease − heartbeat
(passes/keepalive.py), before the lease can pass to another worker; the parent,
running again, records the attempt `interrupted` without using one of the job's
attempts, even when the lease ran out meanwhile and nobody else took the job.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from .daemon import Env, job_children, parse_log, stop_daemon, wait_for, wait_for_log

LEASE_S, HEARTBEAT_S = 8.0, 2.0  # a child trusts a renewal for 8 − 2 = 6 s


@pytest.fixture
def stall_env(env: Env) -> Env:
    env.set(DOCSUPER_QUEUE_LEASE_S=str(LEASE_S), DOCSUPER_QUEUE_HEARTBEAT_S=str(HEARTBEAT_S),
            DOCSUPER_LOG_LEVEL="info")
    return env


def start_ready(env: Env) -> subprocess.Popen[str]:
    daemon = env.start()
    wait_for_log(daemon, "supervisor_started")
    return daemon


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def ticks_by_pid(tick_file: Path) -> dict[int, list[float]]:
    ticks: dict[int, list[float]] = defaultdict(list)
    for line in tick_file.read_text().splitlines():
        pid, moment = line.split()
        ticks[int(pid)].append(float(moment))
    return ticks


def assert_runs_never_overlapped(tick_file: Path, timeout: float) -> None:
    """Wait for a second run of the job, then check the first had stopped before it began.
    Ten ticks of the second run: a first run still alive would have ticked among them."""
    runs = wait_for(lambda: len(ticks := ticks_by_pid(tick_file)) >= 2 and min(map(len, ticks.values())) >= 10
                    and ticks, timeout=timeout, what="a second worker to run the job")
    first_run, second_run = sorted(runs.values(), key=min)
    assert max(first_run) < min(second_run), f"both ran at once for {max(first_run) - min(second_run):.2f} s"


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_stopped_parents_job_stops_itself_before_its_lease_ends(stall_env: Env, tmp_path: Path,
                                                                    start_method: str):
    env = stall_env
    env.set(DOCSUPER_WORKERS_START_METHOD=start_method)
    pid_file = tmp_path / "grandchildren.pids"
    [job_id] = env.submit("grandchildren", grandchildren=2, pid_file=str(pid_file), sleep_s=3600)
    daemon = start_ready(env)
    try:
        grandchildren = wait_for(lambda: pid_file.exists() and [int(p) for p in pid_file.read_text().split()],
                                 what="the grandchildren")
        [child] = wait_for(lambda: job_children(daemon.pid), what="the job's child")
        processes = [child] + [psutil.Process(pid) for pid in grandchildren]
        daemon.send_signal(signal.SIGSTOP)
        lease_ends = wait_for(lambda: env.queue().get(job_id).lease_expires_at, what="the job's lease")
        # A zombie is dead: with spawn, its parent (stopped) is the one to reap it.
        wait_for(lambda: not running(processes), timeout=LEASE_S + 5,
                 what="the job's processes to stop while the parent is stopped")
        gone_by = time.time()
        assert gone_by < lease_ends, f"the job's processes outlived its lease by {gone_by - lease_ends:.2f} s"
        # Stopped past the lease, with no other worker: the job is still this worker's to record.
        wait_for(lambda: time.time() > lease_ends + 1, timeout=LEASE_S, what="the lease to run out")
        daemon.send_signal(signal.SIGCONT)
        first = wait_for(lambda: (a := env.queue().attempts(job_id)) and a[0].outcome and a[0],
                         what="the first attempt to be recorded")
    finally:
        daemon.send_signal(signal.SIGCONT)
        stop_daemon(daemon)
    out, _ = daemon.communicate()
    assert (first.outcome, first.counted) == ("interrupted", False), first.error
    assert "its lease had gone 6 s without renewal" in first.error
    late = [r for r in parse_log(out) if r["event"] == "lease_renewal_late"]
    assert [r["jobs"] for r in late] == [[job_id]]
    assert not [r for r in parse_log(out) if r["event"] == "lease_reclaimed"]


def test_a_second_worker_never_runs_a_job_beside_the_stopped_workers_child(stall_env: Env, tmp_path: Path):
    """Each run of the job writes its pid and the host's monotonic clock every 50 ms: the stopped
    worker's child must have written its last tick before the second worker's child its first."""
    env = stall_env
    tick_file = tmp_path / "ticks"
    [job_id] = env.submit("sleep", sleep_s=3600, tick_file=str(tick_file))
    first = start_ready(env)
    second = None
    try:
        wait_for(lambda: tick_file.exists() and tick_file.read_text(), what="the first run to tick")
        second = start_ready(env)
        first.send_signal(signal.SIGSTOP)
        assert_runs_never_overlapped(tick_file, timeout=LEASE_S + 20)
        first.send_signal(signal.SIGCONT)
        # Back, the first worker finds the job is another's, writes nothing for it, and goes on.
        wait_for_log(first, "job_result_discarded", timeout=20)
        assert first.poll() is None
        job = env.queue().get(job_id)
        assert job.status == "running" and f":{first.pid}:" not in (job.lease_owner or "")
    finally:
        first.send_signal(signal.SIGCONT)
        stop_daemon(first)
        if second is not None:
            stop_daemon(second)


class CuttableProxy:
    """A TCP relay on 127.0.0.1 to the test PostgreSQL, which the test can cut: one worker's
    way to the database goes through it, so that worker alone loses the queue."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()  # a connection accepted while cut() runs is closed, not relayed
        self.cut_off = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.target)
            except OSError:
                return
            with self.lock:
                self.sockets += [client, server]
                if self.cut_off:
                    self._close_all()
                    return
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        with self.lock:
            self.cut_off = True
            self.listener.close()
            self._close_all()

    def _close_all(self) -> None:
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_a_worker_cut_off_from_the_queue_stops_its_job_before_another_worker_takes_it(postgres_spec, tmp_path: Path):
    """The first worker's loop keeps turning, but it can renew nothing: its child must stop
    before the second worker, which still reaches the database, reclaims the job."""
    url = urlsplit(postgres_spec.url)
    proxy = CuttableProxy((url.hostname or "127.0.0.1", url.port or 5432))
    timings = {"DOCSUPER_QUEUE_LEASE_S": str(LEASE_S), "DOCSUPER_QUEUE_HEARTBEAT_S": str(HEARTBEAT_S),
               "DOCSUPER_QUEUE_SCHEMA": postgres_spec.schema, "DOCSUPER_LOG_LEVEL": "info"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cut_off = Env(tmp_path / "a", url=url._replace(netloc=f"{url.username}@127.0.0.1:{proxy.port}").geturl(), **timings)
    reaching = Env(tmp_path / "b", url=postgres_spec.url, **timings)
    tick_file = tmp_path / "ticks"
    [job_id] = reaching.submit("sleep", sleep_s=3600, tick_file=str(tick_file))
    first = start_ready(cut_off)
    second = None
    try:
        wait_for(lambda: tick_file.exists() and tick_file.read_text(), what="the first run to tick")
        second = start_ready(reaching)
        proxy.cut()
        assert_runs_never_overlapped(tick_file, timeout=LEASE_S + 30)
        assert first.poll() is None  # it goes on, waiting for its queue to come back
    finally:
        proxy.cut()
        stop_daemon(first)
        if second is not None:
            stop_daemon(second)
    out, _ = first.communicate()
    assert [r["jobs"] for r in parse_log(out) if r["event"] == "lease_renewal_late"] == [[job_id]]
