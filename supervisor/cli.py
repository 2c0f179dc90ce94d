"""`docsuper`: the command line. Every error is one line and an exit code, never a traceback."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit
from typing import Any, Callable, NoReturn, Sequence

import click
from click.core import ParameterSource

from docsuper import __version__

from .client import Client
from .config import Config, ConfigError, describe, load_config
from .picture import document_name, next_retry_at
from .redact import redact, redact_value, remember
from .queue.base import FINAL_STATES, JOB_STATES, InvalidJob, Job, NewJob, Queue, QueueError, SchemaOutdated, open_queue

EXIT_USAGE = 2
# PostgreSQL's `integer` column; SQLite would overflow at 2**63 with a traceback.
PRIORITY_LIMIT = 2**31 - 1
# Built-in passes that read the job's document, so a job without one can only fail.
DOCUMENT_PASSES = frozenset({"ocr"})


class Failure(Exception):
    """An operator-facing error: one line on stderr, exit 1 (or the code given: 2 for usage and configuration)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _one_line(text: str) -> str:
    return " ".join(text.split())


class DocsuperGroup(click.Group):
    """click's group, with every error as one line: click's own usage errors (four lines and a
    blank by default) included, and nothing ever as a traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except Failure as exc:
            _fail(exc.message, exc.exit_code)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "docsuper"
            _fail(f"{_one_line(exc.format_message())} (see {where} --help)", EXIT_USAGE, prefix=where)
        except click.ClickException as exc:
            _fail(_one_line(exc.format_message()), exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except BrokenPipeError:
            # The reader went away (`docsuper list | head`): nothing more to say, and nowhere to say it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as exc:  # a bug, or a failure nobody foresaw: still one line, with where it happened
            if os.environ.get("DOCSUPER_TRACEBACK"):
                raise
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            _fail(f"unexpected {type(exc).__name__}: {exc} (at {Path(frame.filename).name}:{frame.lineno}; "
                  "DOCSUPER_TRACEBACK=1 shows the traceback)", 1)
        sys.exit(result if isinstance(result, int) else 0)


def _fail(message: str, code: int, prefix: str = "docsuper") -> NoReturn:
    click.echo(f"{prefix}: {_one_line(redact(message))}", err=True)
    sys.exit(code)


class State:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except ConfigError as exc:
                raise Failure(str(exc), EXIT_USAGE) from None
            _remember_secrets(self._config)
        return self._config

    def queue(self, check_schema: bool = True, create: bool = False) -> Queue:
        """The configured queue. Only `run`, `submit` and `migrate` may `create` one: any other
        command finding none says where it looked instead of showing an empty queue."""
        cfg = self.config
        if cfg.queue.url.startswith("sqlite:"):
            _check_sqlite_location(cfg, create)
        try:
            queue = open_queue(cfg.queue.url, cfg.queue.schema, listen=cfg.queue.listen)
            if check_schema:
                queue.check_schema()
            return queue
        except SchemaOutdated as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
        except QueueError as exc:
            raise Failure(str(exc)) from None

    def client(self, create: bool = False) -> Client:
        return Client(self.queue(create=create))


SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_location(cfg: Config, create: bool) -> None:
    """Refuse, in one line, a SQLite queue URL that names a directory, a file that is not SQLite,
    a path below a regular file, or (unless `create`) no file at all."""
    raw = cfg.queue.url[len("sqlite:///"):]
    path = Path(os.path.abspath(raw))
    where = f"queue.url {cfg.queue.url}" + (f" from {cfg.origins['queue.url']}" if "queue.url" in cfg.origins
                                            else " (the default)")
    try:
        if path.is_dir():
            raise Failure(f"{path} is a directory, not a SQLite queue ({where})", EXIT_USAGE)
        if path.exists():
            with open(path, "rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
            if head and head != SQLITE_HEADER:
                raise Failure(f"{path} is not a SQLite database, so not a docsuper queue ({where})", EXIT_USAGE)
            return
        for parent in path.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise Failure(f"{path} cannot be a queue: {parent} is a file, not a directory ({where})",
                                  EXIT_USAGE)
                break
    except OSError as exc:
        raise Failure(f"cannot read the queue at {path}: {exc.strerror or exc} ({where})", EXIT_USAGE) from None
    if not create:
        relative = "" if raw.startswith("/") else f", relative to {os.getcwd()}"
        raise Failure(f"no queue at {path} ({where}{relative}); `docsuper submit` or `docsuper run` creates it "
                      "- or run this where the queue is, or set DOCSUPER_QUEUE_URL", EXIT_USAGE)


def _remember_secrets(cfg: Config) -> None:
    """Mask the queue's password and the download token wherever they might appear, however quoted."""
    parts = urlsplit(cfg.queue.url)
    remember(parts.password)
    for key, value in parse_qsl(parts.query):
        if key.lower() in ("password", "sslpassword"):
            remember(value)
    if cfg.inputs.bearer_token_env:
        remember(os.environ.get(cfg.inputs.bearer_token_env))
    remember(cfg.http.token)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn queue errors raised inside a command into one-line failures."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InvalidJob as exc:  # enqueue refused the arguments the operator gave
            raise Failure(str(exc), EXIT_USAGE) from None
        except QueueError as exc:
            raise Failure(str(exc)) from None

    return wrapper


