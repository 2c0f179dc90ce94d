"""The Python API for applications: enqueue a document job, wait for it, read its results.

    from docsuper.supervisor.client import Client

    with Client.open("postgresql://…/app") as docs:           # or sqlite:///docsuper.db
        job_id = docs.enqueue("https://…/scan.pdf", idempotency_key=upload_id)
        job = docs.wait(job_id, timeout_s=600)                 # LISTEN on PostgreSQL, polling on SQLite
        if job.status == "succeeded":
            print(docs.text(job_id))

On PostgreSQL, `enqueue` goes through the SQL function `docsuper.enqueue()` that
every other client calls too (psql, node-postgres, Supabase `rpc()`), so the checks,
the idempotency keys and the wake-up are the same whoever enqueues; on SQLite the
same checks run in Python. `docs/integration.md` shows each of them.

Every method raises QueueError (a one-line message for a person) or one of its
kinds: InvalidJob for arguments enqueue refuses, JobNotFound, QueueUnavailable when
the database cannot be reached; `wait` raises TimeoutError when the time is up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .queue.base import Attempt, Job, NewJob, Queue, open_queue
from .queue.errors import InvalidJob, JobNotFound, QueueError, QueueUnavailable
from .queue.rules import FINAL_STATES

__all__ = ["FINAL_STATES", "Attempt", "Client", "InvalidJob", "Job", "JobNotFound", "NewJob", "PageText", "QueueError",
           "QueueUnavailable"]


@dataclass(frozen=True)
class PageText:
    page: int
    text: str


class Client:
    """An application's handle on one docsuper queue. Not thread-safe: one per thread."""

    def __init__(self, queue: Queue, *, poll_s: float = 0.5) -> None:
        self.queue = queue
        self.poll_s = poll_s

    @classmethod
    def open(cls, url: str, *, schema: str = "docsuper", poll_s: float = 0.5) -> Client:
        """The queue at `url` (`postgresql://…` or `sqlite:///PATH`); PostgreSQL's `schema` is docsuper's."""
        return cls(open_queue(url, schema, listen=False), poll_s=poll_s)

    # -- enqueue ------------------------------------------------------------
    def enqueue(self, source: str | None, passes: Sequence[str] = ("ocr",), options: Mapping[str, Any] | None = None,
                *, priority: int = 0, idempotency_key: str | None = None, max_attempts: int = 3,
                run_at: float | None = None) -> str:
        """Queue one job and return its id; with `idempotency_key`, the id of the job already queued
        under that key if there is one (concurrent callers with one key get one job)."""
        [job_id] = self.enqueue_many([NewJob(source=source, passes=list(passes), options=dict(options or {}),
                                             priority=priority, max_attempts=max_attempts, run_at=run_at,
                                             idempotency_key=idempotency_key)])
        return job_id

    def enqueue_many(self, jobs: Sequence[NewJob]) -> list[str]:
        """Queue several jobs in one transaction (all or none); ids in the same order."""
        return self.queue.submit(jobs)

    # -- read -----------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        """The job by id or unique id prefix: status, pages done, peak memory, summary, times."""
        return self.queue.get(job_id)

    def attempts(self, job_id: str) -> list[Attempt]:
        return self.queue.attempts(job_id)

    def wait(self, job_id: str, timeout_s: float | None = None) -> Job:
        """Block until the job is succeeded, dead or cancelled, and return it; TimeoutError after `timeout_s`."""
        return self.queue.wait(job_id, timeout_s, self.poll_s)

    def pages(self, job_id: str, pass_name: str = "ocr") -> list[PageText]:
        """Each stored page's text, in page order."""
        return [PageText(page, str(result.get("text", ""))) for _, page, result in self.queue.pages(job_id, pass_name)]

    def text(self, job_id: str, pass_name: str = "ocr") -> str:
        """The whole text, pages separated by form feeds (as `docsuper show --text` prints it)."""
        return "\f".join(p.text for p in self.pages(job_id, pass_name))

    def summary(self, job_id: str) -> dict[str, Any] | None:
        """What the passes returned (per pass), once the job succeeded; None before."""
        return self.queue.get(job_id).result

    # -- operate ----------------------------------------------------------------
    def cancel(self, job_id: str) -> str:
        """Cancel a queued job (returns "cancelled") or ask the worker running it to stop ("running")."""
        return self.queue.cancel(job_id)

    def retry(self, job_ids: Iterable[str] | None) -> list[str]:
        """Queue dead or cancelled jobs again with a fresh attempt budget; their full ids.
        None: every dead job."""
        return self.queue.retry(None if job_ids is None else list(job_ids))

    def close(self) -> None:
        self.queue.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
