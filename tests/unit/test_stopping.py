"""The stop decision: over the cap, past the deadline, the box over budget."""

from __future__ import annotations

from docsuper.supervisor.stopping import Running, Stop, decide_stops


def child(job_id: str, uss: float = 50, exact: bool = True, started: float = 0.0, deadline: float = 100.0,
          measured: bool = True, stopping: bool = False) -> Running:
    return Running(job_id, uss, exact, 2, started, deadline, measured, stopping)


def decide(children: list[Running], now: float = 1.0, budget: float = 1000) -> list[Stop]:
    return decide_stops(children, now, job_limit_mb=450, job_timeout_s=30, budget_mb=budget)


def test_nothing_to_stop():
    assert decide([child("a"), child("b")]) == []


def test_a_reading_over_the_cap_is_killed_at_once():
    [stop] = decide([child("a", uss=451)])
    assert stop == Stop("a", "oom", "used 451 MB (USS of 2 processes), over its 450 MB cap", True)


def test_an_estimate_over_the_cap_is_not_enough():
    assert decide([child("a", uss=451, exact=False)]) == []


def test_past_the_deadline_is_a_timeout_with_grace():
    assert decide([child("a", deadline=1.0)]) == [Stop("a", "timeout", "ran longer than 30 s", False)]


def test_children_already_stopping_are_left_alone():
    assert decide([child("a", uss=999, stopping=True, deadline=0)]) == []


def test_the_deadline_holds_for_a_child_whose_fork_was_never_reported():
    assert decide([child("a", deadline=0, measured=False)]) == [Stop("a", "timeout", "ran longer than 30 s", False)]


def test_over_budget_the_youngest_is_preempted():
    stops = decide([child("old", uss=200, started=1), child("young", uss=200, started=2)], budget=300)
    assert stops == [Stop("young", "preempted", "children used 400 MB together, over the box budget of 300 MB",
                          True)]


def test_one_child_alone_is_never_preempted():
    assert decide([child("a", uss=400)], budget=300) == []


def test_preemption_skips_a_child_stopped_in_the_same_decision():
    stops = decide([child("old", uss=100, started=1), child("young", uss=460, started=2)], budget=300)
    assert [(s.job_id, s.outcome) for s in stops] == [("young", "oom"), ("old", "preempted")]
