"""The completion webhook's signature and retry policy, and retention's ages and cutoffs, without a network or database."""

from __future__ import annotations

import json

import pytest

from docsuper.supervisor import retention, webhook


def test_the_body_holds_only_ids_states_and_counts() -> None:
    body = json.loads(webhook.body("7f3a" * 8, "dead", 3, 12))
    assert body == {"event": "job.finished", "job_id": "7f3a" * 8, "status": "dead", "attempts": 3, "pages": 12}


def test_a_signature_verifies_and_anything_changed_does_not() -> None:
    payload = webhook.body("a" * 32, "succeeded", 1, 4)
    signature = webhook.sign("s3cret", 1_800_000_000, payload)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert webhook.verify("s3cret", "1800000000", payload, signature, now=1_800_000_100)
    assert not webhook.verify("other", "1800000000", payload, signature, now=1_800_000_100)
    assert not webhook.verify("s3cret", "1800000001", payload, signature, now=1_800_000_100)
    assert not webhook.verify("s3cret", "1800000000", payload.replace(b"succeeded", b"dead"), signature,
                              now=1_800_000_100)
    assert not webhook.verify("s3cret", "1800000000", payload, signature, now=1_800_000_000 + 301)  # too old
    assert not webhook.verify("s3cret", "yesterday", payload, signature)


@pytest.mark.parametrize(("status", "again"), [(None, True), (500, True), (503, True), (429, True),
                                               (400, False), (404, False), (410, False)])
def test_what_is_retried(status: int | None, again: bool) -> None:
    assert webhook.retryable(status) is again


def test_retries_back_off_exponentially_up_to_a_cap() -> None:
    assert webhook.retry_delays(5, 1.0) == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert webhook.retry_delays(3, 100.0, max_s=150.0) == [100.0, 150.0, 150.0]
    assert webhook.retry_delays(0, 1.0) == []


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45),
                                               ("1.5d", 1.5 * 86400), ("7", 7 * 86400), (" 2 h ", 7200)])
def test_ages(text: str, seconds: float) -> None:
    assert retention.parse_age(text) == seconds


@pytest.mark.parametrize("bad", ["", "d", "30 days", "-1d", "1w", "1e3d"])
def test_what_is_not_an_age(bad: str) -> None:
    with pytest.raises(ValueError, match="is not an age"):
        retention.parse_age(bad)


def test_cutoffs_keep_dead_jobs_longer_and_zero_keeps_forever() -> None:
    now = 1_000_000_000.0
    limits = retention.cutoffs(now, 30, 90)
    assert (limits.finished_before, limits.dead_before) == (now - 30 * 86400, now - 90 * 86400)
    assert retention.cutoffs(now, 0, 90).finished_before is None
    assert not retention.cutoffs(now, 0, 0).anything


def test_purge_options_win_over_the_config_kind_by_kind() -> None:
    now = 1_000_000_000.0
    limits = retention.cli_cutoffs(now, "1d", None, 30, 90)
    assert (limits.finished_before, limits.dead_before) == (now - 86400, now - 90 * 86400)
    limits = retention.cli_cutoffs(now, None, "2h", 0, 90)
    assert (limits.finished_before, limits.dead_before) == (None, now - 7200)
    with pytest.raises(ValueError):
        retention.cli_cutoffs(now, "soon", None, 30, 90)


@pytest.mark.parametrize("current, took_s, expected", [
    (500, 2.0, 250),  # over its budget: halved
    (1, 2.0, 1),  # never below one job
    (250, 0.05, 500),  # well under: back towards the configured size
    (500, 0.01, 500),  # never above it
    (250, 0.3, 250),  # in between: kept
])
def test_a_purge_batch_shrinks_when_it_holds_the_loop_too_long(current: int, took_s: float, expected: int) -> None:
    assert retention.next_batch_size(current, 500, took_s, budget_s=0.5) == expected