@click.group(cls=DocsuperGroup)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="config.toml to read (default: $DOCSUPER_CONFIG, else ./config.toml, else built-in defaults)")
@click.version_option(__version__, prog_name="docsuper")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """docsuper: document jobs, each in a fresh child process under a hard memory cap."""
    ctx.obj = State(config_path)


# -- the daemon -------------------------------------------------------------
@main.command()
@click.option("--drain", is_flag=True, help="exit once nothing is queued, running or waiting to be reclaimed; 1 when a job it ran ended dead")
@click.pass_obj
@_guard
def run(state: State, drain: bool) -> None:
    """Run the supervisor: claim jobs and run each in a fresh child."""
    from .daemon import Supervisor
    from .launcher import LaunchError

    queue = state.queue(create=True)
    with queue:
        try:
            code = Supervisor(state.config, queue).run(drain=drain)
        except LaunchError as exc:
            raise Failure(str(exc)) from None
    sys.exit(code)


@main.command()
@click.argument("job_id")
@click.option("--store", is_flag=True, help="let the replay of a finished job replace its stored results")
@click.pass_obj
@_guard
def once(state: State, job_id: str, store: bool) -> None:
    """Replay one job in the foreground, as the daemon runs it, with a line per progress event.

    A finished job keeps its state and results (the replay is recorded as an attempt of its own) unless --store."""
    from .daemon import Child, Supervisor
    from .logs import Logger

    queue = state.queue()
    cfg = state.config.replace(workers={"concurrency": 1}, retention={"finished_days": 0, "dead_days": 0})

    def show(child: Child, event: dict[str, Any]) -> None:
        kind = event.get("type")
        sample = child.tree.sample() if child.tree is not None else None
        if sample is not None and sample.processes and sample.rss_mb > 0:
            mem = f"rss {sample.rss_mb:6.1f} MB" + (f"  uss {sample.uss_mb:6.1f} MB" if sample.uss_mb else "")
        elif event.get("rss_mb"):  # the child reported it, but has exited by now
            mem = f"rss {event['rss_mb']:6.1f} MB"
        else:
            mem = ""
        if kind == "started":
            pid = event.get("pid") or child.pid
            click.echo(f"started   {f'pid {pid}  ' if pid else ''}{mem}".rstrip())
        elif kind == "progress":
            total = event.get("total")
            where = f"{event.get('done')}/{total}" if total else f"{event.get('done')}"
            click.echo(f"{event.get('pass', ''):<9} {where:<9} {mem}".rstrip())
        elif kind == "failure":
            click.echo(f"failure   {event.get('outcome')}: {event.get('message')}")

    with queue:
        was = queue.get(job_id).status
        job = queue.replay(job_id, f"once:{os.getpid()}", cfg.queue.lease_s, store=store)
        # A replay of a finished job is not one of its attempts: say what it is instead of "1/3".
        run = (f"attempt {job.attempts}/{job.max_attempts}" if store or was not in FINAL_STATES
               else f"replay, not counted (the job stays {was})")
        click.echo(f"job {job.id}  {run}  passes {','.join(job.passes)}  source {redact(job.source or '-')}")
        # Errors only: the lines above already say how the attempt went, and a JSON job_finished
        # record in the middle of them (stderr and stdout share the terminal) only repeats it.
        supervisor = Supervisor(cfg, queue, Logger("error", cfg.log.format, sys.stderr), on_event=show)
        supervisor.worker_id = f"once:{os.getpid()}"
        supervisor.run(only=job)
        record = supervisor.finished[-1] if supervisor.finished else {"outcome": "interrupted"}
        final = queue.get(job.id)
    took = f", {record['seconds']} s" if record.get("seconds") is not None else ""
    line = f"{record['outcome']}: peak {_peak(record)}{took}; job is now {final.status}"
    if record["outcome"] != "succeeded":
        raise Failure(f"{line}; {record.get('error') or ''}".rstrip("; "))
    click.echo(line)


