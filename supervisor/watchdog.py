"""Measuring and killing a job's whole process tree.

A job is its child plus everything the child started. The tree is walked on
every sample, and every process ever seen in it is remembered (with its start
time, so a reused pid is never mistaken for it): a grandchild that escaped into
its own session, or whose parent already died, is still killed with the job.

Memory is the tree's USS, the pages that would come back if the tree exited.
Children forked from the fork server share the preloaded libraries' pages, which
RSS counts once per child; USS does not. RSS is recorded beside it.
"""

from __future__ import annotations

import os
import signal

import psutil

from .metering import TreeSample
from .protocol import children_of

MIB = 1 << 20


class ProcessTree:
    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.known: dict[int, psutil.Process] = {}
        try:
            self.known[root_pid] = psutil.Process(root_pid)
        except psutil.NoSuchProcess:
            pass

    def _walk(self) -> list[psutil.Process]:
        frontier = [self.root_pid] if self.root_pid in self.known else []
        while frontier:
            pid = frontier.pop()
            for child_pid in children_of(pid):
                if child_pid not in self.known:
                    try:
                        self.known[child_pid] = psutil.Process(child_pid)
                    except psutil.NoSuchProcess:
                        continue
                frontier.append(child_pid)
        alive = []
        for pid, proc in list(self.known.items()):
            if proc.is_running():  # also compares the start time: a reused pid is not ours
                alive.append(proc)
            else:
                del self.known[pid]
        return alive

    def sample(self, uss: bool = True) -> TreeSample:
        """The tree's RSS (from statm: microseconds) and, when `uss`, its USS.

        USS comes from smaps_rollup, which costs milliseconds per process for the
        big address spaces of the OCR stack, so the caller asks for it only when it
        matters: USS never exceeds RSS, so a tree whose RSS is under the cap is under it."""
        uss_bytes = rss_bytes = 0
        count = 0
        for proc in self._walk():
            try:
                if uss:
                    full = proc.memory_full_info()
                    uss_bytes += full.uss
                    rss = full.rss
                else:
                    rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
            rss_bytes += rss
            count += 1
        return TreeSample(uss_bytes / MIB if uss else None, rss_bytes / MIB, count)

    def signal(self, signum: int) -> None:
        """Send `signum` to every process of the tree, root first, and to the root's process group."""
        alive = self._walk()
        for proc in alive:
            try:
                proc.send_signal(signum)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        # Only while the root lives: once it is reaped, its group is the reaper's to clean
        # and the pid may already belong to someone else.
        if any(proc.pid == self.root_pid for proc in alive):
            try:
                os.killpg(self.root_pid, signum)
            except OSError:
                pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
