"""Sources and validation: every refusal is InvalidInput naming the problem, fast, before heavy work.

All documents are generated here (tests/docgen.py); the http(s) tests talk to a
local http.server on 127.0.0.1 in a thread.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from docsuper.passes import inputs
from docsuper.passes.api import InvalidInput, PassContext
from docsuper.passes.child import run_job
from docsuper.supervisor.config import load_config
from docsuper.supervisor.protocol import JobSpec

from . import docgen

REFUSAL_BUDGET_S = 2.0


def limits(tmp_path: Path, **inputs_overrides: Any) -> inputs.Limits:
    config = load_config(None, {}).as_dict()
    config["inputs"]["allowed_roots"] = [str(tmp_path)]
    config["inputs"].update(inputs_overrides)
    return inputs.Limits.from_config(config)


def refused(path: Path, lim: inputs.Limits) -> str:
    """Validate `path`, expecting a refusal within the budget; returns its message."""
    started = time.monotonic()
    with pytest.raises(InvalidInput) as info:
        inputs.validate(path, lim)
    elapsed = time.monotonic() - started
    assert elapsed < REFUSAL_BUDGET_S, f"refusing {path.name} took {elapsed:.2f} s"
    return str(info.value)


# --- what is accepted -----------------------------------------------------------------

@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small valid document of each kind, named with misleading extensions on purpose."""
    root = tmp_path_factory.mktemp("good")
    style = docgen.ScanStyle(dpi=100)
    page = docgen.scanned_page(1, style, lines=3)
    files = {
        "pdf": root / "scan.png",          # a PDF called .png
        "tiff": root / "pages.pdf",        # a TIFF called .pdf
        "png": root / "image.jpg",
        "jpeg": root / "photo",            # no extension at all
    }
    docgen.scanned_pdf(files["pdf"], [1, 2], style, lines=3)
    docgen.multipage_tiff(files["tiff"], [page, page, page], dpi=100)
    files["png"].write_bytes(docgen.encode_png(page.image))
    files["jpeg"].write_bytes(docgen.encode_jpeg(page.image))
    return files


@pytest.mark.parametrize("kind,pages", [("pdf", 2), ("tiff", 3), ("png", 1), ("jpeg", 1)])
def test_type_comes_from_content_not_name(good: dict[str, Path], kind: str, pages: int):
    lim = limits(good[kind].parent)
    doc = inputs.validate(good[kind], lim)
    assert (doc.kind, doc.pages) == (kind, pages)
    if kind != "pdf":
        height, width = docgen.scanned_page(1, docgen.ScanStyle(dpi=100), lines=3).image.shape
        assert doc.image_sizes == [(width, height)] * pages


def test_pdf_header_after_leading_junk_is_still_a_pdf(tmp_path: Path):
    path = tmp_path / "junk.pdf"
    docgen.text_pdf(path, [["some text on a page"]])
    path.write_bytes(b"\r\n" * 20 + path.read_bytes())
    assert inputs.validate(path, limits(tmp_path)).kind == "pdf"


def test_a_repairable_pdf_is_accepted(tmp_path: Path):
    """Cut after the last page's content: MuPDF rebuilds the xref and loses nothing."""
    whole = tmp_path / "whole.pdf"
    docgen.text_pdf(whole, [["line one of the page", "line two"]] * 3)
    cut = docgen.truncated_pdf(tmp_path / "cut.pdf", whole, keep=0.99)
    doc = inputs.validate(cut, limits(tmp_path))
    assert doc.pages == 3


# --- refusals -------------------------------------------------------------------------

def test_empty_file(tmp_path: Path):
    assert refused(docgen.empty_file(tmp_path / "empty.pdf"), limits(tmp_path)) == "empty file (0 bytes)"


@pytest.mark.parametrize("content,named", [
    (None, "GIF image"),
    (b"PK\x03\x04" + b"\x00" * 100, "ZIP archive"),
    (b"<!DOCTYPE html><html></html>", "HTML"),
    (b"II+\x00\x08\x00\x00\x00", "BigTIFF"),
    (b"\x00\x01\x02\x03 plain bytes", "first bytes 00 01 02 03"),
])
def test_unsupported_type(tmp_path: Path, content: bytes | None, named: str):
    path = tmp_path / "upload.pdf"  # the name says PDF; the content decides
    if content is None:
        docgen.unsupported_file(path)
    else:
        path.write_bytes(content)
    message = refused(path, limits(tmp_path))
    assert message.startswith("unsupported file type") and named in message
    assert "PDF, TIFF, PNG and JPEG are accepted" in message


