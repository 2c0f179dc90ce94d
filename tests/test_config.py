"""config.toml, the environment over it, and one clear line for a bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from docsuper.supervisor.config import SCHEMA, ConfigError, load_config

from .daemon import Env

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_config_toml_is_valid_and_matches_the_defaults():
    cfg = load_config(ROOT / "config.toml", environ={})
    assert cfg.workers.concurrency == 5 and cfg.memory.job_limit_mb == 450
    assert cfg.queue.lease_s == 60 and cfg.queue.heartbeat_s == 15
    assert cfg.workers.shutdown_grace_s == 25 and cfg.retry.max_attempts == 3


def test_environment_overrides_the_file_and_deployment_names_work(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('[workers]\nconcurrency = 2\n[queue]\nurl = "sqlite:///a.db"\n')
    cfg = load_config(path, environ={})
    assert cfg.workers.concurrency == 2 and cfg.queue.url == "sqlite:///a.db"
    cfg = load_config(path, environ={"WORKER_CONCURRENCY": "4", "DATABASE_URL": "postgresql://u@h/db",
                                      "PORT": "8080", "DOCSUPER_MEMORY_JOB_LIMIT_MB": "300",
                                      "DOCSUPER_WORKERS_PRELOAD": "numpy, pymupdf"})
    assert cfg.workers.concurrency == 4 and cfg.queue.url == "postgresql://u@h/db" and cfg.http.port == 8080
    assert cfg.memory.job_limit_mb == 300 and cfg.kernel_limit_mb == 400
    assert cfg.workers.preload == ["numpy", "pymupdf"]
    # The specific name wins over the deployment alias.
    assert load_config(path, environ={"WORKER_CONCURRENCY": "4", "DOCSUPER_WORKERS_CONCURRENCY": "3"}
                       ).workers.concurrency == 3


@pytest.mark.parametrize("environ, message", [
    ({"WORKER_CONCURRENCY": "lots"}, "workers.concurrency (from WORKER_CONCURRENCY): must be a whole number, got 'lots'"),
    ({"WORKER_CONCURRENCY": "0"}, "workers.concurrency (from WORKER_CONCURRENCY): must be at least 1, got '0'"),
    ({"DATABASE_URL": "mysql://x"}, "queue.url (from DATABASE_URL): must start with sqlite:/// or postgresql://"),
    ({"DOCSUPER_WORKERS_START_METHOD": "thread"}, "must be one of forkserver, spawn"),
    ({"DOCSUPER_QUEUE_LISTEN": "maybe"}, "queue.listen (from DOCSUPER_QUEUE_LISTEN): must be true or false"),
    ({"DOCSUPER_MEMORY_JOB_LIMIT_MB": "4.5"}, "must be a whole number"),
])
def test_a_bad_environment_value_names_the_key_and_the_problem(environ, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, environ=environ)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("[workers]\nconcurency = 3\n", "workers.concurency"),
    ("[worker]\nconcurrency = 3\n", "unknown section [worker]"),
    ("[workers]\nconcurrency = 'three'\n", "must be a whole number"),
    ("[workers\n", "not valid TOML"),
])
def test_a_bad_file_is_one_line_and_exit_code_2(env: Env, tmp_path: Path, text: str, message: str):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    result = env.cli("--config", str(bad), "status", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("docsuper: ")


def test_a_missing_config_file_is_exit_code_2(env: Env):
    result = env.cli("--config", "/nonexistent/docsuper.toml", "run", check=False)
    assert result.returncode == 2 and "no such configuration file" in result.stderr


def test_every_key_is_documented():
    documented = (ROOT / "README.md").read_text() + (ROOT / "docs" / "ocr.md").read_text()
    missing = [f"{s}.{k}" for s, keys in SCHEMA.items() for k in keys
               if f"{s}.{k}" not in documented and f"`{k}`" not in documented]
    assert missing == []
