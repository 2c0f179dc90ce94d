"""No process outlives its job: a cgroup per job where the box allows it, a sweep where not.

Where a cgroup v2 hierarchy is writable (root, or a subtree delegated by systemd's
`Delegate=yes`; on a v1 box, the hybrid `unified` mount), every job runs in a
cgroup of its own, `<our cgroup>/docsuper-<worker>/<job>-<attempt>`: the child
joins it before its first pass, so everything it starts is inside, however it
detaches (setsid, double fork). When the job is reaped the parent writes
`cgroup.kill` and every process of the job dies with it.

What no cgroup can cover is a parent that was killed outright: nobody is left to
write `cgroup.kill`. So a daemon starting on a host sweeps what workers that are gone
left behind, with or without cgroups: their job cgroups are killed, and every
process whose environment carries the WORKER_MARKER of a gone worker is killed
(children inherit it from the fork server, and it survives exec and setsid).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .protocol import WORKER_MARKER, kill_cgroup

def _unified_mount() -> Path | None:
    for candidate in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        if (candidate / "cgroup.controllers").exists():  # a v2-only file
            return candidate
    return None


def _own_cgroup() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:].lstrip("/")
    except OSError:
        pass
    return None


def cgroup_problem() -> str | None:
    """Why jobs cannot have cgroups of their own on this box, or None when they can."""
    mount, own = _unified_mount(), _own_cgroup()
    if mount is None or own is None:
        return "no cgroup v2 hierarchy on this box"
    base = mount / own
    if not os.access(base, os.W_OK):
        return f"{base} is not writable (not root, and no delegated subtree)"
    return None


class JobCgroups:
    """A cgroup v2 per job, under this worker's own; `problem` says why not when unavailable."""

    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.problem = cgroup_problem()
        mount, own = _unified_mount(), _own_cgroup()
        self.base = mount / own if mount is not None and own is not None else None  # <mount>/<our cgroup>
        self.mine: Path | None = None

    @property
    def kind(self) -> str:
        return "cgroup" if self.mine is not None else "sweep"

    def open(self) -> None:
        if self.problem is not None or self.base is None:
            return
        try:
            mine = self.base / f"docsuper-{self.worker}"
            mine.mkdir(exist_ok=True)
            if not (mine / "cgroup.kill").exists():
                raise OSError("no cgroup.kill (a kernel older than 5.14)")
            self.mine = mine
        except OSError as exc:
            self.problem = f"cannot make cgroups under {self.base}: {exc}"

    def create(self, job_id: str, attempt: int) -> str | None:
        if self.mine is None:
            return None
        path = self.mine / f"{job_id}-{attempt}"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            return None
        return str(path)

    def kill(self, path: str | Path | None) -> None:
        """Kill every process in the job's cgroup and remove it (later, if it is still emptying)."""
        if path:
            kill_cgroup(Path(path))

    def close(self) -> None:
        if self.mine is not None:
            try:
                jobs = [job for job in self.mine.iterdir() if job.is_dir()]
            except OSError:
                jobs = []
            for job in jobs:
                kill_cgroup(job)
            _rmdir(self.mine)
            self.mine = None

    def sweep(self, gone_workers: list[str]) -> int:
        """Kill the job cgroups of workers that are gone (those named, and any whose pid no longer
        exists); remove empty ones. How many processes they still held."""
        if self.base is None or self.problem is not None:
            return 0
        count = 0
        for top in self.base.glob("docsuper-*"):
            worker = top.name[len("docsuper-"):]
            if not top.is_dir() or worker == self.worker:
                continue
            pid = worker.split("-", 1)[0]
            if not (worker in gone_workers or (pid.isdigit() and not os.path.exists(f"/proc/{pid}"))):
                continue  # a live worker's: not ours to touch, even when empty between jobs
            try:
                jobs = [job for job in top.iterdir() if job.is_dir()]
            except OSError:
                continue
            for job in jobs:
                count += kill_cgroup(job)
            _rmdir(top)
        return count


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()  # EBUSY while not empty or still exiting; a later sweep gets it
    except OSError:
        pass


def kill_marked(gone_workers: list[str]) -> list[int]:
    """Kill every process whose environment names one of these workers."""
    if not gone_workers:
        return []
    wanted = {f"{WORKER_MARKER}={w}".encode() for w in gone_workers}
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = set(fh.read().split(b"\0"))
        except OSError:
            continue
        if environ & wanted:
            try:
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
            except OSError:
                continue
    return killed
