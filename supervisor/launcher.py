"""Starting job children: from the fork server (default) or as fresh interpreters.

Both start methods implement `Launcher`: `launch()` hands back the parent's ends
of the child's pipes at once (its events, and the keepalive: protocol.py), and the child's pid, its refusal or its exit come
later as reports from `poll()`, which the supervisor calls when `fileno()` is
readable. The fork server answers asynchronously: forking a process that maps the
document libraries takes milliseconds, and the supervisor does other work
meanwhile. The spec travels in a memfd, so its size (resume data of a long
document) never blocks the supervisor on a pipe.

Children start with an environment built from an allowlist, never the parent's:
the parent holds the queue's URL and the operator's secrets, the child parses
untrusted documents.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Protocol, Sequence

from .protocol import (
    JOB_MARKER,
    PR_SET_CHILD_SUBREAPER,
    ChildLimits,
    Exited,
    JobSpec,
    Ping,
    Pong,
    Ready,
    Refused,
    ServerMessage,
    Start,
    Started,
    decode_message,
    drain_pipe,
    encode_message,
    prctl,
    reap_jobs,
)

# glibc and the numeric libraries read these when a process starts, so they must be
# in place before the fork server (or a spawned child) begins, not set by a pass.
CHILD_DEFAULTS = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "4194304",
    # Setting the mmap threshold freezes the trim threshold at 128 KB otherwise (docs/ocr.md).
    "MALLOC_TRIM_THRESHOLD_": "33554432",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}

# What a child may inherit from the parent's environment: what the interpreter, the
# locale, the temp dir, TLS and the numeric libraries read. Nothing else crosses
# unless the operator names it (workers.child_env, inputs.bearer_token_env).
CHILD_ALLOWED = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH",
    "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PYTHONIOENCODING",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "OMP_THREAD_LIMIT", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
    JOB_MARKER,
}) | frozenset(CHILD_DEFAULTS)
CHILD_ALLOWED_PREFIXES = ("LC_", "MALLOC_")


def child_environment(extra: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a child starts with: the allowlist, `extra` names, CHILD_DEFAULTS."""
    environ = os.environ if environ is None else environ
    allowed = CHILD_ALLOWED | set(extra)
    env = {k: v for k, v in environ.items() if k in allowed or k.startswith(CHILD_ALLOWED_PREFIXES)}
    for key, value in CHILD_DEFAULTS.items():
        env.setdefault(key, value)
    return env


# What check() says when the server is gone: during a shutdown, the stop signal reached it too.
SERVER_EXITED = "the fork server exited"

class LaunchError(Exception):
    pass


@dataclass
class Reports:
    ready: Ready | None = None  # a launcher started with begin_start() is ready now
    started: list[Started] = field(default_factory=list)
    exited: list[Exited] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    # Job children whose fork server died before them, reaped by the supervisor (a subreaper).
    orphaned: list[Exited] = field(default_factory=list)


@dataclass(frozen=True)
class ChildPipes:
    """The parent's ends of a new child's pipes."""

    events: int  # read end of its event pipe (non-blocking)
    keepalive: int  # write end of its keepalive pipe (non-blocking)


class Launcher(Protocol):
    name: str

    def start(self) -> Ready:
        """Get ready to launch (preload, for the fork server), waiting. LaunchError when it cannot."""

    def begin_start(self) -> Ready | None:
        """Start again without waiting: the Ready comes from poll() (None), or at once."""

    def filenos(self) -> list[int]:
        """Readable when poll() has something to report."""

    def launch(self, spec: JobSpec, limits: ChildLimits) -> ChildPipes:
        """Start a child for `spec`; returns the parent's ends of its pipes. Its pid comes as a Started report."""

    def poll(self) -> Reports:
        """What happened since the last call (a launcher that died says so through check())."""

    def on_sigchld(self) -> None:
        """The supervisor received SIGCHLD."""

    def check(self, now: float) -> str | None:
        """Why the launcher must be replaced (it stopped answering), or None."""

    def next_check_at(self) -> float | None:
        """When check() may next have something to say (for the loop's select timeout)."""

    def kill(self) -> list[str]:
        """Kill the launcher at once, whatever state it is in. Returns the jobs it had not
        started; the exits of those it had started still come through poll()."""

    def stop(self) -> None:
        """Kill whatever children are left and release the launcher."""


def _spec_memfd(spec: JobSpec) -> int:
    fd = os.memfd_create(f"docsuper-spec-{spec.job_id[:8]}", os.MFD_CLOEXEC)
    os.write(fd, spec.to_json().encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _event_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_fd, False)
    return read_fd, write_fd