def test_too_large(tmp_path: Path):
    path = docgen.big_file(tmp_path / "big.pdf", megabytes=2.2)
    message = refused(path, limits(tmp_path, max_file_mb=2))
    assert message.startswith("file too large: 2.2 MB over the 2.0 MB limit") and "inputs.max_file_mb" in message


def test_too_many_pdf_pages(tmp_path: Path):
    path = docgen.many_pages_pdf(tmp_path / "many.pdf", 12)
    message = refused(path, limits(tmp_path, max_pages=10))
    assert message == "too many pages: 12, the limit is 10 (inputs.max_pages)"


def test_too_many_tiff_pages(tmp_path: Path):
    page = docgen.Page(docgen.np.full((20, 20), 255, docgen.np.uint8), [])
    path = tmp_path / "many.tif"
    docgen.multipage_tiff(path, [page] * 4)
    message = refused(path, limits(tmp_path, max_pages=3))
    assert message == "too many pages: more than 3, the limit is 3 (inputs.max_pages)"


def test_a_thousand_page_pdf_is_checked_within_the_budget(tmp_path: Path):
    path = docgen.many_pages_pdf(tmp_path / "thousand.pdf", 1000)
    started = time.monotonic()
    assert inputs.validate(path, limits(tmp_path)).pages == 1000
    assert time.monotonic() - started < REFUSAL_BUDGET_S


def test_page_area_over_the_limit(tmp_path: Path):
    path = docgen.huge_page_pdf(tmp_path / "poster.pdf", inches=200)
    message = refused(path, limits(tmp_path))
    assert message.startswith("page 1 at 300 dpi is too large: 60000×60000 = 3600 megapixels")
    assert "inputs.max_page_pixels" in message


@pytest.mark.parametrize("make,expected", [
    (lambda d: docgen.png_bomb(d / "bomb.png"), "the image is too large: 100000×100000"),
    (lambda d: docgen.jpeg_bomb(d / "bomb.jpg"), "the image is too large: 60000×60000"),
    (lambda d: docgen.tiff_bomb(d / "bomb.tif"), "page 1 is too large: 50000×50000"),
    (lambda d: docgen.pdf_with_bomb_image(d / "bomb.pdf"), "an image on page 1 is too large: 30000×30000"),
])
def test_decompression_bombs_are_refused_from_their_headers(tmp_path: Path, make: Any, expected: str):
    path = make(tmp_path)
    assert path.stat().st_size < 100_000  # small on disk: only the declared size gives it away
    message = refused(path, limits(tmp_path))
    assert message.startswith(expected) and "decompression bomb" in message


def test_password_protected_pdf(tmp_path: Path):
    message = refused(docgen.encrypted_pdf(tmp_path / "locked.pdf"), limits(tmp_path))
    assert message.startswith("password-protected PDF")


def test_a_pdf_with_only_an_owner_password_is_read(tmp_path: Path):
    """Encrypted with an empty user password: anyone can open it, so it is not refused."""
    import pymupdf

    path = tmp_path / "owner.pdf"
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "printing restricted, reading allowed", fontname="helv")
    doc.save(path, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="", owner_pw="owner")
    doc.close()
    assert inputs.validate(path, limits(tmp_path)).pages == 1


def test_garbage_after_a_pdf_header(tmp_path: Path):
    message = refused(docgen.corrupt_pdf(tmp_path / "corrupt.pdf"), limits(tmp_path))
    assert message.startswith("damaged PDF: cannot be opened")


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
def test_truncated_scan(tmp_path: Path, keep: float):
    """An interrupted upload: MuPDF "repairs" it into pages with their content missing."""
    whole = tmp_path / "whole.pdf"
    docgen.scanned_pdf(whole, [1, 2, 3], docgen.ScanStyle(dpi=72), lines=3)
    message = refused(docgen.truncated_pdf(tmp_path / "cut.pdf", whole, keep), limits(tmp_path))
    assert message.startswith("damaged PDF")


