"""One JSON object per line on stdout: what the operator greps and Render's log view shows.

Every string in a record goes through `redact`: a log line is read by more people,
and kept longer, than any secret should be."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Callable, TextIO

from .redact import redact_value

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger:
    def __init__(self, level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
        self.threshold = LEVELS[level]
        self.fmt = fmt
        self.stream = stream or sys.stdout

    def log(self, level: str, event: str, **fields: Any) -> None:
        if LEVELS[level] < self.threshold:
            return
        fields = {key: redact_value(value) for key, value in fields.items()}
        record = {"ts": round(time.time(), 3), "level": level, "event": event, **fields}
        if self.fmt == "json":
            line = json.dumps(record, default=str, separators=(",", ":"))
        else:
            extras = " ".join(f"{k}={v}" for k, v in fields.items())
            line = f"{time.strftime('%H:%M:%S')} {level:<7} {event} {extras}"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):
            pass

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)

    def debug(self, event: str, **fields: Any) -> None:
        self.log("debug", event, **fields)



class OutageLog:
    """One `queue_unavailable` line when the queue goes away and one `queue_available` line when it
    answers again, however many calls fail in between (a full disk or a database restart would
    otherwise log every heartbeat, claim and retry). The failures in between count in `failures`."""

    def __init__(self, logger: Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._clock = clock
        self.since: float | None = None
        self.failures = 0

    def away(self, action: str, error: BaseException | str, **fields: Any) -> None:
        self.failures += 1
        if self.since is None:
            self.since = self._clock()
            self._log.warning("queue_unavailable", action=action, error=str(error), **fields)

    def back(self) -> None:
        if self.since is not None:
            self._log.info("queue_available", after_s=round(self._clock() - self.since, 1), failures=self.failures)
            self.since, self.failures = None, 0
