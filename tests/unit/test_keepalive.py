"""The keepalive between a supervisor and its children: the rule, the wire format, both ends.

Real pipes, no processes: the end-to-end behaviour (a SIGSTOPped supervisor) is in
tests/test_stalled_parent.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from docsuper.passes.keepalive import wait_for_silence
from docsuper.supervisor.config import keepalive_s
from docsuper.supervisor.keepalive import Keepalive
from docsuper.supervisor.protocol import KEEPALIVE_BYTES, encode_keepalive, last_keepalive


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.mark.parametrize("lease_s, heartbeat_s, expected", [(60, 15, 30), (3, 1, 1), (8, 2, 4)])
def test_a_child_trusts_a_silent_parent_for_the_lease_less_two_heartbeats(lease_s, heartbeat_s, expected):
    # The lease outlives the last keepalive by at least lease − heartbeat: one heartbeat of margin is left.
    assert keepalive_s(lease_s, heartbeat_s) == expected


def test_the_newest_whole_record_wins_and_a_partial_one_is_kept():
    data = encode_keepalive(1.0) + encode_keepalive(2.5) + encode_keepalive(9.0)[:3]
    assert last_keepalive(data) == (2.5, encode_keepalive(9.0)[:3])
    assert last_keepalive(encode_keepalive(9.0)[:3]) == (None, encode_keepalive(9.0)[:3])
    until, rest = last_keepalive(encode_keepalive(9.0)[:3] + encode_keepalive(9.0)[3:])
    assert (until, rest) == (9.0, b"")
    assert KEEPALIVE_BYTES == 8


def test_the_parent_writes_on_add_and_when_due_and_reports_lapsed_children(pipe):
    read_fd, write_fd = pipe
    keepalive = Keepalive(keepalive_s=4.0, every_s=1.0)
    keepalive.add("job", write_fd, now=100.0)
    assert last_keepalive(os.read(read_fd, 64))[0] == 104.0
    assert keepalive.tick(100.5) == []
    assert last_keepalive(os.read(read_fd, 64))[0] == 104.5
    assert keepalive.next_at() == 101.5
    assert keepalive.tick(101.0) == []  # not due: nothing written
    os.set_blocking(read_fd, False)
    with pytest.raises(BlockingIOError):
        os.read(read_fd, 64)
    assert keepalive.tick(106.0) == ["job"]  # silent past 105: the child may have stopped itself
    assert last_keepalive(os.read(read_fd, 64))[0] == 110.0
    keepalive.remove("job")
    assert keepalive.next_at() is None
    with pytest.raises(OSError):
        os.fstat(write_fd)


def test_the_child_waits_while_moments_come_and_returns_when_the_last_passes(pipe):
    read_fd, write_fd = pipe
    os.write(write_fd, encode_keepalive(time.monotonic() - 1) + encode_keepalive(time.monotonic() + 0.2))
    started = time.monotonic()
    assert wait_for_silence(read_fd) is True
    assert time.monotonic() - started >= 0.19  # it waited for the newest moment, not the stale first one


def test_the_child_stops_guarding_when_the_parent_closes_its_end(pipe):
    read_fd, write_fd = pipe
    os.write(write_fd, encode_keepalive(time.monotonic() + 60))
    os.close(write_fd)
    assert wait_for_silence(read_fd) is False
