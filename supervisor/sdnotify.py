"""systemd's notify protocol, with the standard library only.

Under `Type=notify` systemd hands the service a datagram socket in
`$NOTIFY_SOCKET` (a path, or an abstract-namespace name written with a leading
`@`) and reads newline-separated `KEY=VALUE` assignments from it: `READY=1` when
start-up is done, `STATUS=` for `systemctl status`, `WATCHDOG=1` as a keep-alive
when `WatchdogSec=` is set (it then passes the period in `$WATCHDOG_USEC`), and
`STOPPING=1` when shutdown begins. See sd_notify(3).

Sending never raises: a service must run the same with or without systemd.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Mapping, MutableMapping

NOTIFY_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def socket_address(name: str) -> str | bytes:
    """The address to sendto(): `@name` is Linux's abstract namespace (a leading NUL byte)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """How often to send WATCHDOG=1: half of `$WATCHDOG_USEC` as sd_watchdog_enabled(3)
    advises, or None when no watchdog is asked of this process (unset, invalid, or
    `$WATCHDOG_PID` names another process)."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 1e6 / 2


class Notifier:
    """Talks to systemd when `$NOTIFY_SOCKET` is set; does nothing otherwise.

    It takes the three variables out of the environment (as sd_notify's
    `unset_environment` does), so that the fork server and the job children never
    see them: a child's message would otherwise be read as the service's own.
    """

    def __init__(self, environ: MutableMapping[str, str] | None = None, pid: int | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = socket_address(env["NOTIFY_SOCKET"]) if env.get("NOTIFY_SOCKET") else None
        self.watchdog_s = watchdog_interval_s(env, os.getpid() if pid is None else pid)
        for name in NOTIFY_VARS:
            env.pop(name, None)
        self.sock: socket.socket | None = None
        if self.address is not None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.next_ping = 0.0
        self.last_status: str | None = None
        self.errors = 0

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, *assignments: str) -> bool:
        if self.sock is None or not assignments:
            return False
        try:
            self.sock.sendto("\n".join(assignments).encode(), self.address)  # type: ignore[arg-type]
            return True
        except OSError:
            self.errors += 1  # systemd restarting or the socket gone: the next message may pass
            return False

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []), f"MAINPID={os.getpid()}")
        self.last_status = status

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self.send(f"STATUS={text}")

    def ping(self, now: float | None = None) -> None:
        """WATCHDOG=1 when due. Call it from the loop only: a loop that stops turning
        stops the pings, and systemd kills and restarts the service."""
        if self.watchdog_s is None:
            return
        now = time.monotonic() if now is None else now
        if now >= self.next_ping:
            self.next_ping = now + self.watchdog_s
            self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> None:
        self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