def _keepalive_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)  # a child too busy to read must never block the loop
    return read_fd, write_fd


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class ForkServerLauncher:
    """The fork server, supervised: a start it does not acknowledge within ACK_TIMEOUT_S,
    or a Ping it does not answer, gets it killed and replaced. The supervisor is a child
    subreaper, so when the server dies its job children (killed by their PDEATHSIG, or
    exited already) come back to it and are reaped here with their real wait status."""

    name = "forkserver"
    ACK_TIMEOUT_S = 5.0
    PING_EVERY_S = 2.0

    def __init__(self, preload: Sequence[str], child_env: dict[str, str], ready_timeout_s: float = 120.0) -> None:
        self.preload = preload
        self.child_env = child_env
        self.ready_timeout_s = ready_timeout_s
        self.sock: socket.socket | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._jobs: dict[int, str] = {}  # started job children: pid -> job id
        self._unacked: dict[str, float] = {}  # job id -> when its Start was sent
        self._ping: tuple[int, float] | None = None  # (seq, sent at) of the Ping awaiting its Pong
        self._ping_seq = 0
        self._next_ping = 0.0
        self._gone = False  # the server closed its end: it died
        self._starting_since: float | None = None  # begin_start() and no Ready yet
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def start(self) -> Ready:
        self._spawn()
        message = self._receive(timeout=self.ready_timeout_s)
        if not isinstance(message, Ready):
            raise LaunchError(f"fork server did not start: {message}")
        return self._on_ready(message)

    def begin_start(self) -> Ready | None:
        self._spawn()
        self._starting_since = time.monotonic()
        return None

    def _on_ready(self, message: Ready) -> Ready:
        self._starting_since = None
        if message.threads > 1:
            self.stop()
            culprits = [f"{name} ({why})" for name, why in message.failed.items()]
            raise LaunchError("the fork server would have to fork with threads running: remove "
                              f"{', '.join(culprits) or 'the module that starts one'} from workers.preload")
        return message

    def _spawn(self) -> None:
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # a dead server's children come back to us, not to init
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "docsuper.passes.forkserver", str(theirs.fileno()), str(os.getpid()),
             ",".join(self.preload)],
            pass_fds=[theirs.fileno()], env=self.child_env, stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock = ours
        self.sock.setblocking(False)
        self._ping = None
        self._gone = False

    def _receive(self, timeout: float | None) -> object:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            self.kill()
            raise LaunchError("fork server did not answer in time") from None
        finally:
            if self.sock is not None:
                self.sock.setblocking(False)
        if not data:
            raise LaunchError(f"fork server exited (code {self.process.poll() if self.process else '?'})")
        return decode_message(data)

    def filenos(self) -> list[int]:
        return [self._wake_r] + ([self.sock.fileno()] if self.sock is not None else [])

    def _send(self, message: ServerMessage, fds: list[int] | None = None) -> None:
        if self.sock is None:
            raise LaunchError("the fork server is gone")
        try:
            socket.send_fds(self.sock, [encode_message(message)], fds or [])
        except OSError as exc:
            raise LaunchError(f"cannot reach the fork server: {exc}") from None

    def launch(self, spec: JobSpec, limits: ChildLimits) -> ChildPipes:
        read_fd, write_fd = _event_pipe()
        keepalive_r, keepalive_w = _keepalive_pipe()
        spec_fd = _spec_memfd(spec)
        try:
            self._send(Start(spec.job_id, limits), [write_fd, spec_fd, keepalive_r])
        except LaunchError:
            _close(read_fd, keepalive_w)
            raise
        finally:
            _close(write_fd, spec_fd, keepalive_r)
        self._unacked[spec.job_id] = time.monotonic()
        return ChildPipes(read_fd, keepalive_w)

    def poll(self) -> Reports:
        drain_pipe(self._wake_r)
        reports = Reports()
        while self.sock is not None:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not data:
                self._gone = True  # check() reports it, after the reports read so far are handled
                break
            message = decode_message(data)
            if isinstance(message, Started):
                self._unacked.pop(message.job_id, None)
                self._jobs[message.pid] = message.job_id
                reports.started.append(message)
            elif isinstance(message, Exited):
                self._jobs.pop(message.pid, None)
                reports.exited.append(message)
            elif isinstance(message, Refused):
                self._unacked.pop(message.job_id, None)
                reports.refused.append(message)
            elif isinstance(message, Pong) and self._ping is not None and message.seq == self._ping[0]:
                self._ping = None
            elif isinstance(message, Ready):
                reports.ready = self._on_ready(message)
        # After the server's own reports: a job child reparented to us means its server died.
        reports.orphaned = [Exited(p, s) for p, s in reap_jobs(self._jobs)]
        return reports

    def on_sigchld(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def check(self, now: float) -> str | None:
        if self.sock is None:
            return None
        if self._gone:
            return SERVER_EXITED
        if self._starting_since is not None:
            if now - self._starting_since > self.ready_timeout_s:
                return f"the fork server did not finish preloading within {self.ready_timeout_s:g} s"
            return None
        late = [job_id for job_id, sent in self._unacked.items() if now - sent > self.ACK_TIMEOUT_S]
        if late:
            return f"the fork server did not acknowledge a start within {self.ACK_TIMEOUT_S:g} s"
        if self._ping is not None and now - self._ping[1] > self.ACK_TIMEOUT_S:
            return f"the fork server did not answer a ping within {self.ACK_TIMEOUT_S:g} s"
        if self._ping is None and (self._jobs or self._unacked) and now >= self._next_ping:
            self._ping_seq += 1
            self._ping = (self._ping_seq, now)
            self._next_ping = now + self.PING_EVERY_S
            try:
                self._send(Ping(self._ping_seq))
            except LaunchError as exc:
                return str(exc)
        return None

    def next_check_at(self) -> float | None:
        if self._gone:
            return time.monotonic()
        if self._starting_since is not None:
            return self._starting_since + self.ready_timeout_s
        moments = [sent + self.ACK_TIMEOUT_S for sent in self._unacked.values()]
        if self._ping is not None:
            moments.append(self._ping[1] + self.ACK_TIMEOUT_S)
        elif self._jobs or self._unacked:
            moments.append(self._next_ping)
        return min(moments) if moments and self.sock is not None else None

    def kill(self) -> list[str]:
        if self.process is not None:
            try:
                self.process.kill()  # SIGKILL works on a stopped process too
            except OSError:
                pass
            self.process = None  # reaped by poll()'s reap_jobs with the orphans
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        unstarted, self._unacked = list(self._unacked), {}
        self._ping = None
        self._starting_since = None
        return unstarted

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the server kills what is left and exits
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:  # stopped or wedged: it goes anyway
                self.process.kill()
                self.process.wait()
            self.process = None
        for pid in list(self._jobs):  # children of a server killed earlier, if any are left
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        reap_jobs(self._jobs)


class SpawnLauncher:
    """A fresh interpreter per job. Slower to start, shares nothing; the fallback and the baseline."""

    name = "spawn"

    def __init__(self, child_env: dict[str, str]) -> None:
        self.child_env = child_env
        self._jobs: dict[int, str] = {}  # pid -> job id
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._started: list[Started] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def start(self) -> Ready:
        # Orphans of our job children come back to us, so the tree walk still finds them.
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        return Ready(pid=os.getpid(), preloaded=[], failed={})

    def begin_start(self) -> Ready | None:
        return self.start()

    def filenos(self) -> list[int]:
        return [self._wake_r]

    def on_sigchld(self) -> None:
        self._wake()

    def check(self, now: float) -> str | None:
        return None  # nothing between the supervisor and its children to stop answering

    def next_check_at(self) -> float | None:
        return None

    def kill(self) -> list[str]:
        for pid in list(self._jobs):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        return []

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def launch(self, spec: JobSpec, limits: ChildLimits) -> ChildPipes:
        read_fd, write_fd = _event_pipe()
        keepalive_r, keepalive_w = _keepalive_pipe()
        spec_fd = _spec_memfd(spec)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "docsuper.passes.child", str(spec_fd), str(write_fd), str(keepalive_r),
                 str(os.getpid()), str(limits.kernel_limit_mb), limits.cgroup or ""],
                pass_fds=[spec_fd, write_fd, keepalive_r], env={**self.child_env, JOB_MARKER: spec.job_id},
                stdin=subprocess.DEVNULL, process_group=0,
            )
        except OSError as exc:
            _close(read_fd, keepalive_w)
            raise LaunchError(f"cannot start a child: {exc}") from None
        finally:
            _close(write_fd, spec_fd, keepalive_r)
        self._jobs[process.pid] = spec.job_id
        self._processes[process.pid] = process
        self._started.append(Started(spec.job_id, process.pid))
        self._wake()
        return ChildPipes(read_fd, keepalive_w)

    def poll(self) -> Reports:
        drain_pipe(self._wake_r)
        reports = Reports(started=self._started, exited=[Exited(p, s) for p, s in reap_jobs(self._jobs)])
        self._started = []
        for exit in reports.exited:
            self._processes.pop(exit.pid).returncode = os.waitstatus_to_exitcode(exit.status)  # reaped here
        return reports

    def stop(self) -> None:
        for pid in list(self._jobs):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.poll()


def make_launcher(start_method: str, preload: Sequence[str], child_env: dict[str, str]) -> Launcher:
    if start_method == "forkserver":
        return ForkServerLauncher(preload, child_env)
    return SpawnLauncher(child_env)
