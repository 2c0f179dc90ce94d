"""The Render Blueprint at the repository root deploys as it is, with docsuper's own settings."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml  # PyYAML comes with rapidocr-onnxruntime, one of docsuper's dependencies

from docsuper.supervisor.config import ENV_ALIASES, SCHEMA, env_name, load_config

ROOT = Path(__file__).resolve().parent.parent
RENDER_MAX_SHUTDOWN_DELAY_S = 300  # Render accepts 1-300; its default is 30
RENDER_ENV = {"PYTHON_VERSION"}


def worker() -> dict:
    blueprint = yaml.safe_load((ROOT / "render.yaml").read_text())
    services = blueprint["services"]
    assert len(services) == 1
    return services[0]


def env_of(service: dict) -> dict[str, str]:
    return {v["key"]: v["value"] for v in service["envVars"] if "value" in v}


def test_a_starter_background_worker_that_migrates_before_it_deploys():
    service = worker()
    assert (service["type"], service["runtime"], service["plan"]) == ("worker", "python", "starter")
    assert service["startCommand"] == "docsuper run"
    assert service["preDeployCommand"] == "docsuper migrate"
    assert service["buildCommand"] == "pip install ."
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "docsuper" in scripts


def test_render_waits_for_running_jobs_as_long_as_docsuper_lets_them_finish():
    service = worker()
    cfg = load_config(None, environ=env_of(service))
    needed = cfg.workers.shutdown_grace_s + cfg.workers.term_grace_s
    delay = service["maxShutdownDelaySeconds"]
    assert isinstance(delay, int) and 1 <= delay <= RENDER_MAX_SHUTDOWN_DELAY_S
    assert needed < delay <= needed + 5, (delay, needed)
    # The blueprint restates the defaults rather than changing them: the same numbers as README and config.toml.
    assert cfg.workers.shutdown_grace_s == SCHEMA["workers"]["shutdown_grace_s"].default
    assert cfg.workers.term_grace_s == SCHEMA["workers"]["term_grace_s"].default


def test_every_variable_is_one_docsuper_or_render_reads_and_its_value_is_valid():
    service = worker()
    known = set(ENV_ALIASES) | {env_name(s, k) for s, keys in SCHEMA.items() for k in keys} | RENDER_ENV
    keys = [v["key"] for v in service["envVars"]]
    assert set(keys) <= known, set(keys) - known
    assert len(keys) == len(set(keys))
    # The database URL is a secret: Render asks for it when the Blueprint is created; it is never in the file.
    database = next(v for v in service["envVars"] if v["key"] == "DATABASE_URL")
    assert database == {"key": "DATABASE_URL", "sync": False}
    cfg = load_config(None, environ={**env_of(service), "DATABASE_URL": "postgresql://u:p@db.example/postgres"})
    assert cfg.queue.url.startswith("postgresql://")
    assert cfg.http.host == "127.0.0.1" and cfg.http.port > 0  # a worker takes no inbound traffic
