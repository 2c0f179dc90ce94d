"""config.toml, the environment over it, and one clear line for a bad value."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from docsuper.supervisor.config import SCHEMA, Config, ConfigError, InputsConfig, OcrConfig, load_config

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
    assert cfg.workers.preload == ("numpy", "pymupdf")
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


def test_each_section_is_a_frozen_dataclass_whose_defaults_are_the_schema():
    cfg = load_config("/dev/null", environ={})
    assert cfg == Config(source=Path("/dev/null"))  # nothing but the declared defaults
    for section, keys in SCHEMA.items():
        typed = getattr(cfg, section)
        assert {name: getattr(typed, name) for name in keys} == {name: key.default for name, key in keys.items()}
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(typed, next(iter(keys)), None)


def test_a_section_from_a_job_spec_is_checked_and_completed():
    inputs = InputsConfig.from_mapping({"max_pages": 7, "allowed_roots": ["/srv/scans"]})
    assert inputs.max_pages == 7 and inputs.allowed_roots == ("/srv/scans",)
    assert inputs.max_file_mb == SCHEMA["inputs"]["max_file_mb"].default
    assert OcrConfig.from_mapping({}) == OcrConfig()
    with pytest.raises(ConfigError, match=r"^ocr.dpi \(from job spec\): must be at least 36, got 1$"):
        OcrConfig.from_mapping({"dpi": 1})
    with pytest.raises(ConfigError, match="unknown key"):
        OcrConfig.from_mapping({"dpii": 300})
    # What goes into the job spec comes back as the same section.
    assert InputsConfig.from_mapping(json.loads(json.dumps(inputs.as_dict()))) == inputs


def test_replace_checks_the_new_values():
    cfg = load_config("/dev/null", environ={})
    assert cfg.replace(workers={"concurrency": 1}).workers.concurrency == 1
    with pytest.raises(ConfigError, match=r"workers.concurrency \(from override\): must be at least 1"):
        cfg.replace(workers={"concurrency": 0})


@pytest.mark.parametrize("environ, accepted", [
    ({"DOCSUPER_QUEUE_LEASE_S": "45", "DOCSUPER_QUEUE_HEARTBEAT_S": "15"}, True),
    ({"DOCSUPER_QUEUE_LEASE_S": "44", "DOCSUPER_QUEUE_HEARTBEAT_S": "15"}, False),
    ({"DOCSUPER_QUEUE_LEASE_S": "10", "DOCSUPER_QUEUE_HEARTBEAT_S": "15"}, False),  # issue 8.4: lease < heartbeat
    ({"DOCSUPER_QUEUE_HEARTBEAT_S": "30"}, False),  # against the default lease of 60
])
def test_a_lease_shorter_than_three_heartbeats_is_refused(environ: dict[str, str], accepted: bool):
    if accepted:
        assert load_config("/dev/null", environ=environ).queue.lease_s == float(environ["DOCSUPER_QUEUE_LEASE_S"])
        return
    with pytest.raises(ConfigError) as info:
        load_config("/dev/null", environ=environ)
    message = str(info.value)
    assert message.startswith("queue.lease_s (") and "3 heartbeats" in message and "\n" not in message
    assert "DOCSUPER_QUEUE_HEARTBEAT_S" in message  # says where the other half of the conflict came from


def test_run_refuses_a_lease_shorter_than_three_heartbeats_in_one_line(env: Env):
    env.set(DOCSUPER_QUEUE_LEASE_S="2", DOCSUPER_QUEUE_HEARTBEAT_S="1")
    result = env.cli("run", "--drain", check=False, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr == ("docsuper: queue.lease_s (from DOCSUPER_QUEUE_LEASE_S): must be at least 3 heartbeats "
                             "(3 × queue.heartbeat_s 1 (from DOCSUPER_QUEUE_HEARTBEAT_S) = 3), got 2\n")
