"""The queue contract, shared by the SQLite and PostgreSQL backends.

A job moves `queued → running → succeeded | dead | cancelled`; a failed attempt
with attempts left goes back to `queued` with a later `run_at` (the rules are in
`rules.py`). Every attempt is its own row. Times are Unix seconds (floats) on
both backends.

Ownership is the lease: every write about a running job names the worker that
claimed it, and a write from a worker that no longer holds the lease changes
nothing. That is what keeps a job from being finished twice when a slow worker
and the one that reclaimed its job both report.
"""

from __future__ import annotations

import abc
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from .errors import InvalidJob, JobNotFound, QueueError, QueueUnavailable, SchemaOutdated
from .rules import FINAL_STATES, JOB_STATES, NOT_COUNTED, OUTCOMES, next_state

__all__ = [
    "FINAL_STATES", "JOB_STATES", "NOT_COUNTED", "OUTCOMES", "Attempt", "AttemptEnd", "FinalState", "InvalidJob",
    "Job", "JobNotFound", "NewJob", "Queue", "QueueError", "QueueUnavailable", "SchemaOutdated", "WorkerInfo",
    "backoff_delay", "next_state", "open_queue",
]


@dataclass
class NewJob:
    source: str | None = None
    passes: list[str] = field(default_factory=lambda: ["ocr"])
    options: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    max_attempts: int = 3
    run_at: float | None = None  # None: now
    # The same key again gives the first job's id instead of a second job (until that job is purged).
    idempotency_key: str | None = None


@dataclass
class Job:
    id: str
    status: str
    source: str | None
    passes: list[str]
    options: dict[str, Any]
    priority: int
    run_at: float
    attempts: int
    max_attempts: int
    lease_owner: str | None
    lease_expires_at: float | None
    progress_done: int | None
    progress_total: int | None
    last_outcome: str | None
    last_error: str | None
    peak_mb: float | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    dead_at: float | None
    cancel_requested: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Attempt:
    job_id: str
    number: int
    worker: str
    started_at: float
    outcome: str | None = None  # None while it runs
    counted: bool = True
    exit_code: int | None = None
    signal: int | None = None
    peak_mb: float | None = None  # peak USS of the child's whole tree
    peak_rss_mb: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    last_page: int | None = None
    error: str | None = None
    traceback: str | None = None
    replay: bool = False  # `docsuper once` on a finished job: recorded, but the job was left as it was
    plan: dict[str, Any] | None = None  # the memory plan the attempt ran (the ocr pass's), when it said

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class AttemptEnd:
    """What the supervisor learned about an attempt when it ended."""

    outcome: str
    exit_code: int | None = None
    signal: int | None = None
    peak_mb: float | None = None
    peak_rss_mb: float | None = None
    last_page: int | None = None
    error: str | None = None
    traceback: str | None = None
    result: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None  # the memory plan the child said it ran
    lighter_plan: bool = False  # an `oom` on a plan that has a lighter one: retried whatever max_attempts says


@dataclass(frozen=True)
class FinalState:
    """A job that reached succeeded, dead or cancelled (what a completion hook hears)."""

    job_id: str
    status: str
    attempts: int
    pages: int | None


@dataclass
class WorkerInfo:
    id: str
    host: str
    pid: int
    version: str
    started_at: float
    last_seen: float
    running: int