def _peak(record: dict[str, Any]) -> str:
    """An attempt's peak memory for people: only the figures that were measured."""
    figures = [f"{record[key]:g} MB {name}" for key, name in (("peak_mb", "uss"), ("peak_rss_mb", "rss"))
               if record.get(key)]
    return " / ".join(figures) or "memory not measured"


# -- producers --------------------------------------------------------------
def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise Failure(f"--option {pair!r}: expected KEY=VALUE", EXIT_USAGE)
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    return options


def _source(path: str, cfg: Config) -> str:
    """The job's source for a PATH or URL argument, refused now if the worker could never read it
    (the same checks the child makes, against the same config)."""
    from docsuper.passes.api import InvalidInput
    from docsuper.passes.inputs import checked_local_path, url_problem

    scheme = path.partition("://")[0].lower() if "://" in path else ""
    if scheme in ("http", "https"):
        problem = url_problem(path)
        if problem:
            raise Failure(f"{path}: {problem}", EXIT_USAGE)
        return path
    if scheme and scheme != "file":
        raise Failure(f"{path}: unsupported source (use a path, file://, http:// or https://)", EXIT_USAGE)
    local = unquote(urlsplit(path).path) if scheme == "file" else path
    if not Path(local).expanduser().exists():
        raise Failure(f"{path}: no such file", EXIT_USAGE)
    try:
        resolved = checked_local_path(local, cfg.inputs.allowed_roots)
    except InvalidInput as exc:
        message = str(exc)
        if "outside the allowed input directories" in message:
            parent = Path(local).expanduser().resolve().parent
            roots = ",".join(cfg.inputs.allowed_roots + (str(parent),))
            message += (f"; to take it, add {parent} for the daemon and submit alike "
                        f"(DOCSUPER_INPUTS_ALLOWED_ROOTS={roots} or inputs.allowed_roots in config.toml)")
        raise Failure(message, EXIT_USAGE) from None
    return path if scheme == "file" else str(resolved)


@main.command()
@click.argument("paths", nargs=-1)
@click.option("--priority", type=click.IntRange(-PRIORITY_LIMIT, PRIORITY_LIMIT), default=0, show_default=True,
              help="higher runs first")
@click.option("--max-attempts", type=click.IntRange(1, 100), default=None, help="default: retry.max_attempts")
@click.option("--passes", default="ocr", show_default=True,
              help="comma-separated pass names, run in order; without PATH, name passes that need no document")
