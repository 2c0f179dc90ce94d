"""The queue's rules, written once for every backend: pure functions, no database.

A job moves `queued → running → succeeded | dead | cancelled`; a failed attempt
with attempts left goes back to `queued` with a later `run_at`. The backends run
SQL; what is allowed and where a job goes next is decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Collection, Sequence

from .errors import InvalidJob, JobNotFound, QueueError

JOB_STATES = ("queued", "running", "succeeded", "dead", "cancelled")
FINAL_STATES = frozenset({"succeeded", "dead", "cancelled"})
# What `retry` takes back: a job an operator or the policy gave up on.
RETRYABLE_STATES = ("dead", "cancelled")

# Outcomes of one attempt (see README, "Outcomes"). All but NOT_COUNTED use up an attempt.
OUTCOMES = ("succeeded", "error", "invalid_input", "oom", "timeout", "crashed", "lost",
            "interrupted", "preempted", "cancelled")
NOT_COUNTED = frozenset({"interrupted", "preempted"})

_ID_RE = re.compile(r"[0-9a-fA-F-]{4,36}")


def id_prefix(job_id: str) -> str:
    """The stored form of a full id or a prefix of one (lower case, no dashes); JobNotFound if it cannot be one."""
    if not _ID_RE.fullmatch(job_id or ""):
        raise JobNotFound(f"no job {job_id!r}: a job id is 4 to 32 hex digits")
    # Ids are stored in lower case; one pasted from a UUID tool may be upper case or dashed.
    return job_id.replace("-", "").lower()


def resolved(job_id: str, matches: Sequence[str]) -> str:
    """The one id among (up to two of) the ids that start with `job_id`'s prefix."""
    if not matches:
        raise JobNotFound(f"no job {job_id!r}")
    if len(matches) > 1:
        raise JobNotFound(f"job id prefix {job_id!r} is ambiguous: give more digits")
    return matches[0]


def check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise QueueError(f"unknown outcome {outcome!r} (one of {', '.join(OUTCOMES)})")


def check_state(status: str) -> None:
    if status not in JOB_STATES:
        raise QueueError(f"unknown job state {status!r} (one of {', '.join(JOB_STATES)})")


def next_state(outcome: str, attempts: int, max_attempts: int, lighter_plan: bool = False) -> str:
    """Where a job goes after an attempt ends with `outcome` (attempts already counts it).

    An `oom` on a memory plan that has a lighter one is retried whatever the attempts: the
    job is dead of memory only once its lightest plan has failed (passes/memory_plan.py)."""
    if outcome == "succeeded":
        return "succeeded"
    if outcome == "cancelled":
        return "cancelled"
    if outcome == "invalid_input":
        return "dead"
    if outcome in NOT_COUNTED or (outcome == "oom" and lighter_plan):
        return "queued"
    return "queued" if attempts < max_attempts else "dead"


@dataclass(frozen=True)
class Closing:
    """What closing a job's running attempt writes: the attempt's `counted`, the job's new fields."""

    outcome: str
    counted: bool
    state: str
    attempts: int  # the job's attempts after this one (claiming counted it already)
    retry_delay_s: float  # from now until run_at

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def dead(self) -> bool:
        return self.state == "dead"


def closing(outcome: str, attempts: int, max_attempts: int, retry_delay_s: float,
            lighter_plan: bool = False) -> Closing:
    """Close an attempt that ended with `outcome`; `attempts` is the job's count, this attempt included.

    An attempt the job is not to blame for (NOT_COUNTED) gives its attempt back and
    goes back to the queue at once."""
    check_outcome(outcome)
    counted = outcome not in NOT_COUNTED
    attempts = attempts if counted else attempts - 1
    return Closing(outcome=outcome, counted=counted, state=next_state(outcome, attempts, max_attempts, lighter_plan),
                   attempts=attempts, retry_delay_s=float(retry_delay_s) if counted else 0.0)


def lost_error(lease_owner: str | None) -> str:
    """The error recorded on an attempt whose lease ran out."""
    return f"lease expired: worker {lease_owner or '?'} stopped renewing it"


def check_retry(job_id: str, status: str) -> None:
    if status not in RETRYABLE_STATES:
        raise QueueError(f"job {job_id} is {status}: only dead or cancelled jobs can be retried")


def cancel_action(job_id: str, status: str) -> str:
    """What cancelling a job in `status` does: `cancelled` (a queued job, at once) or
    `running` (the owner is asked to stop it at its next heartbeat)."""
    if status == "queued":
        return "cancelled"
    if status == "running":
        return "running"
    raise QueueError(f"job {job_id} is already {status}")


def claim_one_closes_lost(job_id: str, status: str, lease_owner: str | None, lease_left_s: float | None) -> bool:
    """Whether `claim_one` must first close an abandoned attempt as `lost`.

    Refuses a job that another worker holds under a live lease: two children
    would then work on one job."""
    if status != "running":
        return False
    if lease_left_s is not None and lease_left_s >= 0:
        raise QueueError(f"job {job_id} is running on {lease_owner} (lease valid for {lease_left_s:.0f} s more)")
    return True


# -- enqueue ---------------------------------------------------------------------
# The same checks, with the same messages, as the SQL function enqueue() in
# migrations/postgres/0002_application.sql; the contract suite holds both to them.
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
MAX_ATTEMPTS_MIN, MAX_ATTEMPTS_MAX = 1, 100
IDEMPOTENCY_KEY_MAX = 200


def _shown(value: object) -> str:
    """A value as PostgreSQL's format('%s') prints it."""
    return "NULL" if value is None else str(value)


def _json_type(value: object) -> str:
    """The name jsonb_typeof() gives a value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def check_new_job(source: str | None, passes: Sequence[str], options: object, priority: int, max_attempts: int,
                  idempotency_key: str | None, registered: Collection[str]) -> None:
    """Refuse a job that could never run as asked, with the message enqueue() gives."""
    if not passes:
        raise InvalidJob("enqueue: passes must name at least one pass")
    if not registered:
        raise InvalidJob("enqueue: no pass is registered yet: run `docsuper migrate` or start a worker")
    for name in passes:
        if name not in registered:
            raise InvalidJob(f'enqueue: unknown pass "{name}" (registered: {", ".join(sorted(registered))})')
    if isinstance(priority, bool) or not isinstance(priority, int) or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise InvalidJob(f"enqueue: priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}, not {_shown(priority)}")
    if (isinstance(max_attempts, bool) or not isinstance(max_attempts, int)
            or not MAX_ATTEMPTS_MIN <= max_attempts <= MAX_ATTEMPTS_MAX):
        raise InvalidJob(f"enqueue: max_attempts must be between {MAX_ATTEMPTS_MIN} and {MAX_ATTEMPTS_MAX}, "
                         f"not {_shown(max_attempts)}")
    if not isinstance(options, dict):
        raise InvalidJob(f"enqueue: options must be a JSON object, not {_json_type(options)}")
    if source == "":
        raise InvalidJob("enqueue: source must not be empty (NULL for a job without a document)")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidJob(f"enqueue: idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
