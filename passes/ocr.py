"""Pass 0.5, `ocr`: the text of every page, within a memory cap that does not grow with the page count.

Page by page:
- a page with a real text layer (at least `ocr.text_layer_min_chars` readable
  characters) is taken as it is, with no rendering and no OCR;
- any other page is rendered in grayscale at `ocr.dpi` (images at their own
  pixel size), scaled down to fit `ocr.max_render_pixels`, and read by RapidOCR
  with the lean settings of `lean_ocr`;
- after each page, MuPDF's image cache is emptied and the heap trimmed, so the
  next page starts from the same memory as the first one did.

Each page's result goes to the parent at once (`ctx.page_result`), so a retry
resumes at the first page without one. The result of a page:

    {"text": "…", "lines": [[box, text, confidence], …], "method": "text_layer" | "ocr",
     "seconds": 2.1, "rss_mb": 270.4, "width": 595.0, "height": 842.0, "dpi": 300}

`box` is four [x, y] corners in page units (PDF points, 1/72 in, from the top
left of the page as displayed); `width` and `height` are the page's size in the
same units. For image inputs a page unit is one pixel at the image's stored
resolution (96 dpi when it has none), as MuPDF sizes image pages.

onnxruntime and rapidocr are imported only when the first page needs OCR
(`lean_ocr.engine`), never at module import: the fork server imports what a
child needs ahead of time and must stay single-threaded.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymupdf

from docsuper.supervisor.config import SCHEMA

from . import inputs
from .api import InvalidInput, PassContext, rss_mb
from .lean_ocr import EngineSettings, engine, release_memory

PASS_NAME = "ocr"
_UNREADABLE = "\ufffd"  # what MuPDF gives for a glyph without a Unicode mapping
_MEMORY_WORDS = ("malloc", "out of memory", "cannot allocate", "bad_alloc")


@dataclass(frozen=True)
class OcrSettings:
    dpi: int
    max_render_pixels: int
    text_layer_min_chars: int
    engine: EngineSettings

    @classmethod
    def from_config(cls, config: dict[str, dict[str, Any]]) -> "OcrSettings":
        section = {key: spec.default for key, spec in SCHEMA["ocr"].items()}
        section.update(config.get("ocr", {}))
        return cls(
            dpi=int(section["dpi"]),
            max_render_pixels=int(section["max_render_pixels"]),
            text_layer_min_chars=int(section["text_layer_min_chars"]),
            engine=EngineSettings.from_config(section),
        )


def run(ctx: PassContext) -> dict[str, Any]:
    """The `ocr` pass: per-page text of the job's document; returns a summary (no full text)."""
    started = time.monotonic()
    name = ctx.pass_name or PASS_NAME
    settings = OcrSettings.from_config(ctx.config)
    document = inputs.open_input(ctx)
    stored = ctx.resumed(name)

    quiet_mupdf()
    doc = open_document(document)
    try:
        total = doc.page_count
        resumed = sorted(p for p in stored if 1 <= p <= total)
        counts = {"text_layer": 0, "ocr": 0}
        chars = sum(len(stored[p].get("text", "")) for p in resumed)
        done = len(resumed)
        ctx.progress(done, total)
        for index in range(total):
            number = index + 1
            if number in stored:
                continue
            result = read_page(doc, index, document, settings)
            counts[result["method"]] += 1
            chars += len(result["text"])
            release_memory()
            result["rss_mb"] = round(rss_mb(), 1)
            ctx.page_result(number, result)
            done += 1
            ctx.progress(done, total)
    finally:
        doc.close()
        release_memory()
    return {
        "pages": total,
        "pages_ocr": counts["ocr"],
        "pages_text_layer": counts["text_layer"],
        "resumed_pages": len(resumed),
        "chars": chars,
        "kind": document.kind,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def peak_rss_mb() -> float:
    """This process's own peak RSS in MB (VmHWM).

    Not getrusage's ru_maxrss: across fork and exec it keeps the parent's high-water
    mark, so a child started by a big process would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def quiet_mupdf() -> None:
    # MuPDF prints its warnings on stderr; they are collected per page instead.
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    pymupdf.TOOLS.mupdf_warnings(reset=True)


def open_document(document: inputs.Document) -> pymupdf.Document:
    try:
        return pymupdf.open(document.path, filetype=document.kind)
    except Exception as exc:
        raise _mupdf_failure(exc, f"the {document.kind.upper()} file cannot be opened") from None


def _mupdf_failure(exc: Exception, what: str) -> Exception:
    """MuPDF fails the same way on every attempt, except when memory ran out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if any(word in text.lower() for word in _MEMORY_WORDS):
        return MemoryError(f"{what}: {text}")
    return InvalidInput(f"damaged document: {what} ({text})")


def readable_chars(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace() and ch != _UNREADABLE)


def read_page(doc: pymupdf.Document, index: int, document: inputs.Document,
              settings: OcrSettings) -> dict[str, Any]:
    """One page's result: its text layer when it has a real one, otherwise OCR of its raster."""
    started = time.monotonic()
    number = index + 1
    try:
        page = doc.load_page(index)
        rect = page.rect
        text = page.get_text("text") if document.kind == "pdf" else ""
    except Exception as exc:
        raise _mupdf_failure(exc, f"page {number} cannot be read") from None
    result: dict[str, Any] = {"width": round(rect.width, 2), "height": round(rect.height, 2)}
    if readable_chars(text) >= max(1, settings.text_layer_min_chars):
        result.update(text=text, lines=text_layer_lines(page), method="text_layer")
    else:
        zoom = render_zoom(rect, document, index, settings)
        try:
            pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
        except Exception as exc:
            raise _mupdf_failure(exc, f"page {number} cannot be rendered") from None
        image = np.frombuffer(pix.samples_mv, dtype=np.uint8).reshape(pix.height, pix.stride)[:, :pix.width]
        lines = engine(settings.engine)(image)
        del image, pix
        result.update(
            text="\n".join(line[1] for line in lines),
            lines=[[_scale_box(box, zoom), text, round(conf, 4)] for box, text, conf in lines],
            method="ocr",
            dpi=round(72 * zoom, 1),
        )
    warnings = pymupdf.TOOLS.mupdf_warnings(reset=True)
    if warnings:
        result["warnings"] = warnings.splitlines()[:5]
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def render_zoom(rect: pymupdf.Rect, document: inputs.Document, index: int, settings: OcrSettings) -> float:
    """Scale from page units to pixels: the OCR dpi for PDF pages, 1:1 for image pixels,
    then down to fit max_render_pixels."""
    if document.kind == "pdf" or not document.image_sizes:
        zoom = settings.dpi / 72.0
    else:
        width, height = document.image_sizes[min(index, len(document.image_sizes) - 1)]
        # Area ratio, not width ratio: MuPDF may have turned the page by its EXIF orientation.
        zoom = math.sqrt(width * height / max(1e-6, rect.width * rect.height))
    area = rect.width * rect.height * zoom * zoom
    if area > settings.max_render_pixels:
        zoom *= math.sqrt(settings.max_render_pixels / area)
    return zoom


def _scale_box(box: list[list[float]], zoom: float) -> list[list[float]]:
    return [[round(float(x) / zoom, 1), round(float(y) / zoom, 1)] for x, y in box]


def text_layer_lines(page: pymupdf.Page) -> list[list[Any]]:
    """The text layer's lines, in the same shape as OCR lines (confidence 1)."""
    lines = []
    for block in page.get_text("dict", flags=pymupdf.TEXTFLAGS_TEXT)["blocks"]:
        for line in block.get("lines", ()):
            text = "".join(span["text"] for span in line["spans"]).strip()
            if not text:
                continue
            x0, y0, x1, y1 = (round(v, 1) for v in line["bbox"])
            lines.append([[[x0, y0], [x1, y0], [x1, y1], [x0, y1]], text, 1.0])
    return lines
