"""`/healthz`, Prometheus `/metrics` and the dashboard on `$PORT`, served from a thread of the parent.

A thread is safe here because the parent never forks: children come from the fork
server (a separate, single-threaded process) or from subprocess's fork+exec.
The loop reports what it did into the metrics below; the HTTP thread only reads.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .dashboard import Dashboard
from .queue.base import JOB_STATES, OUTCOMES

MEMORY_BUCKETS_MB = (10, 25, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500, 750, 1000)
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.finished = Counter("docsuper_attempts", "Attempts that ended, by outcome", ["outcome"], registry=r)
        self.peak = Histogram("docsuper_attempt_peak_mb", "Peak USS of a job's process tree, MB",
                              buckets=MEMORY_BUCKETS_MB, registry=r)
        self.duration = Histogram("docsuper_attempt_seconds", "Wall time of an attempt",
                                  buckets=SECONDS_BUCKETS, registry=r)
        self.children = Gauge("docsuper_children", "Job children running now", registry=r)
        self.readers_lent = Gauge("docsuper_readers_lent",
                                  "Readers lent to running jobs on idle cores (beyond each job's own)", registry=r)
        self.children_mb = Gauge("docsuper_children_memory_mb", "USS of all job children together, MB", registry=r)
        self.budget_mb = Gauge("docsuper_box_budget_mb", "Memory all children may use together, MB", registry=r)
        self.parent_rss_mb = Gauge("docsuper_parent_rss_mb", "The supervisor's own RSS, MB", registry=r)
        self.outbox = Gauge("docsuper_outbox_pending", "Queue writes waiting for the database", registry=r)
        self.queue_errors = Counter("docsuper_queue_unavailable", "Queue calls that found the database away",
                                    registry=r)
        self.reclaimed = Counter("docsuper_leases_reclaimed", "Expired leases this worker reclaimed (outcome lost)",
                                 registry=r)
        # The queue's own numbers, the same from every worker on one queue (alert on max()).
        self.jobs = Gauge("docsuper_jobs", "Jobs in the queue, by state", ["state"], registry=r)
        self.oldest_queued_s = Gauge("docsuper_oldest_queued_seconds",
                                     "How long the longest-waiting due job has waited (0: none)", registry=r)
        self.kernel_oom_kills = Gauge("docsuper_kernel_oom_kills",
                                      "Processes the kernel's OOM killer took in this service's cgroup", registry=r)
        # Every series exists from the start, at 0, so rate() and increase() alerts work before the first event.
        for outcome in OUTCOMES:
            self.finished.labels(outcome)
        for state in JOB_STATES:
            self.jobs.labels(state)


class HealthServer:
    """Serves until stop(). `health()` returns (healthy, details) for /healthz."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: Callable[[], tuple[bool, dict[str, Any]]],
                 picture: Callable[[], dict[str, Any]] | None = None, token: str = ""):
        registry = metrics.registry
        dashboard = Dashboard(picture, token) if picture is not None else None

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/healthz":
                    ok, details = health()
                    self._send(200 if ok else 503, "application/json", json.dumps(details).encode())
                elif dashboard is not None and dashboard.serves(path):
                    code, content_type, body = dashboard.answer(self.path, self.client_address[0], dict(self.headers))
                    self._send(code, content_type, body)
                else:
                    self._send(404, "text/plain", b"not found: try /, /healthz or /metrics\n")

            def _send(self, code: int, content_type: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass  # the JSON log is for jobs; health probes every few seconds would drown it

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="docsuper-http", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def loop_health(last_tick: Callable[[], float], details: Callable[[], dict[str, Any]],
                stall_s: float) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """Healthy while the supervisor loop turned within `stall_s` seconds."""

    def health() -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - last_tick()
        info = {"loop_age_s": round(age, 2), **details()}
        ok = age < stall_s
        info["status"] = "ok" if ok else "stalled"
        return ok, info

    return health
