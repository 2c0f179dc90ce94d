"""The parent's side of the keepalive: tell each child, every turn, how long to trust us.

A child stops its job when the last moment we wrote passes (passes/keepalive.py), so
a supervisor that is stopped or wedged cannot leave a job running after its lease is
gone. This class writes those moments and remembers the last one per child: when the
loop finds one already past, its own silence may have made that child stop itself,
which is how a child's exit with EXIT_PARENT_SILENT is told from a pass that merely
exits with the same code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .protocol import encode_keepalive


@dataclass
class _Pipe:
    fd: int
    until: float  # the last moment written


class Keepalive:
    def __init__(self, keepalive_s: float, every_s: float) -> None:
        self.keepalive_s = keepalive_s
        self.every_s = every_s
        self._pipes: dict[str, _Pipe] = {}  # by job id
        self._next_write = 0.0

    def add(self, job_id: str, fd: int, now: float) -> None:
        self._pipes[job_id] = _Pipe(fd, 0.0)
        self._write(self._pipes[job_id], now)

    def remove(self, job_id: str) -> None:
        pipe = self._pipes.pop(job_id, None)
        if pipe is not None:
            os.close(pipe.fd)

    def tick(self, now: float) -> list[str]:
        """Write a new moment to every child when one is due. Returns the jobs whose last
        moment had passed before this turn: their child may have stopped itself."""
        lapsed = [job_id for job_id, pipe in self._pipes.items() if now >= pipe.until]
        if lapsed or now >= self._next_write:
            for pipe in self._pipes.values():
                self._write(pipe, now)
            self._next_write = now + self.every_s
        return lapsed

    def next_at(self) -> float | None:
        return self._next_write if self._pipes else None

    def _write(self, pipe: _Pipe, now: float) -> None:
        until = now + self.keepalive_s
        try:
            os.write(pipe.fd, encode_keepalive(until))
        except (BlockingIOError, BrokenPipeError):
            return  # a child too busy to read has thousands of moments queued; a gone one needs none
        pipe.until = until
