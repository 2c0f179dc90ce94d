"""The supervisor loop behind `docsuper run` and `docsuper once`.

One thread, one loop, in the manner of gunicorn's arbiter: signals are queued by
their handlers and handled here; the loop sleeps in select() on the children's
event pipes, the launcher's exit reports, the signal wake-up pipe and the queue's
LISTEN socket, and on every turn it claims work, reads events, reaps children,
samples memory and renews leases. The parent never touches a document.

Writes to the queue go through an outbox: when the database is briefly away,
children keep running and their page results and outcomes wait, in order, until
the queue takes them.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil

from docsuper import __version__

from .admission_log import AdmissionLog
from .app_hooks import ApplicationHooks
from .budget import MemoryBudget, box_memory_mb, child_kernel_limit_mb
from .config import Config
from .http import HealthServer, Metrics, loop_health
from .keepalive import Keepalive
from .lending import READER_MB, Reading, lend_readers, usable_cores
from .launcher import LaunchError, child_environment, make_launcher
from .launcher_keeper import LauncherKeeper
from .logs import Logger, OutageLog
from .metering import MemoryMeter
from .observer import Observer
from .outbox import Outbox
from .outcome import Ending, classify, signal_name
from .picture import document_name
from .protocol import WORKER_MARKER, ChildLimits, EventReader, JobSpec, Ready, drain_pipe
from .queue.base import AttemptEnd, Job, Queue, QueueError, QueueUnavailable, WorkerInfo, backoff_delay
from .reclaim_window import ReclaimWindow
from .redact import redact
from .stopping import Running, decide_stops
from .containment import JobCgroups, kill_marked
from .drain import Interrupted, Tally, Waiting, waiting_for
from .watchdog import ProcessTree
from .workdirs import WorkDirs, remove

# The config sections a child may see: `inputs` (any pass may fetch the job's document)
# and one named after a pass it runs (`ocr`). Never these, whatever a pass is called.
PARENT_ONLY_SECTIONS = frozenset({"queue", "workers", "memory", "retry", "log", "http"})


def child_config(config: dict[str, dict[str, Any]], passes: list[str]) -> dict[str, dict[str, Any]]:
    wanted = {"inputs", *passes} - PARENT_ONLY_SECTIONS
    return {name: dict(keys) for name, keys in config.items() if name in wanted}


def child_env_names(config: Config) -> list[str]:
    """The variables an operator lets children see beside the built-in allowlist."""
    names = list(config.workers.child_env)
    if config.inputs.bearer_token_env:
        names.append(config.inputs.bearer_token_env)
    return names


@dataclass
class Child:
    job: Job
    events: EventReader
    claimed_at: float
    started_at: float
    deadline: float
    meter: MemoryMeter
    workdir: Path | None = None
    cgroup: str | None = None  # its own cgroup, where the box gives each job one
    pid: int | None = None  # None until the fork server reports the fork
    tree: ProcessTree | None = None
    done: int | None = None
    total: int | None = None
    last_page: int | None = None
    result: dict[str, Any] | None = None
    failure: dict[str, Any] | None = None
    stop_outcome: str | None = None  # set when the supervisor decided to stop it
    stop_message: str | None = None
    kill_at: float | None = None  # SIGKILL due after a SIGTERM
    start_latency_s: float | None = None  # claim → the child about to run its first pass
    first_page_s: float | None = None  # claim → the first page result
    current_pass: str | None = None
    plan: dict[str, Any] | None = None  # the memory plan the child said it runs
    lease_lapsed: bool = False  # its keepalive moment passed unrenewed: it may have stopped itself
    data_limit_mb: float | None = None  # its RLIMIT_DATA, as the child reported it
    readers_wanted: int = 1  # pages it said it could read at once: idle cores may be lent up to that


class Supervisor:
    def __init__(self, config: Config, queue: Queue, logger: Logger | None = None,
                 on_event: Callable[[Child, dict[str, Any]], None] | None = None) -> None:
        self.cfg = config
        self.queue = queue
        self.log = logger or Logger(config.log.level, config.log.format)
        self.outage = OutageLog(self.log)  # one line when the queue goes away, one when it is back
        self.on_event = on_event
        tag = os.urandom(3).hex()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{tag}"
        # Its name on the host: its work directory, its cgroups, the marker its children carry.
        self.worker_name = f"{os.getpid()}-{tag}"
        child_env = child_environment(child_env_names(config))
        child_env[WORKER_MARKER] = self.worker_name
        self.launcher = make_launcher(config.workers.start_method, config.workers.preload, child_env)
        self.workdirs = WorkDirs(config.workers.work_dir, self.worker_name)
        self.cgroups = JobCgroups(self.worker_name)
        self.children: dict[str, Child] = {}  # by job id
        self.keepalive = Keepalive(config.keepalive_s)
        self.by_pid: dict[int, Child] = {}
        self.outbox = Outbox(self._queue_unavailable, self._queue_refused)
        self.pending_signals: list[int] = []
        self.stopping = False
        self.stop_signal: int | None = None  # the signal that asked for the stop
        self.stop_now = False
        self.shutdown_deadline = 0.0
        self.hard_stop_at = 0.0  # past it, a stopping supervisor kills the launcher to get its children back
        # Starts, checks, replaces and restarts the launcher; says when it is ready or lost.
        self.launcher_keeper = LauncherKeeper(self.launcher, self.log, lambda: self.stopping,
                                              self._launcher_ready, self._launcher_lost)
        self.claim_wanted = True
        self.next_poll = 0.0
        self.next_sample = 0.0
        self.next_heartbeat = 0.0
        # After an outage, for a lease, only the leases seen to expire since are reclaimed.
        self.reclaim_window = ReclaimWindow(config.queue.lease_s)
        self.work_disk_full_since: float | None = None  # claiming paused: no room for a job's files
        self.finished: deque[dict[str, Any]] = deque(maxlen=1000)
        self.tally = Tally()  # the state each finished job was left in
        self.drain_waiting: Waiting | None = None
        self.jobs_done = 0
        self.budget = MemoryBudget(0, config.memory.job_limit_mb)
        # Pages read at once, across jobs or lent within one: never more than the concurrency.
        self.reading_slots = min(config.workers.concurrency, config.workers.cores or usable_cores())
        self.kernel_limit_mb = config.kernel_limit_mb  # a child's room to grow: capped at the box budget once known
        # Why jobs wait, in the log (a decision not logged because no job waited is asked again
        # after a poll interval: jobs may have come).
        self.admission_log = AdmissionLog(self.log, self._has_queued, config.queue.poll_interval_s)
        self._config = config.as_dict()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_handlers: dict[int, Any] = {}
        self.metrics = Metrics()
        self.last_tick = time.monotonic()
        self.http: HealthServer | None = None
        self.observer = Observer(self)  # systemd notify, the live picture, memory history
        self.hooks = ApplicationHooks(config, queue, self.log)  # the completion webhook, retention

    # -- set-up and tear-down --------------------------------------------
    def _install_signals(self) -> None:
        def queue_signal(signum: int, _frame: object) -> None:
            self.pending_signals.append(signum)

        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            self._previous_handlers[signum] = signal.signal(signum, queue_signal)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def _restore_signals(self) -> None:
        signal.set_wakeup_fd(-1)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)

    def _sweep_gone_workers(self) -> None:
        """Kill the processes, and remove the work directories, that workers on this host left
        when they died (a killed parent cannot clean up after itself)."""
        gone = self.workdirs.gone_workers()
        in_cgroups = self.cgroups.sweep(gone)  # also those whose work root was another
        killed = kill_marked(gone)
        removed = self.workdirs.remove_gone()
        if not (gone or in_cgroups):
            return
        self.log.warning("gone_workers_swept", workers=gone, processes_killed=len(killed),
                         cgroup_processes_killed=in_cgroups, workdirs_removed=[str(p) for p in removed])

    def _register(self) -> None:
        now = time.time()
        host = socket.gethostname()
        self._queue_call("register worker", lambda: self.queue.register_worker(
            WorkerInfo(self.worker_id, host, os.getpid(), __version__, now, now, 0)))

    # -- the loop ----------------------------------------------------------
    def run(self, drain: bool = False, only: Job | None = None) -> int:
        """Run until stopped (or, with `drain`, until no work is left; with `only`, until that job ends)."""
        self._install_signals()
        try:
            self.workdirs.open()
            self.cgroups.open()
            self._sweep_gone_workers()
            self.launcher_keeper.start()
            self._register()
            self.observer.ready()
            self.log.info("supervisor_started", worker=self.worker_id, concurrency=self.cfg.workers.concurrency,
                          reading_slots=self.reading_slots, containment=self.cgroups.kind,
                          containment_note=self.cgroups.problem,
                          queue=redact(self.queue.url), drain=drain)
            if only is not None:
                self._start_child(only, time.monotonic())
            elif self.cfg.http.port:
                self._serve_http()
            while self._turn(drain, only):
                pass
            self._flush_outbox(time.monotonic(), final=True)
            if drain:
                return self._drain_summary()
            return 0
        finally:
            self._tear_down()

    def _turn(self, drain: bool, only: Job | None) -> bool:
        """One turn of the loop; False when it is time to stop."""
        now = self.last_tick = time.monotonic()
        self.observer.turn(now)
        if now >= self.next_heartbeat:  # first: after a stall, a lost lease stops its child before anything else
            self._heartbeat(now)
        self._handle_signals(now)
        self._flush_outbox(now)
        if only is None and not self.stopping:
            self._claim(now, drain)
        self._wait(self._timeout(time.monotonic(), drain))
        self._note_lapsed_leases(time.monotonic())  # before any reap: a lapse may explain an exit
        self._read_events()
        self._take_launcher_reports()
        self._lend_cores()
        now = time.monotonic()
        self._handle_signals(now)  # a stop signal that came during the wait explains a fork server gone with it
        self.launcher_keeper.check(now)
        self.launcher_keeper.restart(now)
        if now >= self.next_sample:
            self._watch(now)
        self.hooks.tick(now)
        if self.children:
            return True
        if only is not None or self.stopping:
            return False
        return not (drain and self._drained(now))

    def _drained(self, now: float) -> bool:
        if self.claim_wanted or self._has_queued():
            return False
        try:
            running = self.queue.list_jobs("running", limit=10_000)
            # Live: seen within two heartbeats (and a second of slack).
            seen_after = time.time() - 2 * self.cfg.queue.heartbeat_s - 1.0
            live = {w.id for w in self.queue.workers() if w.last_seen >= seen_after} if running else set()
        except QueueError:
            return False  # cannot tell while the queue is away
        waiting = waiting_for(running, live, time.time())
        if waiting is not None and waiting != self.drain_waiting:
            self.drain_waiting = waiting
            self.log.info("drain_waiting", **waiting.__dict__)
        return waiting is None

    def _drain_summary(self) -> int:
        interrupted = None
        if self.stop_signal is not None:
            try:
                counts: dict[str, int] | None = self.queue.counts()
            except QueueError:
                counts = None
            unfinished = None if counts is None else {s: counts.get(s, 0) for s in ("queued", "running")}
            interrupted = Interrupted(signal_name(self.stop_signal), self.stop_signal, unfinished)
        line, code = self.tally.summary(self.jobs_done, interrupted)
        self.log.info("drain_finished", jobs=self.jobs_done, states=dict(self.tally.states),
                      interrupted_by=interrupted.signal if interrupted else None)
        print(line, file=sys.stderr)
        return code

    def _tear_down(self) -> None:
        for child in self.children.values():
            if child.tree is not None:
                child.tree.kill()
        if self.http is not None:
            self.http.stop()
        self.observer.close()
        self.launcher.stop()
        self.hooks.close()
        self.workdirs.close()
        self.cgroups.close()
        try:
            self.queue.unregister_worker(self.worker_id)
        except QueueError:
            pass
        self._restore_signals()
        self.log.info("supervisor_stopped", worker=self.worker_id, jobs=self.jobs_done,
                      rss_mb=round(_own_rss_mb(), 2))

    def _serve_http(self) -> None:
        def details() -> dict[str, Any]:
            return {"worker": self.worker_id, "children": len(self.children), "stopping": self.stopping,
                    "outbox": len(self.outbox), "jobs": self.jobs_done}

        stall_s = max(30.0, 2 * self.cfg.queue.heartbeat_s)
        try:
            self.http = HealthServer(self.cfg.http.host, self.cfg.http.port, self.metrics,
                                     loop_health(lambda: self.last_tick, details, stall_s),
                                     picture=self.observer.picture, token=self.cfg.http.token)
        except OSError as exc:
            raise LaunchError(f"cannot serve HTTP on {self.cfg.http.host}:{self.cfg.http.port}: {exc.strerror}")
        self.http.start()
        self.log.info("http_listening", host=self.cfg.http.host, port=self.http.port)

    def _timeout(self, now: float, drain: bool) -> float:
        moments = [self.next_sample, self.next_heartbeat]
        if self.outbox:  # nothing is claimed while writes wait: the outbox's retry is the next moment
            moments.append(self.outbox.retry_at)
        elif not self.stopping and len(self.children) < self.cfg.workers.concurrency:
            moments.append(now if self.claim_wanted else self.next_poll)
        moments.extend(c.kill_at for c in self.children.values() if c.kill_at)
        check_at = self.launcher.next_check_at()
        if check_at is not None:
            moments.append(check_at)
        if self.launcher_keeper.restart_at is not None and not self.stopping:
            moments.append(self.launcher_keeper.restart_at)
        if self.stopping:  # only moments still ahead: one already past would spin the loop
            moments.extend(m for m in (self.shutdown_deadline, self.hard_stop_at) if m > now)
        return max(0.0, min(moments) - now)

    def _wait(self, timeout: float) -> None:
        fds = [self._wake_r, *self.launcher.filenos()]
        fds.extend(c.events.fd for c in self.children.values() if not c.events.closed)
        listen_fd = self.queue.wakeup_fileno()
        for warning in self.queue.pop_warnings():
            self.log.warning("queue_warning", message=warning)
        if listen_fd is not None:
            fds.append(listen_fd)
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return
        if self._wake_r in readable:
            drain_pipe(self._wake_r)
        if listen_fd is not None and listen_fd in readable:
            self.queue.consume_wakeups()  # never raises; must not wait behind the outbox or the loop spins
            self.claim_wanted = True

    # -- signals -----------------------------------------------------------
    def _handle_signals(self, now: float) -> None:
        while self.pending_signals:
            signum = self.pending_signals.pop(0)
            if signum == signal.SIGCHLD:
                self.launcher.on_sigchld()
                continue
            if not self.stopping:
                self.stopping = True
                self.stop_signal = signum
                self.shutdown_deadline = now + self.cfg.workers.shutdown_grace_s
                self.hard_stop_at = self.shutdown_deadline + self.cfg.workers.term_grace_s + 1.0
                self.log.info("shutdown_requested", signal=signal_name(signum), running=len(self.children),
                              grace_s=self.cfg.workers.shutdown_grace_s)
                self.observer.stopping()
            elif not self.stop_now:
                self.stop_now = True
                self.log.warning("shutdown_now", signal=signal_name(signum), running=len(self.children))
                self.hard_stop_at = now + 1.0
                for child in self.children.values():
                    self._stop(child, "interrupted", "worker shut down at once (second signal)", now, grace=0)
        if self.stopping and now >= self.shutdown_deadline:
            for child in self.children.values():
                if child.stop_outcome is None:
                    self._stop(child, "interrupted", "worker shut down; the job goes back to the queue", now)
        if self.stopping and self.children and now >= self.hard_stop_at and not self.launcher_keeper.killed:
            # Children killed under a stopped or wedged fork server are its zombies, and it
            # would never report them: kill it, and they come back to us to be reaped.
            self.launcher_keeper.replace("the shutdown deadline passed with children left")

    # -- claiming and starting -------------------------------------------
    def _has_queued(self) -> bool:
        try:
            return self.queue.has_queued()
        except QueueUnavailable:
            return True

    def _claim(self, now: float, drain: bool) -> None:
        free = self.cfg.workers.concurrency - len(self.children)
        if not self.launcher_keeper.up or free <= 0 or not (self.claim_wanted or now >= self.next_poll) or self.outbox:
            return
        if self._work_disk_full():
            self.claim_wanted = False
            self.next_poll = now + min(self.cfg.queue.poll_interval_s, 2.0)
            return
        running = [(c.job.passes, c.meter.uss_mb) for c in self.children.values()]
        admission = self.budget.admit(running, free)
        if admission.claim <= 0:
            self.admission_log.note(admission, 0, now)
            self.claim_wanted = False
            self.next_poll = now + self.cfg.memory.watchdog_interval_ms / 1000
            return
        # One job at a time, the budget asked again after each: the admission expects the next
        # job at the hungriest kind seen so far, but the job claimed may be of a kind this
        # daemon has not seen (expected at the cap: no room left beside it). Two memory bombs
        # claimed in one batch after a restart took a 512 MB box past its limit (soak, seed 7).
        first = admission
        jobs: list[Job] = []
        queue_empty = False
        try:
            while admission.claim > 0:
                claimed = self.queue.claim(self.worker_id, 1, self.cfg.queue.lease_s)
                if not claimed:
                    queue_empty = True
                    break
                jobs += claimed
                running.append((claimed[0].passes, 0.0))
                admission = self.budget.admit(running, free - len(jobs))
        except QueueUnavailable as exc:
            self.outage.away("claim", exc)
            self.claim_wanted = False
            self.next_poll = now + min(self.cfg.queue.poll_interval_s, 2.0)
        else:
            self.admission_log.note(first, min(len(jobs), first.claim), now)
            if admission.claim <= 0 and not queue_empty:  # the job claimed changed the budget's mind
                self.admission_log.note(admission, 0, now)
            self.claim_wanted = len(jobs) == free
            if queue_empty:
                poll = self.cfg.queue.poll_interval_s
                self.next_poll = now + (min(poll, 0.5) if drain else poll)
            elif not self.claim_wanted:  # the budget holds the rest back: ask it again at the next sample
                self.next_poll = now + self.cfg.memory.watchdog_interval_ms / 1000
        for job in jobs:
            self._start_child(job, now)

    def _work_disk_full(self) -> bool:
        """Whether the work directories' disk is full: a job started now would only fail (said
        once when it fills, once when there is room again)."""
        full = self.workdirs.full()
        if full and self.work_disk_full_since is None:
            self.work_disk_full_since = time.monotonic()
            self.log.warning("work_dir_full", root=str(self.workdirs.root), free=full, claiming="paused")
        elif not full and self.work_disk_full_since is not None:
            self.log.info("work_dir_available", root=str(self.workdirs.root),
                          after_s=round(time.monotonic() - self.work_disk_full_since, 1))
            self.work_disk_full_since = None
        return full is not None

    def _resume_data(self, job: Job) -> dict[str, dict[int, dict[str, Any]]]:
        if job.attempts <= 1 and job.progress_done is None:
            return {}
        resume: dict[str, dict[int, dict[str, Any]]] = {}
        for pass_name, page, result in self.queue.pages(job.id):
            resume.setdefault(pass_name, {})[page] = result
        return resume

    def _earlier_outcomes(self, job: Job) -> list[str]:
        """Outcomes of the counted attempts before this one since the job was (re)queued."""
        if job.attempts <= 1:
            return []
        closed = [a.outcome for a in self.queue.attempts(job.id) if a.counted and a.outcome and not a.replay]
        return closed[-(job.attempts - 1):]

    def _start_child(self, job: Job, claimed_at: float) -> None:
        try:
            resume = self._resume_data(job)
            earlier = self._earlier_outcomes(job)
        except QueueError as exc:
            self.outage.away("read resume data", exc, job_id=job.id)
            end = AttemptEnd("interrupted", error=f"could not read its stored pages: {exc}")
            self.outbox.put("finish", lambda: self.queue.finish(job.id, self.worker_id, end, 0.0))
            return
        workdir = self.workdirs.for_job(job.id, job.attempts)
        cgroup = self.cgroups.create(job.id, job.attempts)
        try:
            spec = JobSpec(job.id, job.attempts, job.source, job.passes, job.options,
                           child_config(self._config, job.passes), resume, str(workdir), earlier)
            pipes = self.launcher.launch(spec, ChildLimits(self.kernel_limit_mb, cgroup))
        except LaunchError as exc:
            remove(workdir)
            self.cgroups.kill(cgroup)
            self.log.error("launch_failed", job_id=job.id, error=str(exc))
            end = AttemptEnd("interrupted", error=f"could not start a child: {exc}")
            self.outbox.put("finish", lambda: self.queue.finish(job.id, self.worker_id, end, 0.0))
            if self.launcher.name == "forkserver":  # a spawn that failed takes no running job with it
                self.launcher_keeper.replace(str(exc))
            return
        now = time.monotonic()
        self.keepalive.add(job.id, pipes.keepalive, renewed_at=claimed_at)
        # The timeout counts from the claim: a start that hangs is part of the job's time.
        child = Child(job=job, events=EventReader(pipes.events), claimed_at=claimed_at, started_at=now,
                      deadline=claimed_at + self.cfg.workers.job_timeout_s, meter=MemoryMeter.started_at(now),
                      workdir=workdir, cgroup=cgroup)
        self.children[job.id] = child

    def _forked(self, child: Child, pid: int) -> None:
        child.pid, child.tree = pid, ProcessTree(pid)
        self.by_pid[pid] = child
        self.log.debug("job_started", job_id=child.job.id, document=document_name(child.job.source),
                       attempt=child.job.attempts, pid=pid,
                       passes=child.job.passes)
        if child.stop_outcome is not None:  # stopped before the fork was reported
            child.tree.kill()

    # -- the launcher ready or lost (as its keeper tells) ------------------
    def _launcher_ready(self, ready: Ready) -> None:
        """A launcher is ready: the box budget is what is left beside it and this parent."""
        mine = _own_rss_mb()
        server = psutil.Process(ready.pid).memory_info().rss / 2**20 if ready.pid != os.getpid() else 0.0
        budget = self.cfg.memory.box_budget_mb or max(
            0.0, box_memory_mb() - self.cfg.memory.reserve_mb - mine - server)
        self.budget.budget_mb = budget
        self.kernel_limit_mb = child_kernel_limit_mb(self.cfg.kernel_limit_mb, budget)
        self.metrics.budget_mb.set(budget)
        self.log.info("launcher_ready", start_method=self.launcher.name, preloaded=ready.preloaded,
                      seconds=ready.seconds, parent_rss_mb=round(mine, 1), server_rss_mb=round(server, 1),
                      box_budget_mb=round(budget), job_limit_mb=self.cfg.memory.job_limit_mb,
                      kernel_limit_mb=self.kernel_limit_mb, configured_kernel_limit_mb=self.cfg.kernel_limit_mb)

    def _launcher_lost(self, unstarted: set[str], reason: str) -> None:
        """The launcher was killed: the jobs it had not started, or whose children die with it,
        go back to the queue without using an attempt."""
        for child in list(self.children.values()):
            if child.pid is None or child.job.id in unstarted:
                child.stop_outcome, child.stop_message = "interrupted", f"never started: {reason}"
                self._finish(child, None)
            elif child.stop_outcome is None:
                # Killed with the server (PDEATHSIG); its exit comes back through poll().
                child.stop_outcome = "interrupted"
                child.stop_message = f"the fork server was replaced ({reason}); the job goes back to the queue"

    # -- events from children ----------------------------------------------
    def _read_events(self) -> None:
        for child in list(self.children.values()):
            self._drain_events(child)

    def _drain_events(self, child: Child) -> None:
        while not child.events.closed:
            before = child.events.closed
            events = list(child.events.read_available())
            for event in events:
                self._on_event(child, event)
            if not events and child.events.closed == before:
                return

    def _on_event(self, child: Child, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "started":
            child.start_latency_s = time.monotonic() - child.claimed_at
            child.data_limit_mb = event.get("data_limit_mb")
        elif kind == "progress":
            child.done, child.total = event.get("done"), event.get("total")
            child.current_pass = event.get("pass")
        elif kind == "page":
            if child.first_page_s is None:
                child.first_page_s = time.monotonic() - child.claimed_at
            child.last_page = event["page"]
            job_id, pass_name, page, result = child.job.id, event["pass"], event["page"], event["result"]
            self.outbox.put("record page", lambda: self.queue.record_page(
                job_id, self.worker_id, pass_name, page, result))
        elif kind == "plan":
            child.plan = event.get("plan")
        elif kind == "readers":
            wanted = event.get("wanted")
            child.readers_wanted = wanted if isinstance(wanted, int) and wanted >= 1 else 1
        elif kind == "result":
            child.result = event.get("summary") or {}
        elif kind == "failure":
            child.failure = event
        elif kind == "protocol_error":
            self.log.warning("protocol_error", job_id=child.job.id, message=event.get("message"))
        if kind in ("result", "failure"):
            child.meter.child_reported_peak_rss(event.get("peak_rss_mb"))
        if self.on_event is not None:
            self.on_event(child, event)

    # -- what the launcher reports: forks, refusals, exits ---------------
    def _take_launcher_reports(self) -> None:
        reports = self.launcher.poll()
        if reports.ready is not None:
            self.launcher_keeper.ready(reports.ready)
        for started in reports.started:
            if started.job_id in self.children:
                self._forked(self.children[started.job_id], started.pid)
        for refused in reports.refused:
            child = self.children.get(refused.job_id)
            if child is not None:
                child.stop_outcome = "interrupted"
                child.stop_message = f"the fork server refused to start it: {refused.message}"
                self._finish(child, None)
        for exited in reports.exited:
            child = self.by_pid.pop(exited.pid, None)
            if child is not None:
                self._finish(child, exited.status)
        for exited in reports.orphaned:
            child = self.by_pid.pop(exited.pid, None)
            if child is not None:
                if child.stop_outcome is None:  # the machinery failed, not the job
                    child.stop_outcome = "interrupted"
                    child.stop_message = "its fork server died; the job goes back to the queue"
                self._finish(child, exited.status)

    def _finish(self, child: Child, status: int | None, no_status_reason: str | None = None) -> None:
        self.children.pop(child.job.id, None)
        if child.pid is not None:
            self.by_pid.pop(child.pid, None)
        self._drain_events(child)
        os.close(child.events.fd)
        self.keepalive.remove(child.job.id)
        if child.tree is not None:
            child.tree.kill()  # anything the job left running goes with it
        self.cgroups.kill(child.cgroup)  # even what escaped the tree walk
        remove(child.workdir)  # and anything it left on disk
        meter = child.meter
        disk_full = self.workdirs.full() if child.failure and child.failure.get("no_space") else None
        end = classify(Ending(status, child.result, child.failure, child.stop_outcome, child.stop_message,
                              no_status_reason, meter.peak_uss_mb if meter.uss_known else None, meter.peak_rss_mb,
                              child.last_page, child.plan, child.lease_lapsed, self.cfg.keepalive_s,
                              disk_full),
                       self.cfg.memory.job_limit_mb, child.data_limit_mb or self.kernel_limit_mb)
        end.error, end.traceback = redact(end.error or "") or None, redact(end.traceback or "") or None  # stored, shown
        self.budget.learn(child.job.passes, meter.peak_uss_mb)
        record = _finished_record(child, end)
        self.finished.append(record)
        self.metrics.finished.labels(end.outcome).inc()
        self.metrics.duration.observe(record["seconds"])
        if end.peak_mb is not None:
            self.metrics.peak.observe(end.peak_mb)
        if child.done is not None:  # the last progress, which no heartbeat may have carried yet
            progress: dict[str, tuple[int | None, int | None, float | None]] = {
                child.job.id: (child.done, child.total, end.peak_mb)}
            self.outbox.put("record progress", lambda: self.queue.heartbeat(
                self.worker_id, progress, self.cfg.queue.lease_s))
        self.jobs_done += 1
        if self.jobs_done % 100 == 0:
            self.log.info("parent_memory", jobs=self.jobs_done, rss_mb=round(_own_rss_mb(), 2))

        delay = backoff_delay(child.job.attempts, self.cfg.retry.backoff_base_s, self.cfg.retry.backoff_max_s,
                              self.cfg.retry.jitter)
        self.outbox.put("finish", lambda: self._write_end(child.job.id, end, delay, record))
        self.claim_wanted = True

    def _write_end(self, job_id: str, end: AttemptEnd, delay: float, record: dict[str, Any]) -> str | None:
        state = self.queue.finish(job_id, self.worker_id, end, delay)
        if state is not None:
            self.tally.add(job_id, state)
        if state is None:
            self.log.warning("job_result_discarded", job_id=job_id, outcome=end.outcome,
                             reason="the lease was lost; another worker owns the job now")
        else:
            self.log.log("info" if end.outcome == "succeeded" else "warning", "job_finished", state=state, **record)
        return state

    # -- watchdog ----------------------------------------------------------
    def _stop(self, child: Child, outcome: str, message: str, now: float, grace: float | None = None) -> None:
        """Stop a child's tree: SIGTERM, then SIGKILL after the grace (0: SIGKILL now)."""
        if child.stop_outcome is None:
            child.stop_outcome, child.stop_message = outcome, message
        grace = self.cfg.workers.term_grace_s if grace is None else grace
        if child.tree is None:
            pass  # _forked() kills it as soon as the fork is reported
        elif grace <= 0:
            child.tree.kill()
            child.kill_at = None
        else:
            child.tree.signal(signal.SIGTERM)
            child.kill_at = now + grace
        self.log.info("job_stopping", job_id=child.job.id, document=document_name(child.job.source),
                      outcome=outcome, reason=message, pid=child.pid)

    def _watch(self, now: float) -> None:
        self.next_sample = now + self.cfg.memory.watchdog_interval_ms / 1000
        cap = self.cfg.memory.job_limit_mb
        measured = [(c, c.tree) for c in self.children.values() if c.tree is not None]
        for child, tree in measured:
            child.meter.update(tree.sample, now, cap)
        if sum(c.meter.uss_mb for c, _ in measured) > self.budget.budget_mb:  # act on readings, not estimates
            for child, tree in measured:
                if not child.meter.uss_exact:
                    child.meter.update(tree.sample, now, cap, precise=True)
        for child, tree in measured:
            if child.kill_at is not None and now >= child.kill_at:
                tree.kill()
                child.kill_at = None
        running = [Running(c.job.id, c.meter.uss_mb, c.meter.uss_exact, c.meter.processes, c.started_at, c.deadline,
                           c.tree is not None, c.stop_outcome is not None) for c in self.children.values()]
        for stop in decide_stops(running, now, cap, self.cfg.workers.job_timeout_s, self.budget.budget_mb):
            self._stop(self.children[stop.job_id], stop.outcome, stop.message, now, grace=0 if stop.at_once else None)
        self.metrics.children.set(len(self.children))
        self.metrics.children_mb.set(sum(c.meter.uss_mb for c, _ in measured))

    def _lend_cores(self) -> None:
        """Lend the cores no job uses to children that can read several pages at once, and take
        them back as jobs start (supervisor/lending.py); each change is logged."""
        if self.reading_slots <= 1 or not self.children:
            self.metrics.readers_lent.set(0)
            return
        reading = [Reading(c.job.id, c.readers_wanted if c.stop_outcome is None else 1, self.keepalive.lent(c.job.id))
                   for c in self.children.values()]
        held = sum(self.budget.holds(c.job.passes, c.meter.uss_mb) for c in self.children.values())
        loan = lend_readers(reading, self.reading_slots, self.budget.budget_mb - held, READER_MB)
        for job_id, readers in loan.items():
            before = self.keepalive.lent(job_id)
            if readers != before and self.keepalive.lend(job_id, readers):
                self.log.info("readers_lent", job_id=job_id, document=document_name(self.children[job_id].job.source),
                              readers=readers, before=before, running=len(reading), reading_slots=self.reading_slots)
        self.metrics.readers_lent.set(sum(self.keepalive.lent(c.job_id) - 1 for c in reading))

    # -- leases ----------------------------------------------------------
    def _note_lapsed_leases(self, now: float) -> None:
        """Children whose lease we could not renew in time stop themselves (passes/keepalive.py): say so."""
        lapsed = self.keepalive.lapsed(now)
        for job_id in lapsed:
            self.children[job_id].lease_lapsed = True
        if lapsed:
            self.log.warning("lease_renewal_late", jobs=lapsed, after_s=self.cfg.keepalive_s,
                             reason="no lease renewal within lease_s - heartbeat_s (this worker was stopped, its loop "
                                    "stuck in a call, or the queue out of reach): these jobs stop themselves before their "
                                    "lease can pass to another worker")

    def _heartbeat(self, now: float) -> None:
        self.next_heartbeat = now + self.cfg.queue.heartbeat_s
        self.metrics.parent_rss_mb.set(_own_rss_mb())
        # Every child holds its lease until it is reaped, those being stopped too: a lease that
        # lapsed while a child took its grace to die would let another worker run the job beside it.
        progress = {c.job.id: (c.done, c.total, c.meter.peak_mb) for c in self.children.values()}
        sent = time.monotonic()  # before the database stamps the renewal: what a child may trust
        try:
            to_stop = self.queue.heartbeat(self.worker_id, progress, self.cfg.queue.lease_s)
            self.keepalive.renewed(set(progress) - to_stop, sent)
            self._stop_unowned(to_stop, now)  # before anything else: another worker may be running them
            if not self.queue.worker_seen(self.worker_id, len(self.children), self.cfg.queue.lease_s):
                self._register()  # forgotten while we were cut off for longer than a lease
            for job_id in self.queue.reclaim_expired(self.cfg.retry.backoff_base_s, self.reclaim_window.seen_for(now),
                                                     except_worker=self.worker_id):
                self.log.warning("lease_reclaimed", job_id=job_id, document=self._document_of(job_id), outcome="lost")
                self.metrics.reclaimed.inc()
                self.claim_wanted = True
        except QueueError as exc:
            self.metrics.queue_errors.inc()
            self.reclaim_window.queue_lost()
            self.outage.away("heartbeat", exc)
            return
        self.outage.back()

    def _document_of(self, job_id: str) -> str | None:
        """For a log line about a job this worker does not run; the line goes out without it
        rather than not at all when the queue cannot say."""
        try:
            return document_name(self.queue.get(job_id).source)
        except QueueError:
            return None

    def _stop_unowned(self, job_ids: set[str], now: float) -> None:
        """Stop children whose job was cancelled (with the grace) or whose lease another worker
        took (at once: that worker may be running the job already)."""
        for job_id in job_ids:
            child = self.children.get(job_id)
            if child is None or child.stop_outcome is not None:
                continue
            if self.queue.get(job_id).lease_owner == self.worker_id:
                self._stop(child, "cancelled", "cancelled by an operator", now)
            else:
                self._stop(child, "lost", "its lease was taken over by another worker", now, grace=0)

    # -- the outbox --------------------------------------------------------
    def _queue_call(self, what: str, fn: Callable[[], Any]) -> None:
        self.outbox.put(what, fn)
        self._flush_outbox(time.monotonic())

    def _flush_outbox(self, now: float, final: bool = False) -> None:
        self.metrics.outbox.set(len(self.outbox))
        self.outbox.flush(now, final)

    def _queue_unavailable(self, what: str, pending: int, exc: QueueUnavailable, retry_in_s: float) -> None:
        self.metrics.queue_errors.inc()
        self.outage.away(what, exc, pending=pending, retry_in_s=retry_in_s)

    def _queue_refused(self, what: str, exc: QueueError) -> None:
        self.log.error("queue_write_failed", action=what, error=str(exc))


def _finished_record(child: Child, end: AttemptEnd) -> dict[str, Any]:
    """The job_finished log record (and /metrics' recent list) of an attempt."""
    return {"job_id": child.job.id, "document": document_name(child.job.source),
            "attempt": child.job.attempts, "outcome": end.outcome,
            "peak_mb": end.peak_mb, "peak_rss_mb": end.peak_rss_mb,
            "seconds": round(time.monotonic() - child.started_at, 3),
            "start_ms": _ms(child.start_latency_s), "first_page_ms": _ms(child.first_page_s),
            "exit_code": end.exit_code, "signal": signal_name(end.signal) if end.signal else None,
            "last_page": end.last_page, "error": end.error}


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _own_rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20
