"""Classifying how an attempt ended, from wait statuses built the way the kernel builds them."""

from __future__ import annotations

import signal

import pytest

from docsuper.supervisor.outcome import OOM_MARGIN, Ending, classify, describe_status, signal_name
from docsuper.supervisor.protocol import EXIT_PARENT_SILENT

CAP, KERNEL = 450, 550


def exited(code: int) -> int:
    return code << 8


def killed(signum: int) -> int:
    return signum


def test_describe_status_tells_exit_codes_from_signals():
    assert describe_status(exited(0)) == (0, None)
    assert describe_status(exited(7)) == (7, None)
    assert describe_status(killed(signal.SIGKILL)) == (None, signal.SIGKILL)


def test_signal_name_names_real_signals_and_numbers_the_rest():
    assert signal_name(signal.SIGSEGV) == "SIGSEGV"
    assert signal_name(200) == "signal 200"


def test_a_result_and_exit_0_is_success():
    end = classify(Ending(exited(0), result={"ocr": {"pages": 2}}, peak_uss_mb=120.04, peak_rss_mb=210.0,
                          last_page=2), CAP, KERNEL)
    assert (end.outcome, end.result, end.exit_code, end.peak_mb, end.peak_rss_mb, end.last_page) == \
        ("succeeded", {"ocr": {"pages": 2}}, 0, 120.0, 210.0, 2)


def test_a_result_with_a_nonzero_exit_is_a_crash():
    end = classify(Ending(exited(3), result={}), CAP, KERNEL)
    assert end.outcome == "crashed" and end.error == "exited with code 3 without a result"


def test_the_child_reported_failure_names_the_outcome():
    failure = {"outcome": "invalid_input", "message": "encrypted PDF", "traceback": "tb"}
    end = classify(Ending(exited(1), failure=failure), CAP, KERNEL)
    assert (end.outcome, end.error, end.traceback) == ("invalid_input", "encrypted PDF", "tb")
    assert classify(Ending(exited(1), failure={"message": "x"}), CAP, KERNEL).outcome == "error"


def test_no_space_left_is_the_disk_s_failure_only_while_the_disk_stays_full_without_the_job():
    failure = {"outcome": "error", "message": "OSError in pass 'sleep': [Errno 28] No space left on device",
               "no_space": True}
    end = classify(Ending(exited(1), failure=failure, disk_full="12 KB free on the filesystem of /w"), CAP, KERNEL)
    assert end.outcome == "interrupted" and "12 KB free" in end.error and "No space left" in end.error
    # Room again once its own files are gone: the job filled the disk, and the attempt counts.
    assert classify(Ending(exited(1), failure=failure), CAP, KERNEL).outcome == "error"
    # Another failure on a full disk is still the job's.
    other = {"outcome": "error", "message": "RuntimeError: bad page"}
    assert classify(Ending(exited(1), failure=other, disk_full="0 KB free"), CAP, KERNEL).outcome == "error"


def test_a_stop_the_supervisor_decided_wins_over_what_the_child_said():
    end = classify(Ending(killed(signal.SIGTERM), failure={"outcome": "error"}, stop_outcome="timeout",
                          stop_message="ran longer than 2 s"), CAP, KERNEL)
    assert (end.outcome, end.error, end.signal) == ("timeout", "ran longer than 2 s", signal.SIGTERM)


def test_a_result_and_exit_0_beats_a_later_stop_decision():
    end = classify(Ending(exited(0), result={"noop": {}}, stop_outcome="timeout", stop_message="too long"),
                   CAP, KERNEL)
    assert (end.outcome, end.error) == ("succeeded", None)
    killed_after = classify(Ending(killed(signal.SIGKILL), result={}, stop_outcome="timeout",
                                   stop_message="too long"), CAP, KERNEL)
    assert killed_after.outcome == "timeout"


def test_no_status_is_a_crash_with_the_reason():
    end = classify(Ending(None, no_status_reason="the fork server died"), CAP, KERNEL)
    assert (end.outcome, end.error, end.exit_code, end.signal) == ("crashed", "the fork server died", None, None)


@pytest.mark.parametrize("uss, rss, outcome", [
    (OOM_MARGIN * CAP, 0.0, "oom"),
    (OOM_MARGIN * CAP - 1, 0.0, "crashed"),
    (None, OOM_MARGIN * KERNEL, "oom"),
    (None, OOM_MARGIN * KERNEL - 1, "crashed"),
])
def test_a_death_near_a_memory_cap_is_oom(uss, rss, outcome):
    end = classify(Ending(killed(signal.SIGKILL), peak_uss_mb=uss, peak_rss_mb=rss), CAP, KERNEL)
    assert end.outcome == outcome
    if outcome == "oom":
        assert end.error.startswith("died by SIGKILL at ") and "near its 450 MB cap (kernel limit 550 MB)" in end.error
    else:
        assert end.error == "killed by SIGKILL without a result"


def test_peak_uss_is_empty_when_never_read():
    end = classify(Ending(exited(0), result={}, peak_rss_mb=0.0), CAP, KERNEL)
    assert end.peak_mb is None and end.peak_rss_mb is None


def test_a_child_that_stopped_itself_while_the_parent_was_silent_is_interrupted():
    end = classify(Ending(exited(EXIT_PARENT_SILENT), lease_lapsed=True, keepalive_s=30), CAP, KERNEL)
    assert end.outcome == "interrupted"
    assert "gone 30 s without renewal" in (end.error or "")


def test_exit_75_without_a_silent_parent_is_a_crash_not_a_free_retry():
    # A pass could exit 75 on its own; only the parent's own silence makes it uncounted.
    assert classify(Ending(exited(EXIT_PARENT_SILENT)), CAP, KERNEL).outcome == "crashed"


@pytest.mark.parametrize("ending, outcome", [
    (Ending(exited(0), result={}, lease_lapsed=True), "succeeded"),
    (Ending(exited(EXIT_PARENT_SILENT), stop_outcome="lost", stop_message="taken", lease_lapsed=True), "lost"),
])
def test_a_result_or_a_lost_lease_beats_the_parents_silence(ending: Ending, outcome: str):
    assert classify(ending, CAP, KERNEL).outcome == outcome
