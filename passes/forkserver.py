"""The fork server (zygote): imports the document libraries once, then forks one child per job.

The supervisor starts it as a fresh interpreter (`python -m docsuper.passes.forkserver FD`)
and talks to it over a SOCK_SEQPACKET socket:

    server     → Ready                        once, after preloading
    supervisor → Start + fds [event pipe, spec memfd, keepalive pipe]
    server     → Started (job, pid)  or  Refused (job, why)
    server     → Exited (pid, wait status)    whenever a job child is reaped
    supervisor → Ping   server → Pong          the supervisor's liveness check

(the types are in docsuper.supervisor.protocol, the one module both sides share).

Why a separate process: the supervisor runs threads (queue drivers, HTTP) and must
never import the document libraries, and a fork copies only the calling thread.
This process stays single-threaded (it checks before every fork) and never opens
a document, so every child starts from the same clean, preloaded state and shares
those pages with its siblings until it writes to them.

It is a child subreaper: processes that a job starts and orphans are reparented
here, not to init, so the supervisor's tree walk still finds them. When the
supervisor goes away (socket closed or PDEATHSIG) it kills every job's process
group and exits.
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import signal
import socket
import sys
import time

from docsuper.supervisor.protocol import (
    PR_SET_CHILD_SUBREAPER,
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
    descendants_of,
    drain_pipe,
    encode_message,
    kill_cgroup,
    prctl,
    reap_jobs,
)

from . import child

MAX_MESSAGE = 65536


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


class ForkServer:
    def __init__(self, sock: socket.socket, preload: list[str]) -> None:
        self.sock = sock
        self.preload = preload
        self.jobs: dict[int, str] = {}  # live job children: pid -> job id
        self.cgroups: dict[int, str] = {}  # their cgroups, where the box gives each job one
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def send(self, message: ServerMessage) -> None:
        try:
            self.sock.send(encode_message(message))
        except OSError:
            self.shutdown()

    def preload_modules(self) -> Ready:
        loaded: list[str] = []
        failed: dict[str, str] = {}
        started = time.monotonic()
        for name in self.preload:
            try:
                importlib.import_module(name)
                loaded.append(name)
            except Exception as exc:  # a missing optional library must not stop the server
                failed[name] = f"{type(exc).__name__}: {exc}"
            if _threads() > 1:
                failed[name] = "started a thread at import; fork would be unsafe"
                break
        from . import api, diagnostic  # noqa: F401  (cheap, and every selftest child uses it)

        api.available_passes()  # warm the entry-point scan once for all children
        # Everything imported so far is shared with the children. Frozen, the garbage
        # collector never walks it in a child, so it is not copied page by page on write.
        gc.collect()
        gc.freeze()
        return Ready(os.getpid(), loaded, failed, _threads(), round(time.monotonic() - started, 3))

    def shutdown(self, *_: object) -> None:
        """The supervisor is gone: kill every job, all it started included (its cgroup, else its tree)."""
        for pid in list(self.jobs):
            if pid in self.cgroups:
                kill_cgroup(self.cgroups[pid])
            for descendant in descendants_of(pid):
                try:
                    os.kill(descendant, signal.SIGKILL)
                except OSError:
                    pass
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        os._exit(0)

    def reap(self) -> None:
        for pid, status in reap_jobs(self.jobs):
            self.cgroups.pop(pid, None)
            self.send(Exited(pid, status))

    def start_job(self, message: Start, fds: list[int]) -> None:
        refusal = None
        if len(fds) != 3:
            refusal = f"a start needs 3 descriptors (events, spec, keepalive), got {len(fds)}"
        elif _threads() > 1:
            refusal = f"fork server has {_threads()} threads; refusing to fork"
        if refusal is not None:
            for fd in fds:
                os.close(fd)
            self.send(Refused(message.job_id, refusal))
            return
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            self._become_child(message, server_pid, fds)
        for fd in fds:
            os.close(fd)
        self.jobs[pid] = message.job_id
        if message.limits.cgroup:
            self.cgroups[pid] = message.limits.cgroup
        self.send(Started(message.job_id, pid))

    def _become_child(self, message: Start, server_pid: int, fds: list[int]) -> None:
        event_fd, spec_fd, keepalive_fd = fds
        code = 1
        try:
            for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
                signal.signal(signum, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            self.sock.close()
            os.close(self.wake_r)
            os.close(self.wake_w)
            os.setpgid(0, 0)
            child.die_with_parent(server_pid)
            child.apply_limits(message.limits)
            child.stdout_to_stderr()
            with os.fdopen(spec_fd, "rb") as fh:
                spec = JobSpec.from_json(fh.read())
            code = child.run_job(spec, event_fd, keepalive_fd, message.limits.cgroup)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self.shutdown)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the supervisor to handle
        self.send(self.preload_modules())
        while True:
            readable, _, _ = select.select([self.sock.fileno(), self.wake_r], [], [])
            if self.wake_r in readable:
                drain_pipe(self.wake_r)
                self.reap()
            if self.sock.fileno() in readable:
                data, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 3)
                if not data:
                    self.shutdown()
                message = decode_message(data)
                if isinstance(message, Start):
                    self.start_job(message, fds)
                elif isinstance(message, Ping):
                    self.send(Pong(message.seq))


def main() -> None:
    from .child import die_with_parent

    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    preload = [m for m in sys.argv[3].split(",") if m] if len(sys.argv) > 3 else []
    die_with_parent(parent_pid, signal.SIGTERM)  # SIGTERM: shutdown() kills the job groups first
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    sock = socket.socket(fileno=fd)
    ForkServer(sock, preload).serve()


if __name__ == "__main__":
    main()
