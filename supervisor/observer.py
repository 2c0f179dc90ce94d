"""What the supervisor shows of itself: systemd's notify messages, the live picture
for `docsuper top` and the dashboard, memory over time, and the queue's numbers.

The loop calls three hooks: `ready()` once the fork server is up, `turn(now)` on
every turn of the loop, `stopping()` when shutdown begins. Everything the loop
knows is copied out once a second on the loop's own thread (the HTTP thread only
ever reads whole, finished snapshots), and the queue's numbers are read by a
thread of their own with their own connection, so a slow database never holds up
the loop and a viewer never reaches into it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from .history import MemoryHistory
from .picture import document_name, queue_picture
from .queue.base import QueueError, open_queue
from .sdnotify import Notifier

if TYPE_CHECKING:
    from .daemon import Supervisor

SAMPLE_EVERY_S = 1.0
EARLY_REPORT_AFTER_S = 1.0  # a job running this long has its progress and peak in the queue at once
QUEUE_EVERY_S = 2.0  # the queue's numbers while someone watches
QUEUE_IDLE_EVERY_S = 15.0  # ... and for the metrics and STATUS= when nobody does
WATCHED_FOR_S = 30.0


class QueueWatcher:
    """Reads the queue's picture in a thread of its own, on a connection of its own."""

    def __init__(self, url: str, schema: str, on_picture: Any = None) -> None:
        self.url, self.schema = url, schema
        self.on_picture = on_picture
        self.latest: dict[str, Any] = {"error": "not read yet", "counts": {}}
        self.watched_until = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="docsuper-queue-view", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def watched(self) -> None:
        """A viewer asked: read often for a while, and now if the picture is stale."""
        now = time.monotonic()
        if now > self.watched_until:
            self._wake.set()
        self.watched_until = now + WATCHED_FOR_S

    def _run(self) -> None:
        queue = None
        while not self._stop.is_set():
            try:
                if queue is None:
                    queue = open_queue(self.url, self.schema, listen=False)
                picture = queue_picture(queue)
            except QueueError as exc:
                picture = {**self.latest, "error": str(exc)}
                if queue is not None:
                    queue.close()
                    queue = None
            self.latest = picture
            if self.on_picture is not None:
                self.on_picture(picture)
            watched = time.monotonic() < self.watched_until
            self._wake.wait(QUEUE_EVERY_S if watched else QUEUE_IDLE_EVERY_S)
            self._wake.clear()
        if queue is not None:
            queue.close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive():
            self.thread.join(5)


def kernel_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer took in this service's cgroup (v2), or None."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            hierarchy, _, path = line.split(":", 2)
            if hierarchy == "0":
                events = Path("/sys/fs/cgroup") / path.lstrip("/") / "memory.events"
                for entry in events.read_text().splitlines():
                    key, _, value = entry.partition(" ")
                    if key == "oom_kill":
                        return int(value)
    except (OSError, ValueError):
        return None
    return None


def status_line(live: dict[str, Any], queued: int | None) -> str:
    """systemd's STATUS=: what `systemctl status` shows under the unit's name."""
    box = live["box"]
    parts = [f"{len(live['running'])}/{box['concurrency']} running"]
    if queued is not None:
        parts.append(f"{queued} queued")
    parts.append(f"children {box['children_mb']:.0f} of {box['budget_mb']:.0f} MB")
    parts.append(f"{live['jobs_done']} done")
    return ("stopping: " if live["stopping"] else "") + ", ".join(parts)


