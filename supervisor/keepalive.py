"""The parent's side of the keepalive: tell each child how long its job's lease is surely ours.

A child stops its job when the last moment we wrote passes (passes/keepalive.py). The
moment is tied to the lease, not to this loop: it is when the lease was last renewed
(the renewal's send time, which is before the database stamped it) plus
`trust_s` = lease − one heartbeat. So a worker that is stopped, whose loop is stuck in
a call, or that is cut off from the queue while other workers still reach it, cannot
leave a job running after its lease could have passed to another worker.

The class remembers the last moment per child: a child whose moment passed may have
stopped itself, and the loop says so once per lapse; that is how a child's exit with
EXIT_PARENT_SILENT is told from a pass that merely exits with the same code. A child
that closed its end of the pipe (a pass that closes inherited descriptors) is
unguarded: it is named once and written to no more.

Each record also carries how many pages the child may read at once (supervisor/lending.py):
`lend` writes one at once, with the last moment, when the loan changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

from .protocol import encode_keepalive


@dataclass
class _Pipe:
    fd: int
    until: float = 0.0  # the last moment the child was sent (0: none yet)
    readers: int = 1  # the last loan the child was sent
    lapse_reported: bool = False
    # A renewal sent after the moment had passed: the child may have stopped itself already, and
    # that must still be said although the renewal moves the moment on (or finds the pipe closed).
    lapse_unsaid: bool = False
    closed_by_child: bool = False


class Keepalive:
    def __init__(self, trust_s: float) -> None:
        self.trust_s = trust_s
        self._pipes: dict[str, _Pipe] = {}  # by job id

    def add(self, job_id: str, fd: int, renewed_at: float) -> None:
        """A new child whose lease was taken at `renewed_at` (monotonic)."""
        self._pipes[job_id] = _Pipe(fd)
        self.renewed([job_id], renewed_at)

    def renewed(self, job_ids: Iterable[str], sent_at: float) -> None:
        """These leases were renewed by a heartbeat sent at `sent_at` (monotonic)."""
        for job_id in job_ids:
            pipe = self._pipes.get(job_id)
            if pipe is None or pipe.closed_by_child:
                continue
            if 0.0 < pipe.until <= sent_at and not pipe.lapse_reported:
                pipe.lapse_unsaid = True
            until = sent_at + self.trust_s
            if self._write(pipe, until, pipe.readers):
                pipe.until, pipe.lapse_reported = until, False

    def lend(self, job_id: str, readers: int) -> bool:
        """Tell the child it may read `readers` pages at once from now on. False when it could
        not be told (its guard is not reading, or it has none): the caller tries again later."""
        pipe = self._pipes.get(job_id)
        if pipe is None or pipe.closed_by_child:
            return False
        if readers == pipe.readers:
            return True
        if not self._write(pipe, pipe.until, readers):
            return False
        pipe.readers = readers
        return True

    def lent(self, job_id: str) -> int:
        pipe = self._pipes.get(job_id)
        return pipe.readers if pipe is not None else 1

    @staticmethod
    def _write(pipe: _Pipe, until: float, readers: int) -> bool:
        try:
            os.write(pipe.fd, encode_keepalive(until, readers))
        except BlockingIOError:
            return False  # its guard is not reading: it holds older moments, and stops at those
        except BrokenPipeError:
            pipe.closed_by_child = True
            return False
        return True

    def lapsed(self, now: float) -> list[str]:
        """Jobs whose last moment passed since the last call: their child may have stopped itself."""
        found = []
        for job_id, pipe in self._pipes.items():
            if pipe.lapse_unsaid:  # an earlier moment, passed before a renewal: the current one may not have
                pipe.lapse_unsaid = False
                found.append(job_id)
            elif now >= pipe.until and not pipe.lapse_reported and not pipe.closed_by_child:
                pipe.lapse_reported = True
                found.append(job_id)
        return found

    def remove(self, job_id: str) -> None:
        pipe = self._pipes.pop(job_id, None)
        if pipe is not None:
            os.close(pipe.fd)
