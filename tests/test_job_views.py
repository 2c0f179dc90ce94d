"""A job's log lines name its document; `show` and `status` say when a failed job runs again."""

from __future__ import annotations

import re
import signal
from pathlib import Path

from .daemon import Env, wait_for


def test_log_lines_of_a_job_name_its_document_without_secrets(env: Env, tmp_path: Path):
    scan = tmp_path / "consent-form 17.pdf"
    scan.write_bytes(b"not read by the noop pass")
    env.cli("submit", str(scan), "--passes", "noop")
    env.cli("submit", "https://files.example/storage/v1/object/sign/in/ct-report.pdf?token=S3CRET", "--passes",
            "noop")
    records = [r for r in env.drain() if r["event"] == "job_finished"]
    assert sorted(r["document"] for r in records) == ["consent-form 17.pdf", "files.example/…/ct-report.pdf"]
    assert all("S3CRET" not in str(r) for r in records)


def test_show_and_status_give_the_next_retry_time(env: Env):
    env.set(DOCSUPER_RETRY_BACKOFF_BASE_S="120", DOCSUPER_RETRY_BACKOFF_MAX_S="120", DOCSUPER_RETRY_JITTER="0",
            DOCSUPER_WORKERS_PRELOAD="docsuper")
    [job_id] = env.submit("fail", message="the OCR service timed out")
    daemon = env.start()
    try:
        wait_for(lambda: "next_retry" in (out := env.cli("show", job_id).stdout) and "in 1" in out,
                 what="the failed job to wait for its retry")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(30) == 0
    show = env.cli("show", job_id).stdout
    line = next(l for l in show.splitlines() if l.strip().startswith("next_retry"))
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(in 1[0-2]\ds\)", line), line
    status = env.cli("status").stdout
    assert "waiting to retry" in status
    assert re.search(rf"{job_id}\s+attempt 1/3 was error\s+next try in 1[0-2]\ds", status), status
