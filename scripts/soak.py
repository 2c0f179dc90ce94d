#!/usr/bin/env python3
"""Soak: N minutes of mixed jobs under random faults, then every containment invariant checked.

    .venv/bin/python scripts/soak.py --minutes 10 --queue sqlite
    .venv/bin/python scripts/soak.py --minutes 10 --queue postgres     # a throwaway cluster

Jobs: OCR of small scans, no-ops, paged jobs, memory bombs, timeouts, jobs that leave
grandchildren behind, crashes, failures, and operator cancels. Faults, at random
times: SIGKILL of a job's child; SIGKILL of the parent, then a restart; SIGSTOP of
the fork server for a few seconds, then SIGCONT; SIGSTOP of the parent for 2-10 s
(its jobs stop themselves once their lease goes lease - heartbeat = 5 s without
renewal, and it must record them without using an attempt), then SIGCONT; on PostgreSQL, a restart of the
server and terminated backends; on SQLite, a full disk: the queue file and the work
directory root live on a small tmpfs the soak mounts (--disk-mb; root only), which a
filler file takes to its last byte for a few seconds, then gives back. Everything
runs inside a 512 MB memory cgroup when this process can make one (root). At the end a
final `run --drain` finishes what is left, and the script checks and prints each
invariant with its count:

  - every job finished exactly once (one succeeded attempt), or is dead or cancelled with a reason
  - no job queued or running
  - no process carrying a job or worker marker
  - no work directory left
  - zero kernel OOM kills in the box's cgroup
  - the parent's RSS flat over each daemon's life (after its first minute)
  - the parent's CPU while idle
  - on SQLite, the daemon survived every full disk (no exit of its own during one or
    until it finished a job after it; a daemon restarted while the disk is full may refuse
    to start, exit 1 with one line, as when the database is away: the soak restarts it
    after 2 s, as systemd's RestartSec does) and no attempt was counted against a job
    because of it

Exit 1 on any violation. Not run by the test suite: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import errno
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from bench_box import MemoryCgroup  # noqa: E402
from make_samples import scan_of  # noqa: E402

from docsuper.supervisor.protocol import JOB_MARKER, WORKER_MARKER  # noqa: E402
from docsuper.supervisor.queue.base import NewJob, Queue, QueueError, open_queue  # noqa: E402

CLI = [sys.executable, "-m", "docsuper.supervisor.cli"]
JOB_TIMEOUT_S = 6.0
FAULTS = ("kill_child", "kill_parent", "stop_fork_server", "stop_parent", "cancel", "restart_database",
          "terminate_backends", "fill_disk")
STOP_PARENT_S = (2.0, 10.0)  # shorter than the keepalive (5 s), between it and the lease (6 s), and past both
FULL_DISK_S = (2.0, 8.0)  # how long a full disk lasts
TOP_UP_S = 0.01  # while it lasts, space anyone frees is taken again this soon
RESTART_S = 2.0  # systemd's RestartSec in deploy/docsuper.service
RECOVERY_S = 60.0  # after space comes back, a job must have finished within this
# What an attempt's error says when the disk, not the job, made it fail.
DISK_ERRORS = ("no space left", "disk full", "database or disk is full", "disk i/o error", "errno 28")


def job_mix(rng: random.Random, samples: list[Path]) -> NewJob:
    kind = rng.choices(["ocr", "noop", "pages", "bomb", "timeout", "grandchildren", "crash", "fail"],
                       weights=[3, 6, 4, 1, 1, 1, 1, 1])[0]
    if kind == "ocr":
        return NewJob(source=str(rng.choice(samples)), passes=["ocr"])
    if kind == "noop":
        return NewJob(passes=["noop"])
    if kind == "pages":
        return NewJob(passes=["pages"], options={"pages": rng.randint(2, 8), "page_s": 0.2})
    if kind == "bomb":
        return NewJob(passes=["alloc"], options={"alloc_mb": 2000, "alloc_step_mb": 20, "alloc_step_s": 0.01})
    if kind == "timeout":
        return NewJob(passes=["sleep"], options={"sleep_s": 60, "fill_mb": 5})
    if kind == "grandchildren":
        return NewJob(passes=["grandchildren"], options={"grandchildren": 2, "sleep_s": rng.choice([0, 60])})
    if kind == "crash":
        return NewJob(passes=["signal"], options={"signal": "SIGSEGV"})
    return NewJob(passes=["fail"], options={"message": "soak failure"})


class FullDisk:
    """One full-disk episode: the filler that took the last byte, and what the daemon did."""

    def __init__(self, number: int, filler: Path, until: float) -> None:
        self.number = number
        self.filler = filler
        self.until = until  # when the filler goes
        self.wall = (time.time(), time.time() + until - time.monotonic())  # for the daemons' log records
        self.released_at: float | None = None
        self.finished_before: int | None = None  # jobs in a final state when space came back
        self.recovered_s: float | None = None  # from space back to the next job finished
        self.problem: str | None = None
        self.stop = threading.Event()
        self.holder = threading.Thread(target=self.hold, daemon=True)

    def hold(self) -> None:
        """Keep the disk full: space a reaped job or a checkpoint gives back is taken again at
        once, so a job started into it finds no room (a top-up every half second let one write
        most of its 5 MB into a gap, fail, and count that attempt as its own)."""
        while not self.stop.wait(TOP_UP_S):
            fill(self.filler)

    def release(self) -> None:
        self.stop.set()
        self.holder.join()
        self.filler.unlink()

    def refused(self, moments: list[float]) -> bool:
        """Whether one of these log moments (a daemon saying the queue refused writes) falls in it."""
        return any(self.wall[0] <= t <= self.wall[1] + 1.0 for t in moments if t)


def fill(filler: Path) -> None:
    """Take every free byte of the filesystem (or what came free since the last call)."""
    with open(filler, "ab", buffering=0) as fh:
        for block in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            try:
                while fh.write(block):
                    pass
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.rng = random.Random(args.seed)
        self.cluster: Any = None
        self.disk: Path | None = None  # the small tmpfs of the SQLite soak: queue file and work directories
        self.disk_note = ""
        self.full: FullDisk | None = None  # the disk being full now
        self.episodes: list[FullDisk] = []
        self.disk_peak_mb = 0.0  # the most used on the small disk outside a full-disk episode
        self.cgroup: MemoryCgroup | None = None
        self.cgroup_note = ""
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_rss: list[tuple[float, float]] = []  # (seconds since its start, MB) of the current daemon
        self.rss_growth: list[float] = []  # per daemon life
        self.daemon_started = 0.0
        self.restart_at: float | None = None  # when to start again a daemon that refused to start
        self.refused_starts = 0  # daemons that refused to start on a full disk
        self.faults: Counter[str] = Counter()
        self.daemon_pids: set[int] = set()
        self.submitted: list[str] = []
        self.logs = 0
        self.url = ""
        self.schema = "docsuper"

    # -- set-up ---------------------------------------------------------------
    def open(self) -> None:
        if self.args.queue == "postgres":
            from tests.pgcluster import ThrowawayCluster

            self.cluster = ThrowawayCluster().start()
            self.url = self.cluster.url
        else:
            self.disk = self.mount_disk()
            self.url = f"sqlite:///{(self.disk or self.work) / 'soak.db'}"
        with self.queue() as q:
            q.migrate()
        if os.geteuid() == 0:
            try:
                self.cgroup = MemoryCgroup(f"docsuper-soak-{os.getpid()}", self.args.limit_mb)
            except OSError as exc:
                self.cgroup_note = f"no memory cgroup: {exc}"
        else:
            self.cgroup_note = "no memory cgroup: not root"

    def mount_disk(self) -> Path | None:
        """A size-limited tmpfs for the queue file and the work directories, or None (and why)."""
        if os.geteuid() != 0:
            self.disk_note = "no full-disk fault: mounting a tmpfs needs root"
            return None
        mount = self.work / "disk"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.args.disk_mb}m,mode=0755", "tmpfs",
                               str(mount)], capture_output=True, text=True)
        if done.returncode != 0:
            self.disk_note = f"no full-disk fault: cannot mount a tmpfs: {done.stderr.strip()}"
            return None
        return mount

    def unmount_disk(self) -> None:
        if self.disk is None:
            return
        if subprocess.run(["umount", str(self.disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.disk)], capture_output=True)  # still busy: detach it
        self.disk = None

    @property
    def jobs_root(self) -> Path:
        return (self.disk or self.work) / "jobs"

    def disk_used_mb(self) -> float:
        if self.disk is None:
            return 0.0
        st = os.statvfs(self.disk)
        return (st.f_blocks - st.f_bfree) * st.f_frsize / 2**20

    def queue(self) -> Queue:
        return open_queue(self.url, self.schema)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSUPER_") and k != "DATABASE_URL"}
        (self.work / "none.toml").write_text("")
        env.update({
            "DOCSUPER_CONFIG": str(self.work / "none.toml"),
            "DOCSUPER_QUEUE_URL": self.url,
            "DOCSUPER_QUEUE_SCHEMA": self.schema,
            "DOCSUPER_QUEUE_POLL_INTERVAL_S": "0.5",
            "DOCSUPER_QUEUE_HEARTBEAT_S": "1",
            "DOCSUPER_QUEUE_LEASE_S": "6",
            "DOCSUPER_WORKERS_CONCURRENCY": str(self.args.concurrency),
            "DOCSUPER_WORKERS_JOB_TIMEOUT_S": str(JOB_TIMEOUT_S),
            "DOCSUPER_WORKERS_TERM_GRACE_S": "0.5",
            "DOCSUPER_WORKERS_SHUTDOWN_GRACE_S": "2",
            "DOCSUPER_WORKERS_WORK_DIR": str(self.jobs_root),
            "DOCSUPER_INPUTS_ALLOWED_ROOTS": str(self.work / "samples"),
            "DOCSUPER_RETRY_BACKOFF_BASE_S": "0.5",
            "DOCSUPER_RETRY_BACKOFF_MAX_S": "2",
            "DOCSUPER_LOG_LEVEL": "info",
        })
        return env

    def command(self, *args: str) -> list[str]:
        command = [*CLI, *args]
        return self.cgroup.enter_command(command) if self.cgroup is not None else command

    # -- the daemon -------------------------------------------------------------
    def start_daemon(self) -> None:
        self.logs += 1
        out = open(self.work / f"daemon-{self.logs}.log", "wb")
        self.daemon = subprocess.Popen(self.command("run"), env=self.env(), cwd=self.work, stdout=out,
                                       stderr=subprocess.STDOUT)
        self.daemon_started = time.monotonic()
        self.daemon_rss = []
        self.daemon_pids.add(self.daemon.pid)

    def parent_pid(self) -> int | None:
        """The supervisor's pid (under the cgroup's `sh -c … exec`, the same process)."""
        return self.daemon.pid if self.daemon is not None and self.daemon.poll() is None else None

    def end_daemon_life(self) -> None:
        late = [mb for t, mb in self.daemon_rss if t >= 60]
        if len(late) >= 2:
            self.rss_growth.append(max(late) - late[0])

    def stop_daemon(self, sig: int = signal.SIGTERM) -> None:
        if self.daemon is None:
            return
        self.end_daemon_life()
        try:
            self.daemon.send_signal(sig)
            self.daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        self.daemon = None

    def sample_parent(self) -> None:
        pid = self.parent_pid()
        if pid is None:
            return
        try:
            rss = psutil.Process(pid).memory_info().rss / 2**20
        except psutil.Error:
            return
        self.daemon_rss.append((time.monotonic() - self.daemon_started, rss))

    # -- faults -------------------------------------------------------------
    def job_children(self) -> list[psutil.Process]:
        pid = self.parent_pid()
        if pid is None:
            return []
        try:
            direct = psutil.Process(pid).children()
            servers = [p for p in direct if "docsuper.passes.forkserver" in " ".join(p.cmdline())]
            return [c for s in servers for c in s.children()] if servers else direct
        except psutil.Error:
            return []

    def fork_server(self) -> psutil.Process | None:
        pid = self.parent_pid()
        try:
            for p in psutil.Process(pid).children() if pid else []:
                if "docsuper.passes.forkserver" in " ".join(p.cmdline()):
                    return p
        except psutil.Error:
            pass
        return None

    def inject(self) -> None:
        faults = ["kill_child", "kill_parent", "stop_fork_server", "stop_parent", "cancel"]
        if self.cluster is not None:
            faults += ["restart_database", "terminate_backends"]
        if self.disk is not None:
            faults += ["fill_disk"]
        if self.args.faults:
            faults = [f for f in faults if f in self.args.faults] or faults
        fault = self.rng.choice(faults)
        if fault == "kill_child":
            children = self.job_children()
            if not children:
                return
            self.rng.choice(children).kill()
        elif fault == "kill_parent":
            if self.daemon is None:
                return
            self.end_daemon_life()
            self.daemon.kill()
            self.daemon.wait()
            self.start_daemon()
        elif fault == "stop_fork_server":
            server = self.fork_server()
            if server is None:
                return
            server.suspend()
            time.sleep(self.rng.uniform(1, 8))  # how long it stays stopped: the fault itself
            try:
                server.resume()
            except psutil.Error:
                pass  # replaced (killed) meanwhile, as it should be after 5 s
        elif fault == "stop_parent":
            pid = self.parent_pid()
            if pid is None:
                return
            os.kill(pid, signal.SIGSTOP)
            time.sleep(self.rng.uniform(*STOP_PARENT_S))  # how long it stays stopped: the fault itself
            os.kill(pid, signal.SIGCONT)
        elif fault == "fill_disk":
            if self.full is not None:
                return  # already full
            self.start_full_disk()
        elif fault == "cancel":
            try:
                with self.queue() as q:
                    running = q.list_jobs("running", limit=50) + q.list_jobs("queued", limit=50)
            except QueueError:
                return  # the disk is full: the operator's cancel would be refused too
            if not running:
                return
            subprocess.run([*CLI, "cancel", self.rng.choice(running).id], env=self.env(), cwd=self.work,
                           capture_output=True, timeout=60)
        elif fault == "restart_database":
            self.cluster.restart()
        elif fault == "terminate_backends":
            import psycopg

            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             "WHERE pid <> pg_backend_pid() AND datname = current_database()")
        self.faults[fault] += 1

    # -- a full disk ------------------------------------------------------------
    def start_full_disk(self) -> None:
        assert self.disk is not None
        episode = FullDisk(len(self.episodes) + 1, self.disk / "filler",
                           time.monotonic() + self.rng.uniform(*FULL_DISK_S))
        fill(episode.filler)
        episode.holder.start()
        self.full = episode
        self.episodes.append(episode)

    def full_disk_turn(self, finished: int | None) -> None:
        """End the episode when due (its holder keeps the disk full until then), then watch for
        the daemon's first finished job after it."""
        now = time.monotonic()
        if self.full is None:
            self.disk_peak_mb = max(self.disk_peak_mb, self.disk_used_mb())
        elif now >= self.full.until:
            self.full.release()
            self.full.released_at = now
            self.full = None
        for episode in self.episodes:
            if episode.released_at is None or episode.recovered_s is not None or episode.problem:
                continue
            if episode.finished_before is None:
                episode.finished_before = finished  # the first count that could be read after
            elif finished is not None and finished > episode.finished_before:
                episode.recovered_s = now - episode.released_at
            elif now - episode.released_at > RECOVERY_S:
                episode.problem = f"no job finished within {RECOVERY_S:.0f} s after space came back"

    def watch_daemon(self) -> None:
        """Restart a daemon that exited without being asked. One that refused to start because
        the disk under the queue is full (exit 1, one line) is restarted after RESTART_S, as
        systemd's RestartSec does in deploy/docsuper.service; any other exit is a violation
        when it happens in a full-disk episode."""
        now = time.monotonic()
        if self.daemon is None:
            if self.restart_at is not None and now >= self.restart_at:
                self.restart_at = None
                self.start_daemon()
            return
        if self.daemon.poll() is None:
            return
        if self.refused_on_full_disk():
            self.refused_starts += 1
            self.daemon, self.restart_at = None, now + RESTART_S
            return
        self.faults["daemon_exited_by_itself"] += 1
        self.daemon_exited()
        self.start_daemon()

    def refused_on_full_disk(self) -> bool:
        """Whether the daemon that just exited refused to start because the disk was full."""
        assert self.daemon is not None
        log = (self.work / f"daemon-{self.logs}.log").read_text(errors="replace")
        lines = log.strip().splitlines()
        return (self.daemon.returncode == 1 and '"supervisor_started"' not in log and bool(lines)
                and lines[-1].startswith("docsuper: disk full"))

    def daemon_exited(self) -> None:
        """The daemon exited without being asked: during a full disk, or before it finished a job
        after one, that is the full disk's doing."""
        for episode in self.episodes:
            if episode.problem is None and episode.recovered_s is None:
                code = self.daemon.returncode if self.daemon is not None else None
                episode.problem = f"the daemon exited by itself (code {code})"

    # -- the run ------------------------------------------------------------
    def run(self) -> int:
        samples = self.make_samples()
        self.start_daemon()
        deadline = time.monotonic() + self.args.minutes * 60
        next_fault = time.monotonic() + self.rng.uniform(5, 20)
        next_sample = 0.0
        while time.monotonic() < deadline:
            finished = None
            try:
                with self.queue() as q:
                    counts = q.counts()
                    finished = counts["succeeded"] + counts["dead"] + counts["cancelled"]
                    if counts["queued"] < 3 * self.args.concurrency:
                        self.submitted += q.submit([job_mix(self.rng, samples) for _ in range(5)])
            except QueueError:
                if self.full is None:
                    raise
                # The disk is full: the queue refuses the submitter like everyone else.
            if self.disk is not None:
                self.full_disk_turn(finished)
            if time.monotonic() >= next_fault:
                self.inject()
                next_fault = time.monotonic() + self.rng.uniform(5, 20)
            if time.monotonic() >= next_sample:
                self.sample_parent()
                next_sample = time.monotonic() + 5
            self.watch_daemon()
            time.sleep(0.5)  # the submitter's pace
        self.judge_full_disks()
        self.stop_daemon()
        idle_cpu = self.idle_cpu()
        drain = subprocess.run(self.command("run", "--drain"), env=self.env(), cwd=self.work,
                               capture_output=True, timeout=600)
        return self.report(idle_cpu, drain)

    def judge_full_disks(self) -> None:
        """Space back before the end, and every episode judged: the daemon finishes a job after it."""
        while self.full is not None or any(e.recovered_s is None and e.problem is None for e in self.episodes):
            finished = None
            try:
                with self.queue() as q:
                    counts = q.counts()
                    finished = counts["succeeded"] + counts["dead"] + counts["cancelled"]
            except QueueError:
                if self.full is None:
                    raise
            self.full_disk_turn(finished)
            self.watch_daemon()
            time.sleep(0.5)
        while self.daemon is None:  # a refused start waiting for its restart
            self.watch_daemon()
            time.sleep(0.5)

    def make_samples(self) -> list[Path]:
        folder = self.work / "samples"
        folder.mkdir()
        paths = []
        for i in range(3):
            doc = scan_of([[f"Soak page {i} line {n}: referral letter for the clinic" for n in range(6)]])
            path = folder / f"scan{i}.pdf"
            doc.save(path)
            paths.append(path)
        (folder / "damaged.pdf").write_bytes(b"%PDF-1.7\n" + os.urandom(2000))
        return [*paths, folder / "damaged.pdf"]

    def idle_cpu(self) -> float:
        """A daemon's share of a core over 10 s with nothing to do (the queue is drained first)."""
        subprocess.run(self.command("run", "--drain"), env=self.env(), cwd=self.work, capture_output=True,
                       timeout=600)
        self.start_daemon()
        time.sleep(5)  # start-up and preload, not measured
        pid = self.daemon.pid if self.daemon else 0
        proc = psutil.Process(pid)
        before, started = proc.cpu_times(), time.monotonic()
        time.sleep(10)  # the measurement window
        after = proc.cpu_times()
        self.stop_daemon()
        return (after.user + after.system - before.user - before.system) / (time.monotonic() - started)

    # -- the invariants -----------------------------------------------------
    def report(self, idle_cpu: float, drain: subprocess.CompletedProcess[bytes]) -> int:
        checks: list[tuple[str, bool, str]] = []
        with self.queue() as q:
            counts = q.counts()
            states: Counter[str] = Counter()
            outcomes: Counter[str] = Counter()
            twice, no_reason, by_disk = [], [], []
            for job_id in self.submitted:
                job = q.get(job_id)
                attempts = q.attempts(job_id)
                states[job.status] += 1
                outcomes.update(a.outcome or "open" for a in attempts)
                if len([a for a in attempts if a.outcome == "succeeded"]) > 1:
                    twice.append(job_id)
                if job.status == "succeeded" and [a.outcome for a in attempts].count("succeeded") != 1:
                    twice.append(job_id)
                if job.status == "dead" and not job.last_error:
                    no_reason.append(job_id)
                by_disk += [f"{job_id[:8]} {a.outcome}: {(a.error or '')[:120]}" for a in attempts
                            if a.counted and any(m in (a.error or "").lower() for m in DISK_ERRORS)]
        checks.append(("every job finished once, or dead/cancelled with a reason",
                       not twice and not no_reason and states["queued"] == states["running"] == 0,
                       f"{len(self.submitted)} jobs: {dict(states)}; succeeded twice: {len(twice)}; "
                       f"dead without a reason: {len(no_reason)}"))
        checks.append(("none queued or running", counts["queued"] == counts["running"] == 0, str(counts)))
        marked = processes_with_markers(set(self.submitted), self.daemon_pids)
        checks.append(("no process carrying a job or worker marker", not marked, f"{len(marked)} {marked[:10]}"))
        left = [p for p in self.jobs_root.rglob("*") if p.name != ".lock"] if self.jobs_root.exists() else []
        checks.append(("no work directory left", not left, f"{len(left)} {[str(p) for p in left[:5]]}"))
        oom = self.cgroup.oom_kills() if self.cgroup is not None else None
        checks.append(("zero kernel OOM kills", not oom,
                       f"{oom} in the {self.args.limit_mb} MB cgroup" if oom is not None else self.cgroup_note))
        growth = max(self.rss_growth, default=0.0)
        checks.append(("parent RSS flat (growth after its first minute, per daemon life)", growth < 5.0,
                       f"max {growth:.2f} MB over {len(self.rss_growth)} daemon lives long enough to judge"))
        checks.append(("parent CPU while idle", idle_cpu < 0.05, f"{idle_cpu * 100:.2f} % of a core over 10 s"))
        checks.append(("final drain exit 0 or 1", drain.returncode in (0, 1),
                       drain.stderr.decode(errors="replace").strip().splitlines()[-1:].__str__()))
        if self.disk is not None:
            failed = [f"#{e.number}: {e.problem}" for e in self.episodes if e.problem]
            recovered = sorted(e.recovered_s for e in self.episodes if e.recovered_s is not None)
            refused = self.episodes_logging("queue_unavailable", "disk full")
            paused = self.episodes_logging("work_dir_full")
            checks.append(("daemon survived every full disk", not failed,
                           f"{len(self.episodes)} episodes, in which a daemon paused claiming (work_dir_full): "
                           f"{len(paused)}, logged the queue refusing writes: {len(refused)}; a job finished {recovered[len(recovered) // 2]:.1f} s (median), "
                           f"{recovered[-1]:.1f} s (max) after space came back; restarted daemons that refused "
                           f"to start on a full disk (exit 1, restarted after {RESTART_S:g} s): "
                           f"{self.refused_starts}; failed: {failed}"
                           if recovered else f"{len(self.episodes)} episodes; failed: {failed}"))
            checks.append(("no attempt counted against a job because of the disk", not by_disk,
                           f"{len(by_disk)} {by_disk[:5]}"))
        print(f"soak: {self.args.minutes:g} min on {self.args.queue}, concurrency {self.args.concurrency}, "
              f"seed {self.args.seed}, memory cgroup: "
              f"{str(self.args.limit_mb) + ' MB' if self.cgroup else self.cgroup_note}")
        print(f"command: {command_line()}")
        if self.args.queue == "sqlite":
            print(f"small disk: {f'{self.args.disk_mb} MB tmpfs' if self.disk else self.disk_note}"
                  + (f" for the queue file and the work directories; {self.disk_peak_mb:.1f} MB used at most "
                     f"outside a full disk, queue file {self.queue_file_mb():.1f} MB at the end" if self.disk else ""))
        print(f"jobs submitted: {len(self.submitted)}; attempts by outcome: {dict(sorted(outcomes.items()))}")
        print(f"faults injected: {dict(sorted(self.faults.items()))} ({sum(self.faults.values())} in all)")
        if self.cgroup is not None:
            print(f"box peak memory (cgroup): {self.cgroup.peak_mb():.0f} MB")
        for name, ok, detail in checks:
            print(f"  {'ok  ' if ok else 'FAIL'} {name}: {detail}")
        return 0 if all(ok for _, ok, _ in checks) else 1

    def episodes_logging(self, event: str, text: str = "") -> list[int]:
        """The full-disk episodes during which a daemon logged `event` (with `text` in its line)."""
        moments = []
        for log in sorted(self.work.glob("daemon-*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if f'"{event}"' in line and text in line:
                    try:
                        moments.append(json.loads(line).get("ts"))
                    except ValueError:
                        continue
        return [e.number for e in self.episodes if e.refused(moments)]

    def queue_file_mb(self) -> float:
        path = Path(self.url[len("sqlite:///"):])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20

    def close(self) -> None:
        """Everything the soak made goes, whatever failed before (each step on its own)."""
        steps = [self.release_disk, self.kill_daemon, lambda: self.cluster.remove() if self.cluster is not None else None,
                 self.unmount_disk, lambda: self.cgroup.remove() if self.cgroup is not None else None]
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - the next clean-up step must still run
                print(f"soak: clean-up step failed: {exc}", file=sys.stderr)

    def release_disk(self) -> None:
        if self.full is not None:
            self.full.stop.set()
            self.full.holder.join()
            self.full = None

    def kill_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()


def command_line() -> str:
    """How this soak was started, as it could be typed again (the interpreter relative to here)."""
    python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") \
        else sys.executable
    who = " (as root)" if os.geteuid() == 0 else ""
    return f"{shlex.join([python, *sys.argv])}{who} in {os.getcwd()}"


def processes_with_markers(job_ids: set[str], daemon_pids: set[int]) -> list[int]:
    """Live processes marked with one of these jobs, or with a worker these daemons ran
    (other docsuper processes on the box are not this soak's)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = dict(e.split(b"=", 1) for e in fh.read().split(b"\0") if b"=" in e)
            if psutil.Process(int(entry)).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        job = env.get(JOB_MARKER.encode(), b"").decode()
        worker = env.get(WORKER_MARKER.encode(), b"").decode()
        if job in job_ids or (worker and int(worker.split("-")[0]) in daemon_pids):
            found.append(int(entry))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--queue", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--concurrency", type=int, default=3)
    parser.add_argument("--limit-mb", type=int, default=512)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--disk-mb", type=int, default=32,
                        help="size of the tmpfs under the SQLite queue and the work directories (root only)")
    parser.add_argument("--faults", type=lambda text: text.split(","), default=[],
                        help=f"only these faults, comma-separated (of {', '.join(FAULTS)}; default: every one "
                             "that applies to the queue)")
    args = parser.parse_args()
    # A SIGTERM ends the soak like Ctrl-C: through the clean-up (daemon, cluster, tmpfs, cgroup).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with tempfile.TemporaryDirectory(prefix="docsuper-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        try:
            soak.open()
            code = soak.run()
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: cleaned up below, no invariant judged
            print("soak: interrupted; the daemon, the small disk and the cgroup are removed", file=sys.stderr)
            code = 130
        finally:
            soak.close()
    print(json.dumps({"exit": code}))
    sys.exit(code)


if __name__ == "__main__":
    main()
