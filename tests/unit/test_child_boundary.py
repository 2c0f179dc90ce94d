"""What crosses into a child: config sections of its passes, an environment from an allowlist."""

from __future__ import annotations

from docsuper.supervisor.daemon import child_config
from docsuper.supervisor.launcher import child_environment
from docsuper.supervisor.protocol import ChildLimits, Exited, Ready, Refused, Start, Started, decode_message, \
    encode_message

CONFIG = {"queue": {"url": "postgresql://u:pw@db/x"}, "workers": {}, "memory": {}, "retry": {}, "log": {},
          "http": {}, "inputs": {"max_pages": 10}, "ocr": {"dpi": 300}}


def test_a_child_gets_inputs_and_the_sections_named_after_its_passes():
    assert child_config(CONFIG, ["ocr", "vision"]) == {"inputs": {"max_pages": 10}, "ocr": {"dpi": 300}}
    assert child_config(CONFIG, ["noop"]) == {"inputs": {"max_pages": 10}}


def test_a_pass_named_like_a_parent_section_does_not_get_it():
    assert child_config(CONFIG, ["queue", "http"]) == {"inputs": {"max_pages": 10}}


def test_the_child_environment_is_an_allowlist():
    parent = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C", "TMPDIR": "/var/tmp", "HOME": "/root",
              "DATABASE_URL": "postgresql://u:pw@db/x", "DOCSUPER_QUEUE_URL": "sqlite:///q.db",
              "AWS_SECRET_ACCESS_KEY": "k", "CLINIC_TOKEN": "t", "OMP_NUM_THREADS": "4", "MALLOC_ARENA_MAX": "4"}
    env = child_environment(["CLINIC_TOKEN"], parent)
    assert not {"DATABASE_URL", "DOCSUPER_QUEUE_URL", "AWS_SECRET_ACCESS_KEY"} & set(env)
    assert env["CLINIC_TOKEN"] == "t" and env["LC_ALL"] == "C" and env["TMPDIR"] == "/var/tmp"
    assert env["OMP_NUM_THREADS"] == "4" and env["MALLOC_ARENA_MAX"] == "4"  # the operator's own settings win
    assert env["OPENBLAS_NUM_THREADS"] == "1"  # and the defaults fill the rest


def test_fork_server_messages_round_trip():
    for message in (Ready(12, ["numpy"], {"cv2": "ImportError: x"}, 1, 0.5), Start("ab12", ChildLimits(550)),
                    Started("ab12", 99), Refused("ab12", "threads"), Exited(99, 9)):
        assert decode_message(encode_message(message)) == message


def test_config_refuses_to_hand_the_queue_url_to_children(tmp_path):
    import pytest

    from docsuper.supervisor.config import ConfigError, load_config

    (tmp_path / "c.toml").write_text("")
    with pytest.raises(ConfigError, match="DATABASE_URL holds the queue's credentials"):
        load_config(tmp_path / "c.toml", {"DOCSUPER_WORKERS_CHILD_ENV": "PATH,DATABASE_URL"})
