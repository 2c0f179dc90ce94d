"""One child's memory, metered from samples of its process tree.

USS (smaps_rollup) is what comes back when the tree exits, but reading it costs
milliseconds per process, so it is read every USS_EVERY_S and whenever RSS
passes the cap; between readings the estimate follows RSS's changes (USS ≤ RSS,
and what a child allocates is private, so the estimate tracks growth). A tree
that is read before any USS reading is bounded by its RSS. Every figure is MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

USS_EVERY_S = 0.5
FIRST_USS_AFTER_S = 0.2  # most short jobs end before it: their peak is the RSS the child reports


@dataclass
class TreeSample:
    uss_mb: float | None  # None when only RSS was read
    rss_mb: float
    processes: int


Sampler = Callable[[bool], TreeSample]  # sampler(uss) reads the tree; USS only when asked


@dataclass
class MemoryMeter:
    next_uss_at: float
    uss_mb: float = 0.0  # the current figure: a USS reading, or an estimate from RSS
    uss_exact: bool = False  # the current figure is a reading, not an estimate
    uss_known: bool = False  # at least one USS reading so far
    peak_uss_mb: float = 0.0  # highest figure since the first reading
    peak_rss_mb: float = 0.0
    processes: int = 0
    _rss_at_uss: float = 0.0

    @classmethod
    def started_at(cls, now: float) -> "MemoryMeter":
        return cls(next_uss_at=now + FIRST_USS_AFTER_S)

    def update(self, sampler: Sampler, now: float, cap_mb: float, precise: bool = False) -> None:
        """Sample the tree: RSS always, USS when due, asked for, or when RSS passes the cap."""
        sample = sampler(precise or now >= self.next_uss_at)
        if sample.uss_mb is None and sample.rss_mb > cap_mb:
            sample = sampler(True)
        self.record(sample, now)

    def record(self, sample: TreeSample, now: float) -> None:
        if sample.uss_mb:  # a zombie (exited, not yet reaped) reads as 0: no reading
            self.uss_mb, self._rss_at_uss = sample.uss_mb, sample.rss_mb
            self.next_uss_at = now + USS_EVERY_S
            self.uss_known = True
        elif self.uss_known:
            self.uss_mb = max(0.0, self.uss_mb + sample.rss_mb - self._rss_at_uss)
            self._rss_at_uss = sample.rss_mb
        else:
            self.uss_mb = sample.rss_mb
        self.uss_exact = sample.uss_mb is not None
        self.processes = sample.processes
        if self.uss_known:
            self.peak_uss_mb = max(self.peak_uss_mb, self.uss_mb)
        self.peak_rss_mb = max(self.peak_rss_mb, sample.rss_mb)

    def child_reported_peak_rss(self, peak_rss_mb: float | None) -> None:
        """The child's own VmHWM from its last event: it sees peaks between samples."""
        if peak_rss_mb:
            self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb)

    @property
    def peak_mb(self) -> float | None:
        """Peak USS for the record; None when it was never read (a job shorter than the first reading)."""
        return round(self.peak_uss_mb, 1) if self.uss_known else None
