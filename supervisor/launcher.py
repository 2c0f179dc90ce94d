"""Starting job children: from the fork server (default) or as fresh interpreters.

Both launchers hand back the child's pid and the read end of its event pipe, and
report starts and exits through `poll()`, which the supervisor calls when
`fileno()` is readable. The fork server answers a launch asynchronously: forking
a process that maps the document libraries takes milliseconds, and the
supervisor does other work meanwhile. The spec travels in a memfd, so its size (resume data
of a long document) never blocks the supervisor on a pipe.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from .procs import PR_SET_CHILD_SUBREAPER, drain_pipe, prctl, reap_jobs
from .protocol import JobSpec

# glibc and the numeric libraries read these when a process starts, so they must be
# in place before the fork server (or a spawned child) begins, not set by a pass.
CHILD_ENVIRONMENT = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "4194304",
    # Setting the mmap threshold freezes the trim threshold at 128 KB otherwise (docs/ocr.md).
    "MALLOC_TRIM_THRESHOLD_": "33554432",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


class LaunchError(Exception):
    pass


@dataclass
class Reports:
    started: list[tuple[str, int]] = field(default_factory=list)  # (job id, pid)
    exited: list[tuple[int, int]] = field(default_factory=list)  # (pid, wait status)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (job id, why)


def _exit_of(message: dict[str, Any]) -> tuple[int, int]:
    return message["pid"], message["status"]


def child_environment() -> dict[str, str]:
    env = dict(os.environ)
    for key, value in CHILD_ENVIRONMENT.items():
        env.setdefault(key, value)
    return env


def _spec_memfd(spec: JobSpec) -> int:
    fd = os.memfd_create(f"docsuper-spec-{spec.job_id[:8]}", os.MFD_CLOEXEC)
    os.write(fd, spec.to_json().encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _event_pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(read_fd, False)
    return read_fd, write_fd


class ForkServerLauncher:
    name = "forkserver"

    def __init__(self, preload: list[str], ready_timeout_s: float = 120.0) -> None:
        self.preload = preload
        self.ready_timeout_s = ready_timeout_s
        self.sock: socket.socket | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> dict[str, Any]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "docsuper.passes.forkserver", str(theirs.fileno()), str(os.getpid()),
             ",".join(self.preload)],
            pass_fds=[theirs.fileno()], env=child_environment(), stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock = ours
        message = self._receive(timeout=self.ready_timeout_s)
        if message.get("op") != "ready":
            raise LaunchError(f"fork server did not start: {message}")
        if message.get("threads", 1) > 1:
            self.stop()
            culprits = [f"{name} ({why})" for name, why in message.get("failed", {}).items()]
            raise LaunchError("the fork server would have to fork with threads running: remove "
                              f"{', '.join(culprits) or 'the module that starts one'} from workers.preload")
        return message

    def _receive(self, timeout: float | None) -> dict[str, Any]:
        assert self.sock is not None
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise LaunchError("fork server did not answer in time") from None
        finally:
            self.sock.setblocking(False)
        if not data:
            raise LaunchError(f"fork server exited (code {self.process.poll() if self.process else '?'})")
        return json.loads(data)

    def fileno(self) -> int:
        assert self.sock is not None
        return self.sock.fileno()

    def launch(self, spec: JobSpec, limits: dict[str, Any]) -> tuple[int | None, int]:
        """Ask for a child and return at once: its pid arrives later as a `started` report."""
        assert self.sock is not None
        read_fd, write_fd = _event_pipe()
        spec_fd = _spec_memfd(spec)
        try:
            message = {"op": "start", "job_id": spec.job_id, "limits": limits}
            socket.send_fds(self.sock, [json.dumps(message).encode()], [write_fd, spec_fd])
        except OSError as exc:
            os.close(read_fd)
            raise LaunchError(f"cannot reach the fork server: {exc}") from None
        finally:
            os.close(write_fd)
            os.close(spec_fd)
        return None, read_fd

    def poll(self) -> Reports:
        """What the fork server reported since the last call. LaunchError when it is gone."""
        reports = Reports()
        while True:
            try:
                data = self.sock.recv(65536) if self.sock else b""
            except BlockingIOError:
                return reports
            if not data:
                raise LaunchError("the fork server exited; its children died with it")
            message = json.loads(data)
            if message["op"] == "started":
                reports.started.append((message["job_id"], message["pid"]))
            elif message["op"] == "exited":
                reports.exited.append(_exit_of(message))
            elif message["op"] == "refused":
                reports.refused.append((message["job_id"], message["message"]))

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()  # the server kills what is left and exits
            self.sock = None
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class SpawnLauncher:
    """A fresh interpreter per job. Slower to start, shares nothing; the fallback and the baseline."""

    name = "spawn"

    def __init__(self) -> None:
        self._jobs: dict[int, str] = {}  # pid -> job id
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def start(self) -> dict[str, Any]:
        # Orphans of our job children come back to us, so the tree walk still finds them.
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        return {"op": "ready", "pid": os.getpid(), "preloaded": [], "failed": {}}

    def fileno(self) -> int:
        return self._wake_r

    def on_sigchld(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def launch(self, spec: JobSpec, limits: dict[str, Any]) -> tuple[int | None, int]:
        read_fd, write_fd = _event_pipe()
        spec_fd = _spec_memfd(spec)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "docsuper.passes.child", str(spec_fd), str(write_fd), str(os.getpid()),
                 str(limits["kernel_limit_mb"])],
                pass_fds=[spec_fd, write_fd], env=child_environment(), stdin=subprocess.DEVNULL,
                process_group=0,
            )
        except OSError as exc:
            os.close(read_fd)
            raise LaunchError(f"cannot start a child: {exc}") from None
        finally:
            os.close(write_fd)
            os.close(spec_fd)
        self._jobs[process.pid] = spec.job_id
        self._processes[process.pid] = process
        return process.pid, read_fd

    def poll(self) -> Reports:
        drain_pipe(self._wake_r)
        reports = Reports(exited=reap_jobs(self._jobs))
        for pid, status in reports.exited:
            self._processes.pop(pid).returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        return reports

    def stop(self) -> None:
        for pid in list(self._jobs):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        self.poll()


def make_launcher(start_method: str, preload: list[str]) -> ForkServerLauncher | SpawnLauncher:
    return ForkServerLauncher(preload) if start_method == "forkserver" else SpawnLauncher()