@click.option("--option", "options", multiple=True, help="KEY=VALUE handed to the passes (repeatable)")
@click.option("--count", type=click.IntRange(1, 1_000_000), default=1, help="jobs per path (or without paths)")
@click.option("--key", default=None, help="idempotency key: a job already queued under it is returned instead")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_guard
def submit(state: State, paths: tuple[str, ...], priority: int, max_attempts: int | None, passes: str,
           options: tuple[str, ...], count: int, key: str | None, as_json: bool) -> None:
    """Queue one job per PATH (or URL); without PATH, jobs with no document (diagnostic passes)."""
    from docsuper.passes.api import available_passes

    names = [p.strip() for p in passes.split(",") if p.strip()]
    known = available_passes()
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise Failure(f"--passes: unknown pass {', '.join(unknown) or '(none given)'}; "
                      f"installed: {', '.join(known)}", EXIT_USAGE)
    if not paths and (click.get_current_context().get_parameter_source("passes") is ParameterSource.DEFAULT
                      or DOCUMENT_PASSES.intersection(names)):
        # An empty shell variable (`docsuper submit $FILE`) would queue a job that can only fail.
        raise Failure(f"submit: no PATH or URL given, and {', '.join(sorted(DOCUMENT_PASSES & set(names)))} "
                      "needs a document (jobs without one: --passes with diagnostic passes, e.g. --passes noop)",
                      EXIT_USAGE)
    sources: list[str | None] = [_source(p, state.config) for p in paths] or [None]
    opts = _parse_options(options)
    attempts = max_attempts or state.config.retry.max_attempts
    jobs = [NewJob(source=s, passes=names, options=opts, priority=priority, max_attempts=attempts,
                   idempotency_key=key) for s in sources for _ in range(count)]
    if key is not None and len(jobs) > 1:
        raise Failure("--key names one job: give at most one PATH and no --count", EXIT_USAGE)
    with state.client(create=True) as client:
        ids = client.enqueue_many(jobs)
    if as_json:
        click.echo(json.dumps([{"id": i, "source": redact(j.source or "") or None} for i, j in zip(ids, jobs)]))
    else:
        for job_id in ids:
            click.echo(job_id)


# -- operators --------------------------------------------------------------
DISK_FULL_BELOW_BYTES = 1 << 20


def _warn_if_disk_full(cfg: Config) -> None:
    """Reading works on a full disk, so `status` would look healthy while nothing can be recorded."""
    if not cfg.queue.url.startswith("sqlite:"):
        return
    where = Path(os.path.abspath(cfg.queue.url[len("sqlite:///"):])).parent
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return
    if free < DISK_FULL_BELOW_BYTES:
        click.echo(f"docsuper: disk full: {free >> 10} KB free where the queue is ({where}); no job can be "
                   "submitted or finished until space is freed", err=True)
def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    seconds = time.time() - t
    if seconds < 0:
        return f"in {-seconds:.0f}s"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _progress(job: Job) -> str:
    if job.progress_done is None:
        return "-"
    return f"{job.progress_done}/{job.progress_total}" if job.progress_total else str(job.progress_done)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_guard
def status(state: State, as_json: bool) -> None:
    """Jobs per state, running jobs, expired leases, workers and recent dead letters."""
    with state.queue() as queue:
        counts = queue.counts()
        running = queue.list_jobs("running", limit=100)
        expired = queue.expired_leases()
        dead = queue.list_jobs("dead", limit=10)
        workers = queue.workers()
        retrying = sorted((j for j in queue.list_jobs("queued", limit=1000) if next_retry_at(j)),
                          key=lambda j: j.run_at)
    if as_json:
        click.echo(json.dumps(redact_value({
            "counts": counts,
            "running": [j.as_dict() for j in running],
            "expired_leases": [j.id for j in expired],
            "dead": [j.as_dict() for j in dead],
            "retrying": [{**j.as_dict(), "next_retry_at": next_retry_at(j)} for j in retrying],
            "workers": [w.__dict__ for w in workers],
        })))
        return
    click.echo("  ".join(f"{s} {counts[s]}" for s in JOB_STATES))
    _warn_if_disk_full(state.config)
    if workers:
        click.echo("\nworkers")
        for w in workers:
            click.echo(f"  {w.id:<40} running {w.running}  seen {_ago(w.last_seen)}  v{w.version}")
    if running:
        click.echo("\nrunning")
        for j in running:
            peak = f"{j.peak_mb:.0f} MB" if j.peak_mb is not None else "-"
            click.echo(f"  {j.id}  attempt {j.attempts}/{j.max_attempts}  progress {_progress(j):<9} "
                       f"peak {peak}  since {_ago(j.started_at)}  on {j.lease_owner}  {document_name(j.source) or ''}")
    if retrying:
        click.echo("\nwaiting to retry")
        for j in retrying[:20]:
            click.echo(f"  {j.id}  attempt {j.attempts}/{j.max_attempts} was {j.last_outcome}  "
                       f"next try {_ago(next_retry_at(j))}  {document_name(j.source) or ''}")
    if expired:
        click.echo("\nexpired leases (reclaimed by the next running worker)")
        for j in expired:
            click.echo(f"  {j.id}  owner {j.lease_owner}  expired {_ago(j.lease_expires_at)}")
    if dead:
        click.echo("\nrecent dead letters")
        for j in dead:
            click.echo(f"  {j.id}  {j.last_outcome}  {_ago(j.dead_at)}  {document_name(j.source) or '-'}  "
                       f"{redact(j.last_error or '')[:100]}")