def test_pdf_without_pages(tmp_path: Path):
    path = tmp_path / "nopages.pdf"
    body = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
            b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\n")
    xref = len(body)
    path.write_bytes(body + b"xref\n0 3\n0000000000 65535 f \n0000000009 00000 n \n0000000052 00000 n \n"
                     + b"trailer<</Size 3/Root 1 0 R>>\nstartxref\n" + str(xref).encode() + b"\n%%EOF\n")
    assert refused(path, limits(tmp_path)) == "PDF has no pages (empty or damaged)"


@pytest.mark.parametrize("data,expected", [
    (b"\x89PNG\r\n\x1a\n\x00\x00", "damaged PNG: no image header"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "damaged JPEG"),
    (b"II*\x00\xff\xff\x00\x00", "damaged TIFF: a page directory points past the end of the file"),
    (b"II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00", "damaged TIFF: page 1 has no width or height"),
    # One page of 10×10 whose "next page" is itself.
    (b"II*\x00\x08\x00\x00\x00\x02\x00" + b"\x00\x01\x04\x00\x01\x00\x00\x00\x0a\x00\x00\x00"
     + b"\x01\x01\x04\x00\x01\x00\x00\x00\x0a\x00\x00\x00" + b"\x08\x00\x00\x00", "damaged TIFF: its page list loops"),
])
def test_damaged_image_headers(tmp_path: Path, data: bytes, expected: str):
    path = tmp_path / "image"
    path.write_bytes(data)
    assert refused(path, limits(tmp_path)).startswith(expected)


# --- local sources ---------------------------------------------------------------------

def test_local_path_inside_an_allowed_root(tmp_path: Path, good: dict[str, Path]):
    lim = limits(good["pdf"].parent)
    path, downloaded = inputs.resolve_source(str(good["pdf"]), lim, tmp_path / "work")
    assert path == good["pdf"].resolve() and not downloaded


def test_file_url(tmp_path: Path):
    target = tmp_path / "a dir" / "doc.pdf"
    target.parent.mkdir()
    docgen.text_pdf(target, [["text layer page"]])
    url = "file://" + str(target).replace(" ", "%20")
    path, _ = inputs.resolve_source(url, limits(tmp_path), tmp_path / "work")
    assert path == target.resolve()


@pytest.mark.parametrize("source,expected", [
    (None, "the job has no source"),
    ("", "the job has no source"),
    ("ftp://example.org/doc.pdf", "unsupported source scheme ftp://"),
    ("s3://bucket/doc.pdf", "unsupported source scheme s3://"),
    ("file://fileserver/share/doc.pdf", "file:// URL names another host"),
])
def test_unusable_sources(tmp_path: Path, source: str | None, expected: str):
    with pytest.raises(InvalidInput, match=expected):
        inputs.resolve_source(source, limits(tmp_path), tmp_path / "work")


def test_missing_local_file(tmp_path: Path):
    with pytest.raises(InvalidInput, match="no such file: .*missing.pdf"):
        inputs.resolve_source(str(tmp_path / "missing.pdf"), limits(tmp_path), tmp_path / "work")


