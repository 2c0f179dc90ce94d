"""Lending idle cores (supervisor/lending.py) and reading pages on them (passes/page_readers.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from docsuper.passes.page_readers import PageReaders
from docsuper.supervisor.budget import own_cgroup_files
from docsuper.supervisor.lending import Reading, lend_readers, usable_cores

MB = 60.0  # one reader's room in these tests


def test_nothing_is_lent_at_concurrency_one_or_when_every_slot_runs_a_job():
    alone = [Reading("a", wanted=4, lent=1)]
    assert lend_readers(alone, slots=1, room_mb=1000, reader_mb=MB) == {"a": 1}
    two = [Reading("a", 4, 1), Reading("b", 4, 1)]
    assert lend_readers(two, slots=2, room_mb=1000, reader_mb=MB) == {"a": 1, "b": 1}


def test_a_lone_job_gets_the_idle_cores_up_to_what_it_asked_for():
    assert lend_readers([Reading("a", 4, 1)], slots=2, room_mb=1000, reader_mb=MB) == {"a": 2}
    assert lend_readers([Reading("a", 2, 1)], slots=8, room_mb=1000, reader_mb=MB) == {"a": 2}
    assert lend_readers([Reading("a", 1, 1)], slots=8, room_mb=1000, reader_mb=MB) == {"a": 1}


def test_a_new_job_takes_its_slot_back_from_a_loan():
    # "a" held both cores; "b" started: the loan shrinks so that each job has one.
    assert lend_readers([Reading("a", 4, 2), Reading("b", 1, 1)], slots=2, room_mb=1000, reader_mb=MB) == \
        {"a": 1, "b": 1}


def test_a_loan_stays_where_it_is_and_new_ones_go_to_the_oldest():
    children = [Reading("old", 4, 1), Reading("young", 4, 3)]
    # Four slots, two jobs: two readers to lend. "young" keeps what it holds (within the two), "old" gets none.
    assert lend_readers(children, slots=4, room_mb=1000, reader_mb=MB) == {"old": 1, "young": 3}
    children = [Reading("old", 4, 1), Reading("young", 4, 1)]
    assert lend_readers(children, slots=4, room_mb=1000, reader_mb=MB) == {"old": 3, "young": 1}


def test_a_loan_needs_room_in_the_memory_budget():
    assert lend_readers([Reading("a", 4, 1)], slots=4, room_mb=59, reader_mb=MB) == {"a": 1}
    assert lend_readers([Reading("a", 4, 1)], slots=4, room_mb=130, reader_mb=MB) == {"a": 3}
    # What is lent is already in the children's memory: a loan does not take itself back.
    assert lend_readers([Reading("a", 4, 2)], slots=4, room_mb=0, reader_mb=MB) == {"a": 2}
    assert lend_readers([Reading("a", 4, 1)], slots=4, room_mb=-50, reader_mb=MB) == {"a": 1}


def test_a_child_that_no_longer_wants_readers_gives_them_back():
    assert lend_readers([Reading("a", 1, 2)], slots=2, room_mb=1000, reader_mb=MB) == {"a": 1}


def test_usable_cores_is_at_least_one_and_at_most_the_affinity():
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def _cpu_cgroup(name: str, cpus: float) -> tuple[Path, str] | None:
    """A CPU cgroup below ours limited to `cpus` CPUs' worth of time (root, v1 or v2), or None."""
    own = own_cgroup_files("cpu.max", "cpu", "cpu.cfs_quota_us")
    if os.geteuid() != 0 or not own:
        return None
    path = own[0].parent / name
    try:
        path.mkdir()
        if own[0].name == "cpu.max":
            (path / "cpu.max").write_text(f"{int(cpus * 100000)} 100000")
        else:
            (path / "cpu.cfs_period_us").write_text("100000")
            (path / "cpu.cfs_quota_us").write_text(str(int(cpus * 100000)))
    except OSError:
        return None
    return path, "cgroup.procs"


@pytest.mark.parametrize("cpus", [0.5, 1.5])
def test_a_cgroup_cpu_quota_lowers_the_cores_lent(cpus: float):
    """Render's Starter instance is half a CPU on a many-core host: nothing to lend there."""
    made = _cpu_cgroup(f"docsuper-test-quota-{os.getpid()}", cpus)
    if made is None:
        pytest.skip("needs root and a writable CPU cgroup")
    path, procs = made
    try:
        code = ("import os, sys; open(sys.argv[1], 'w').write(str(os.getpid())); "
                "from docsuper.supervisor.lending import usable_cores; print(usable_cores())")
        out = subprocess.run([sys.executable, "-c", code, str(path / procs)], capture_output=True, text=True,
                             check=True).stdout
        assert int(out) == 1
    finally:
        path.rmdir()


def _readers(allowed: list[int], most: int = 4, together: threading.Barrier | None = None):
    engines_made: list[int] = []
    running: list[str] = []
    seen_at_once: list[int] = []
    lock = threading.Lock()

    def make_engine() -> int:
        engines_made.append(len(engines_made))
        return engines_made[-1]

    def read(page: int, engine: int) -> tuple[int, int, str]:
        with lock:
            running.append(threading.current_thread().name)
            seen_at_once.append(len(running))
        if together is not None:
            together.wait(10)  # broken (an error) unless the pages really are read at once
        with lock:
            running.pop()
        return page, engine, threading.current_thread().name

    return PageReaders(read, make_engine, lambda: allowed[0], most), engines_made, seen_at_once


def test_one_reader_reads_on_the_calling_thread_with_one_engine_in_page_order():
    readers, engines_made, _ = _readers([1])
    results = []
    for page in range(1, 6):
        results += list(readers.ready())
        readers.submit(page)
    results += list(readers.drain())
    readers.close()
    assert [r[0] for r in results] == [1, 2, 3, 4, 5]
    assert {r[2] for r in results} == {threading.current_thread().name}
    assert engines_made == [0] and readers.most_at_once == 1


def test_lent_readers_read_at_once_each_with_its_own_engine_and_results_keep_page_order():
    readers, engines_made, seen_at_once = _readers([2], together=threading.Barrier(2))
    results = []
    readers.submit(1)
    readers.submit(2)  # room for two: both start, and meet inside read()
    results += list(readers.ready())  # no room for a third until the first is done
    readers.submit(3)
    results += list(readers.ready())
    readers.submit(4)  # meets page 3
    results += list(readers.drain())
    readers.close()
    assert [r[0] for r in results] == [1, 2, 3, 4]
    assert readers.most_at_once == 2 and len(engines_made) == 2 and max(seen_at_once) == 2
    assert all(r[2].startswith("docsuper-reader") for r in results)


def test_a_loan_taken_back_lets_no_new_page_start_until_one_is_left_in_flight():
    allowed = [2]
    readers, _, _ = _readers(allowed)
    readers.submit(1)
    readers.submit(2)
    allowed[0] = 1
    got = list(readers.ready())  # both must be collected before a page may start
    assert [r[0] for r in got] == [1, 2]
    readers.submit(3)
    assert [r[0] for r in readers.drain()] == [3]
    readers.close()


def test_a_readers_failure_is_raised_where_its_result_is_taken():
    def read(page: int, engine: int) -> int:
        raise MemoryError(f"page {page}")

    for allowed in (1, 2):
        readers = PageReaders(read, lambda: 0, lambda: allowed, 4)
        readers.submit(1)
        with pytest.raises(MemoryError, match="page 1"):
            list(readers.drain())
        readers.close()
