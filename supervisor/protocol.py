"""Where the parent and the child meet: the only module both sides import.

Standard library only, so `docsuper.passes` never pulls in the supervisor. It holds:

- the JobSpec the parent hands a child (the job, the limits' inputs, and only the
  config sections its passes use: never the queue's URL);
- the event grammar a child writes back, one JSON object per line on a pipe:

    {"type": "started", "pid": …}                    the first pass is about to run
    {"type": "progress", "pass": "ocr", "done": 3, "total": 10, "rss_mb": 212.5}
    {"type": "page", "pass": "ocr", "page": 3, "result": {…}}   stored at once by the parent
    {"type": "plan", "pass": "ocr", "plan": {"name": "lighter", "lightest": false, …}}
                                                     the memory plan it runs, recorded with the attempt
    {"type": "readers", "pass": "ocr", "wanted": 2}   how many pages it could read at once now
                                                     (the parent may lend it idle cores: below)
    {"type": "result", "summary": {…}, "peak_rss_mb": …}   success; the child then exits 0
    {"type": "failure", "outcome": "error" | "invalid_input" | "oom",
     "message": "…", "traceback": "…", "peak_rss_mb": …}   the child then exits 1

  A child that exits without a result or failure line, or dies by a signal, is
  `crashed` (or `oom`/`timeout` when the watchdog killed it);
- the fork server's messages (Ready, Start, Started, Refused, Exited, Ping, Pong),
  one per SOCK_SEQPACKET datagram;
- the parent's word: on a pipe of its own, the moment until which a child may
  trust the parent to hold its job's lease (a child past it stops its job), and how
  many pages the child may read at once (1 unless the parent lends it idle cores);
- the job marker and the Linux process plumbing both sides use (prctl, reaping a
  job's children and the orphans it left). Memory figures everywhere are MiB.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Union

MAX_EVENT_BYTES = 16 * 1024 * 1024  # one page's OCR lines fit many times over

# Set in every job child's environment and inherited by all it starts, so a reaper
# can tell which job an orphan belongs to, and which worker (a daemon starting on the
# host kills what workers that are gone left behind).
JOB_MARKER = "DOCSUPER_JOB_ID"
WORKER_MARKER = "DOCSUPER_WORKER"


# -- the job spec --------------------------------------------------------------
@dataclass
class JobSpec:
    job_id: str
    attempt: int
    source: str | None
    passes: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)  # only the sections its passes use
    # Per-page results stored by earlier attempts, {pass: {page: result}}: a retry resumes after them.
    resume: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    workdir: str | None = None  # the job's private directory, made and removed by the parent
    # Outcomes of the job's earlier attempts since it was (re)queued, oldest first: a pass that
    # can run lighter (the ocr pass's memory plans) does so after each `oom`.
    earlier_outcomes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies every resumed page for every job.
        data = dict(self.__dict__)
        data["resume"] = {p: {str(k): v for k, v in pages.items()} for p, pages in self.resume.items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> "JobSpec":
        data = json.loads(text)
        data["resume"] = {p: {int(k): v for k, v in pages.items()} for p, pages in data.get("resume", {}).items()}
        return cls(**data)


@dataclass(frozen=True)
class ChildLimits:
    """Kernel limits a child sets on itself before it runs a pass."""

    kernel_limit_mb: int  # RLIMIT_DATA's room to grow: the child's data size when it sets it plus this
    cgroup: str | None = None  # the job's own cgroup (v2) to join before the first pass


# -- the parent's keepalive ----------------------------------------------------
# Every turn of its loop the parent writes, on each child's keepalive pipe, a
# CLOCK_MONOTONIC moment (one clock for every process on the host) until which the
# child may trust it to renew the job's lease. A parent that stops (SIGSTOP, a wedged
# loop) writes no more; its children stop their jobs at the last moment written,
# before another worker can claim them (docs/operating.md, "A stalled supervisor").
# The same record carries the readers the child may run (pages read at once): the
# parent writes one whenever it lends or takes back an idle core, with the last moment.
KEEPALIVE_FORMAT = "=dI"
KEEPALIVE_BYTES = struct.calcsize(KEEPALIVE_FORMAT)
# A child that stopped its job because the parent went silent exits with this code;
# the parent counts it as `interrupted` only if it knows its own loop was silent then.
EXIT_PARENT_SILENT = 75  # EX_TEMPFAIL


def encode_keepalive(until: float, readers: int = 1) -> bytes:
    return struct.pack(KEEPALIVE_FORMAT, until, max(1, readers))


def last_keepalive(data: bytes) -> tuple[tuple[float, int] | None, bytes]:
    """The newest (moment, readers) among whole records in `data`, and the bytes of a partial one left over."""
    whole = len(data) - len(data) % KEEPALIVE_BYTES
    if whole == 0:
        return None, data
    until, readers = struct.unpack(KEEPALIVE_FORMAT, data[whole - KEEPALIVE_BYTES:whole])
    return (until, max(1, readers)), data[whole:]


# -- events from a child -------------------------------------------------------
def encode_event(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


class EventReader:
    """Splits a child's pipe into events as bytes arrive (non-blocking reads)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buffer = b""
        self.closed = False

    def read_available(self) -> Iterator[dict[str, Any]]:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:
            self.closed = True
        self._buffer += chunk
        if len(self._buffer) > MAX_EVENT_BYTES:
            self._buffer = b""
            yield {"type": "protocol_error", "message": f"an event line exceeded {MAX_EVENT_BYTES} bytes"}
            return
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                yield {"type": "protocol_error", "message": f"unreadable event: {line[:200]!r}"}
                continue
            if isinstance(event, dict):
                yield event


