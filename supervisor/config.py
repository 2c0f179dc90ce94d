"""Configuration: `config.toml`, overridden key by key from the environment.

Every key is declared once in SCHEMA with its type, bounds and default. A value
from the file or the environment that does not fit gives one ConfigError naming
the key, where it came from and what is wrong; the CLI prints it and exits 2.

Environment names: DOCSUPER_<SECTION>_<KEY> (for example
DOCSUPER_MEMORY_JOB_LIMIT_MB=400), plus the names deployments already set:
WORKER_CONCURRENCY, DATABASE_URL and PORT.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(Exception):
    """A configuration value that cannot be used; the message is one line for the operator."""


@dataclass(frozen=True)
class Key:
    kind: type  # int, float, str, bool or list (of str)
    default: Any
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[Any], str | None] | None = None  # returns a problem, or None
    help: str = ""


def _url_check(value: str) -> str | None:
    if value.startswith(("sqlite:", "postgresql://", "postgres://")):
        return None
    return "must start with sqlite:/// or postgresql://"


SCHEMA: dict[str, dict[str, Key]] = {
    "queue": {
        "url": Key(str, "sqlite:///docsuper.db", check=_url_check,
                   help="sqlite:///PATH (embedded default) or postgresql://… (DATABASE_URL)"),
        "schema": Key(str, "docsuper", help="PostgreSQL schema holding docsuper's tables"),
        "poll_interval_s": Key(float, 5.0, min=0.05, max=3600, help="idle poll when no NOTIFY arrives"),
        "lease_s": Key(float, 60.0, min=0.5, max=86400, help="a claimed job is reclaimed this long after its last heartbeat"),
        "heartbeat_s": Key(float, 15.0, min=0.1, max=3600, help="how often leases and progress are renewed"),
        "listen": Key(bool, True, help="use LISTEN/NOTIFY on PostgreSQL (off behind a transaction-mode pooler)"),
    },
    "workers": {
        "concurrency": Key(int, 5, min=1, max=64, help="children at most (WORKER_CONCURRENCY)"),
        "job_timeout_s": Key(float, 1800.0, min=0.1, max=7 * 86400, help="wall-clock limit of one attempt"),
        "term_grace_s": Key(float, 3.0, min=0.0, max=600, help="SIGTERM to SIGKILL grace when stopping a child"),
        "shutdown_grace_s": Key(float, 25.0, min=0.0, max=3600, help="how long running jobs may finish after SIGTERM"),
        "start_method": Key(str, "forkserver", choices=("forkserver", "spawn"),
                            help="forkserver: fork from a preloaded zygote; spawn: fresh interpreter per job"),
        "preload": Key(list, ["numpy", "cv2", "pymupdf", "docsuper.passes.ocr"],
                       help="modules the fork server imports once; each must start no thread"),
    },
    "memory": {
        "job_limit_mb": Key(int, 450, min=16, max=1 << 20, help="a job's tree is killed above this (USS)"),
        "kernel_limit_mb": Key(int, 0, min=0, max=1 << 20,
                               help="RLIMIT_DATA of a child; 0 = job_limit_mb + kernel_headroom_mb"),
        "kernel_headroom_mb": Key(int, 100, min=0, max=1 << 20),
        "watchdog_interval_ms": Key(int, 100, min=10, max=5000, help="how often every child tree is sampled"),
        "box_budget_mb": Key(int, 0, min=0, max=1 << 24,
                             help="memory all children may use together; 0 = from the cgroup limit or RAM"),
        "reserve_mb": Key(int, 80, min=0, max=1 << 20, help="kept free for the parent and the fork server"),
    },
    "retry": {
        "max_attempts": Key(int, 3, min=1, max=100),
        "backoff_base_s": Key(float, 5.0, min=0.0, max=86400, help="delay after the first failure; doubles each time"),
        "backoff_max_s": Key(float, 600.0, min=0.0, max=7 * 86400),
        "jitter": Key(float, 0.2, min=0.0, max=1.0, help="random fraction added to each delay"),
    },
    "inputs": {
        "allowed_roots": Key(list, [], help="local paths must lie under one of these (empty: the working directory)"),
        "max_file_mb": Key(float, 100.0, min=0.001, max=1 << 20),
        "max_pages": Key(int, 1000, min=1, max=1 << 20),
        "max_page_pixels": Key(int, 60_000_000, min=1, max=1 << 40, help="largest page or image, in pixels"),
        "connect_timeout_s": Key(float, 10.0, min=0.1, max=600),
        "read_timeout_s": Key(float, 60.0, min=0.1, max=3600),
        "bearer_token_env": Key(str, "", help="environment variable holding a bearer token for http(s) sources"),
        "bearer_token_hosts": Key(list, [], help="hosts the token is sent to (empty: every http(s) source host)"),
        "bearer_token_header": Key(str, "authorization", choices=("authorization", "apikey", "both"),
                                   help="Authorization: Bearer, Supabase's apikey header, or both"),
    },
    "ocr": {
        "dpi": Key(int, 300, min=36, max=1200),
        "max_render_pixels": Key(int, 9_000_000, min=10_000, max=1 << 32, help="a page is rendered within this budget"),
        "det_max_side": Key(int, 800, min=64, max=10_000, help="detector input limited to this side"),
        "use_angle_cls": Key(bool, False),
        "rec_batch": Key(int, 1, min=1, max=64),
        "threads": Key(int, 1, min=1, max=64),
        "text_layer_min_chars": Key(int, 16, min=0, max=1 << 20, help="a page with this much text is not OCRed"),
    },
    "log": {
        "level": Key(str, "info", choices=("debug", "info", "warning", "error")),
        "format": Key(str, "json", choices=("json", "text")),
    },
    "http": {
        "port": Key(int, 0, min=0, max=65535, help="/healthz and /metrics on this port (PORT); 0 = off"),
        "host": Key(str, "0.0.0.0"),
    },
}

ENV_ALIASES = {
    "WORKER_CONCURRENCY": ("workers", "concurrency"),
    "DATABASE_URL": ("queue", "url"),
    "PORT": ("http", "port"),
}


def env_name(section: str, key: str) -> str:
    return f"DOCSUPER_{section}_{key}".upper()


def _convert(section: str, name: str, spec: Key, raw: Any, origin: str) -> Any:
    where = f"{section}.{name} (from {origin})"

    def bad(problem: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}, got {raw!r}")

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
        if isinstance(raw, bool):
            raise bad("must be a whole number")
        try:
            value = int(raw.strip()) if isinstance(raw, str) else int(raw)
            if isinstance(raw, float) and raw != value:
                raise ValueError
        except (TypeError, ValueError):
            raise bad("must be a whole number") from None
    elif spec.kind is float:
        if isinstance(raw, bool):
            raise bad("must be a number")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise bad("must be a number") from None
        if value != value:
            raise bad("must be a number")
    elif spec.kind is list:
        if isinstance(raw, str):
            value = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
            value = list(raw)
        else:
            raise bad("must be a list of strings (comma-separated in the environment)")
    else:
        if not isinstance(raw, str):
            raise bad("must be a string")
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


class Config:
    """Validated settings; `cfg.workers.concurrency`, `cfg.as_dict()` for the child."""

    def __init__(self, values: dict[str, dict[str, Any]], source: Path | None) -> None:
        self._values = values
        self.source = source
        for section, keys in values.items():
            setattr(self, section, SimpleNamespace(**keys))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {section: dict(keys) for section, keys in self._values.items()}

    def replace(self, **overrides: Mapping[str, Any]) -> "Config":
        """A copy with some keys changed, validated like any other value."""
        values = self.as_dict()
        for section, keys in overrides.items():
            for name, raw in keys.items():
                spec = SCHEMA.get(section, {}).get(name)
                if spec is None:
                    raise ConfigError(f"{section}.{name}: unknown key")
                values[section][name] = _convert(section, name, spec, raw, "override")
        return Config(values, self.source)

    @property
    def kernel_limit_mb(self) -> int:
        return self.memory.kernel_limit_mb or self.memory.job_limit_mb + self.memory.kernel_headroom_mb


def default_config_path() -> Path | None:
    """DOCSUPER_CONFIG, else ./config.toml when it exists, else built-in defaults only."""
    explicit = os.environ.get("DOCSUPER_CONFIG")
    if explicit:
        return Path(explicit)
    here = Path("config.toml")
    return here if here.is_file() else None


def load_config(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    config_path = Path(path) if path is not None else default_config_path()
    from_file: dict[str, Any] = {}
    if config_path is not None:
        try:
            with open(config_path, "rb") as fh:
                from_file = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{config_path}: no such configuration file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{config_path}: cannot read: {exc.strerror}") from None

    values: dict[str, dict[str, Any]] = {s: {k: spec.default for k, spec in keys.items()} for s, keys in SCHEMA.items()}
    for section, keys in from_file.items():
        if section not in SCHEMA:
            raise ConfigError(f"{config_path}: unknown section [{section}]")
        if not isinstance(keys, dict):
            raise ConfigError(f"{config_path}: {section} must be a table")
        for name, raw in keys.items():
            spec = SCHEMA[section].get(name)
            if spec is None:
                raise ConfigError(f"{section}.{name} (from {config_path}): unknown key")
            values[section][name] = _convert(section, name, spec, raw, str(config_path))

    for alias, (section, name) in ENV_ALIASES.items():
        if environ.get(alias, "") != "":
            values[section][name] = _convert(section, name, SCHEMA[section][name], environ[alias], alias)
    for section, keys in SCHEMA.items():
        for name, spec in keys.items():
            var = env_name(section, name)
            if environ.get(var, "") != "":
                values[section][name] = _convert(section, name, spec, environ[var], var)
    return Config(values, config_path)


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
