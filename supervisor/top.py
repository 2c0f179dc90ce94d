"""`docsuper top`: the live picture in a terminal, redrawn every second.

Where the figures come from: `top` is another process than the daemon, and a
job's memory changes ten times a second inside the daemon only (its watchdog
reads it); the queue holds a job's *peak*, written at heartbeats. So `top` reads
the daemon's own picture from its HTTP endpoint (`/api/live`, the same one the
dashboard draws): live memory per job, the box budget and what holds it, and the
queue's numbers the daemon reads on its own connection. Writing live memory to
the shared database every second for every job instead would put that load on
Supabase for the sake of a viewer. When no daemon answers on this host (HTTP off,
or `top` run elsewhere), `top` reads the queue directly and says the memory
figures are peaks from the last heartbeat.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .picture import queue_picture
from .queue.base import JOB_STATES, Queue, QueueError

BAR_WIDTH = 20


class Unreachable(Exception):
    pass


def fetch_live(url: str, token: str = "", timeout: float = 2.0) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + "/api/live")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise Unreachable(f"{url} answered {exc.code}: {exc.read().decode(errors='replace').strip()[:200]}") from None
    except (OSError, ValueError) as exc:
        raise Unreachable(f"{url}: {getattr(exc, 'reason', exc)}") from None


def from_queue(queue: Queue) -> dict[str, Any]:
    """The picture without a daemon: running jobs and their peaks as the last heartbeat left them."""
    q = queue_picture(queue)
    running = [{**r, "uss_mb": None, "pass": (r["passes"] or [None])[0], "cap_mb": None,
                "seconds": time.time() - r["started_at"] if r["started_at"] else None} for r in q["running"]]
    return {"running": running, "queue": q, "outcomes": q["finished"], "box": None}


def memory_bar(mb: float | None, cap: float | None, width: int = BAR_WIDTH) -> Text:
    if mb is None or not cap:
        return Text("-")
    filled = min(width, round(width * mb / cap))
    style = "red" if mb >= 0.9 * cap else "yellow" if mb >= 0.7 * cap else "green"
    return Text.assemble(("█" * filled, style), ("░" * (width - filled), "dim"), f" {mb:4.0f}/{cap:.0f} MB")


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} MB"


def _pass(r: dict[str, Any]) -> str:
    """The pass it runs, and "×2" while it reads two pages at once on a lent core."""
    readers = r.get("readers") or 1
    return (r.get("pass") or "-") + (f" ×{readers}" if readers > 1 else "")


def _pages(r: dict[str, Any]) -> str:
    if r.get("done") is None:
        return "-"
    return f"{r['done']}/{r['total']}" if r.get("total") is not None else str(r["done"])


def _ago(t: float | None, now: float) -> str:
    if not t:
        return "-"
    s = now - t
    if s < 0:
        return f"in {-s:.0f}s"
    return f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago"


def render(picture: dict[str, Any], note: str = "", now: float | None = None) -> Group:
    now = time.time() if now is None else now
    q = picture.get("queue") or {}
    box = picture.get("box")
    running = picture.get("running") or []
    parts: list[Any] = []
    head = Text.assemble(("docsuper top", "bold"), f"  {picture.get('worker') or 'queue'}  ",
                         (time.strftime("%H:%M:%S", time.localtime(now)), "dim"))
    if picture.get("stopping"):
        head.append("  stopping", style="bold yellow")
    parts.append(head)
    if note:
        parts.append(Text(note, style="yellow"))
    if box:
        parts.append(Text.assemble(
            "box    ", memory_bar(box["children_mb"], box["budget_mb"], 30),
            f" budget used by children · {len(running)}/{box['concurrency']} slots busy"))
        parts.append(Text(
            f"       held for running jobs {box['held_mb']:.0f} MB · supervisor {box['parent_rss_mb']:.0f} MB"
            f" · fork server {box['server_rss_mb']:.0f} MB · cap {box['job_limit_mb']} MB per job", style="dim"))
    counts = q.get("counts") or {}
    line = "  ".join(f"{s} {counts.get(s, 0)}" for s in JOB_STATES if s in counts)
    if q.get("oldest_queued_s"):
        line += f"  oldest queued {q['oldest_queued_s']:.0f}s"
    parts.append(Text("queue  " + (line or "-") + (f"  ({q['error']})" if q.get("error") else "")))

    table = Table(title="running", title_justify="left", expand=False, show_edge=False, pad_edge=False)
    for column in ("job", "document", "pass", "pages", "memory", "peak", "try", "for"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", max_width=40 if column == "document" else None)
    for r in running:
        live = r.get("uss_mb") is not None
        table.add_row(r["job_id"][:8], r.get("document") or "-", _pass(r), _pages(r),
                      memory_bar(r["uss_mb"], r["cap_mb"]) if live else Text("peak only: see peak", style="dim"),
                      _mb(r.get("peak_mb")), f"{r.get('attempt')}/{r.get('max_attempts')}",
                      f"{r['seconds']:.0f}s" if r.get("seconds") is not None else "-")
    if not running:
        table.add_row("-", "nothing running", "", "", "", "", "", "")
    parts.append(table)

    outcomes = Table(title="last outcomes", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("job", "outcome", "peak", "seconds", "document", "error"):
        outcomes.add_column(column, no_wrap=True, overflow="ellipsis", max_width=50 if column == "error" else None)
    for r in (picture.get("outcomes") or [])[:8]:
        style = "green" if r.get("outcome") == "succeeded" else "red"
        outcomes.add_row(r["job_id"][:8], Text(r.get("outcome") or "-", style=style), _mb(r.get("peak_mb")),
                         f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-", r.get("document") or "-",
                         (r.get("error") or "")[:200])
    parts.append(outcomes)

    dead = Table(title=f"dead letters ({counts.get('dead', 0)})", title_justify="left", show_edge=False,
                 pad_edge=False)
    for column in ("job", "outcome", "tries", "dead", "document", "error"):
        dead.add_column(column, no_wrap=True, overflow="ellipsis", max_width=60 if column == "error" else None)
    for r in (q.get("dead") or [])[:5]:
        dead.add_row(r["job_id"][:8], r.get("outcome") or "-", f"{r.get('attempt')}/{r.get('max_attempts')}",
                     _ago(r.get("dead_at"), now), r.get("document") or "-", (r.get("error") or "")[:200])
    parts.append(dead)
    retrying = q.get("retrying") or []
    if retrying:
        parts.append(Text("retrying  " + "  ".join(
            f"{r['job_id'][:8]} {_ago(r['next_retry_at'], now)}" for r in retrying[:6])))
    return Group(*parts)


def run_top(source: Callable[[], tuple[dict[str, Any], str]], interval: float = 1.0, once: bool = False,
            console: Console | None = None) -> None:
    """Draw `source()` (picture, note) every `interval` seconds until Ctrl-C."""
    console = console or Console()
    if once:
        console.print(render(*source()))
        return
    with Live(render(*source()), console=console, auto_refresh=False, screen=True) as live:
        try:
            while True:
                time.sleep(interval)  # the refresh period itself, not a wait for some condition
                live.update(render(*source()), refresh=True)
        except KeyboardInterrupt:
            pass


def picture_source(url: str | None, token: str, open_queue: Callable[[], Queue]) -> Callable[[], tuple[dict, str]]:
    """The daemon's live picture when it answers, else the queue's."""
    queue: list[Queue] = []

    def source() -> tuple[dict[str, Any], str]:
        problem = "HTTP is off (http.port = 0)"
        if url:
            try:
                return fetch_live(url, token), ""
            except Unreachable as exc:
                problem = str(exc)
        try:
            if not queue:
                queue.append(open_queue())
            return from_queue(queue[0]), f"no live memory ({problem}): peaks from the queue's last heartbeat"
        except QueueError as exc:
            if queue:
                queue.pop().close()
            return {}, f"no worker answered ({problem}) and the queue is unreachable: {exc}"

    return source
