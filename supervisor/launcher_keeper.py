"""The launcher's lifecycle: started, checked, replaced when it fails, restarted after a delay.

A fork server that stops answering or dies is killed and replaced; its jobs go
back to the queue without using an attempt. A replacement that dies at once is
restarted after a delay that doubles while they keep dying, and preloads while
the loop goes on. What a launcher coming up or going away means for the budget
and the children is the supervisor's: it is told through `on_ready` and `on_lost`.
"""

from __future__ import annotations

import time
from typing import Callable

from .launcher import SERVER_EXITED, Launcher
from .logs import Logger
from .protocol import Ready

RESTART_DELAY_S = 0.5  # before a replacement fork server starts; doubles while they keep dying
MAX_RESTART_DELAY_S = 30.0


class LauncherKeeper:
    def __init__(self, launcher: Launcher, logger: Logger, stopping: Callable[[], bool],
                 on_ready: Callable[[Ready], None], on_lost: Callable[[set[str], str], None]) -> None:
        """`stopping()`: whether the supervisor is shutting down (nothing is replaced then);
        `on_ready(ready)`: a launcher is ready to launch; `on_lost(unstarted, reason)`: the
        launcher was killed, with the jobs it had not started."""
        self.launcher = launcher
        self.log = logger
        self._stopping = stopping
        self._on_ready = on_ready
        self._on_lost = on_lost
        self.killed = False
        self.up = False  # ready to launch: False while a replacement preloads
        self.restart_delay = RESTART_DELAY_S
        self.restart_at: float | None = None  # when to start a replacement launcher

    def start(self) -> None:
        self.ready(self.launcher.start())

    def ready(self, ready: Ready) -> None:
        self.up = True
        self.restart_delay = RESTART_DELAY_S
        if ready.failed:
            self.log.warning("preload_incomplete", failed=ready.failed)
        self._on_ready(ready)

    def check(self, now: float) -> None:
        problem = self.launcher.check(now)
        if problem is None:
            return
        if self._stopping() and problem == SERVER_EXITED:
            # A stop signal sent to the whole process group (systemd, Ctrl-C) reached the server
            # too, and it shut down as asked: expected, and nothing to replace it for.
            self.log.info("launcher_exited", reason="shutting down", start_method=self.launcher.name)
            self.release(problem)
        else:
            self.replace(problem)

    def replace(self, reason: str) -> None:
        """Kill the launcher whatever it is doing; its jobs go back to the queue without using
        an attempt (a child that already reported its result still succeeds); start a new one."""
        self.log.error("launcher_replaced", reason=reason, start_method=self.launcher.name,
                       restarting=not self._stopping())
        self.release(reason)
        if not self._stopping():  # a server that dies at once is restarted after a growing delay
            self.restart_at = time.monotonic() + self.restart_delay
            self.restart_delay = min(self.restart_delay * 2, MAX_RESTART_DELAY_S)

    def release(self, reason: str) -> None:
        """Kill what is left of the launcher; the jobs it had not started, or whose children die
        with it, go back to the queue without using an attempt."""
        unstarted = set(self.launcher.kill())
        self.killed = True
        self._on_lost(unstarted, reason)
        self.up = False

    def restart(self, now: float) -> None:
        if self.restart_at is None or now < self.restart_at or self._stopping():
            return
        self.restart_at = None
        self.killed = False
        ready = self.launcher.begin_start()  # the fork server preloads while the loop goes on
        if ready is not None:
            self.ready(ready)
