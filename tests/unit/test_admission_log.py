"""The budget's admission decisions in the log: once per change, and only while a job waits."""

from __future__ import annotations

import io
import json

from docsuper.supervisor.admission_log import AdmissionLog
from docsuper.supervisor.budget import MemoryBudget
from docsuper.supervisor.logs import Logger

OCR = ["ocr"]


def test_a_held_back_claim_is_said_once_per_change_and_once_when_it_stops():
    out = io.StringIO()
    queued = [True]
    log = AdmissionLog(Logger("info", "json", out), lambda: queued[0], recheck_s=1.0)
    budget = MemoryBudget(297, 450)
    budget.learn(OCR, 160)
    held = budget.admit([(OCR, 100)], 4)
    log.note(held, 0, 10.0)
    log.note(budget.admit([(OCR, 120)], 4), 0, 10.1)  # the children's MB moved: the same decision
    log.note(budget.admit([], 1), 1, 10.2)  # the running job ended: the free slot's job fits, said once
    log.note(budget.admit([], 1), 1, 10.3)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r["limited"], r["claim"]) for r in records] == [("admission", True, 0), ("admission", False, 1)]
    assert records[0]["reason"] == held.reason()


def test_a_budget_holding_back_claims_from_an_empty_queue_is_said_only_once_a_job_waits():
    out = io.StringIO()
    queued = [False]
    log = AdmissionLog(Logger("info", "json", out), lambda: queued[0], recheck_s=1.0)
    budget = MemoryBudget(297, 450)
    budget.learn(OCR, 160)
    held = budget.admit([(OCR, 100)], 4)
    log.note(held, 0, 10.0)
    queued[0] = True
    log.note(held, 0, 10.5)  # not asked again before the recheck
    assert out.getvalue() == ""
    log.note(held, 0, 11.0)
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["admission"]