def backoff_delay(attempt: int, base_s: float, max_s: float, jitter: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter: base, 2·base, 4·base … capped, plus up to `jitter` of itself."""
    delay = min(max_s, base_s * (2 ** max(0, attempt - 1)))
    return float(delay * (1.0 + jitter * (rng or random).random()))


class Queue(abc.ABC):
    """One queue file or database. Methods are safe to call from several processes at once."""

    url: str

    # -- schema --------------------------------------------------------
    @abc.abstractmethod
    def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied (empty when current)."""

    @abc.abstractmethod
    def check_schema(self) -> None:
        """Raise SchemaOutdated when `docsuper migrate` must run first."""

    # -- producers and operators -----------------------------------------
    @abc.abstractmethod
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        """Enqueue jobs; return their ids in order."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job:
        """The job with this id or unique id prefix; JobNotFound otherwise."""

    @abc.abstractmethod
    def attempts(self, job_id: str) -> list[Attempt]:
        ...

    @abc.abstractmethod
    def pages(self, job_id: str, pass_name: str | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        """Stored per-page results as (pass, page, result), by pass then page."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Jobs per state (every state present, zero when none)."""

    @abc.abstractmethod
    def list_jobs(self, status: str | None = None, limit: int = 50) -> list[Job]:
        """Newest first (for dead: most recently dead first)."""

    @abc.abstractmethod
    def expired_leases(self) -> list[Job]:
        """Running jobs whose lease has run out (their worker is gone or stuck)."""

    @abc.abstractmethod
    def retry(self, job_ids: Iterable[str] | None) -> list[str]:
        """Put dead or cancelled jobs back to queued with a fresh attempt budget; None = all dead."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> str:
        """Cancel a queued job at once; ask the owner of a running one to stop it. Returns the new state."""

    @abc.abstractmethod
    def oldest_due_wait_s(self) -> float | None:
        """Seconds the longest-waiting due job has waited since its run_at (None when none is due)."""

    @abc.abstractmethod
    def has_queued(self) -> bool:
        """True while any job is queued, due or not."""

    @abc.abstractmethod
    def register_passes(self, names: Iterable[str]) -> None:
        """Record passes a host has installed: what enqueue accepts from now on."""

    @abc.abstractmethod
    def registered_passes(self) -> list[str]:
        ...

    @abc.abstractmethod
    def purge(self, finished_before: float | None, dead_before: float | None, limit: int) -> dict[str, int]:
        """Delete up to `limit` final jobs (with their attempts and pages), oldest first: succeeded and
        cancelled ones finished before `finished_before`, dead ones before `dead_before` (None: none of
        that kind). Returns how many of each state went. Never touches a queued or running job."""

    @abc.abstractmethod
    def purgeable(self, finished_before: float | None, dead_before: float | None) -> dict[str, int]:
        """How many jobs of each state `purge` would delete with no limit (a dry run)."""

    def wait(self, job_id: str, timeout_s: float | None = None, poll_s: float = 0.5) -> Job:
        """Block until the job is succeeded, dead or cancelled and return it; TimeoutError when time runs out.

        This default polls every `poll_s`; PostgreSQL listens for the completion NOTIFY."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job.status in FINAL_STATES:
                return job
            left = poll_s if deadline is None else min(poll_s, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError(f"job {job.id} is still {job.status} after {timeout_s:g} s")
            time.sleep(left)

    _final_listeners: tuple[Callable[[FinalState], None], ...] = ()

    def add_final_listener(self, listener: Callable[[FinalState], None]) -> None:
        """Call `listener` after each write of this queue object that put a job in a final state has
        committed (the daemon's webhook). It runs in the writer's thread and must not block or raise."""
        self._final_listeners = (*self._final_listeners, listener)

    def _emit_final(self, finals: Iterable[FinalState]) -> None:
        for final in finals:
            for listener in self._final_listeners:
                listener(final)

    # -- workers ---------------------------------------------------------
    @abc.abstractmethod
    def claim(self, worker_id: str, limit: int, lease_s: float) -> list[Job]:
        """Take up to `limit` due jobs (highest priority, then oldest run_at) and start an attempt on each."""

    @abc.abstractmethod
    def claim_one(self, job_id: str, worker_id: str, lease_s: float) -> Job:
        """Claim this job whatever its state unless another worker holds a live lease."""

    @abc.abstractmethod
    def replay(self, job_id: str, worker_id: str, lease_s: float, store: bool = False) -> Job:
        """Start `docsuper once` on a job.

        A job not yet final is claimed as by claim_one. A final one (succeeded, dead,
        cancelled) keeps its state, result and pages: the replay gets an attempt row of
        its own (not counted, `replay` set) that finish() closes, its pages are not
        stored, and the Job handed back describes the run the replay is, a first
        attempt with nothing stored. With `store`, a final job is claimed afresh
        instead: its pages are deleted and the replay's results replace them."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: str, progress: Mapping[str, tuple[int | None, int | None, float | None]],
                  lease_s: float) -> set[str]:
        """Renew the leases of these running jobs, in one statement.

        `progress` maps each job id to (pages done, pages total, peak MB so far); the
        job keeps the highest peak seen. Returns the ids among them this worker must
        stop: an operator asked to cancel them, or the lease is no longer this worker's."""

    @abc.abstractmethod
    def record_page(self, job_id: str, worker_id: str, pass_name: str, page: int, result: dict[str, Any]) -> bool:
        """Store one page's result while the worker holds the lease. False when it no longer does."""

    @abc.abstractmethod
    def finish(self, job_id: str, worker_id: str, end: AttemptEnd, retry_delay_s: float) -> str | None:
        """Close the running attempt and move the job on by the outcome.

        Returns the job's new state, or None when this worker no longer holds the
        lease (the job was reclaimed or finished elsewhere): nothing is written then."""

    @abc.abstractmethod
    def reclaim_expired(self, retry_delay_s: float, expired_within_s: float | None = None,
                        except_worker: str | None = None) -> list[str]:
        """Close every expired lease's attempt as `lost` and requeue or dead-letter the job.

        With `expired_within_s`, only leases that expired within that many seconds: a worker
        back from an outage reclaims only what it saw expire (the others get a whole lease
        to come back too). `except_worker` leaves that worker's leases alone: a worker never
        reclaims its own, whose jobs it is still finishing itself (after a stall, say)."""

    @abc.abstractmethod
    def register_worker(self, info: WorkerInfo) -> None:
        ...

    @abc.abstractmethod
    def worker_seen(self, worker_id: str, running: int, forget_after_s: float | None = None) -> bool:
        """Mark the worker alive with its count of running jobs; False when its row is gone
        (forgotten after an outage: register again). With `forget_after_s`, delete the rows
        of workers not seen for that long: they are dead, and `status` shows live ones only."""
        ...

    @abc.abstractmethod
    def unregister_worker(self, worker_id: str) -> None:
        ...

    @abc.abstractmethod
    def workers(self) -> list[WorkerInfo]:
        ...

    # -- waiting ---------------------------------------------------------
    def wakeup_fileno(self) -> int | None:
        """A file descriptor that becomes readable when new work may be there (LISTEN), or None."""
        return None

    def consume_wakeups(self) -> None:
        """Drain what made wakeup_fileno() readable, without blocking."""

    def pop_warnings(self) -> list[str]:
        """Problems worth one log line each, returned once (e.g. LISTEN fell back to polling)."""
        return []

    @abc.abstractmethod
    def close(self) -> None:
        ...

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_queue(url: str, schema: str = "docsuper", listen: bool = True) -> Queue:
    """The backend for this URL: sqlite:///PATH or postgresql://…

    `schema` and `listen` (LISTEN/NOTIFY wake-ups) only matter to PostgreSQL."""
    if url.startswith("sqlite:"):
        from .sqlite import SQLiteQueue

        return SQLiteQueue(url)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresQueue

        return PostgresQueue(url, schema=schema, listen=listen)
    raise QueueError(f"queue.url: unsupported URL {url!r} (use sqlite:///PATH or postgresql://…)")
