"""config.toml, the environment over it, and one clear line for a bad value."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from docsuper.supervisor.cli import main
from docsuper.supervisor.config import (ENV_ALIASES, SCHEMA, Config, ConfigError, InputsConfig, OcrConfig, env_name,
                                        load_config)

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


# --- every key, every kind of wrong value: one line, exit 2, no traceback (issue 9.3) ------------

_ENV_BAD = {
    int: ["lots", "inf", "-inf", "1e400", "nan", "4.5", "99999999999999999999", "-99999999999999999999", "\udcff"],
    float: ["lots", "inf", "-inf", "1e400", "nan", "1e300", "-1e300", "\udcff"],
    bool: ["maybe", "2", "\udcff"],
    str: ["\udcff", "a\x01b"],
    tuple: ["\udcff", "ok,a\x01b"],
}
_TOML_BAD = {
    int: ["inf", "-inf", "nan", "1e400", "4.5", "99999999999999999999", "-99999999999999999999", '"lots"', "true",
          "[1]"],
    float: ["inf", "-inf", "nan", "1e400", "1e300", "-1e300", '"lots"', "true", "[1]"],
    bool: ["1", '"maybe"', "[true]", "inf"],
    str: ["1", "true", "[1]", '"a\\u0000b"', "{a = 1}"],
    tuple: ["1", "[1, 2]", '["a\\u0007"]', "{a = 1}"],
}


def _cases() -> list[tuple[str, str, str, str]]:
    """(key, 'env' or 'toml', how the bad value is written, what it is) for every key."""
    cases = []
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            kind = key.kind
            env_values = list(_ENV_BAD[kind]) + (["bogus"] if key.choices else [])
            toml_values = list(_TOML_BAD[kind]) + (['"bogus"'] if key.choices else [])
            cases += [(f"{section}.{name}", "env", value, repr(value)) for value in env_values]
            cases += [(f"{section}.{name}", "toml", value, value) for value in toml_values]
    return cases


def _one_line_exit_2(result: Any) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("docsuper: "), result.stderr
    return lines[0]


def test_every_key_refuses_every_kind_of_wrong_value_in_one_line(tmp_path: Path):
    runner = CliRunner()
    cases = _cases()
    assert len(cases) > 600  # every key of every section, both ways
    clean_env = {name: None for name in os.environ if name.startswith("DOCSUPER_") or name in ENV_ALIASES}
    for key, how, value, shown in cases:
        section, name = key.split(".")
        config = tmp_path / "c.toml"
        if how == "env":
            config.write_text("")
            env = {**clean_env, env_name(section, name): value}
        else:
            config.write_text(f"[{section}]\n{name} = {value}\n")
            env = clean_env
        result = runner.invoke(main, ["--config", str(config), "config"], env=env)
        line = _one_line_exit_2(result)
        assert f"docsuper: {key} (from " in line, (key, how, shown, line)


@pytest.mark.parametrize("content, message", [
    (b"[workers]\nconcurrency = 3 # caf\xe9\n", "not UTF-8 text (byte 0xe9 on line 2)"),
    (b"\xff\xfe[\x00w\x00", "not UTF-8 text"),
    (b"[workers]\n" + b"# padding\n" * 120_000, "larger than 1 MB; not a configuration file"),
    (b"queue = 1\n", "queue must be a table"),
    (b"[workers\n", "not valid TOML"),
    (b"\x7fELF\x02\x01\x01\x00", "not valid TOML"),
])
def test_a_config_file_that_is_not_a_config_file_is_one_line(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    line = _one_line_exit_2(CliRunner().invoke(main, ["--config", str(path), "config"]))
    assert message in line


def test_config_dev_zero_is_a_bounded_read(tmp_path: Path):
    started = time.monotonic()
    line = _one_line_exit_2(CliRunner().invoke(main, ["--config", "/dev/zero", "config"]))
    assert "larger than 1 MB" in line and time.monotonic() - started < 5


@pytest.mark.parametrize("url, message", [
    ("sqlite:///", "must name a file"),
    ("sqlite:///:memory:", "must name a file"),
    ("sqlite:q.db", "sqlite:///RELATIVE/PATH"),
    ("postgresql://u:pw-7d1@127.0.0.1:99999/test", "port '99999'"),
    ("postgresql://u:pw-7d1@[::1/test", "IPv6"),
    ("postgresql://u:pw-7d1@127.0.0.1/test?bogus=1", 'invalid URI query parameter: "bogus"'),
    ("mysql://u:pw-7d1@127.0.0.1/test", "must start with sqlite:/// or postgresql://"),
])
def test_a_queue_url_that_cannot_hold_jobs_is_refused(url: str, message: str):
    # Issue 9.3/9.4: a bad PostgreSQL URL and sqlite:q.db exited 1; sqlite:/// and :memory: took jobs no one saw.
    result = CliRunner().invoke(main, ["--config", "/dev/null", "status"], env={"DOCSUPER_QUEUE_URL": url})
    line = _one_line_exit_2(result)
    assert message in line and "pw-7d1" not in line


def test_a_bad_schema_name_is_refused_by_the_config():
    result = CliRunner().invoke(main, ["--config", "/dev/null", "status"],
                                env={"DOCSUPER_QUEUE_URL": "postgresql://127.0.0.1/test",
                                     "DOCSUPER_QUEUE_SCHEMA": "robert'); drop table jobs;--"})
    assert "queue.schema (from DOCSUPER_QUEUE_SCHEMA): must be lower-case letters" in _one_line_exit_2(result)


def test_relative_allowed_roots_are_refused():
    with pytest.raises(ConfigError, match=r"inputs.allowed_roots .*: must be absolute paths or start with ~"):
        load_config("/dev/null", {"DOCSUPER_INPUTS_ALLOWED_ROOTS": "/srv/inbox,scans"})
