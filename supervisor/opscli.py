"""The operator's commands: `docsuper healthcheck` and `docsuper top`.

Registered on the main command group by cli.py (`register(main, Failure)`), so the
group's `--config` and its one-line errors apply to them as to every command.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

import click

from .queue.base import QueueError, SchemaOutdated, open_queue


def register(group: click.Group, failure: Callable[[str], Exception]) -> None:
    @group.command()
    @click.option("--worker", "need_worker", is_flag=True,
                  help="also require a live worker on this host that heartbeated recently")
    @click.option("--any-host", is_flag=True, help="with --worker: a live worker on any host will do")
    @click.option("--max-age", type=click.FloatRange(min=0.1), default=None,
                  help="seconds since the worker's last heartbeat (default: 3 × queue.heartbeat_s, at least 30)")
    @click.pass_obj
    def healthcheck(state: Any, need_worker: bool, any_host: bool, max_age: float | None) -> None:
        """Exit 0 when the queue is reachable and its schema current (and, with --worker, a worker is alive).

        Otherwise one line saying what failed, and exit 1: a container's health probe."""
        cfg = state.config
        try:
            with open_queue(cfg.queue.url, cfg.queue.schema, listen=False) as queue:
                queue.check_schema()
                workers = queue.workers() if need_worker else []
        except SchemaOutdated as exc:
            raise failure(f"unhealthy: {exc}") from None
        except QueueError as exc:
            raise failure(f"unhealthy: queue unreachable: {exc}") from None
        said = "queue reachable, schema current"
        if need_worker:
            host = socket.gethostname()
            limit = max_age if max_age is not None else max(30.0, 3 * cfg.queue.heartbeat_s)
            candidates = workers if any_host else [w for w in workers if w.host == host]
            where = "any host" if any_host else host
            if not candidates:
                raise failure(f"unhealthy: no worker registered on {where}")
            now = time.time()
            freshest = max(candidates, key=lambda w: w.last_seen)
            age = now - freshest.last_seen
            if age > limit:
                raise failure(f"unhealthy: no live worker on {where}: the last heartbeat "
                              f"({freshest.id}) was {age:.0f} s ago, more than {limit:g} s")
            said += f", worker {freshest.id} heartbeated {max(age, 0):.0f} s ago"
        click.echo(f"ok: {said}")

    @group.command()
    @click.option("--url", default=None,
                  help="the worker's HTTP address (default: http://127.0.0.1:$PORT from http.port)")
    @click.option("--interval", type=click.FloatRange(min=0.2), default=1.0, show_default=True,
                  help="seconds between redraws")
    @click.option("--once", is_flag=True, help="print one frame and exit")
    @click.pass_obj
    def top(state: Any, url: str | None, interval: float, once: bool) -> None:
        """A live view of this host's worker: running jobs and their memory, the box budget, the queue."""
        from .top import picture_source, run_top

        cfg = state.config
        if url is None and cfg.http.port:
            url = f"http://127.0.0.1:{cfg.http.port}"
        source = picture_source(url, cfg.http.token,
                                lambda: open_queue(cfg.queue.url, cfg.queue.schema, listen=False))
        run_top(source, interval=interval, once=once)
