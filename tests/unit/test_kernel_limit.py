"""A child's kernel limit (RLIMIT_DATA) never exceeds what the box can give."""

from __future__ import annotations

from docsuper.supervisor.budget import child_kernel_limit_mb


def test_the_default_limit_is_capped_at_a_small_boxs_budget():
    # job_limit 450 + headroom 100 in a 512 MB cgroup leaves ~370 MB once the parent and server are counted.
    assert child_kernel_limit_mb(550, 372.6) == 372


def test_a_limit_inside_the_budget_stands():
    assert child_kernel_limit_mb(550, 20_000.0) == 550
    assert child_kernel_limit_mb(550, 550.0) == 550


def test_an_unknown_or_exhausted_budget_leaves_the_configured_limit():
    assert child_kernel_limit_mb(550, 0.0) == 550
    assert child_kernel_limit_mb(550, -12.0) == 550


def test_a_tiny_budget_still_gives_a_positive_limit():
    assert child_kernel_limit_mb(550, 0.4) == 1
