"""A few minutes of memory over time, kept by the parent for the dashboard.

One sample a second: the children's memory together and each running job's own.
A bounded ring (300 samples: five minutes), so the parent's memory stays flat
however long it runs; a job's series leaves with the job once its samples age out.
"""

from __future__ import annotations

from collections import deque
from typing import Any

SAMPLES = 300


class MemoryHistory:
    def __init__(self, samples: int = SAMPLES) -> None:
        self.samples: deque[tuple[float, float, dict[str, float]]] = deque(maxlen=samples)

    def add(self, t: float, box_mb: float, jobs_mb: dict[str, float]) -> None:
        self.samples.append((round(t, 1), round(box_mb, 1), {k: round(v, 1) for k, v in jobs_mb.items()}))

    def as_dict(self) -> dict[str, Any]:
        """{"t": [...], "box": [...], "jobs": {job id: [MB or None per sample]}}, aligned on t."""
        samples = list(self.samples)  # a copy: the loop may append while the HTTP thread reads
        jobs: dict[str, list[float | None]] = {}
        for i, (_t, _box, per_job) in enumerate(samples):
            for job_id, mb in per_job.items():
                jobs.setdefault(job_id, [None] * len(samples))[i] = mb
        return {"t": [s[0] for s in samples], "box": [s[1] for s in samples], "jobs": jobs}
