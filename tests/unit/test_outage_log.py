"""The queue's outages in the log: one line when it goes, one when it comes back."""

from __future__ import annotations

import io
import json

from docsuper.supervisor.logs import Logger, OutageLog


def test_an_outage_is_one_line_going_and_one_coming_back():
    out = io.StringIO()
    now = [100.0]
    outage = OutageLog(Logger("info", "json", out), clock=lambda: now[0])
    outage.back()  # nothing was away: nothing to say
    for action in ("heartbeat", "finish", "claim", "heartbeat"):
        outage.away(action, "disk full: the SQLite queue at /q.db cannot be written")
        now[0] += 2.5
    outage.back()
    outage.back()
    outage.away("claim", "lost the connection to PostgreSQL")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["event"], r.get("action")) for r in records] == [
        ("queue_unavailable", "heartbeat"), ("queue_available", None), ("queue_unavailable", "claim")]
    assert "disk full" in records[0]["error"]
    assert records[1]["after_s"] == 10.0 and records[1]["failures"] == 4
