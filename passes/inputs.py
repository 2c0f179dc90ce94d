"""A job's source, made into a local file that is known to be safe to open.

Runs inside the child, before any heavy work:

    doc = inputs.open_input(ctx)      # fetch + validate, once per job
    doc.path, doc.kind, doc.pages

Sources: a local path (only under `inputs.allowed_roots`, symlinks resolved
first), a `file://` URL (same rule), or an `http(s)://` URL streamed into the
job's private work directory with a size cap, connect and read timeouts, an
overall deadline (`inputs.download_timeout_s`, so a server that trickles a byte
a second cannot hold a worker slot until the job times out) and an optional
bearer token (Supabase Storage). A URL that cannot be fetched as written (a bad
port, a bad IPv6 literal, spaces or control characters) is `InvalidInput`.

The type comes from the first bytes, never from the name: PDF, TIFF, PNG and
JPEG are taken; anything else is refused. Validation then reads only headers
and the PDF object structure (no page is rendered, no image decoded) and refuses
with `InvalidInput` whatever can never succeed: an empty, oversized, damaged,
password-protected or unsupported file, too many pages, and pages or images
whose declared pixel area is over the limit (decompression bombs declare a huge
size in a tiny file, so the declared size is what counts).

Failures that a later attempt may not meet (a server down, a timeout, HTTP 5xx)
raise `SourceUnavailable`, an ordinary exception: the job is retried.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import struct
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Iterator, Mapping
from urllib.parse import unquote, urljoin, urlsplit

from docsuper.supervisor.config import InputsConfig, OcrConfig
from docsuper.supervisor.redact import redact, remember

from .api import InvalidInput, PassContext

KINDS = ("pdf", "tiff", "png", "jpeg")
CHUNK = 1 << 16
MAX_REDIRECTS = 5
HEAD_BYTES = 1024  # the PDF header may follow up to 1 KB of junk (PDF 1.7, annex H)

# Formats people upload that we do not take, so the refusal can name them.
_KNOWN_OTHERS: tuple[tuple[bytes, str], ...] = (
    (b"GIF8", "GIF image"),
    (b"BM", "BMP image"),
    (b"PK\x03\x04", "ZIP archive (DOCX, XLSX, ODT…)"),
    (b"\xd0\xcf\x11\xe0", "legacy Microsoft Office document"),
    (b"{\\rtf", "RTF document"),
    (b"\x1f\x8b", "gzip archive"),
    (b"II+\x00", "BigTIFF image"),
    (b"MM\x00+", "BigTIFF image"),
    (b"<", "HTML or XML document"),
)


class SourceUnavailable(Exception):
    """The source could not be fetched now (network, timeout, server error): worth a retry."""


@dataclass(frozen=True)
class Limits:
    max_file_bytes: int
    max_pages: int
    max_page_pixels: int
    dpi: int
    allowed_roots: tuple[str, ...]
    connect_timeout_s: float
    read_timeout_s: float
    download_timeout_s: float
    bearer_token_env: str
    bearer_token_hosts: tuple[str, ...]
    bearer_token_header: str

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any]]) -> Limits:
        """From a job's config sections (plain values): the typed sections check them and fill in defaults."""
        section = InputsConfig.from_mapping(config.get("inputs", {}))
        dpi = OcrConfig.from_mapping(config.get("ocr", {})).dpi
        return cls(
            max_file_bytes=int(section.max_file_mb * 1024 * 1024),
            max_pages=section.max_pages,
            max_page_pixels=section.max_page_pixels,
            dpi=dpi,
            allowed_roots=section.allowed_roots,
            connect_timeout_s=section.connect_timeout_s,
            read_timeout_s=section.read_timeout_s,
            download_timeout_s=section.download_timeout_s,
            bearer_token_env=section.bearer_token_env,
            bearer_token_hosts=tuple(h.lower() for h in section.bearer_token_hosts),
            bearer_token_header=section.bearer_token_header,
        )


@dataclass
class Document:
    """A validated input: a local file of a known kind and page count."""

    path: Path
    kind: str          # one of KINDS
    pages: int
    size: int          # bytes
    source: str
    downloaded: bool = False
    image_sizes: list[tuple[int, int]] | None = None  # (width, height) in pixels per page, for images


# --- sources ----------------------------------------------------------------------

