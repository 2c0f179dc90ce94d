"""The keepalive between a supervisor and its children: the rule, the wire format, both ends.

Real pipes, no processes: the end-to-end behaviour (a SIGSTOPped supervisor) is in
tests/test_stalled_parent.py.
"""

from __future__ import annotations

import array
import fcntl
import os
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from docsuper.passes.keepalive import Lent, wait_for_silence
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


@pytest.mark.parametrize("lease_s, heartbeat_s, expected", [(60, 15, 45), (3, 1, 2), (8, 2, 6)])
def test_a_child_trusts_a_renewal_for_the_lease_less_one_heartbeat(lease_s, heartbeat_s, expected):
    # The database stamps a renewal after it is sent: the lease outlives the moment by a heartbeat at least.
    assert keepalive_s(lease_s, heartbeat_s) == expected


def test_the_newest_whole_record_wins_and_a_partial_one_is_kept():
    data = encode_keepalive(1.0, 3) + encode_keepalive(2.5, 2) + encode_keepalive(9.0)[:3]
    assert last_keepalive(data) == ((2.5, 2), encode_keepalive(9.0)[:3])
    assert last_keepalive(encode_keepalive(9.0)[:3]) == (None, encode_keepalive(9.0)[:3])
    record, rest = last_keepalive(encode_keepalive(9.0)[:3] + encode_keepalive(9.0)[3:])
    assert (record, rest) == ((9.0, 1), b"")
    assert last_keepalive(encode_keepalive(4.0, 0))[0] == (4.0, 1)  # a child always has its one reader
    assert KEEPALIVE_BYTES == 12


def test_a_loan_is_written_at_once_with_the_last_moment_and_kept_through_renewals(pipe):
    read_fd, write_fd = pipe
    keepalive = Keepalive(trust_s=6.0)
    keepalive.add("job", write_fd, renewed_at=100.0)
    assert last_keepalive(os.read(read_fd, 64))[0] == (106.0, 1)
    assert keepalive.lend("job", 2) and keepalive.lent("job") == 2
    assert last_keepalive(os.read(read_fd, 64))[0] == (106.0, 2)  # the loan moves no moment
    assert keepalive.lend("job", 2)  # unchanged: nothing written
    keepalive.renewed(["job"], sent_at=102.0)
    assert last_keepalive(os.read(read_fd, 64)) == ((108.0, 2), b"")
    assert not keepalive.lend("not ours", 2) and keepalive.lent("not ours") == 1


def test_the_parent_writes_each_renewal_and_reports_a_lapse_once(pipe):
    read_fd, write_fd = pipe
    keepalive = Keepalive(trust_s=6.0)
    keepalive.add("job", write_fd, renewed_at=100.0)
    assert last_keepalive(os.read(read_fd, 64))[0] == (106.0, 1)
    assert keepalive.lapsed(105.9) == []
    keepalive.renewed(["job", "not ours"], sent_at=102.0)
    assert last_keepalive(os.read(read_fd, 64))[0] == (108.0, 1)
    assert keepalive.lapsed(107.0) == []
    assert keepalive.lapsed(108.5) == ["job"]  # no renewal in time: the child may have stopped itself
    assert keepalive.lapsed(109.0) == []  # said once per lapse
    keepalive.renewed(["job"], sent_at=109.0)
    assert keepalive.lapsed(115.5) == ["job"]
    keepalive.remove("job")
    with pytest.raises(OSError):
        os.fstat(write_fd)


def test_a_lapse_is_still_reported_when_a_renewal_comes_first(pipe):
    """After a stall the loop may renew before it asks for lapses (CI saw it with spawn: the child had
    stopped itself and exited, so the late renewal met a closed pipe); the lapse must not be lost."""
    read_fd, write_fd = pipe
    keepalive = Keepalive(trust_s=6.0)
    keepalive.add("job", write_fd, renewed_at=100.0)
    keepalive.renewed(["job"], sent_at=103.0)  # in time: no lapse
    assert keepalive.lapsed(108.9) == []
    keepalive.renewed(["job"], sent_at=112.0)  # sent after 109, the moment the child was given
    assert keepalive.lapsed(112.1) == ["job"] and keepalive.lapsed(112.2) == []
    keepalive.renewed(["job"], sent_at=130.0)  # 118 passed unasked: said, and the moment is 136 now
    assert keepalive.lapsed(130.1) == ["job"] and keepalive.lapsed(135.9) == []
    os.close(read_fd)  # the child stopped itself and exited: this renewal meets a closed pipe
    keepalive.renewed(["job"], sent_at=140.0)
    assert keepalive.lapsed(140.1) == ["job"] and keepalive.lapsed(150.0) == []


def test_a_child_that_closed_its_end_is_written_to_no_more_and_never_reported(pipe):
    read_fd, write_fd = pipe
    keepalive = Keepalive(trust_s=6.0)
    keepalive.add("job", write_fd, renewed_at=100.0)
    os.close(read_fd)  # the child exited, or a pass closed the descriptors it inherited
    keepalive.renewed(["job"], sent_at=103.0)  # EPIPE, quietly
    assert keepalive.lapsed(200.0) == []


def test_the_child_waits_while_moments_come_and_returns_when_the_last_passes(pipe):
    read_fd, write_fd = pipe
    os.write(write_fd, encode_keepalive(time.monotonic() - 1, 3) + encode_keepalive(time.monotonic() + 0.2, 2))
    started = time.monotonic()
    lent = Lent()
    assert wait_for_silence(read_fd, lent) is True
    assert time.monotonic() - started >= 0.19  # it waited for the newest moment, not the stale first one
    assert lent() == 2  # and took the newest loan with it


def test_the_child_stops_guarding_when_the_parent_closes_its_end(pipe):
    read_fd, write_fd = pipe
    os.write(write_fd, encode_keepalive(time.monotonic() + 60))
    os.close(write_fd)
    assert wait_for_silence(read_fd) is False


def pending_bytes(fd: int) -> int:
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


def test_the_child_gives_up_quietly_when_a_pass_closes_the_pipe_and_reuses_its_number(pipe):
    read_fd, write_fd = pipe
    os.write(write_fd, encode_keepalive(time.monotonic() + 2.0))
    outcome: list[bool] = []
    guard = threading.Thread(target=lambda: outcome.append(wait_for_silence(read_fd)))
    guard.start()
    started = time.monotonic()
    while pending_bytes(read_fd) and time.monotonic() - started < 10:  # the guard has taken our pipe's moment
        time.sleep(0.005)
    theirs = os.pipe()
    os.dup2(theirs[0], read_fd)  # our number now names the pass's own pipe, as after close() and pipe()
    try:
        guard.join(timeout=10)
        # Waiting on the pass's pipe, it would have found no moment in time and stopped a healthy job.
        assert outcome == [False]
    finally:
        for fd in theirs:
            os.close(fd)
