"""The outbox: writes in order, held while the queue is away, backing off, dropped only when refused."""

from __future__ import annotations

from docsuper.supervisor.outbox import FIRST_DELAY_S, MAX_DELAY_S, Outbox
from docsuper.supervisor.queue.base import QueueError, QueueUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Db:
    """Stands in for the queue's write methods: down while `down`, refusing what is in `refuse`."""

    def __init__(self) -> None:
        self.down = False
        self.refuse: set[str] = set()
        self.written: list[str] = []

    def write(self, what: str):
        def do() -> None:
            if self.down:
                raise QueueUnavailable("connection refused")
            if what in self.refuse:
                raise QueueError("no such job")
            self.written.append(what)
        return do


def make() -> tuple[Outbox, Db, Clock, list[tuple]]:
    clock, db, log = Clock(), Db(), []
    box = Outbox(lambda what, pending, exc, retry: log.append(("unavailable", what, pending, retry)),
                 lambda what, exc: log.append(("refused", what, str(exc))), clock=clock, sleep=clock.sleep)
    return box, db, clock, log


def test_writes_go_out_in_order():
    box, db, clock, log = make()
    for what in ("page 1", "page 2", "finish"):
        box.put(what, db.write(what))
    box.flush(clock())
    assert db.written == ["page 1", "page 2", "finish"] and len(box) == 0 and log == []


def test_while_the_queue_is_away_writes_wait_and_the_delay_doubles():
    box, db, clock, log = make()
    db.down = True
    box.put("page 1", db.write("page 1"))
    box.put("finish", db.write("finish"))
    box.flush(clock())
    assert len(box) == 2 and box.retry_at == FIRST_DELAY_S
    box.flush(clock())  # before retry_at: not even tried
    assert len(log) == 1
    for _ in range(10):
        clock.now = box.retry_at
        box.flush(clock())
    assert log[-1] == ("unavailable", "page 1", 2, MAX_DELAY_S)
    db.down = False
    clock.now = box.retry_at
    box.flush(clock())
    assert db.written == ["page 1", "finish"] and len(box) == 0


def test_the_delay_starts_over_after_a_success():
    box, db, clock, log = make()
    db.down = True
    box.put("a", db.write("a"))
    box.flush(clock())
    clock.now = box.retry_at
    db.down = False
    box.flush(clock())
    db.down = True
    box.put("b", db.write("b"))
    box.flush(clock())
    assert box.retry_at == clock.now + FIRST_DELAY_S


def test_a_refused_write_is_logged_and_dropped_so_the_rest_go_out():
    box, db, clock, log = make()
    db.refuse = {"bad"}
    box.put("bad", db.write("bad"))
    box.put("good", db.write("good"))
    box.flush(clock())
    assert db.written == ["good"] and log == [("refused", "bad", "no such job")]


def test_the_final_flush_keeps_trying_for_a_while_then_gives_up():
    box, db, clock, log = make()
    db.down = True
    box.put("finish", db.write("finish"))
    box.flush(clock(), final=True)
    assert len(box) == 1 and 10 <= clock.now <= 10 + 2 * MAX_DELAY_S
