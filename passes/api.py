"""The pass interface: what a deployment implements to add its own document work.

A pass is a function `run(ctx: PassContext) -> dict | None`, registered under a
name in the `docsuper.passes` entry-point group:

    [project.entry-points."docsuper.passes"]
    vision = "clinic_passes.vision:run"

It runs inside the job's child process, after the passes listed before it in
the job. It reports progress with `ctx.progress(done, total)`, stores per-page
results with `ctx.page_result(page, {...})` (a retry gets them back in
`ctx.resumed()` and can skip those pages), reads an earlier pass's pages with
`ctx.pages("ocr")`, may read several pages at once when `ctx.readers()` says the
parent lent it idle cores (after saying how many it could use with `ctx.want_readers(n)`),
and returns a small JSON-able summary that becomes part of
the job's result. See docs/passes.md. It raises `InvalidInput` for a
document that can never succeed (no retries), and any other exception for a
failure worth retrying. Memory is the supervisor's business: a pass that goes
over the job's cap is killed with its whole process tree.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Callable

from docsuper.supervisor.protocol import JobSpec, encode_event

ENTRY_POINT_GROUP = "docsuper.passes"


class InvalidInput(Exception):
    """The document can never succeed (corrupt, encrypted, too large…): dead at once, not retried."""


MIB = 1 << 20  # every *_mb figure docsuper reports is MiB

# How native libraries report a failed allocation under RLIMIT_DATA (measured with
# scripts/bench_limits.py): MuPDF ("malloc (N bytes) failed"), onnxruntime
# (std::bad_alloc), OpenCV ("Insufficient memory", "Failed to allocate"). Lower case.
ALLOCATION_FAILURES = ("bad_alloc", "malloc", "insufficient memory", "failed to allocate", "out of memory",
                       "cannot allocate")


def is_allocation_failure(message: str) -> bool:
    """Whether a native library's error message says an allocation failed."""
    text = message.lower()
    return any(marker in text for marker in ALLOCATION_FAILURES)


def rss_mb() -> float:
    """This process's resident memory in MiB, read cheaply from /proc."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_rss_mb() -> float | None:
    """This process's peak RSS in MiB (VmHWM). Not ru_maxrss: across fork and exec it
    keeps the parent's high-water mark, so a forked child would report the fork server's."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) * 1024 / MIB, 1)
    except OSError:
        pass
    return None


class PassContext:
    """What a running pass can see and do. One per job attempt, shared by its passes."""

    def __init__(self, spec: JobSpec, event_fd: int, workdir: Path | None = None,
                 readers: Callable[[], int] | None = None) -> None:
        self.spec = spec
        self.job_id = spec.job_id
        self.attempt = spec.attempt
        self.source = spec.source
        self.options = spec.options
        self.config = spec.config
        self.pass_name = ""
        self.results: dict[str, Any] = {}  # summaries of the passes that ran before, by name
        self._event_fd = event_fd
        self._workdir = workdir or (Path(spec.workdir) if spec.workdir else None)
        self.owns_workdir = False  # True when the child made it (no parent gave one): it removes it
        self._pages: dict[str, dict[int, dict[str, Any]]] = {}
        self._readers = readers

    @property
    def workdir(self) -> Path:
        """A private directory for this attempt, removed with the job whatever ends it."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"docsuper-{self.job_id[:8]}-"))
            self.owns_workdir = True
        return self._workdir

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.config.get(name, {}))

    def resumed(self, pass_name: str | None = None) -> dict[int, dict[str, Any]]:
        """Page results an earlier attempt stored for this pass, by page number."""
        return dict(self.spec.resume.get(pass_name or self.pass_name, {}))

    def emit(self, event: dict[str, Any]) -> None:
        data = encode_event(event)
        view = memoryview(data)
        while view:
            written = os.write(self._event_fd, view)
            view = view[written:]

    def progress(self, done: int | None, total: int | None = None, **info: Any) -> None:
        self.emit({"type": "progress", "pass": self.pass_name, "done": done, "total": total,
                   "rss_mb": round(rss_mb(), 1), "t": time.time(), **info})

    def want_readers(self, wanted: int) -> None:
        """Tell the parent how many pages this pass could read at once from now on (1: no more
        than one); it lends idle cores up to that (supervisor/lending.py)."""
        self.emit({"type": "readers", "pass": self.pass_name, "wanted": max(1, wanted)})

    def readers(self) -> int:
        """How many pages the pass may read at once now: 1 unless the parent lent idle cores.
        It changes while the pass runs (lent when other jobs end, taken back when one starts)."""
        return max(1, self._readers()) if self._readers is not None else 1

    def page_result(self, page: int, result: dict[str, Any]) -> None:
        """Send one page's result to the parent, which stores it in the queue."""
        self._pages.setdefault(self.pass_name, {})[page] = result
        self.emit({"type": "page", "pass": self.pass_name, "page": page, "result": result})

    def pages(self, pass_name: str) -> dict[int, dict[str, Any]]:
        """Every page result of a pass so far, this attempt's and earlier ones', by page number.

        This is how a later pass reads an earlier one's output, e.g. the OCR text."""
        merged = self.resumed(pass_name)
        merged.update(self._pages.get(pass_name, {}))
        return dict(sorted(merged.items()))


class UnknownPass(Exception):
    pass


@functools.cache
def _registered() -> dict[str, EntryPoint]:
    # Scanning installed distributions costs tens of milliseconds; the fork server
    # does it once and every child inherits the answer.
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def find_pass(name: str) -> Callable[[PassContext], dict[str, Any] | None]:
    """The function registered under `name`; UnknownPass lists the names that exist."""
    entry = _registered().get(name)
    if entry is None:
        raise UnknownPass(f"no pass named {name!r}; installed passes: {', '.join(available_passes())}")
    return entry.load()


def available_passes() -> list[str]:
    return sorted(_registered())
