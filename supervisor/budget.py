"""The whole-box memory budget: how many children may run at once right now.

Five OCR children cannot all sit at their 450 MB cap on a 512 MB box. A job is
started only when what the running children hold (at least what jobs like them
needed before) plus what the next job is expected to need fits the budget. The
expectation is learned: the highest peak among the last few jobs with the same
passes, until then the job's cap.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

RECENT_PEAKS = 20


def own_cgroup_files(v2_name: str, v1_controller: str, v1_name: str) -> list[Path]:
    """Where the cgroup this process is in keeps a setting: `v2_name` in the unified hierarchy,
    `v1_name` under the v1 `v1_controller`'s; in /proc/self/cgroup's order, existing or not."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            found.append(Path("/sys/fs/cgroup") / path.lstrip("/") / v2_name)
        elif v1_controller in controllers.split(","):
            found.append(Path("/sys/fs/cgroup") / v1_controller / path.lstrip("/") / v1_name)
    return found


def _cgroup_limit_bytes() -> int | None:
    """The memory limit of the cgroup this process is in (v2 or v1), or None."""
    for candidate in own_cgroup_files("memory.max", "memory", "memory.limit_in_bytes"):
        try:
            text = candidate.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    return None


def box_memory_mb() -> float:
    """What this box (or the container it is in) may use: the cgroup limit, else physical RAM."""
    limit = _cgroup_limit_bytes()
    if limit is not None:
        return limit / (1024 * 1024)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("cannot read MemTotal from /proc/meminfo")


class MemoryBudget:
    def __init__(self, budget_mb: float, job_limit_mb: float) -> None:
        self.budget_mb = budget_mb
        self.job_limit_mb = job_limit_mb
        self._peaks: dict[tuple[str, ...], deque[float]] = defaultdict(lambda: deque(maxlen=RECENT_PEAKS))

    def learn(self, passes: list[str], peak_mb: float | None) -> None:
        if peak_mb:
            self._peaks[tuple(passes)].append(peak_mb)

    def expected(self, passes: list[str] | None = None) -> float:
        """Expected peak of a job with these passes; None: of the hungriest kind seen (or the cap)."""
        if passes is not None:
            seen = self._peaks.get(tuple(passes))
            return max(seen) if seen else self.job_limit_mb
        if not self._peaks:
            return self.job_limit_mb
        return max(max(p) for p in self._peaks.values() if p)

    def holds(self, passes: list[str], current_mb: float) -> float:
        """What a running child is counted at: the higher of its USS now and what its kind needed before."""
        return max(current_mb, self.expected(passes))

    def admit(self, running: list[tuple[list[str], float]], free_slots: int) -> "Admission":
        """How many more jobs to claim, and why no more: (passes, current MB) of each running child."""
        held = sum(self.holds(passes, current) for passes, current in running)
        each = max(1.0, self.expected())
        fits = int((self.budget_mb - held) // each)
        if not running:
            fits = max(fits, 1)  # one job always runs, even when its cap exceeds the budget
        claim = max(0, min(free_slots, fits)) if free_slots > 0 else 0
        return Admission(claim, max(0, free_slots), len(running), round(held, 1), round(each, 1),
                         bool(self._peaks), round(self.budget_mb, 1))


@dataclass(frozen=True)
class Admission:
    """One admission decision: `claim` jobs now, of `free_slots`; the figures it was made from."""

    claim: int
    free_slots: int
    running: int
    held_mb: float  # the running children, each at the higher of its USS and what its kind needed before
    next_job_mb: float  # what the next job is expected to need: the hungriest kind seen, else the cap
    learned: bool  # False: no peak is known yet, so the next job is expected at the cap
    budget_mb: float

    @property
    def limited(self) -> bool:
        """The budget, not the concurrency, is what holds jobs back."""
        return self.claim < self.free_slots

    def key(self) -> tuple[int, int, int, float, bool]:
        """What a change of decision is: not the running children's MB, which move every sample."""
        return (self.claim, self.free_slots, self.running, self.next_job_mb, self.learned)

    def reason(self) -> str:
        if not self.limited:
            return f"the budget fits a job in each of the {self.free_slots} free slot(s) again"
        basis = ("the highest recent peak of the hungriest kind of job seen" if self.learned
                 else "the job cap, as no job's peak is known yet")
        return (f"{self.claim} of {self.free_slots} free slot(s) filled: {self.running} running job(s) hold "
                f"{self.held_mb:g} MB of the {self.budget_mb:g} MB budget (each at the higher of its USS and its "
                f"kind's recent peak) and the next job is expected to need {self.next_job_mb:g} MB ({basis})")


def child_kernel_limit_mb(configured_mb: int, box_budget_mb: float) -> int:
    """How much data a child may add (RLIMIT_DATA over what it holds at its start): the configured
    kernel limit, but never more than the box budget.

    The kernel limit is the backstop for an allocation faster than the watchdog's sample; if it
    lets a child grow past what the box can give (450 + 100 MB in a 512 MB cgroup whose
    children may use ~300 MB), the kernel's OOM killer fires first. A budget of 0 means it is
    unknown (nothing fits): the configured limit stands."""
    if box_budget_mb <= 0:
        return configured_mb
    return max(1, min(configured_mb, int(box_budget_mb)))
