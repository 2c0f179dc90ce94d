"""What an operator sees: the queue's side of the picture, and how a document is named.

`queue_picture` is read from the queue alone, so it is the same for every host; the
daemon adds what only it knows (live memory, the box budget) in observer.py. Both
`docsuper top` and the dashboard show the result.
"""

from __future__ import annotations

import time
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .queue.base import Job, Queue
from .redact import redact

DEAD_SHOWN = 10
OUTCOMES_SHOWN = 10


def document_name(source: str | None) -> str | None:
    """A job's document as an operator names it: the file name (the host too for a URL),
    never a URL's credentials or query string (signed URLs carry their token there), and
    through the redactor, which also masks any secret docsuper was told to remember."""
    if not source:
        return None
    if "://" in source:
        parts = urlsplit(source)
        name = PurePosixPath(parts.path).name
        label = f"{parts.hostname or parts.scheme}/…/{name}" if name else (parts.hostname or parts.scheme)
    else:
        label = PurePosixPath(source).name or source
    return redact(label)


def next_retry_at(job: Job) -> float | None:
    """When a queued job that already failed runs again (None: not waiting for a retry)."""
    if job.status == "queued" and job.attempts > 0 and job.run_at > time.time():
        return job.run_at
    return None


def job_row(job: Job) -> dict[str, Any]:
    return {"job_id": job.id, "document": document_name(job.source), "passes": job.passes,
            "attempt": job.attempts, "max_attempts": job.max_attempts, "done": job.progress_done,
            "total": job.progress_total, "peak_mb": job.peak_mb, "started_at": job.started_at,
            "owner": job.lease_owner, "outcome": job.last_outcome, "error": job.last_error,
            "finished_at": job.finished_at, "dead_at": job.dead_at, "next_retry_at": next_retry_at(job)}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def queue_picture(queue: Queue) -> dict[str, Any]:
    now = time.time()
    finished = [j for j in queue.list_jobs(None, limit=50) if j.finished_at is not None]
    finished.sort(key=lambda j: j.finished_at or 0, reverse=True)
    retrying = [j for j in queue.list_jobs("queued", limit=100) if next_retry_at(j) is not None]
    return {
        "at": now,
        "counts": queue.counts(),
        "oldest_queued_s": _round(queue.oldest_due_wait_s()),
        "running": [job_row(j) for j in queue.list_jobs("running", limit=100)],
        "retrying": [job_row(j) for j in sorted(retrying, key=lambda j: j.run_at)],
        "finished": [job_row(j) for j in finished[:OUTCOMES_SHOWN]],
        "dead": [job_row(j) for j in queue.list_jobs("dead", limit=DEAD_SHOWN)],
        "workers": [{"id": w.id, "host": w.host, "pid": w.pid, "version": w.version, "running": w.running,
                     "started_at": w.started_at, "last_seen": w.last_seen} for w in queue.workers()],
        "error": None,
    }
