"""Reading a document's scanned pages one at a time, or several at once on lent cores.

The parent lends a child the cores no other job uses (supervisor/lending.py): a
142-page scan that runs alone at the end of a burst would otherwise leave every core
but one idle. While `allowed()` is more than one, pages go to reader threads, each
with an engine of its own (a Tesseract instance is not thread-safe; tesserocr lets
go of the GIL while it recognises, so two threads read two pages in 0.55 of the time
one takes). Rendering stays on the pass's thread: MuPDF is not thread-safe, and it
costs a tenth of the recognition. When the loan is taken back, no new page starts
until fewer are in flight than allowed; an extra engine stays loaded until the pass
ends (~20 MB: cheaper than loading it again at the next loan).

With one reader allowed and nothing in flight a page is read on the pass's own
thread, so an unlent job runs exactly as before: no thread, no second engine.
Results come back in the order the pages went in.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterator, TypeVar

Work = TypeVar("Work")
Result = TypeVar("Result")
Engine = Any


class PageReaders(Generic[Work, Result]):
    def __init__(self, read: Callable[[Work, Engine], Result], make_engine: Callable[[], Engine],
                 allowed: Callable[[], int], most: int) -> None:
        """`read(work, engine)` runs on a reader; `make_engine()` makes one more engine (the
        first one may be shared and cached); at most `most` pages are ever read at once."""
        self._read = read
        self._make_engine = make_engine
        self._allowed = allowed
        self._most = max(1, most)
        self._idle: list[Engine] = []
        self._in_flight: deque[Future[Result]] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self.most_at_once = 0  # how many pages were read at once, at most (the job's summary says it)

    def allowed(self) -> int:
        return max(1, min(self._most, self._allowed()))

    def ready(self) -> Iterator[Result]:
        """Results of earlier pages, waiting as long as there is no room for one more page."""
        while self._in_flight and (len(self._in_flight) >= self.allowed() or self._in_flight[0].done()):
            yield self._in_flight.popleft().result()

    def drain(self) -> Iterator[Result]:
        """Every result still to come, in order."""
        while self._in_flight:
            yield self._in_flight.popleft().result()

    def submit(self, work: Work) -> None:
        """Read `work` now on this thread (nothing in flight, one reader allowed) or on a reader."""
        if not self._in_flight and self.allowed() <= 1:
            done: Future[Result] = Future()
            try:
                done.set_result(self._with_engine(work))
            except BaseException as exc:  # raised where its result is taken, like a reader's
                done.set_exception(exc)
            self._in_flight.append(done)
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._most, thread_name_prefix="docsuper-reader")
            self._in_flight.append(self._pool.submit(self._with_engine, work))
        self.most_at_once = max(self.most_at_once, len(self._in_flight))

    def close(self) -> None:
        """Wait for the readers (a page in flight when the pass fails) and stop their threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._in_flight.clear()

    def _with_engine(self, work: Work) -> Result:
        # list.pop and list.append are atomic under the GIL: no two readers get one engine.
        try:
            engine = self._idle.pop()
        except IndexError:
            engine = self._make_engine()
        try:
            return self._read(work, engine)
        finally:
            self._idle.append(engine)
