"""The queue's rules, written once for every backend: pure functions, no database.

A job moves `queued → running → succeeded | dead | cancelled`; a failed attempt
with attempts left goes back to `queued` with a later `run_at`. The backends run
SQL; what is allowed and where a job goes next is decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .errors import JobNotFound, QueueError

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


def next_state(outcome: str, attempts: int, max_attempts: int) -> str:
    """Where a job goes after an attempt ends with `outcome` (attempts already counts it)."""
    if outcome == "succeeded":
        return "succeeded"
    if outcome == "cancelled":
        return "cancelled"
    if outcome == "invalid_input":
        return "dead"
    if outcome in NOT_COUNTED:
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


def closing(outcome: str, attempts: int, max_attempts: int, retry_delay_s: float) -> Closing:
    """Close an attempt that ended with `outcome`; `attempts` is the job's count, this attempt included.

    An attempt the job is not to blame for (NOT_COUNTED) gives its attempt back and
    goes back to the queue at once."""
    check_outcome(outcome)
    counted = outcome not in NOT_COUNTED
    attempts = attempts if counted else attempts - 1
    return Closing(outcome=outcome, counted=counted, state=next_state(outcome, attempts, max_attempts),
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
