"""The one redactor: every kind of credential a user can hand docsuper, masked wherever it stands."""

from __future__ import annotations

import pytest

from docsuper.supervisor import redact as redaction
from docsuper.supervisor.redact import redact, redact_value


@pytest.mark.parametrize("text, secret, kept", [
    ("postgresql://postgres:pw-in-userinfo@db.example.com:5432/postgres", "pw-in-userinfo",
     "postgresql://postgres:***@db.example.com:5432/postgres"),
    ("postgresql://u:p@ss@h/db", "ss@h", "postgresql://u:***@h/db"),  # an unescaped @ in the password
    ("postgresql://u@h/db?sslmode=require&password=pw-in-query", "pw-in-query",
     "postgresql://u@h/db?sslmode=require&password=***"),
    ("host=db.example.com password=pw-conninfo user=u", "pw-conninfo", "host=db.example.com password=*** user=u"),
    ("host=db password='pw quoted' user=u", "pw quoted", "host=db password=*** user=u"),
    ("fetching https://alice:pw-source@files.example.com/a.pdf failed", "pw-source",
     "fetching https://***@files.example.com/a.pdf failed"),
    ("https://tok-userinfo@files.example.com/a.pdf", "tok-userinfo", "https://***@files.example.com/a.pdf"),
    ("https://x.supabase.co/object/sign/b/a.pdf?token=tok-query&download=1", "tok-query",
     "https://x.supabase.co/object/sign/b/a.pdf?token=***&download=1"),
    ("https://s3.example.com/a.pdf?X-Amz-Signature=sig-value&X-Amz-Date=20260101", "sig-value",
     "https://s3.example.com/a.pdf?X-Amz-Signature=***&X-Amz-Date=20260101"),
    ("Authorization: Bearer tok-bearer.part", "tok-bearer", "Authorization: Bearer ***"),
    ('{"apikey": "tok-apikey"}', "tok-apikey", '{"apikey": "***"}'),
    ("key eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJlLXBhcnQ", "eyJyb2xl", "key ***"),
])
def test_each_kind_of_credential_is_masked(text: str, secret: str, kept: str):
    assert redact(text) == kept
    assert secret not in redact(text)


@pytest.mark.parametrize("text", [
    "sqlite:////var/lib/docsuper/queue.db",
    "cannot connect to PostgreSQL at db.example.com:5432/postgres: connection refused",
    "mail alice@example.com about job 7f3a",
    "https://files.example.com/a.pdf?download=1&page=2",
    "queue.lease_s (from DOCSUPER_QUEUE_LEASE_S): must be at least 3 heartbeats",
])
def test_text_without_credentials_is_left_alone(text: str):
    assert redact(text) == text


def test_a_remembered_secret_is_masked_however_it_appears(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(redaction, "_remembered", set())
    redaction.remember("s3cr%40t-remembered")
    redaction.remember("ab")  # too short to mask usefully: ignored
    assert redact("libpq said: password 's3cr@t-remembered' rejected") == "libpq said: password '***' rejected"
    assert redact("tab ab") == "tab ab"


def test_redact_value_walks_json_like_values():
    value = {"source": "https://u:pw@h/a.pdf", "n": 3, "list": ["password=pw1"], "none": None,
             "options": {"api_key": "plain-looking", "lang": "en", "max_tokens": 5}}
    assert redact_value(value) == {"source": "https://***@h/a.pdf", "n": 3, "list": ["password=***"], "none": None,
                                   "options": {"api_key": "***", "lang": "en", "max_tokens": 5}}


def test_every_log_field_is_redacted():
    import io
    import json

    from docsuper.supervisor.logs import Logger

    out = io.StringIO()
    Logger("info", "json", out).info("job_finished", source="https://u:pw-log@h/a.pdf",
                                     error="HTTP 401 for Bearer tok-log-123", peak_mb=12.5)
    record = json.loads(out.getvalue())
    assert record["source"] == "https://***@h/a.pdf" and record["error"] == "HTTP 401 for Bearer ***"
    assert record["peak_mb"] == 12.5
