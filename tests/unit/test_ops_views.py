"""Pure parts of the operator's views: names, access, history, status line, the top screen."""

from __future__ import annotations

from rich.console import Console

from docsuper.supervisor.dashboard import access, is_loopback, presented_token
from docsuper.supervisor.history import MemoryHistory
from docsuper.supervisor.observer import status_line
from docsuper.supervisor.picture import document_name
from docsuper.supervisor.top import memory_bar, render


def test_document_name_keeps_the_file_name_and_drops_credentials_and_query():
    assert document_name("/srv/in/2026/scan 7.pdf") == "scan 7.pdf"
    assert document_name("https://user:pw@x.supabase.co/storage/v1/object/sign/b/scan.pdf?token=SECRET") \
        == "x.supabase.co/…/scan.pdf"
    assert "SECRET" not in document_name("https://h/a.pdf?token=SECRET") and "pw" not in document_name(
        "https://u:pw@h/a.pdf")
    assert document_name(None) is None and document_name("") is None


def test_dashboard_access_needs_the_token_when_one_is_set_else_loopback_only():
    assert access("127.0.0.1", "", None) == (200, "")
    assert access("::1", "", None) == (200, "")
    assert access("::ffff:127.0.0.1", "", None) == (200, "")
    assert access("203.0.113.7", "", None)[0] == 403
    assert access("203.0.113.7", "s3cret", "s3cret") == (200, "")
    assert access("127.0.0.1", "s3cret", None)[0] == 401  # a token, once set, binds everyone
    assert access("127.0.0.1", "s3cret", "wrong")[0] == 401
    # A proxy on the same host makes every client look like 127.0.0.1: without a token, refused.
    assert access("127.0.0.1", "", None, via_proxy=True)[0] == 403
    assert access("127.0.0.1", "s3cret", "s3cret", via_proxy=True) == (200, "")
    assert not is_loopback("localhost")  # a name is not an address


def test_the_token_comes_from_the_header_or_the_query():
    assert presented_token("/", {"Authorization": "Bearer abc"}) == "abc"
    assert presented_token("/?token=xyz", {}) == "xyz"
    assert presented_token("/", {}) is None


def test_history_is_bounded_and_aligned():
    history = MemoryHistory(samples=3)
    history.add(1, 10, {"a": 10})
    history.add(2, 30, {"a": 12, "b": 18})
    history.add(3, 18, {"b": 18})
    history.add(4, 0, {})
    data = history.as_dict()
    assert data["t"] == [2, 3, 4] and data["box"] == [30, 18, 0]
    assert data["jobs"] == {"a": [12, None, None], "b": [18, 18, None]}


def _live(running=2, stopping=False):
    return {"running": [{}] * running, "stopping": stopping, "jobs_done": 7,
            "box": {"concurrency": 5, "children_mb": 612.4, "budget_mb": 1100}}


def test_status_line():
    assert status_line(_live(), 12) == "2/5 running, 12 queued, children 612 of 1100 MB, 7 done"
    assert status_line(_live(0, True), None).startswith("stopping: 0/5 running, children")


def test_memory_bar():
    assert memory_bar(225, 450, width=10).plain == "█████░░░░░  225/450 MB"
    assert memory_bar(None, 450).plain == "-"


def test_top_screen_from_a_picture():
    picture = {
        "worker": "box:1:ab", "stopping": False,
        "box": {"budget_mb": 1000, "children_mb": 300, "held_mb": 900, "parent_rss_mb": 29, "server_rss_mb": 60,
                "job_limit_mb": 450, "concurrency": 3},
        "running": [{"job_id": "7f3a0000aaaa", "document": "scan.pdf", "pass": "ocr", "done": 3, "total": 10,
                     "uss_mb": 300, "peak_mb": 310, "cap_mb": 450, "attempt": 1, "max_attempts": 3, "seconds": 12}],
        "outcomes": [{"job_id": "91c00000", "outcome": "oom", "peak_mb": 451, "seconds": 3.2,
                      "document": "bomb.pdf", "error": "over its cap"}],
        "queue": {"counts": {"queued": 4, "running": 1, "succeeded": 9, "dead": 1, "cancelled": 0},
                  "oldest_queued_s": 42, "dead": [{"job_id": "dead0000", "outcome": "invalid_input", "attempt": 1,
                                                   "max_attempts": 3, "dead_at": 0, "document": "x.pdf",
                                                   "error": "encrypted PDF"}], "retrying": []},
    }
    console = Console(record=True, width=160, color_system=None)
    console.print(render(picture, now=100))
    text = console.export_text()
    for expected in ("scan.pdf", "3/10", "300/450 MB", "310 MB", "queued 4", "oldest queued 42s", "bomb.pdf",
                     "oom", "dead letters (1)", "encrypted PDF", "fork server 60 MB"):
        assert expected in text, expected
