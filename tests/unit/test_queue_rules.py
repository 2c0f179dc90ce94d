"""The queue's shared rules, without a database."""

from __future__ import annotations

import re

import pytest

from docsuper.supervisor.queue import rules
from docsuper.supervisor.queue.errors import InvalidJob, JobNotFound, QueueError


@pytest.mark.parametrize(("given", "stored"), [
    ("7f3a", "7f3a"),
    ("7F3A9C", "7f3a9c"),
    ("0123abcd-0123-4567-89ab-0123456789ab", "0123abcd0123456789ab0123456789ab"),
])
def test_id_prefix_normalises_what_an_operator_pastes(given: str, stored: str) -> None:
    assert rules.id_prefix(given) == stored


@pytest.mark.parametrize("bad", ["", "abc", "not-hex!", "g" * 8, "0" * 37])
def test_id_prefix_refuses_what_cannot_be_an_id(bad: str) -> None:
    with pytest.raises(JobNotFound, match="4 to 32 hex digits"):
        rules.id_prefix(bad)


def test_resolved_needs_exactly_one_match() -> None:
    assert rules.resolved("7f3a", ["7f3a" + "0" * 28]) == "7f3a" + "0" * 28
    with pytest.raises(JobNotFound, match="no job '7f3a'"):
        rules.resolved("7f3a", [])
    with pytest.raises(JobNotFound, match="ambiguous"):
        rules.resolved("7f3a", ["7f3a1", "7f3a2"])


def test_every_outcome_leads_somewhere_and_unknown_ones_are_refused() -> None:
    for outcome in rules.OUTCOMES:
        assert rules.next_state(outcome, 1, 3) in rules.JOB_STATES
    with pytest.raises(QueueError, match="unknown outcome 'exploded'"):
        rules.closing("exploded", 1, 3, 0)


@pytest.mark.parametrize(("outcome", "attempts", "max_attempts", "state"), [
    ("succeeded", 3, 3, "succeeded"),
    ("cancelled", 1, 3, "cancelled"),
    ("invalid_input", 1, 5, "dead"),
    ("error", 1, 3, "queued"),
    ("error", 3, 3, "dead"),
    ("oom", 2, 3, "queued"),
    ("lost", 3, 3, "dead"),
    ("interrupted", 3, 3, "queued"),
    ("preempted", 3, 3, "queued"),
])
def test_next_state(outcome: str, attempts: int, max_attempts: int, state: str) -> None:
    assert rules.next_state(outcome, attempts, max_attempts) == state


def test_a_counted_failure_waits_for_its_backoff() -> None:
    close = rules.closing("error", 1, 3, 30)
    assert (close.counted, close.state, close.attempts, close.retry_delay_s) == (True, "queued", 1, 30.0)
    assert not close.final and not close.dead
    dead = rules.closing("timeout", 3, 3, 30)
    assert (dead.state, dead.final, dead.dead) == ("dead", True, True)


@pytest.mark.parametrize("outcome", sorted(rules.NOT_COUNTED))
def test_an_attempt_the_job_is_not_to_blame_for_is_given_back_at_once(outcome: str) -> None:
    # At max attempts already counted by the claim: giving it back keeps the job alive.
    close = rules.closing(outcome, 3, 3, 600)
    assert (close.counted, close.state, close.attempts, close.retry_delay_s) == (False, "queued", 2, 0.0)


def test_retry_takes_only_dead_or_cancelled_jobs() -> None:
    for status in rules.RETRYABLE_STATES:
        rules.check_retry("j1", status)
    for status in ("queued", "running", "succeeded"):
        with pytest.raises(QueueError, match=f"job j1 is {status}: only dead or cancelled"):
            rules.check_retry("j1", status)


def test_cancel_stops_queued_jobs_and_asks_running_ones() -> None:
    assert rules.cancel_action("j1", "queued") == "cancelled"
    assert rules.cancel_action("j1", "running") == "running"
    for status in sorted(rules.FINAL_STATES):
        with pytest.raises(QueueError, match=f"job j1 is already {status}"):
            rules.cancel_action("j1", status)


def test_claim_one_refuses_a_live_lease_and_closes_an_expired_one() -> None:
    assert rules.claim_one_closes_lost("j1", "queued", None, None) is False
    assert rules.claim_one_closes_lost("j1", "dead", None, None) is False
    assert rules.claim_one_closes_lost("j1", "running", "w1", -0.5) is True
    with pytest.raises(QueueError, match=r"job j1 is running on w1 \(lease valid for 42 s more\)"):
        rules.claim_one_closes_lost("j1", "running", "w1", 42.2)
    assert "worker w1 stopped renewing" in rules.lost_error("w1")


def test_list_states_are_checked() -> None:
    rules.check_state("dead")
    with pytest.raises(QueueError, match="unknown job state 'done'"):
        rules.check_state("done")


REGISTERED = {"ocr", "noop"}


def check(**fields: object) -> None:
    job: dict[str, object] = {"source": "a.pdf", "passes": ["ocr"], "options": {}, "priority": 0, "max_attempts": 3,
                              "idempotency_key": None}
    job.update(fields)
    rules.check_new_job(registered=REGISTERED, **job)  # type: ignore[arg-type]


def test_a_well_formed_job_passes_the_enqueue_checks() -> None:
    check()
    check(source=None, passes=["noop", "ocr"], options={"a": [1]}, priority=-1000, max_attempts=100,
          idempotency_key="k" * 200)


@pytest.mark.parametrize(("fields", "message"), [
    ({"passes": []}, "passes must name at least one pass"),
    ({"passes": ["ocr", "orc"]}, 'unknown pass "orc" (registered: noop, ocr)'),
    ({"priority": 1001}, "priority must be between -1000 and 1000, not 1001"),
    ({"priority": None}, "priority must be between -1000 and 1000, not NULL"),
    ({"priority": True}, "priority must be between -1000 and 1000, not True"),
    ({"max_attempts": 101}, "max_attempts must be between 1 and 100, not 101"),
    ({"options": None}, "options must be a JSON object, not NULL"),
    ({"options": [1]}, "options must be a JSON object, not array"),
    ({"options": 3.5}, "options must be a JSON object, not number"),
    ({"source": ""}, "source must not be empty"),
    ({"idempotency_key": ""}, "idempotency_key must be 1 to 200 characters"),
])
def test_the_enqueue_checks_say_what_is_wrong(fields: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidJob, match="^enqueue: " + re.escape(message)):
        check(**fields)


def test_no_registered_pass_at_all_says_how_to_register_them() -> None:
    with pytest.raises(InvalidJob, match="no pass is registered yet: run `docsuper migrate`"):
        rules.check_new_job("a.pdf", ["ocr"], {}, 0, 3, None, set())