def resolve_source(source: str | None, limits: Limits, workdir: Path) -> tuple[Path, bool]:
    """A local file for `source`: (path, downloaded). Refuses what can never be read."""
    if source is None or not str(source).strip():
        raise InvalidInput("the job has no source (expected a path, file:// or http(s):// URL)")
    source = str(source).strip()
    scheme = source.partition("://")[0].lower() if "://" in source else ""
    if scheme in ("http", "https"):
        problem = url_problem(source)
        if problem:
            raise InvalidInput(f"{redact(source)}: {problem}")
        return download(source, limits, workdir), True
    if scheme == "file":
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise InvalidInput(f"file:// URL names another host ({parts.netloc!r}); only local files can be read")
        return local_path(unquote(parts.path), limits), False
    if scheme:
        raise InvalidInput(f"unsupported source scheme {scheme}:// (use a path, file:// or http(s)://)")
    return local_path(source, limits), False


def url_problem(url: str) -> str | None:
    """Why this http(s) URL can never be fetched as written, or None. The submitter
    checks it too, so the mistake is refused before it is queued."""
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        return "a URL cannot contain spaces or control characters (percent-encode them)"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number from 0 to 65535, a bad [IPv6] literal
        return f"malformed URL: {exc}"
    if parts.scheme.lower() not in ("http", "https"):
        return f"unsupported scheme {parts.scheme}:// (use http:// or https://)"
    if not parts.hostname:
        return "the URL names no host"
    if port == 0:
        return "port 0 cannot be connected to"
    return None


def allowed_roots(roots: tuple[str, ...]) -> list[Path]:
    """`inputs.allowed_roots` as absolute directories (`~` is the home of the user running this)."""
    return [Path(root).expanduser().resolve() for root in roots]


def local_path(raw: str, limits: Limits) -> Path:
    """The resolved local file for a path source, if it lies under the allowed roots."""
    return checked_local_path(raw, limits.allowed_roots)


def checked_local_path(raw: str, roots: tuple[str, ...]) -> Path:
    """`raw` resolved, checked to be a readable regular file under one of `roots` (the submitter
    runs the same check against the same config, so a job is refused before it is queued)."""
    path = Path(raw).expanduser()
    try:
        # Resolve first: a symlink inside an allowed root may point anywhere.
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {raw}") from None
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise InvalidInput(f"cannot resolve {raw}: {exc}") from None
    allowed = allowed_roots(roots)
    if not any(resolved == root or resolved.is_relative_to(root) for root in allowed):
        shown = ", ".join(str(r) for r in allowed) or "none: this worker takes URLs only"
        raise InvalidInput(f"{raw} is outside the allowed input directories ({shown}); see inputs.allowed_roots")
    if resolved.is_dir():
        raise InvalidInput(f"{raw} is a directory, not a document")
    if not resolved.is_file():
        raise InvalidInput(f"{raw} is not a regular file")
    if not os.access(resolved, os.R_OK):
        raise InvalidInput(f"{raw}: permission denied")
    return resolved


def _token_headers(url: str, limits: Limits) -> dict[str, str]:
    if not limits.bearer_token_env:
        return {}
    token = os.environ.get(limits.bearer_token_env, "")
    remember(token)  # a server may echo it back in an error this job then stores
    host = (urlsplit(url).hostname or "").lower()
    if not token or (limits.bearer_token_hosts and host not in limits.bearer_token_hosts):
        return {}
    headers = {}
    if limits.bearer_token_header in ("authorization", "both"):
        headers["Authorization"] = f"Bearer {token}"
    if limits.bearer_token_header in ("apikey", "both"):
        headers["apikey"] = token  # Supabase's newer secret keys go here, not in Authorization
    return headers


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower(), parts.port