def test_directory_is_not_a_document(tmp_path: Path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(InvalidInput, match="is a directory"):
        inputs.resolve_source(str(tmp_path / "folder"), limits(tmp_path), tmp_path / "work")


def test_path_outside_the_allowed_roots(tmp_path: Path):
    inside, outside = tmp_path / "inbox", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    docgen.text_pdf(outside / "secret.pdf", [["not for this worker"]])
    lim = limits(tmp_path, allowed_roots=[str(inside)])
    with pytest.raises(InvalidInput, match="outside the allowed input directories"):
        inputs.resolve_source(str(outside / "secret.pdf"), lim, tmp_path / "work")
    with pytest.raises(InvalidInput, match="outside the allowed input directories"):
        inputs.resolve_source(str(inside / ".." / "elsewhere" / "secret.pdf"), lim, tmp_path / "work")


def test_a_symlink_out_of_an_allowed_root_is_refused(tmp_path: Path):
    inside, outside = tmp_path / "inbox", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    docgen.text_pdf(outside / "secret.pdf", [["not for this worker"]])
    (inside / "innocent.pdf").symlink_to(outside / "secret.pdf")
    lim = limits(tmp_path, allowed_roots=[str(inside)])
    with pytest.raises(InvalidInput, match="outside the allowed input directories"):
        inputs.resolve_source(str(inside / "innocent.pdf"), lim, tmp_path / "work")


def test_the_default_root_is_home_and_an_empty_list_takes_urls_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Issue 9.7: the old default (the daemon's working directory) meant something else to every shell.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    docgen.text_pdf(tmp_path / "home" / "here.pdf", [["in the home directory"]])
    docgen.text_pdf(tmp_path / "there.pdf", [["outside it"]])
    config = load_config("/dev/null", {}).as_dict()
    assert config["inputs"]["allowed_roots"] == ["~"]
    lim = inputs.Limits.from_config(config)
    assert inputs.resolve_source(str(tmp_path / "home" / "here.pdf"), lim, tmp_path / "work")[0] \
        == tmp_path / "home" / "here.pdf"
    with pytest.raises(InvalidInput, match="outside the allowed input directories"):
        inputs.resolve_source(str(tmp_path / "there.pdf"), lim, tmp_path / "work")
    with pytest.raises(InvalidInput, match="none: this worker takes URLs only"):
        inputs.resolve_source(str(tmp_path / "home" / "here.pdf"), limits(tmp_path, allowed_roots=[]),
                              tmp_path / "work")


# --- http(s) sources -----------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, Any] = {}
    seen: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        _Handler.seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        route = self.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_error(404, "Not Found")
            return
        route(self)


@pytest.fixture
def server() -> Iterator[tuple[str, dict[str, Any], list[dict[str, str]]]]:
    """(base URL, routes to fill, requests seen) of a local HTTP server."""
    _Handler.routes = {}
    _Handler.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", _Handler.routes, _Handler.seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def _send(body: bytes, status: int = 200, length: bool = True, headers: dict[str, str] | None = None) -> Any:
    def route(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
        if not length:
            handler.close_connection = True
    return route


def test_http_download_streams_to_the_workdir(tmp_path: Path, server: Any, good: dict[str, Path]):
    base, routes, _ = server
    routes["/object/doc"] = _send(good["pdf"].read_bytes(), headers={"Content-Type": "application/octet-stream"})
    work = tmp_path / "work"
    path, downloaded = inputs.resolve_source(f"{base}/object/doc?token=abc", limits(tmp_path), work)
    assert downloaded and path.parent == work
    assert path.read_bytes() == good["pdf"].read_bytes()
    assert inputs.validate(path, limits(tmp_path)).kind == "pdf"


def test_http_without_content_length_is_capped_while_streaming(tmp_path: Path, server: Any):
    base, routes, _ = server
    routes["/big"] = _send(b"%PDF-1.7\n" + b"x" * 300_000, length=False)
    with pytest.raises(InvalidInput, match="file too large: over the 0.2 MB limit"):
        inputs.resolve_source(f"{base}/big", limits(tmp_path, max_file_mb=0.2), tmp_path / "work")
    assert not (tmp_path / "work" / "source").exists()


def test_http_content_length_over_the_limit_is_refused_before_reading(tmp_path: Path, server: Any):
    base, routes, _ = server
    routes["/big"] = _send(b"%PDF-1.7\n" + b"x" * 300_000)
    with pytest.raises(InvalidInput, match=r"file too large: 0.3 MB over the 0.2 MB limit"):
        inputs.resolve_source(f"{base}/big", limits(tmp_path, max_file_mb=0.2), tmp_path / "work")


@pytest.mark.parametrize("status,error,expected", [
    (404, InvalidInput, "HTTP 404"),
    (410, InvalidInput, "HTTP 410"),
    (403, InvalidInput, "HTTP 403 .*bearer_token_env"),
    (500, inputs.SourceUnavailable, "HTTP 500"),
    (503, inputs.SourceUnavailable, "HTTP 503"),
    (429, inputs.SourceUnavailable, "HTTP 429"),
])
def test_http_status(tmp_path: Path, server: Any, status: int, error: type, expected: str):
    base, routes, _ = server
    routes["/doc"] = _send(b"nope", status=status)
    with pytest.raises(error, match=expected) as info:
        inputs.resolve_source(f"{base}/doc?secret=signature", limits(tmp_path), tmp_path / "work")
    assert "signature" not in str(info.value)  # signed URLs' queries are secrets


def test_http_redirect_is_followed(tmp_path: Path, server: Any, good: dict[str, Path]):
    base, routes, _ = server
    routes["/old"] = _send(b"", status=302, headers={"Location": "/new"})
    routes["/new"] = _send(good["png"].read_bytes())
    path, _ = inputs.resolve_source(f"{base}/old", limits(tmp_path), tmp_path / "work")
    assert inputs.validate(path, limits(tmp_path)).kind == "png"


def test_bearer_token_from_the_environment(tmp_path: Path, server: Any, good: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch):
    base, routes, seen = server
    routes["/storage/v1/object/authenticated/docs/a.pdf"] = _send(good["pdf"].read_bytes())
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "s3cret")
    lim = limits(tmp_path, bearer_token_env="SUPABASE_SERVICE_KEY", bearer_token_header="both")
    inputs.resolve_source(f"{base}/storage/v1/object/authenticated/docs/a.pdf", lim, tmp_path / "work")
    assert seen[-1]["authorization"] == "Bearer s3cret" and seen[-1]["apikey"] == "s3cret"


def test_bearer_token_only_to_its_hosts(tmp_path: Path, server: Any, good: dict[str, Path],
                                        monkeypatch: pytest.MonkeyPatch):
    base, routes, seen = server
    routes["/a.pdf"] = _send(good["pdf"].read_bytes())
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", "s3cret")
    lim = limits(tmp_path, bearer_token_env="SUPABASE_SERVICE_KEY", bearer_token_hosts=["project.supabase.co"])
    inputs.resolve_source(f"{base}/a.pdf", lim, tmp_path / "work")
    assert "authorization" not in seen[-1]


def test_bearer_token_is_not_carried_across_a_redirect_to_another_host(
        tmp_path: Path, server: Any, good: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    base, routes, seen = server
    port = base.rsplit(":", 1)[1]
    routes["/a.pdf"] = _send(b"", status=307, headers={"Location": f"http://localhost:{port}/b.pdf"})
    routes["/b.pdf"] = _send(good["pdf"].read_bytes())
    monkeypatch.setenv("TOKEN", "s3cret")
    inputs.resolve_source(f"{base}/a.pdf", limits(tmp_path, bearer_token_env="TOKEN"), tmp_path / "work")
    assert seen[0]["authorization"] == "Bearer s3cret"
    assert seen[1]["path"] == "/b.pdf" and "authorization" not in seen[1]


def test_http_read_timeout(tmp_path: Path, server: Any):
    base, routes, _ = server

    def stall(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"%PDF-1.7\n")
        handler.wfile.flush()
        time.sleep(3)

    routes["/slow"] = stall
    started = time.monotonic()
    with pytest.raises(inputs.SourceUnavailable, match="no data for 0.5 s"):
        inputs.resolve_source(f"{base}/slow", limits(tmp_path, read_timeout_s=0.5), tmp_path / "work")
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_source_that_trickles_a_byte_a_second_is_cut_off_at_the_download_deadline(
        tmp_path: Path, server: Any, where: str):
    # Issue 9.6: each byte arrives within the read timeout, so only an overall deadline ends it.
    base, routes, _ = server

    def trickle(handler: http.server.BaseHTTPRequestHandler) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        slow = (head + b"%PDF-1.7\n") if where == "headers" else b"%PDF-1.7\n" + b"x" * 100
        if where == "body":
            handler.wfile.write(head)
        try:
            for byte in slow[:30]:
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
                time.sleep(1)
        except OSError:
            pass  # the client gave up: what the test wants

    routes["/trickle"] = trickle
    started = time.monotonic()
    with pytest.raises(inputs.SourceUnavailable, match=r"not downloaded within 3 s \(inputs.download_timeout_s"):
        inputs.resolve_source(f"{base}/trickle", limits(tmp_path, read_timeout_s=2, download_timeout_s=3),
                              tmp_path / "work")
    assert 3 <= time.monotonic() - started < 5
    assert not (tmp_path / "work" / "source").exists()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # the timer is put away


@pytest.mark.parametrize("url, problem", [
    ("http://127.0.0.1:99999/a.pdf", "Port out of range"),
    ("http://127.0.0.1:http/a.pdf", "Port could not be cast"),
    ("http://[::1/a.pdf", "Invalid IPv6 URL"),
    ("http://[not-an-address]/a.pdf", "does not appear to be an IPv4 or IPv6 address"),
    ("http://127.0.0.1/a.pdf\r\nX-Injected: 1", "spaces or control characters"),
    ("http://127.0.0.1/scan 1.pdf", "spaces or control characters"),
    ("http:///a.pdf", "names no host"),
    ("http://127.0.0.1:0/a.pdf", "port 0"),
])
def test_a_malformed_url_is_invalid_input_on_the_first_attempt(tmp_path: Path, url: str, problem: str):
    # Issue 9.6: these ended as `error` and were retried.
    with pytest.raises(InvalidInput, match=re.escape(problem)):
        inputs.resolve_source(url, limits(tmp_path), tmp_path / "work")
    assert inputs.url_problem(url) is not None


def test_a_malformed_url_through_the_child_is_invalid_input(tmp_path: Path):
    config = load_config("/dev/null", {}).as_dict()
    events_path = tmp_path / "events"
    fd = os.open(events_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        code = run_job(JobSpec(job_id="badurl", attempt=1, source="https://u:pw-9c1@[::1/a.pdf", passes=["ocr"],
                               config=config), fd)
    finally:
        os.close(fd)
    failure = [json.loads(line) for line in events_path.read_text().splitlines()][-1]
    assert code == 1 and failure["outcome"] == "invalid_input" and "Invalid IPv6 URL" in failure["message"]
    assert "pw-9c1" not in failure["message"]


def test_connection_refused_is_worth_a_retry(tmp_path: Path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(inputs.SourceUnavailable, match="cannot connect"):
        inputs.resolve_source(f"http://127.0.0.1:{port}/doc.pdf", limits(tmp_path), tmp_path / "work")


# --- through the child runtime: invalid_input, and only that ---------------------------------

def _bad_inputs(root: Path) -> dict[str, str]:
    whole = root / "whole.pdf"
    docgen.scanned_pdf(whole, [1, 2], docgen.ScanStyle(dpi=72), lines=3)
    return {
        "empty": str(docgen.empty_file(root / "empty.pdf")),
        "unsupported": str(docgen.unsupported_file(root / "anim.gif")),
        "corrupt": str(docgen.corrupt_pdf(root / "corrupt.pdf")),
        "truncated": str(docgen.truncated_pdf(root / "cut.pdf", whole, 0.5)),
        "encrypted": str(docgen.encrypted_pdf(root / "locked.pdf")),
        "too large": str(docgen.big_file(root / "big.pdf", 1.2)),
        "too many pages": str(docgen.many_pages_pdf(root / "many.pdf", 6)),
        "huge page": str(docgen.huge_page_pdf(root / "poster.pdf")),
        "png bomb": str(docgen.png_bomb(root / "bomb.png")),
        "pdf bomb": str(docgen.pdf_with_bomb_image(root / "bomb.pdf")),
        "missing": str(root / "missing.pdf"),
    }


def test_every_bad_input_fails_the_ocr_job_as_invalid_input(tmp_path: Path):
    config = load_config(None, {}).as_dict()
    config["inputs"].update(allowed_roots=[str(tmp_path)], max_file_mb=1.0, max_pages=5)
    for name, source in _bad_inputs(tmp_path).items():
        events_path = tmp_path / f"events-{name}"
        fd = os.open(events_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        started = time.monotonic()
        try:
            code = run_job(JobSpec(job_id=name, attempt=1, source=source, passes=["ocr"], config=config), fd)
        finally:
            os.close(fd)
        elapsed = time.monotonic() - started
        events = [json.loads(line) for line in events_path.read_text().splitlines()]
        failure = events[-1]
        assert code == 1 and failure["type"] == "failure", (name, events)
        assert failure["outcome"] == "invalid_input", (name, failure)
        assert "traceback" not in failure, (name, failure)
        assert elapsed < REFUSAL_BUDGET_S, (name, elapsed)


def test_open_input_is_cached_per_job(tmp_path: Path, good: dict[str, Path]):
    config = load_config(None, {}).as_dict()
    config["inputs"]["allowed_roots"] = [str(good["pdf"].parent)]
    ctx = PassContext(JobSpec(job_id="j", attempt=1, source=str(good["pdf"]), passes=["ocr"], config=config),
                      os.open(os.devnull, os.O_WRONLY), workdir=tmp_path)
    assert inputs.open_input(ctx) is inputs.open_input(ctx)
