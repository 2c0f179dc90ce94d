"""Memory plans for the OCR pass: how heavily a job may read its pages, lighter after each `oom`.

A job that ran out of memory is retried with a lighter plan (a lower render
resolution, a smaller pixel budget, the leaner engine) and resumes at the page where
it died; only when the lightest plan runs out of memory too is the job dead. The
plan depends only on how many earlier attempts of the job ended `oom`, so the
parent needs to tell the child nothing else, and every attempt's plan can be
recomputed from the attempt history.

| level | name | render dpi at most | pixel budget at most | engine |
|---|---|---|---|---|
| 0 | standard | `ocr.dpi` | `ocr.max_render_pixels` | `ocr.engine` |
| 1 | lighter | 200 | 4 M (A4 at ~200 dpi) | the leanest installed |
| 2 | lightest | 150 | 2 M (A4 at ~140 dpi) | the leanest installed |

Tesseract is the leaner engine (peak ~150 MB against ~300 MB for RapidOCR,
docs/ocr.md); both read 150 dpi renders of 300 dpi scans with a CER below 0.5 %.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# (name, dpi cap, pixel budget cap) per level; level 0 takes the configured values as they are.
_LEVELS: tuple[tuple[str, int | None, int | None], ...] = (
    ("standard", None, None),
    ("lighter", 200, 4_000_000),
    ("lightest", 150, 2_000_000),
)
LIGHTEST = len(_LEVELS) - 1


@dataclass(frozen=True)
class MemoryPlan:
    level: int
    name: str
    dpi: int
    max_render_pixels: int
    engine: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def lightest(self) -> bool:
        return self.level >= LIGHTEST


def plan_for(oom_attempts: int, dpi: int, max_render_pixels: int, engine: str, leanest_engine: str) -> MemoryPlan:
    """The plan after `oom_attempts` earlier attempts ran out of memory (beyond the lightest: the lightest)."""
    level = max(0, min(oom_attempts, LIGHTEST))
    name, dpi_cap, pixels_cap = _LEVELS[level]
    if level == 0:
        return MemoryPlan(0, name, dpi, max_render_pixels, engine)
    assert dpi_cap is not None and pixels_cap is not None
    return MemoryPlan(level, name, min(dpi, dpi_cap), min(max_render_pixels, pixels_cap), leanest_engine)


def oom_attempts(earlier_outcomes: list[str] | None) -> int:
    """How many of the job's earlier attempts ended `oom` (what the plan level follows)."""
    return sum(1 for outcome in earlier_outcomes or () if outcome == "oom")
