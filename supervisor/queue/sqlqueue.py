"""The queue contract written once, over named SQL statements.

A backend supplies its statements (one `.sql` file, see `queries.py`), a way to run
a function inside one transaction (`_transaction`), and the conversion of its rows
and parameters; what a job may do and where it goes next comes from `rules.py`.
What really differs stays in the backend: locking (`FOR UPDATE SKIP LOCKED`
against SQLite's one writer), LISTEN/NOTIFY, connections and reconnects.
"""

from __future__ import annotations

import abc
import dataclasses
import time
from collections import Counter
from dataclasses import fields
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, TypeVar

from . import rules
from .base import Attempt, AttemptEnd, FinalState, Job, NewJob, Queue, WorkerInfo
from .errors import JobNotFound, QueueUnavailable

T = TypeVar("T")

JOB_FIELDS = tuple(f.name for f in fields(Job))
ATTEMPT_FIELDS = tuple(f.name for f in fields(Attempt))
WORKER_FIELDS = tuple(f.name for f in fields(WorkerInfo))


class Tx(Protocol):
    """Named statements run inside one open transaction; rows come back as dicts."""

    def all(self, name: str, /, **params: Any) -> list[dict[str, Any]]: ...

    def one(self, name: str, /, **params: Any) -> dict[str, Any] | None: ...

    def run(self, name: str, /, **params: Any) -> int:
        """Run a statement for its effect; the number of rows it changed."""

    def many(self, name: str, /, rows: Sequence[Mapping[str, Any]]) -> None: ...