class Observer:
    def __init__(self, supervisor: "Supervisor") -> None:
        self.sup = supervisor
        self.notify = Notifier()
        self.history = MemoryHistory()
        self.live: dict[str, Any] = {}
        self.next_sample = 0.0
        self.next_early_report = 0.0
        self.reported: set[str] = set()
        self.failed = False  # logged once
        cfg = supervisor.cfg
        self.queue_view = QueueWatcher(cfg.queue.url, cfg.queue.schema, self._on_queue_picture)
        self.host = socket.gethostname()

    # -- hooks called by the loop ------------------------------------------
    def ready(self) -> None:
        self._sample(time.monotonic())
        if self.notify.enabled or self.sup.cfg.http.port:
            self.queue_view.start()
        self.notify.ready(status_line(self.live, None))

    def turn(self, now: float) -> None:
        self.notify.ping(now)
        if now >= self.next_sample:
            try:
                self._sample(now)
                self.notify.status(status_line(self.live, self.queue_view.latest.get("counts", {}).get("queued")))
                self._report_early(now)
            except Exception as exc:  # a view must never take the daemon (and its jobs) down with it
                self.next_sample = now + SAMPLE_EVERY_S
                if not self.failed:
                    self.failed = True
                    self.sup.log.error("observer_failed", error=f"{type(exc).__name__}: {exc}")

    def stopping(self) -> None:
        self._sample(time.monotonic())
        self.notify.stopping(status_line(self.live, None))

    def close(self) -> None:
        self.queue_view.stop()
        self.notify.close()

    # -- on the loop's thread ----------------------------------------------
    def _sample(self, now: float) -> None:
        self.next_sample = now + SAMPLE_EVERY_S
        sup = self.sup
        cap = sup.cfg.memory.job_limit_mb
        running: list[dict[str, Any]] = []
        for c in sup.children.values():
            running.append({
                "job_id": c.job.id, "document": document_name(c.job.source), "passes": c.job.passes,
                "pass": c.current_pass or (c.job.passes[0] if c.job.passes else None),
                "done": c.done, "total": c.total, "attempt": c.job.attempts, "max_attempts": c.job.max_attempts,
                "uss_mb": round(c.meter.uss_mb, 1), "peak_mb": c.meter.peak_mb,
                "rss_mb": round(c.meter.peak_rss_mb, 1), "cap_mb": cap, "pid": c.pid,
                "held_mb": round(sup.budget.holds(c.job.passes, c.meter.uss_mb), 1),
                "seconds": round(now - c.started_at, 1), "stopping": c.stop_outcome,
                "readers": sup.keepalive.lent(c.job.id),  # pages read at once: more than 1 on lent cores
            })
        running.sort(key=lambda r: -r["seconds"])
        children_mb = sum(r["uss_mb"] for r in running)
        self.history.add(time.time(), children_mb, {r["job_id"]: r["uss_mb"] for r in running})
        outcomes = [{**r, "document": r.get("document")} for r in list(sup.finished)[-20:]][::-1]
        self.live = {
            "at": time.time(), "worker": sup.worker_id, "host": self.host, "pid": os.getpid(),
            "stopping": sup.stopping, "jobs_done": sup.jobs_done,
            "box": {"budget_mb": round(sup.budget.budget_mb, 1), "children_mb": round(children_mb, 1),
                    "held_mb": round(sum(r["held_mb"] for r in running), 1),
                    "parent_rss_mb": round(_rss_mb(os.getpid()), 1), "server_rss_mb": round(self._server_rss(), 1),
                    "job_limit_mb": cap, "concurrency": sup.cfg.workers.concurrency,
                    "kernel_oom_kills": kernel_oom_kills()},
            "running": running,
            "outcomes": outcomes,
        }

    def _server_rss(self) -> float:
        # The fork server's process (the spawn launcher has none); None while it restarts.
        pid = getattr(getattr(self.sup.launcher, "process", None), "pid", None)
        return _rss_mb(pid) if pid and pid != os.getpid() else 0.0

    def _report_early(self, now: float) -> None:
        """A job's progress and peak reach the queue after about a second rather than at the
        next heartbeat (15 s), so `status` never shows a running job as `peak 0 MB`.
        At most one extra heartbeat a second, and none for jobs shorter than a second."""
        sup = self.sup
        self.reported &= set(sup.children)
        due = [j for j, c in sup.children.items()
               if j not in self.reported and c.meter.uss_known and now - c.started_at >= EARLY_REPORT_AFTER_S]
        if due and now >= self.next_early_report:
            self.reported.update(due)
            self.next_early_report = now + EARLY_REPORT_AFTER_S
            sup.next_heartbeat = min(sup.next_heartbeat, now)

    # -- from other threads --------------------------------------------------
    def _on_queue_picture(self, picture: dict[str, Any]) -> None:
        metrics = self.sup.metrics
        for state, count in picture.get("counts", {}).items():
            metrics.jobs.labels(state).set(count)
        oldest = picture.get("oldest_queued_s")
        metrics.oldest_queued_s.set(oldest or 0)
        oom = kernel_oom_kills()
        if oom is not None:
            metrics.kernel_oom_kills.set(oom)

    def picture(self) -> dict[str, Any]:
        """The whole picture for a viewer (called from the HTTP thread)."""
        self.queue_view.watched()
        return {**self.live, "queue": self.queue_view.latest, "history": self.history.as_dict()}


def _rss_mb(pid: int) -> float:
    try:
        return psutil.Process(pid).memory_info().rss / 2**20
    except psutil.Error:
        return 0.0
