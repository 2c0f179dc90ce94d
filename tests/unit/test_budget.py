"""The box budget's admission decision: how many jobs to claim, and why not more."""

from __future__ import annotations

from docsuper.supervisor.budget import MemoryBudget, child_kernel_limit_mb

OCR = ["ocr"]


def test_until_a_peak_is_known_one_job_runs_when_the_cap_exceeds_the_budget():
    budget = MemoryBudget(297, 450)
    first = budget.admit([], 5)
    assert first.claim == 1 and first.limited and not first.learned and first.next_job_mb == 450
    assert "the job cap, as no job's peak is known yet" in first.reason()
    assert budget.admit([(OCR, 60)], 4).claim == 0


def test_a_learned_peak_lets_several_children_share_the_budget():
    budget = MemoryBudget(297, 450)
    budget.learn(OCR, 52.5)
    decision = budget.admit([], 5)
    assert decision.claim == 5 and not decision.limited
    assert budget.admit([(OCR, 40), (OCR, 70)], 3).claim == 3  # 52.5 + 70 held, 3 × 52.5 more fit


def test_the_reason_names_the_figures_of_a_held_back_claim():
    budget = MemoryBudget(297, 450)
    budget.learn(OCR, 160)
    decision = budget.admit([(OCR, 100)], 4)
    assert decision.claim == 0 and decision.limited
    assert decision.held_mb == 160 and decision.next_job_mb == 160 and decision.budget_mb == 297
    assert "1 running" in decision.reason() and "160 MB" in decision.reason() and "297 MB" in decision.reason()


def test_a_decision_changes_with_the_claim_not_with_the_childrens_megabytes():
    budget = MemoryBudget(297, 450)
    budget.learn(OCR, 160)
    assert budget.admit([(OCR, 100)], 4).key() == budget.admit([(OCR, 150)], 4).key()
    assert budget.admit([(OCR, 100)], 4).key() != budget.admit([], 5).key()


def test_the_claim_fills_the_free_slots_the_budget_fits_and_none_without_a_slot():
    budget = MemoryBudget(297, 450)
    budget.learn(OCR, 52.5)
    assert budget.admit([(OCR, 40)], 4).claim == 4
    assert budget.admit([(OCR, 40)], 0).claim == 0


def test_a_childs_room_to_grow_is_capped_at_a_small_boxs_budget():
    # job_limit 450 + headroom 100 in a 512 MB cgroup whose children may use ~298 MB.
    assert child_kernel_limit_mb(550, 297.6) == 297


def test_a_room_to_grow_inside_the_budget_stands():
    assert child_kernel_limit_mb(550, 20_000.0) == 550
    assert child_kernel_limit_mb(550, 550.0) == 550


def test_an_unknown_or_exhausted_budget_leaves_the_configured_room():
    assert child_kernel_limit_mb(550, 0.0) == 550
    assert child_kernel_limit_mb(550, -12.0) == 550
    assert child_kernel_limit_mb(550, 0.4) == 1