class SQLQueue(Queue):
    # PostgreSQL opens the attempt row in the same statement that starts the job
    # (claim_jobs, start_job); SQLite runs open_attempt after it.
    opens_attempts_in_claim = False

    # -- what a backend supplies ------------------------------------------
    @abc.abstractmethod
    def _transaction(self, fn: Callable[[Tx], T], verify: Callable[[Tx], T] | None = None,
                     write: bool = True) -> T:
        """Run `fn` in one transaction and return what it returns.

        `verify`, where given, answers the same question on a fresh connection when
        the connection broke during COMMIT (did the change land?)."""

    @abc.abstractmethod
    def _decode(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A row in Python's terms: Unix seconds for times, lists and dicts for JSON, bools."""

    @abc.abstractmethod
    def _json(self, value: Any) -> Any:
        """A JSON parameter as the driver takes it."""

    @abc.abstractmethod
    def _ids(self, ids: Sequence[str]) -> Any:
        """A list-of-ids parameter as the backend's SQL takes it."""

    def _wake(self, tx: Tx) -> None:
        """New or requeued work is there (PostgreSQL: NOTIFY at commit)."""

    @abc.abstractmethod
    def _enqueue(self, tx: Tx, jobs: Sequence[NewJob]) -> list[str]:
        """Check and insert the jobs (or find the one already under an idempotency key); their ids.

        PostgreSQL calls its SQL function enqueue(), the way in for every client;
        SQLite runs the same checks (rules.check_new_job) in Python."""

    # -- writes that may finish jobs ------------------------------------------
    def _finishing(self, fn: Callable[[Tx], T], verify: Callable[[Tx], T] | None = None) -> T:
        """`_transaction` for a write that may put jobs in a final state: the final-state
        listeners hear of them once it has committed, never from a try that rolled back."""
        finals: list[FinalState] = []

        def run(tx: Tx) -> T:
            finals.clear()
            self._finals = finals
            return fn(tx)

        try:
            result = self._transaction(run, verify)
        finally:
            self._finals = None
        self._emit_final(finals)
        return result

    # Collects what a `_finishing` write finished; None outside one (claim_one's closing of a
    # lost attempt is followed at once by a new start: nothing to announce).
    _finals: list[FinalState] | None = None

    def _finished(self, final: FinalState) -> None:
        if self._finals is not None:
            self._finals.append(final)

    # -- rows ---------------------------------------------------------------
    def _job(self, row: Mapping[str, Any]) -> Job:
        data = self._decode(row)
        return Job(**{name: data[name] for name in JOB_FIELDS})

    def _attempt(self, row: Mapping[str, Any]) -> Attempt:
        data = self._decode(row)
        return Attempt(**{name: data[name] for name in ATTEMPT_FIELDS})

    def _resolve(self, tx: Tx, job_id: str) -> str:
        matches = tx.all("resolve_prefix", prefix=rules.id_prefix(job_id) + "%")
        return rules.resolved(job_id, [r["id"] for r in matches])

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return self._transaction(fn, write=False)

    # -- producers and operators -----------------------------------------
    def submit(self, jobs: Sequence[NewJob]) -> list[str]:
        if not jobs:
            return []
        made: list[str] = []

        def insert(tx: Tx) -> list[str]:
            made[:] = self._enqueue(tx, jobs)
            return list(made)

        def landed(tx: Tx) -> list[str]:
            # COMMIT broke after the ids came back: they are all there, or none of the new ones is.
            found = tx.one("count_jobs_among", ids=self._ids(sorted(set(made))))
            if not made or found is None or found["n"] != len(set(made)):
                raise QueueUnavailable("connection lost while submitting: the jobs were not stored")
            return list(made)

        return self._transaction(insert, verify=landed)

    def register_passes(self, names: Iterable[str]) -> None:
        rows = [{"name": name, "now": time.time()} for name in sorted(set(names))]
        self._transaction(lambda tx: tx.many("register_pass", rows))

    def registered_passes(self) -> list[str]:
        return [r["name"] for r in self._read(lambda tx: tx.all("registered_passes"))]

    def _register_installed_passes(self, tx: Tx) -> None:
        """What this host has installed; run by migrate and by a worker registering."""
        from docsuper.passes.api import available_passes  # the entry-point names only: no pass is imported

        tx.many("register_pass", [{"name": name, "now": time.time()} for name in available_passes()])

    def get(self, job_id: str) -> Job:
        def read(tx: Tx) -> Job:
            row = tx.one("job", id=self._resolve(tx, job_id))
            assert row is not None  # resolved in this transaction
            return self._job(row)

        return self._read(read)

    def attempts(self, job_id: str) -> list[Attempt]:
        return self._read(lambda tx: [self._attempt(r) for r in tx.all("job_attempts", id=self._resolve(tx, job_id))])

    def pages(self, job_id: str, pass_name: str | None = None) -> list[tuple[str, int, dict[str, Any]]]:
        def read(tx: Tx) -> list[tuple[str, int, dict[str, Any]]]:
            rows = tx.all("job_pages", id=self._resolve(tx, job_id), **{"pass": pass_name})
            return [(r["pass"], r["page"], self._decode(r)["result"]) for r in rows]

        return self._read(read)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(rules.JOB_STATES, 0)
        counts.update({r["status"]: r["n"] for r in self._read(lambda tx: tx.all("count_by_state"))})
        return counts

    def list_jobs(self, status: str | None = None, limit: int = 50) -> list[Job]:
        params: dict[str, Any] = {"limit": limit}
        if status is None:
            name = "list_jobs"
        else:
            rules.check_state(status)
            name = "list_dead_jobs" if status == "dead" else "list_jobs_in_state"
            params["status"] = status
        return [self._job(r) for r in self._read(lambda tx: tx.all(name, **params))]

    def expired_leases(self) -> list[Job]:
        return [self._job(r) for r in self._read(lambda tx: tx.all("expired_leases", now=time.time()))]

    def oldest_due_wait_s(self) -> float | None:
        row = self._read(lambda tx: tx.one("oldest_due_wait", now=time.time()))
        return None if row is None or row["wait_s"] is None else max(0.0, float(row["wait_s"]))

    def has_queued(self) -> bool:
        row = self._read(lambda tx: tx.one("any_queued"))
        return bool(row and row["any"])

    def retry(self, job_ids: Iterable[str] | None) -> list[str]:
        given = None if job_ids is None else list(job_ids)

        def requeue(tx: Tx) -> list[str]:
            if given is None:
                ids = [r["id"] for r in tx.all("lock_dead_jobs")]
            else:
                ids = []
                for job_id in given:
                    full = self._resolve(tx, job_id)
                    rules.check_retry(full, self._lock(tx, full)["status"])
                    ids.append(full)
            now = time.time()
            tx.many("requeue_job", [{"id": i, "now": now} for i in ids])
            if ids:
                self._wake(tx)
            return ids

        return self._transaction(requeue)

    def cancel(self, job_id: str) -> str:
        def stop(tx: Tx) -> str:
            full = self._resolve(tx, job_id)
            action = rules.cancel_action(full, self._lock(tx, full)["status"])
            if action == "cancelled":
                done = tx.one("cancel_queued_job", id=full, now=time.time())
                assert done is not None  # locked above
                self._finished(FinalState(full, "cancelled", done["attempts"], done["progress_done"]))
            else:
                tx.run("request_cancel", id=full)
            return action

        return self._finishing(stop)

    def _lock(self, tx: Tx, full_id: str) -> dict[str, Any]:
        row = tx.one("lock_job", id=full_id, now=time.time())
        if row is None:  # purged between the prefix look-up and the lock
            raise JobNotFound(f"no job {full_id!r}")
        return row

    # -- retention ---------------------------------------------------------
    def purge(self, finished_before: float | None, dead_before: float | None, limit: int) -> dict[str, int]:
        if limit <= 0 or (finished_before is None and dead_before is None):
            return {}
        rows = self._transaction(lambda tx: tx.all("purge_finished", finished_before=finished_before,
                                                   dead_before=dead_before, limit=limit))
        return dict(Counter(r["status"] for r in rows))

    def purgeable(self, finished_before: float | None, dead_before: float | None) -> dict[str, int]:
        rows = self._read(lambda tx: tx.all("count_purgeable", finished_before=finished_before,
                                            dead_before=dead_before))
        return {r["status"]: r["n"] for r in rows if r["n"]}

    # -- workers ---------------------------------------------------------
    def claim(self, worker_id: str, limit: int, lease_s: float) -> list[Job]:
        if limit <= 0:
            return []

        def take(tx: Tx) -> list[Job]:
            now = time.time()
            rows = tx.all("claim_jobs", worker=worker_id, limit=limit, lease=float(lease_s), now=now)
            self._start_attempts(tx, rows, worker_id, now)
            jobs = [self._job(r) for r in rows]
            # RETURNING gives no order on SQLite; the claim order is the contract's.
            return sorted(jobs, key=lambda j: (-j.priority, j.run_at))

        return self._transaction(take)

    def claim_one(self, job_id: str, worker_id: str, lease_s: float) -> Job:
        def take(tx: Tx) -> Job:
            full = self._resolve(tx, job_id)
            return self._claim_locked(tx, full, self._lock(tx, full), worker_id, lease_s)

        return self._transaction(take)

    def _claim_locked(self, tx: Tx, full: str, row: Mapping[str, Any], worker_id: str, lease_s: float) -> Job:
        if rules.claim_one_closes_lost(full, row["status"], row["lease_owner"], row["lease_left_s"]):
            self._close_attempt(tx, full, AttemptEnd("lost", error=rules.lost_error(row["lease_owner"])), 0.0)
        now = time.time()
        started = tx.all("start_job", id=full, worker=worker_id, lease=float(lease_s), now=now)
        self._start_attempts(tx, started, worker_id, now)
        return self._job(started[0])

    def replay(self, job_id: str, worker_id: str, lease_s: float, store: bool = False) -> Job:
        def take(tx: Tx) -> Job:
            full = self._resolve(tx, job_id)
            row = self._lock(tx, full)
            if row["status"] not in rules.FINAL_STATES:
                return self._claim_locked(tx, full, row, worker_id, lease_s)
            if store:
                # The results are to be replaced: nothing stored may be resumed from.
                tx.run("delete_pages", id=full)
                return self._claim_locked(tx, full, row, worker_id, lease_s)
            bumped = tx.one("bump_attempt_seq", id=full)
            assert bumped is not None  # locked above
            tx.run("open_replay_attempt", id=full, number=bumped["attempt_seq"], worker=worker_id, now=time.time())
            job = self._job(self._one(tx, "job", id=full))
            # The run a replay is: a first attempt with nothing stored, so its child does all the work again.
            return dataclasses.replace(job, status="running", attempts=1, progress_done=None, progress_total=None,
                                       lease_owner=worker_id)

        return self._transaction(take)

    @staticmethod
    def _one(tx: Tx, name: str, **params: Any) -> dict[str, Any]:
        row = tx.one(name, **params)
        if row is None:
            raise JobNotFound(f"no job {params.get('id')!r}")
        return row

    def _start_attempts(self, tx: Tx, started: Sequence[Mapping[str, Any]], worker_id: str, now: float) -> None:
        if self.opens_attempts_in_claim:
            return
        tx.many("open_attempt", [{"id": r["id"], "number": r["attempt_seq"], "worker": worker_id, "now": now}
                                 for r in started])

    def heartbeat(self, worker_id: str, progress: Mapping[str, tuple[int | None, int | None, float | None]],
                  lease_s: float) -> set[str]:
        if not progress:
            return set()
        beats = [{"id": job_id, "done": done, "total": total, "peak": peak}
                 for job_id, (done, total, peak) in progress.items()]

        def beat(tx: Tx) -> set[str]:
            tx.run("renew_leases", beats=self._json(beats), worker=worker_id, lease=float(lease_s), now=time.time())
            return {r["id"] for r in tx.all("leases_to_stop", ids=self._ids(list(progress)), worker=worker_id)}

        return self._transaction(beat)

    def record_page(self, job_id: str, worker_id: str, pass_name: str, page: int, result: dict[str, Any]) -> bool:
        def store(tx: Tx) -> bool:
            if tx.run("store_page", id=job_id, worker=worker_id, page=page, result=self._json(result),
                      now=time.time(), **{"pass": pass_name}):
                return True
            # A replay of a finished job keeps the stored pages as they are.
            return tx.one("open_replay", id=job_id, worker=worker_id) is not None

        return self._transaction(store)

    def _close_attempt(self, tx: Tx, job_id: str, end: AttemptEnd, retry_delay_s: float) -> str:
        """Close the job's open attempt with `end` and move the job on; the job's row is locked."""
        job = self._lock(tx, job_id)
        close = rules.closing(end.outcome, job["attempts"], job["max_attempts"], retry_delay_s, end.lighter_plan)
        now = time.time()
        tx.run("close_attempt", id=job_id, number=job["attempt_seq"], outcome=end.outcome, counted=close.counted,
               exit_code=end.exit_code, signal=end.signal, peak_mb=end.peak_mb, peak_rss_mb=end.peak_rss_mb,
               last_page=end.last_page, error=end.error, traceback=end.traceback,
               plan=None if end.plan is None else self._json(end.plan), now=now)
        moved = self._one(tx, "move_job", id=job_id, state=close.state, attempts=close.attempts,
                          outcome=end.outcome, error=end.error, peak=end.peak_mb,
                          result=None if end.result is None else self._json(end.result),
                          delay=close.retry_delay_s, final=close.final, dead=close.dead, now=now)
        if close.state == "queued":
            self._wake(tx)
        if close.final:
            self._finished(FinalState(job_id, close.state, moved["attempts"], moved["progress_done"]))
        return close.state

    def finish(self, job_id: str, worker_id: str, end: AttemptEnd, retry_delay_s: float) -> str | None:
        rules.check_outcome(end.outcome)
        number: list[int] = []  # the attempt closed, for `stored`
        state: list[str] = []

        def close(tx: Tx) -> str | None:
            owned = tx.one("lock_owned_job", id=job_id, worker=worker_id)
            if owned is None:
                return self._close_replay(tx, job_id, worker_id, end)
            number[:] = [owned["attempt_seq"]]
            state[:] = [self._close_attempt(tx, job_id, end, retry_delay_s)]
            return state[0]

        def stored(tx: Tx) -> str | None:
            # COMMIT broke: the attempt row says whether it went through.
            row = tx.one("attempt_outcome", id=job_id, number=number[0] if number else None, worker=worker_id)
            if row is None or row["outcome"] != end.outcome or not state:
                raise QueueUnavailable("connection lost while finishing the job: not stored yet")
            return state[0]

        return self._finishing(close, verify=stored)

    def _close_replay(self, tx: Tx, job_id: str, worker_id: str, end: AttemptEnd) -> str | None:
        """Close this worker's open replay of a finished job, leaving the job as it is; None if there is none."""
        replay = tx.one("open_replay", id=job_id, worker=worker_id)
        if replay is None:
            return None
        tx.run("close_attempt", id=job_id, number=replay["number"], outcome=end.outcome, counted=False,
               exit_code=end.exit_code, signal=end.signal, peak_mb=end.peak_mb, peak_rss_mb=end.peak_rss_mb,
               last_page=end.last_page, error=end.error, traceback=end.traceback,
               plan=None if end.plan is None else self._json(end.plan), now=time.time())
        return str(self._lock(tx, job_id)["status"])

    def reclaim_expired(self, retry_delay_s: float, expired_within_s: float | None = None,
                        except_worker: str | None = None) -> list[str]:
        def reclaim(tx: Tx) -> list[str]:
            rows = tx.all("lock_expired_leases", now=time.time(), within_s=expired_within_s, worker=except_worker)
            for row in rows:
                self._close_attempt(tx, row["id"], AttemptEnd("lost", error=rules.lost_error(row["lease_owner"])),
                                    retry_delay_s)
            return [r["id"] for r in rows]

        return self._finishing(reclaim)

    def register_worker(self, info: WorkerInfo) -> None:
        def register(tx: Tx) -> None:
            tx.run("upsert_worker", **info.__dict__)
            self._register_installed_passes(tx)

        self._transaction(register)

    def worker_seen(self, worker_id: str, running: int, forget_after_s: float | None = None) -> bool:
        def seen(tx: Tx) -> bool:
            found = tx.run("worker_seen", id=worker_id, running=running, now=time.time()) > 0
            if forget_after_s is not None:
                tx.run("forget_workers", now=time.time(), after_s=forget_after_s)
            return found

        return self._transaction(seen)

    def unregister_worker(self, worker_id: str) -> None:
        self._transaction(lambda tx: tx.run("delete_worker", id=worker_id))

    def workers(self) -> list[WorkerInfo]:
        rows = self._read(lambda tx: tx.all("list_workers"))
        return [WorkerInfo(**{name: self._decode(r)[name] for name in WORKER_FIELDS}) for r in rows]
