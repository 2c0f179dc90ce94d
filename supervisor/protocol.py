"""Where the parent and the child meet: a job spec in, events out.

The parent hands the child one JobSpec. The child writes events to a pipe, one
JSON object per line, and exits:

    {"type": "started", "t": …}                      the first pass is about to run
    {"type": "progress", "pass": "ocr", "done": 3, "total": 10, "rss_mb": 212.5}
    {"type": "page", "pass": "ocr", "page": 3, "result": {…}}   stored at once by the parent
    {"type": "result", "summary": {…}, "peak_rss_mb": …}   success; the child then exits 0
    {"type": "failure", "outcome": "error" | "invalid_input" | "oom",
     "message": "…", "traceback": "…"}               the child then exits 1

A child that exits without a result or failure line, or dies by a signal, is
`crashed` (or `oom`/`timeout` when the watchdog killed it). Nothing else crosses:
this module is standard library only, so either side can import it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator

MAX_EVENT_BYTES = 16 * 1024 * 1024  # one page's OCR lines fit many times over


@dataclass
class JobSpec:
    job_id: str
    attempt: int
    source: str | None
    passes: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per-page results stored by earlier attempts, {pass: {page: result}}: a retry resumes after them.
    resume: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies the whole config for every job.
        data = dict(self.__dict__)
        data["resume"] = {p: {str(k): v for k, v in pages.items()} for p, pages in self.resume.items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> "JobSpec":
        data = json.loads(text)
        data["resume"] = {p: {int(k): v for k, v in pages.items()} for p, pages in data.get("resume", {}).items()}
        return cls(**data)


def encode_event(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


class EventReader:
    """Splits a child's pipe into events as bytes arrive (non-blocking reads)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.closed = False

    def read_available(self) -> Iterator[dict[str, Any]]:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.closed = True
        self._buffer += chunk
        if len(self._buffer) > MAX_EVENT_BYTES:
            self._buffer = b""
            yield {"type": "protocol_error", "message": f"an event line exceeded {MAX_EVENT_BYTES} bytes"}
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                yield {"type": "protocol_error", "message": f"unreadable event: {line[:200]!r}"}
                continue
            if isinstance(event, dict):
                yield event