class _DeadlinePassed(Exception):
    pass


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Raise _DeadlinePassed after `seconds`, whatever read or connect is blocking then.

    Connect and read timeouts bound one wait each; a server that sends a byte a second
    never trips them. A timer signal bounds the whole download. The child's main thread
    is the only one that can receive it; elsewhere (a test's thread) there is no deadline."""
    def expire(signum: int, frame: FrameType | None) -> None:
        raise _DeadlinePassed

    try:
        previous = signal.signal(signal.SIGALRM, expire)
    except ValueError:  # not the main thread
        yield
        return
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def download(url: str, limits: Limits, workdir: Path) -> Path:
    """Stream `url` into workdir; never more than inputs.max_file_mb on disk or in memory,
    never longer than inputs.download_timeout_s."""
    # Signed URLs carry secrets in the query; user-info is a password or a token.
    shown = redact(urlsplit(url)._replace(query="", fragment="").geturl())
    started = time.monotonic()
    try:
        with _deadline(limits.download_timeout_s):
            return _download(url, limits, workdir, shown)
    except _DeadlinePassed:
        raise SourceUnavailable(f"{shown}: not downloaded within {limits.download_timeout_s:g} s "
                                f"(inputs.download_timeout_s; {time.monotonic() - started:.1f} s spent)") from None


def _download(url: str, limits: Limits, workdir: Path, shown: str) -> Path:
    first_origin = _origin(url)
    token = _token_headers(url, limits)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        if url_problem(current):
            raise InvalidInput(f"{shown}: redirected to an unusable URL ({url_problem(current)})")
        parts = urlsplit(current)
        headers = {"User-Agent": "docsuper", "Accept-Encoding": "identity"}
        # The token goes only to the origin it was configured for, never along a redirect elsewhere.
        if _origin(current) == first_origin:
            headers.update(token)
        conn = _connect(parts, limits, shown)
        try:
            target = parts.path or "/"
            if parts.query:
                target += "?" + parts.query
            try:
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
            except (socket.timeout, TimeoutError):
                raise SourceUnavailable(f"{shown}: no response within {limits.read_timeout_s:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                raise SourceUnavailable(f"{shown}: {type(exc).__name__}: {exc}") from None
            status = response.status
            if status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise InvalidInput(f"{shown}: HTTP {status} redirect without a Location")
                current = urljoin(current, location)
                continue
            if status != 200:
                _refuse_status(shown, status, response.reason)
            return _save(response, limits, workdir, shown)
        finally:
            conn.close()
    raise InvalidInput(f"{shown}: more than {MAX_REDIRECTS} redirects")


def _connect(parts: Any, limits: Limits, shown: str) -> http.client.HTTPConnection:
    host, port = parts.hostname, parts.port
    conn: http.client.HTTPConnection
    if parts.scheme.lower() == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=limits.connect_timeout_s,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(host, port, timeout=limits.connect_timeout_s)
    try:
        conn.connect()
    except (socket.timeout, TimeoutError):
        raise SourceUnavailable(f"{shown}: no connection within {limits.connect_timeout_s:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        raise SourceUnavailable(f"{shown}: TLS certificate not trusted: {exc.verify_message}") from None
    except OSError as exc:
        raise SourceUnavailable(f"{shown}: cannot connect: {exc.strerror or exc}") from None
    # The connect timeout is spent; from here each read may wait read_timeout_s.
    assert conn.sock is not None
    conn.sock.settimeout(limits.read_timeout_s)
    return conn


def _refuse_status(shown: str, status: int, reason: str) -> None:
    message = redact(f"{shown}: HTTP {status} {reason}".rstrip())
    # 408, 425, 429 and 5xx are the server's state, not the document's: worth a retry.
    if status in (408, 425, 429) or status >= 500:
        raise SourceUnavailable(message)
    if status in (401, 403):
        message += " (check inputs.bearer_token_env and the token's rights)"
    raise InvalidInput(message)


def _save(response: http.client.HTTPResponse, limits: Limits, workdir: Path, shown: str) -> Path:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > limits.max_file_bytes:
        raise InvalidInput(f"{shown}: file too large: {_mb(int(declared))} over the "
                           f"{_mb(limits.max_file_bytes)} limit (inputs.max_file_mb)")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "source"
    received = 0
    try:
        with open(path, "wb") as out:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                received += len(chunk)
                if received > limits.max_file_bytes:
                    raise InvalidInput(f"{shown}: file too large: over the {_mb(limits.max_file_bytes)} "
                                       "limit (inputs.max_file_mb)")
                out.write(chunk)
    except (socket.timeout, TimeoutError):
        path.unlink(missing_ok=True)
        raise SourceUnavailable(f"{shown}: no data for {limits.read_timeout_s:g} s after "
                                f"{_mb(received)}") from None
    except (OSError, http.client.HTTPException) as exc:
        path.unlink(missing_ok=True)
        raise SourceUnavailable(f"{shown}: download broken after {_mb(received)}: {exc}") from None
    except BaseException:  # too large, the overall deadline: no partial file stays behind
        path.unlink(missing_ok=True)
        raise
    if declared and declared.isdigit() and received < int(declared):
        path.unlink(missing_ok=True)
        raise SourceUnavailable(f"{shown}: connection closed after {received} of {declared} bytes")
    return path


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


# --- type -------------------------------------------------------------------------

def sniff(head: bytes) -> str:
    """The kind of file from its first bytes; InvalidInput for anything else."""
    if head.startswith(b"%PDF-") or b"%PDF-" in head[:HEAD_BYTES]:
        return "pdf"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    for magic, name in _KNOWN_OTHERS:
        if head.startswith(magic):
            raise InvalidInput(f"unsupported file type: {name} (PDF, TIFF, PNG and JPEG are accepted)")
    if head.lstrip()[:1] == b"<":
        raise InvalidInput("unsupported file type: HTML or XML document (PDF, TIFF, PNG and JPEG are accepted)")
    shown = head[:8].hex(" ")
    raise InvalidInput(f"unsupported file type (first bytes {shown}; PDF, TIFF, PNG and JPEG are accepted)")


# --- image headers ------------------------------------------------------------------

def png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidInput("damaged PNG: no image header")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise InvalidInput("damaged PNG: zero width or height")
    return width, height


def jpeg_size(fh: Any) -> tuple[int, int]:
    """Width and height from the JPEG frame header, reading markers only."""
    fh.seek(2)
    while True:
        byte = fh.read(1)
        while byte and byte != b"\xff":
            byte = fh.read(1)  # tolerate padding between segments
        while byte == b"\xff":
            byte = fh.read(1)  # fill bytes
        if not byte:
            raise InvalidInput("damaged JPEG: no frame header")
        marker = byte[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue  # markers without a length
        if marker == 0xD9:
            raise InvalidInput("damaged JPEG: ends before its frame header")
        raw = fh.read(2)
        if len(raw) < 2:
            raise InvalidInput("damaged JPEG: truncated")
        length = struct.unpack(">H", raw)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            frame = fh.read(5)
            if len(frame) < 5:
                raise InvalidInput("damaged JPEG: truncated frame header")
            height, width = struct.unpack(">HH", frame[1:5])
            if width == 0 or height == 0:
                # height 0 means "given later" (DNL); no real scanner writes it, and we cannot size it.
                raise InvalidInput("damaged JPEG: frame header declares zero width or height")
            return width, height
        if length < 2:
            raise InvalidInput("damaged JPEG: bad segment length")
        fh.seek(length - 2, os.SEEK_CUR)


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4), 16: ("Q", 8)}


def tiff_pages(fh: Any, size: int, max_pages: int) -> Iterator[tuple[int, int]]:
    """(width, height) of each page (IFD), from the tags alone. Stops past max_pages + 1."""
    fh.seek(0)
    head = fh.read(8)
    order = "<" if head[:2] == b"II" else ">"
    offset = struct.unpack(order + "I", head[4:8])[0]
    seen: set[int] = set()
    count = 0
    while offset:
        if offset in seen:
            raise InvalidInput("damaged TIFF: its page list loops")
        if offset + 2 > size:
            raise InvalidInput("damaged TIFF: a page directory points past the end of the file")
        seen.add(offset)
        fh.seek(offset)
        entries = struct.unpack(order + "H", fh.read(2))[0]
        table = fh.read(entries * 12 + 4)
        if len(table) < entries * 12 + 4:
            raise InvalidInput("damaged TIFF: truncated page directory")
        width = height = 0
        for i in range(entries):
            tag, kind, n = struct.unpack(order + "HHI", table[i * 12:i * 12 + 8])
            if tag in (256, 257) and kind in _TIFF_TYPES and n == 1:
                fmt, width_bytes = _TIFF_TYPES[kind]
                value = struct.unpack(order + fmt, table[i * 12 + 8:i * 12 + 8 + width_bytes])[0]
                if tag == 256:
                    width = value
                else:
                    height = value
        if not width or not height:
            raise InvalidInput(f"damaged TIFF: page {count + 1} has no width or height")
        yield width, height
        count += 1
        if count > max_pages:
            return
        offset = struct.unpack(order + "I", table[entries * 12:entries * 12 + 4])[0]


# --- validation ---------------------------------------------------------------------

def validate(path: Path, limits: Limits, source: str = "", downloaded: bool = False) -> Document:
    """Refuse (InvalidInput) what can never succeed; cheap: headers and PDF structure only."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise InvalidInput(f"cannot read the file: {exc.strerror}") from None
    if size == 0:
        raise InvalidInput("empty file (0 bytes)")
    if size > limits.max_file_bytes:
        raise InvalidInput(f"file too large: {_mb(size)} over the {_mb(limits.max_file_bytes)} "
                           "limit (inputs.max_file_mb)")
    kind = sniff(head)
    sizes = None
    if kind == "pdf":
        pages = _validate_pdf(path, limits)
    else:
        sizes = _validate_image(path, kind, size, head, limits)
        pages = len(sizes)
    return Document(path=path, kind=kind, pages=pages, size=size, source=source or str(path),
                    downloaded=downloaded, image_sizes=sizes)


def _too_many_pages(count: int, limits: Limits, more: bool = False) -> InvalidInput:
    shown = f"more than {limits.max_pages}" if more else str(count)
    return InvalidInput(f"too many pages: {shown}, the limit is {limits.max_pages} (inputs.max_pages)")


def _check_pixels(what: str, width: int, height: int, limits: Limits, image: bool = True) -> None:
    if width * height > limits.max_page_pixels:
        hint = "; a decompression bomb declares such a size" if image else ""
        raise InvalidInput(
            f"{what} is too large: {width}×{height} = {width * height / 1e6:.0f} megapixels, over the "
            f"{limits.max_page_pixels / 1e6:g} megapixel limit (inputs.max_page_pixels{hint})")


def _validate_image(path: Path, kind: str, size: int, head: bytes, limits: Limits) -> list[tuple[int, int]]:
    """Each page's (width, height), read from the headers; the pixels are not decoded."""
    if kind == "png":
        width, height = png_size(head)
        _check_pixels("the image", width, height, limits)
        return [(width, height)]
    with open(path, "rb") as fh:
        if kind == "jpeg":
            width, height = jpeg_size(fh)
            _check_pixels("the image", width, height, limits)
            return [(width, height)]
        sizes: list[tuple[int, int]] = []
        for width, height in tiff_pages(fh, size, limits.max_pages):
            sizes.append((width, height))
            if len(sizes) > limits.max_pages:
                raise _too_many_pages(len(sizes), limits, more=True)
            _check_pixels(f"page {len(sizes)}", width, height, limits)
        if not sizes:
            raise InvalidInput("damaged TIFF: no pages")
        return sizes


# MuPDF warnings that mean content was lost in a repair, not just an xref rebuilt.
_DAMAGE_WARNINGS = ("non-page object in page tree", "page tree load failed", "object is not a stream",
                    "cannot load content", "cannot find object", "expected object number")


def _validate_pdf(path: Path, limits: Limits) -> int:
    import pymupdf  # here, not at the top: sniffing and fetching need no MuPDF

    pymupdf.TOOLS.mupdf_warnings(reset=True)
    try:
        doc = pymupdf.open(path, filetype="pdf")
    except Exception as exc:  # FileDataError, RuntimeError: MuPDF's words are the best description
        raise InvalidInput(f"damaged PDF: cannot be opened ({_first_line(exc)})") from None
    try:
        if doc.needs_pass:
            raise InvalidInput("password-protected PDF: it cannot be opened without its password")
        try:
            count = doc.page_count
        except Exception as exc:
            raise InvalidInput(f"damaged PDF: its page list cannot be read ({_first_line(exc)})") from None
        if count == 0:
            raise InvalidInput("PDF has no pages (empty or damaged)")
        if count > limits.max_pages:
            raise _too_many_pages(count, limits)
        repaired = doc.is_repaired
        scale = limits.dpi / 72.0
        for pno in range(count):
            try:
                page = doc.load_page(pno)
                rect = page.rect
                images = doc.get_page_images(pno)
                contents = page.get_contents() if repaired else []
            except Exception as exc:
                raise InvalidInput(f"damaged PDF: page {pno + 1} cannot be read ({_first_line(exc)})") from None
            width, height = round(rect.width * scale), round(rect.height * scale)
            if width <= 0 or height <= 0:
                raise InvalidInput(f"damaged PDF: page {pno + 1} has no area")
            _check_pixels(f"page {pno + 1} at {limits.dpi} dpi", width, height, limits, image=False)
            for image in images:
                xref, img_w, img_h = image[0], image[2], image[3]
                _check_pixels(f"an image on page {pno + 1}", img_w, img_h, limits)
                if repaired and not doc.xref_is_stream(xref):
                    raise InvalidInput(f"damaged PDF: an image on page {pno + 1} is missing (truncated file?)")
            for xref in contents:
                if not doc.xref_is_stream(xref):
                    raise InvalidInput(f"damaged PDF: page {pno + 1}'s content is missing (truncated file?)")
        if repaired:
            warnings = pymupdf.TOOLS.mupdf_warnings()
            lost = [w for w in warnings.splitlines() if any(p in w.lower() for p in _DAMAGE_WARNINGS)]
            if lost:
                raise InvalidInput(f"damaged PDF: MuPDF could not repair it ({lost[0]})")
        return count
    finally:
        doc.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- for passes ----------------------------------------------------------------------

_ATTR = "_docsuper_input"


def open_input(ctx: PassContext) -> Document:
    """The job's validated document, fetched once per job however many passes ask."""
    cached = getattr(ctx, _ATTR, None)
    if cached is not None:
        return cached
    limits = Limits.from_config(ctx.config)
    path, downloaded = resolve_source(ctx.source, limits, ctx.workdir)
    document = validate(path, limits, source=str(ctx.source), downloaded=downloaded)
    setattr(ctx, _ATTR, document)
    return document
