"""Lent cores through the daemon: a scan alone on the box reads two pages at once, and gives
the core back the moment another job starts (supervisor/lending.py, passes/page_readers.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

from . import docgen
from .daemon import log_records, stop_daemon, wait_for
from .test_http import free_port, get

CER_MAX = 0.01


def _scan(env: Any, pages: int) -> tuple[Path, list[str]]:
    path = env.root / "scan.pdf"
    truth = docgen.scanned_pdf(path, range(40, 40 + pages), docgen.ScanStyle(dpi=200), lines=12)
    return path, ["\n".join(page.lines) for page in truth]


def next_loan(log: Iterator[dict[str, Any]]) -> dict[str, Any]:
    loan = next((r for r in log if r["event"] == "readers_lent"), None)
    assert loan is not None, "the daemon's log ended or stayed silent before the next readers_lent"
    return loan


def _check_text(env: Any, job_id: str, truth: list[str]) -> None:
    pages = env.cli("show", job_id, "--text").stdout.split("\f")
    assert len(pages) == len(truth)
    for want, got in zip(truth, pages):
        assert docgen.cer(want, got) <= CER_MAX, (want, got)


@pytest.mark.ocr
@pytest.mark.slow
@pytest.mark.parametrize("concurrency,readers", [(2, 2), (1, 1)])
def test_a_lone_scan_reads_pages_on_the_idle_core_unless_concurrency_is_one(env: Any, concurrency: int,
                                                                           readers: int):
    path, truth = _scan(env, 6)
    env.set(DOCSUPER_WORKERS_CONCURRENCY=str(concurrency), DOCSUPER_WORKERS_CORES="2")
    [item] = json.loads(env.cli("submit", str(path), "--passes", "ocr", "--json").stdout)
    records = env.drain()
    lent = [(r["readers"], r["before"]) for r in records if r["event"] == "readers_lent"]
    started = next(r for r in records if r["event"] == "supervisor_started")
    assert started["reading_slots"] == concurrency
    with env.queue() as q:
        job = q.get(item["id"])
        stored = [page for _, page, _ in q.pages(job.id, "ocr")]
    assert job.status == "succeeded", (job.last_outcome, job.last_error)
    summary = job.result["ocr"]
    assert (summary["readers"], summary["pages_ocr"]) == (readers, 6)
    if readers == 2:
        assert lent[0] == (2, 1), lent  # lent once the child said it met a scan; back to 1 with it
    else:
        assert lent == []
    assert stored == [1, 2, 3, 4, 5, 6]
    _check_text(env, item["id"], truth)


@pytest.mark.ocr
@pytest.mark.slow
def test_a_loan_is_taken_back_when_another_job_starts_and_lent_again_when_it_ends(env: Any):
    path, truth = _scan(env, 16)  # long enough for the loan to be seen, taken back and lent again
    port = free_port()
    env.set(DOCSUPER_WORKERS_CONCURRENCY="2", DOCSUPER_WORKERS_CORES="2", PORT=str(port),
            DOCSUPER_HTTP_HOST="127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    [item] = json.loads(env.cli("submit", str(path), "--passes", "ocr", "--json").stdout)
    daemon = env.start()
    try:
        log = log_records(daemon, timeout=60)
        first = next_loan(log)
        assert (first["job_id"], first["readers"], first["before"]) == (item["id"], 2, 1)
        # What an operator sees while the loan lasts: the job's row (top and the dashboard say "ocr ×2"), the gauge.
        wait_for(lambda: [r.get("readers") for r in json.loads(get(f"{base}/api/live")[1])["running"]] == [2],
                 what="the running job shown with two readers")
        wait_for(lambda: "docsuper_readers_lent 1.0" in get(f"{base}/metrics")[1], what="one reader lent in /metrics")
        [other] = env.submit("noop")
        # Taken back when the other job is claimed, lent again once it is over (the scan has pages left).
        back, again = next_loan(log), next_loan(log)
        assert [(r["job_id"], r["readers"], r["before"]) for r in (back, again)] == \
            [(item["id"], 1, 2), (item["id"], 2, 1)]
        assert back["running"] == 2 and again["running"] == 1
    finally:
        stop_daemon(daemon)
    env.drain()
    with env.queue() as q:
        assert q.get(other).status == "succeeded"
        job = q.get(item["id"])
    assert job.status == "succeeded", (job.last_outcome, job.last_error)
    _check_text(env, item["id"], truth)
