"""Metering one child's memory from tree samples: when USS is read, and what stands in between."""

from __future__ import annotations

from docsuper.supervisor.metering import FIRST_USS_AFTER_S, USS_EVERY_S, MemoryMeter, TreeSample


class Tree:
    """Scripted samples of a process tree; records whether each read asked for USS."""

    def __init__(self, rss: float, uss: float, processes: int = 1) -> None:
        self.rss, self.uss, self.processes = rss, uss, processes
        self.asked: list[bool] = []

    def __call__(self, uss: bool) -> TreeSample:
        self.asked.append(uss)
        return TreeSample(self.uss if uss else None, self.rss, self.processes)


def test_before_the_first_uss_reading_rss_bounds_the_figure_and_no_peak_uss_is_claimed():
    meter, tree = MemoryMeter.started_at(0.0), Tree(rss=150, uss=40)
    meter.update(tree, now=0.1, cap_mb=450)
    assert tree.asked == [False]
    assert (meter.uss_mb, meter.uss_exact, meter.uss_known, meter.peak_mb, meter.peak_rss_mb) == \
        (150, False, False, None, 150)


def test_uss_is_read_when_due_then_every_interval():
    meter, tree = MemoryMeter.started_at(0.0), Tree(rss=150, uss=40, processes=3)
    meter.update(tree, now=FIRST_USS_AFTER_S, cap_mb=450)
    assert tree.asked == [True] and meter.uss_exact and meter.peak_mb == 40 and meter.processes == 3
    meter.update(tree, now=FIRST_USS_AFTER_S + USS_EVERY_S / 2, cap_mb=450)
    meter.update(tree, now=FIRST_USS_AFTER_S + USS_EVERY_S, cap_mb=450)
    assert tree.asked == [True, False, True]


def test_between_readings_the_estimate_follows_rss_growth():
    meter, tree = MemoryMeter.started_at(0.0), Tree(rss=150, uss=40)
    meter.update(tree, now=0.0, cap_mb=450, precise=True)
    tree.rss = 230
    meter.update(tree, now=0.1, cap_mb=450)
    assert (meter.uss_mb, meter.uss_exact, meter.peak_uss_mb) == (120, False, 120)
    tree.rss = 100  # shrinking never takes the estimate below zero, and the peak stays
    meter.update(tree, now=0.2, cap_mb=450)
    assert (meter.uss_mb, meter.peak_uss_mb) == (0.0, 120)


def test_rss_over_the_cap_forces_a_uss_reading():
    meter, tree = MemoryMeter.started_at(0.0), Tree(rss=500, uss=300)
    meter.update(tree, now=0.05, cap_mb=450)
    assert tree.asked == [False, True] and meter.uss_mb == 300 and meter.uss_exact


def test_a_zombie_reads_as_no_reading():
    meter, tree = MemoryMeter.started_at(0.0), Tree(rss=150, uss=40)
    meter.update(tree, now=0.0, cap_mb=450, precise=True)
    tree.rss, tree.uss = 0, 0
    meter.update(tree, now=1.0, cap_mb=450)
    assert meter.peak_mb == 40


def test_the_childs_own_peak_rss_raises_the_recorded_peak():
    meter = MemoryMeter.started_at(0.0)
    meter.child_reported_peak_rss(None)
    meter.child_reported_peak_rss(321.5)
    meter.child_reported_peak_rss(100)
    assert meter.peak_rss_mb == 321.5
