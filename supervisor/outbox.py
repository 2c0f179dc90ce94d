"""Writes to the queue, in order, that wait while the database is away.

Children keep running when the queue is briefly unreachable; their page results
and outcomes queue up here and go out, oldest first, once it answers again.
A write the queue refuses for good (QueueError) is logged and dropped: retrying
it would block every write behind it.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

from .queue.base import QueueError, QueueUnavailable

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 10.0
FINAL_FLUSH_S = 10.0  # how long the last flush on the way out keeps trying


class Outbox:
    def __init__(self, on_unavailable: Callable[[str, int, QueueUnavailable, float], None],
                 on_refused: Callable[[str, QueueError], None],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        """`on_unavailable(what, pending, error, retry_in_s)`, `on_refused(what, error)`: for the log."""
        self._items: deque[tuple[str, Callable[[], Any]]] = deque()
        self._on_unavailable = on_unavailable
        self._on_refused = on_refused
        self._clock = clock
        self._sleep = sleep
        self.retry_at = 0.0
        self._delay = FIRST_DELAY_S

    def __len__(self) -> int:
        return len(self._items)

    def put(self, what: str, write: Callable[[], Any]) -> None:
        self._items.append((what, write))

    def flush(self, now: float, final: bool = False) -> None:
        """Send what is waiting, oldest first. Stops at the first unavailable error until
        `retry_at` (backing off), except when `final`: then it keeps trying for FINAL_FLUSH_S."""
        deadline = now + FINAL_FLUSH_S
        while self._items:
            if not final and now < self.retry_at:
                return
            what, write = self._items[0]
            try:
                write()
            except QueueUnavailable as exc:
                self.retry_at = self._clock() + self._delay
                self._delay = min(self._delay * 2, MAX_DELAY_S)
                self._on_unavailable(what, len(self._items), exc, round(self._delay, 1))
                if not final or self._clock() > deadline:
                    return
                self._sleep(self._delay)
                continue
            except QueueError as exc:
                self._on_refused(what, exc)
            self._items.popleft()
            self._delay = FIRST_DELAY_S