@main.command("list")
@click.option("--status", "status_filter", type=click.Choice(JOB_STATES), default=None)
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
@_guard
def list_jobs(state: State, status_filter: str | None, limit: int, as_json: bool) -> None:
    """The newest jobs (the newest last): state, last outcome, attempts, peak memory, progress."""
    with state.queue() as queue:
        jobs = queue.list_jobs(status_filter, limit)
    if as_json:
        click.echo(json.dumps(redact_value([j.as_dict() for j in jobs])))
        return
    click.echo(f"{'job':<12} {'state':<10} {'outcome':<14} {'tries':>5} {'peak_mb':>8} {'pages':>7}  source / error")
    for j in reversed(jobs):
        peak = f"{j.peak_mb:.0f}" if j.peak_mb is not None else "-"
        detail = Path(j.source).name if j.source and "://" not in j.source else redact(j.source or ",".join(j.passes))
        if j.status in ("dead", "cancelled") and j.last_error:
            detail += f": {redact(j.last_error)[:90]}"
        click.echo(f"{j.id[:12]:<12} {j.status:<10} {j.last_outcome or '-':<14} "
                   f"{j.attempts:>2}/{j.max_attempts:<2} {peak:>8} {_progress(j):>7}  {detail}")


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--text", is_flag=True, help="print the job's OCR text, pages separated by form feeds")
@click.pass_obj
@_guard
def show(state: State, job_id: str, as_json: bool, text: bool) -> None:
    """One job and every attempt."""
    with state.client() as client:
        job = client.get(job_id)
        if text:
            click.echo(client.text(job.id), nl=False)
            return
        attempts = client.attempts(job.id)
    retry_at = next_retry_at(job)
    if as_json:
        click.echo(json.dumps(redact_value({**job.as_dict(), "next_retry_at": retry_at,
                                            "attempts_detail": [a.as_dict() for a in attempts]})))
        return
    fields = ["status", "source", "passes", "priority", "attempts", "max_attempts", "progress", "peak_mb",
              "last_outcome", "last_error", "next_retry", "lease_owner", "created_at", "started_at", "finished_at",
              "dead_at"]
    click.echo(f"job {job.id}")
    for name in fields:
        value: Any = _progress(job) if name == "progress" else retry_at if name == "next_retry" else getattr(job, name)
        if (name.endswith("_at") or name == "next_retry") and value is not None:
            value = f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(value))} ({_ago(value)})"
        if name == "passes":
            value = ",".join(value)
        click.echo(f"  {name:<13} {redact(str(value)) if value is not None else '-'}")
    if job.result:
        click.echo(f"  {'result':<13} {json.dumps(redact_value(job.result))[:500]}")
    click.echo("attempts")
    for a in attempts:
        how = f"signal {a.signal}" if a.signal else f"exit {a.exit_code}" if a.exit_code is not None else ""
        peak = f"{a.peak_mb:.0f} MB" if a.peak_mb is not None else "-"
        click.echo(f"  #{a.number} {a.outcome or 'running':<13} {how:<10} peak {peak} "
                   f"(rss {a.peak_rss_mb or 0:.0f})  {a.duration_s or 0:.2f} s  page {a.last_page or '-'}  "
                   f"{'plan ' + str(a.plan.get('name')) + '  ' if a.plan else ''}"
                   f"{'' if a.counted else '(not counted) '}{a.worker}")
        if a.error:
            click.echo(f"      {redact(a.error)}")