# -- the fork server's messages ------------------------------------------------
@dataclass(frozen=True)
class Ready:
    """Server → parent, once, after preloading."""

    pid: int
    preloaded: list[str]
    failed: dict[str, str]  # module → why it did not load (or started a thread)
    threads: int = 1
    seconds: float = 0.0


@dataclass(frozen=True)
class Start:
    """Parent → server, with two fds: the job's event pipe and the spec's memfd."""

    job_id: str
    limits: ChildLimits


@dataclass(frozen=True)
class Started:
    job_id: str
    pid: int


@dataclass(frozen=True)
class Refused:
    job_id: str
    message: str


@dataclass(frozen=True)
class Exited:
    """A job child was reaped."""

    pid: int
    status: int  # wait status


@dataclass(frozen=True)
class Ping:
    """Parent → server: are you there? The server answers Pong at once (its liveness check)."""

    seq: int


@dataclass(frozen=True)
class Pong:
    seq: int


ServerMessage = Union[Ready, Start, Started, Refused, Exited, Ping, Pong]
_MESSAGE_TYPES: dict[str, type] = {cls.__name__.lower(): cls
                                   for cls in (Ready, Start, Started, Refused, Exited, Ping, Pong)}


def encode_message(message: ServerMessage) -> bytes:
    return json.dumps({"op": type(message).__name__.lower(), **asdict(message)}).encode()


def decode_message(data: bytes) -> ServerMessage:
    fields = json.loads(data)
    cls = _MESSAGE_TYPES[fields.pop("op")]
    if cls is Start:
        fields["limits"] = ChildLimits(**fields["limits"])
    message: ServerMessage = cls(**fields)
    return message


# -- Linux process plumbing ----------------------------------------------------
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def join_cgroup(path: str) -> None:
    """Move this process into a cgroup v2 (a job child does it before its first pass)."""
    with open(os.path.join(path, "cgroup.procs"), "w") as fh:
        fh.write("0")


def cgroup_pids(path: str | os.PathLike[str]) -> list[int]:
    """The processes in a cgroup v2 (OSError when it cannot be read: gone, or not ours)."""
    with open(os.path.join(path, "cgroup.procs")) as fh:
        return [int(pid) for pid in fh.read().split()]


def kill_cgroup(path: str | os.PathLike[str]) -> int:
    """Kill every process in a cgroup v2 (cgroup.kill) and remove it once empty; how many it held."""
    try:
        held = len(cgroup_pids(path))
        with open(os.path.join(path, "cgroup.kill"), "w") as fh:
            fh.write("1")
    except OSError:
        return 0
    try:
        os.rmdir(path)  # EBUSY while the killed processes are still exiting; a later sweep gets it
    except OSError:
        pass
    return held


def children_of(pid: int) -> list[int]:
    """Direct children from /proc/PID/task/*/children: a look at this one process, where
    psutil's children() reads the parent of every process on the box."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(p) for p in fh.read().split())
        except OSError:
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    """Every process below `pid`, children first."""
    found, frontier = [], [pid]
    while frontier:
        for child_pid in children_of(frontier.pop()):
            found.append(child_pid)
            frontier.append(child_pid)
    return found


def drain_pipe(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (signal wake-ups, SIGCHLD notes)."""
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def environ_value(pid: int, name: str) -> str | None:
    """One variable from the environment a process started with, or None."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for entry in data.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix):].decode(errors="replace")
    return None


def orphans_of(job_id: str, subreaper: int) -> list[int]:
    """The children of `subreaper` that carry this job's marker: processes the job left behind
    that were reparented there. A grandchild that escaped into its own session is outside the
    job's process group; its parent is gone, so only the marker in its environment names it."""
    return [pid for pid in children_of(subreaper) if environ_value(pid, JOB_MARKER) == job_id]


def kill_orphans_of(job_id: str) -> list[int]:
    """Kill the processes a finished job left behind that were reparented to us (a subreaper)."""
    killed = []
    for pid in orphans_of(job_id, os.getpid()):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            continue
    return killed


def reap_jobs(jobs: dict[int, str]) -> list[tuple[int, int]]:
    """Reap every exited child of this process (a subreaper); for each job child among
    them (`jobs`: pid -> job id, updated), kill what the job left behind.

    Returns (pid, wait status) of the job children. Other children are orphans a job
    left and that were reparented here: reaping is all they need. Their group is
    killed right after the reap and before anyone is told, so no new child can have
    been given this pid as its group id yet."""
    reaped = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        job_id = jobs.pop(pid, None)
        if job_id is None:
            continue
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        kill_orphans_of(job_id)
        reaped.append((pid, status))
    return reaped
