"""The operator's commands against a real SQLite queue: output, JSON, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from .daemon import Env


def test_submit_a_missing_file_queues_nothing(env: Env, tmp_path: Path):
    good = tmp_path / "a.pdf"
    good.write_bytes(b"%PDF-1.4\n")
    result = env.cli("submit", str(good), str(tmp_path / "missing.pdf"), check=False)
    assert result.returncode == 2 and "missing.pdf: no such file" in result.stderr
    with env.queue() as q:
        assert sum(q.counts().values()) == 0


def test_submit_json_status_list_show(env: Env, tmp_path: Path):
    doc = tmp_path / "a.pdf"
    doc.write_bytes(b"%PDF-1.4\n")
    [submitted] = json.loads(env.cli("submit", str(doc), "--priority", "3", "--json").stdout)
    assert submitted["source"] == str(doc)
    [failing] = env.submit("fail", message="bad thing")
    env.set(DOCSUPER_RETRY_MAX_ATTEMPTS="1")
    refused = env.cli("retry", failing, check=False)
    assert refused.returncode == 1 and "is queued: only dead or cancelled jobs can be retried" in refused.stderr
    status = json.loads(env.cli("status", "--json").stdout)
    assert status["counts"]["queued"] == 2 and status["workers"] == []
    shown = json.loads(env.cli("show", submitted["id"][:8], "--json").stdout)
    assert shown["id"] == submitted["id"] and shown["priority"] == 3 and shown["attempts_detail"] == []
    listing = env.cli("list").stdout
    assert submitted["id"][:12] in listing and "queued" in listing


def test_retry_cancel_and_dead_letters(env: Env):
    env.set(DOCSUPER_RETRY_MAX_ATTEMPTS="1")
    [dead] = env.submit("fail", message="bad thing")
    [waiting] = env.submit("noop")
    assert "cancelled" in env.cli("cancel", waiting).stdout
    env.drain()
    status = env.cli("status").stdout
    assert "dead 1" in status and "cancelled 1" in status and "bad thing" in status
    shown = env.cli("show", dead).stdout
    assert "#1 error" in shown and "bad thing" in shown
    assert "1 job(s) queued again" in env.cli("retry", "--all-dead").stdout
    with env.queue() as q:
        assert q.get(dead).status == "queued" and q.get(dead).attempts == 0
    again = env.cli("cancel", waiting, check=False)
    assert again.returncode == 1 and "already cancelled" in again.stderr


def test_show_text_joins_pages_with_form_feeds(env: Env):
    [job_id] = env.submit("ocr")
    with env.queue() as q:  # OCR page results as a worker stores them, without running the OCR stack
        q.claim("w", 1, 60)
        for page, text in ((2, "second page"), (1, "first page"), (3, "")):
            assert q.record_page(job_id, "w", "ocr", page, {"text": text})
        assert q.record_page(job_id, "w", "other", 1, {"text": "not OCR"})
    assert env.cli("show", job_id, "--text").stdout == "first page\fsecond page\f"


def test_unknown_and_ambiguous_ids_are_one_line(env: Env):
    missing = env.cli("show", "abcdef12", check=False)
    assert missing.returncode == 1 and missing.stderr.strip() == "docsuper: no job 'abcdef12'"
    bad = env.cli("show", "not-an-id!", check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr


def test_selftest_contains_every_scenario(env: Env):
    result = env.cli("selftest", "--json", timeout=90)
    rows = json.loads(result.stdout)
    assert [r["scenario"] for r in rows] == ["normal", "memory_bomb", "timeout", "crash", "grandchildren",
                                            "exception", "shutdown", "containment"]
    assert all(set(r) == {"scenario", "expected", "outcome", "peak_mb", "seconds", "contained"} for r in rows)
    assert [r["outcome"] for r in rows] == [r["expected"] for r in rows]
    assert all(r["contained"] for r in rows)
    bomb = rows[1]
    assert bomb["peak_mb"] <= 450 + 50


def test_config_and_error_lines_never_show_the_database_password(env: Env):
    # Issue 9.2: `docsuper config` printed the password; a malformed URL was echoed whole in its error.
    env.set(DATABASE_URL="postgresql://postgres:pw-config-9f3@127.0.0.1:5432/test?password=pw-query-9f3")
    env.vars.pop("DOCSUPER_QUEUE_URL")
    shown = env.cli("config")
    assert "pw-config-9f3" not in shown.stdout and "pw-query-9f3" not in shown.stdout
    assert "postgresql://postgres:***@127.0.0.1:5432/test?password=***" in shown.stdout
    assert "(from DATABASE_URL)" in shown.stdout
    env.set(DATABASE_URL="postgresql://postgres:pw bad-9f3@127.0.0.1:5432/test")
    bad = env.cli("status", check=False)
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
    assert "pw bad-9f3" not in bad.stderr and "bad-9f3" not in bad.stderr and "not a valid PostgreSQL URL" in bad.stderr