@main.command()
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="retry every dead job")
@click.pass_obj
@_guard
def retry(state: State, job_ids: tuple[str, ...], all_dead: bool) -> None:
    """Queue dead or cancelled jobs again with a fresh attempt budget."""
    if bool(job_ids) == all_dead:
        raise Failure("give job ids or --all-dead (not both)", EXIT_USAGE)
    with state.client() as client:
        ids = client.retry(None if all_dead else job_ids)
    click.echo(f"{len(ids)} job(s) queued again")


@main.command()
@click.argument("job_id")
@click.pass_obj
@_guard
def cancel(state: State, job_id: str) -> None:
    """Cancel a queued job, or stop a running one (its worker stops it at its next heartbeat)."""
    with state.client() as client:
        new_state = client.cancel(job_id)
        job = client.get(job_id)
    if new_state == "cancelled":
        click.echo(f"job {job.id} cancelled")
    else:
        click.echo(f"job {job.id} is running on {job.lease_owner}: it will be stopped within "
                   f"{state.config.queue.heartbeat_s:g} s")


@main.command()
@click.option("--finished-before", metavar="AGE", help="succeeded and cancelled jobs that finished longer ago "
                                                       "(30d, 12h, 90m); default: retention.finished_days")
@click.option("--dead-before", metavar="AGE", help="dead jobs likewise; default: retention.dead_days")
@click.option("--dry-run", is_flag=True, help="count what would go, delete nothing")
@click.option("--batch", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="jobs per statement")
@click.pass_obj
@_guard
def purge(state: State, finished_before: str | None, dead_before: str | None, dry_run: bool, batch: int) -> None:
    """Delete finished jobs with their attempts and pages; queued and running jobs are never touched."""
    from .retention import cli_cutoffs, purge_all

    retention = state.config.retention
    try:
        limits = cli_cutoffs(time.time(), finished_before, dead_before, retention.finished_days, retention.dead_days)
    except ValueError as exc:
        raise Failure(f"purge: {exc}", EXIT_USAGE) from None
    with state.queue() as queue:
        counts = (queue.purgeable(limits.finished_before, limits.dead_before) if dry_run
                  else purge_all(queue, limits, batch))
    states = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("succeeded", "cancelled", "dead"))
    click.echo(f"{'would delete' if dry_run else 'deleted'} {sum(counts.values())} job(s): {states}")


@main.command()
@click.pass_obj
@_guard
def migrate(state: State) -> None:
    """Create or update the queue's tables."""
    with state.queue(check_schema=False, create=True) as queue:
        applied = queue.migrate()
    click.echo(f"applied {', '.join(applied)}" if applied else "schema is up to date")


@main.command("config")
@click.pass_obj
def show_config(state: State) -> None:
    """Print every setting's value and where to override it."""
    cfg = state.config
    values = cfg.as_dict()
    for key, env, _default, help_text in describe():
        section, name = key.split(".")
        origin = f"  (from {cfg.origins[key]})" if key in cfg.origins else ""
        click.echo(f"{key:<28} = {redact(repr(values[section][name])):<28} {env}{origin}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--keep", type=click.Path(file_okay=False), default=None, help="keep the throwaway queue here")
@click.pass_obj
def selftest(state: State, as_json: bool, keep: str | None) -> None:
    """Prove on this box that the limits hold: one job of each kind through the real supervisor."""
    from .selftest import rows_as_json, run_selftest

    rows = run_selftest(state.config, keep)
    if as_json:
        click.echo(rows_as_json(rows))
    else:
        click.echo(f"{'scenario':<14} {'expected':<13} {'outcome':<13} {'peak_mb':>8} {'seconds':>8}  contained")
        for r in rows:
            peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
            click.echo(f"{r['scenario']:<14} {r['expected']:<13} {r['outcome'] or '-':<13} {peak:>8} "
                       f"{r['seconds']:>8.2f}  {'yes' if r['contained'] else 'NO'}"
                       + (f"  ({r['note']})" if r.get("note") else ""))
    sys.exit(0 if all(r["contained"] for r in rows) else 1)


from .opscli import register as _register_ops_commands  # noqa: E402 (healthcheck, top)

_register_ops_commands(main, Failure)

if __name__ == "__main__":
    main(prog_name="docsuper")
