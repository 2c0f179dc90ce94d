"""Pass 0.5, `ocr`: the text of every page, within a memory cap that does not grow with the page count.

Page by page:
- a page with a real text layer (at least `ocr.text_layer_min_chars` readable
  characters) is taken as it is, with no rendering and no OCR;
- any other page is rendered in grayscale at the resolution the engine reads best
  (`render_dpi`: a scan near its own resolution, within the engine's range and
  never above `ocr.dpi`), scaled down to fit `ocr.max_render_pixels`, and read by
  the engine (`engines`: Tesseract, or RapidOCR with the lean settings of `lean_ocr`);
- after each page, MuPDF's image cache is emptied and the heap trimmed, so the
  next page starts from the same memory as the first one did.

PDF, PNG and JPEG pages come from MuPDF; a TIFF's pages from Pillow, one at a time
(`TiffPages`: MuPDF would hold the whole file in memory for the whole job).

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
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pymupdf

from docsuper.supervisor.config import OcrConfig

from . import inputs
from .api import InvalidInput, PassContext, is_allocation_failure, peak_rss_mb, rss_mb
from . import engines
from .clinical_terms import corrector
from .lean_ocr import release_memory
from .memory_plan import MemoryPlan, oom_attempts, plan_for
from .page_readers import PageReaders

PASS_NAME = "ocr"
MOST_READERS = 4  # pages read at once when the parent lends idle cores; it lends no more than it has
_UNREADABLE = "\ufffd"  # what MuPDF gives for a glyph without a Unicode mapping


@dataclass(frozen=True)
class OcrSettings:
    plan: MemoryPlan             # render dpi cap, pixel budget and engine for this attempt
    text_layer_min_chars: int
    engine_settings: Any         # the engine's own settings (hashable: the engine is cached on them)
    min_dpi: int                 # scans below this are upscaled for the engine
    max_dpi: int | None          # scans above this are scaled down for it (None: only the plan's dpi)
    vocabulary: tuple[bool, str]  # (ocr.clinical_vocabulary, ocr.user_words): misread terms put right

    @classmethod
    def from_config(cls, config: dict[str, dict[str, Any]], earlier_outcomes: list[str] | None = None
                    ) -> "OcrSettings":
        """For one attempt: the job's `[ocr]` section, made lighter after each earlier `oom`."""
        section = OcrConfig.from_mapping(config.get("ocr", {}))
        configured = engines.resolve(section.engine, section.tessdata_dir)
        leanest = engines.resolve("auto", section.tessdata_dir)  # Tesseract when installed: half RapidOCR's peak
        plan = plan_for(oom_attempts(earlier_outcomes), section.dpi, section.max_render_pixels, configured, leanest)
        return cls(plan=plan, text_layer_min_chars=section.text_layer_min_chars,
                   engine_settings=engines.settings_for(plan.engine, section), min_dpi=engines.min_dpi(plan.engine),
                   max_dpi=engines.max_dpi(plan.engine), vocabulary=(section.clinical_vocabulary, section.user_words))


def run(ctx: PassContext) -> dict[str, Any]:
    """The `ocr` pass: per-page text of the job's document; returns a summary (no full text)."""
    started = time.monotonic()
    name = ctx.pass_name or PASS_NAME
    settings = OcrSettings.from_config(ctx.config, getattr(ctx.spec, "earlier_outcomes", None))
    # Before any page: if this attempt runs out of memory, the parent knows which plan failed
    # (it records it with the attempt, and retries with a lighter one unless this was the lightest).
    ctx.emit({"type": "plan", "pass": name, "plan": {**settings.plan.as_dict(), "lightest": settings.plan.lightest}})
    document = inputs.open_input(ctx)
    stored = ctx.resumed(name)

    quiet_mupdf()
    doc = open_document(document)
    readers = page_readers(ctx, settings)
    try:
        total = doc.page_count
        resumed = sorted(p for p in stored if 1 <= p <= total)
        counts = {"text_layer": 0, "ocr": 0}
        chars = sum(len(stored[p].get("text", "")) for p in resumed)
        done = len(resumed)
        wanted = 1
        ctx.progress(done, total)

        def record(number: int, result: dict[str, Any]) -> None:
            nonlocal chars, done
            counts[result["method"]] += 1
            chars += len(result["text"])
            release_memory()
            result["rss_mb"] = round(rss_mb(), 1)
            ctx.page_result(number, result)
            done += 1
            ctx.progress(done, total)

        for index in range(total):
            number = index + 1
            if number in stored:
                continue
            for raster in readers.ready():
                record(raster.number, raster.result)
            page = prepare_page(doc, index, document, settings)
            if isinstance(page, Raster):
                # A scan: from now on the job could use as many readers as pages are left.
                left = sum(1 for n in range(number, total + 1) if n not in stored)
                if min(left, MOST_READERS) != wanted and engines.reads_in_parallel(settings.plan):
                    wanted = min(left, MOST_READERS)
                    ctx.want_readers(wanted)
                readers.submit(page)
            else:
                record(number, page)
        if wanted > 1:
            ctx.want_readers(1)
        for raster in readers.drain():
            record(raster.number, raster.result)
    finally:
        readers.close()
        doc.close()
        release_memory()
    return {
        "pages": total,
        "pages_ocr": counts["ocr"],
        "pages_text_layer": counts["text_layer"],
        "resumed_pages": len(resumed),
        "chars": chars,
        "kind": document.kind,
        "engine": settings.plan.engine,
        "plan": settings.plan.name,
        "seconds": round(time.monotonic() - started, 2),
        "peak_rss_mb": peak_rss_mb(),
        "readers": max(1, readers.most_at_once),
    }


def page_readers(ctx: PassContext, settings: OcrSettings) -> "PageReaders[Raster, Raster]":
    """Readers of the job's scans: the process's engine first, more while the parent lends cores."""
    name, engine_settings = settings.plan.engine, settings.engine_settings
    made = 0

    def make_engine() -> engines.OcrEngine:
        nonlocal made
        made += 1
        return engines.engine(name, engine_settings) if made == 1 else engines.make(name, engine_settings)

    return PageReaders(lambda raster, engine: recognize(raster, engine, settings), make_engine,
                       ctx.readers, MOST_READERS if engines.reads_in_parallel(settings.plan) else 1)


def quiet_mupdf() -> None:
    # MuPDF prints its warnings on stderr; they are collected per page instead.
    pymupdf.TOOLS.mupdf_display_errors(False)
    pymupdf.TOOLS.mupdf_display_warnings(False)
    pymupdf.TOOLS.mupdf_warnings(reset=True)


def open_document(document: inputs.Document) -> "pymupdf.Document | TiffPages":
    """MuPDF for PDF, PNG and JPEG; a TIFF is read a page at a time (`TiffPages`)."""
    if document.kind == "tiff":
        return TiffPages(Path(document.path), document.pages)
    try:
        return pymupdf.open(document.path, filetype=document.kind)
    except Exception as exc:
        raise _mupdf_failure(exc, f"the {document.kind.upper()} file cannot be opened") from None


class TiffPages:
    """A TIFF read one page at a time with Pillow, in MuPDF's page units.

    MuPDF opens an image file by reading all of it into memory, and decodes a TIFF page
    with a second, transient copy: an uncompressed A3 page at 300 dpi (17 MB) peaked at
    188 MB RSS, 17 MB of it the file, held for the whole job. Pillow reads a page's strips
    from the file, so only the decoded page is in memory, and only while it is scaled for
    the engine (169 MB on the same page). Page units are MuPDF's: points at the page's
    stored resolution, 96 dpi when it stores none (then read at its own pixels).
    """

    def __init__(self, path: Path, pages: int) -> None:
        self.path = path
        self.page_count = pages

    def page(self, index: int) -> tuple[float, float, float]:
        """(width, height) in points and the resolution it was scanned at (the finer axis)."""
        with self._open(index) as image:
            xres, yres = _tiff_dpi(image)
            return image.width * 72.0 / xres, image.height * 72.0 / yres, max(xres, yres)

    def render(self, index: int, zoom: float) -> np.ndarray:
        """The page in grayscale at `zoom` (pixels per point), an array over one `bytes`."""
        from PIL import Image

        with self._open(index) as image:
            xres, yres = _tiff_dpi(image)
            size = (max(1, round(image.width * 72.0 / xres * zoom)), max(1, round(image.height * 72.0 / yres * zoom)))
            image.load()
            gray = _gray(image)
            if gray.size != size:
                # Area averaging to go down (as MuPDF does), bilinear to go up (a 200x100 dpi fax).
                smaller = size[0] * size[1] < gray.width * gray.height
                gray = gray.resize(size, Image.Resampling.BOX if smaller else Image.Resampling.BILINEAR)
            data = gray.tobytes()
            del gray
        return np.frombuffer(data, dtype=np.uint8).reshape(size[1], size[0])

    def _open(self, index: int) -> Any:
        from PIL import Image

        with warnings.catch_warnings():  # odd tags ("Corrupt EXIF data") are not the page's text
            warnings.simplefilter("ignore")
            image = Image.open(self.path)
        try:
            image.seek(index)
        except BaseException:
            image.close()
            raise
        return image

    def close(self) -> None:
        pass  # each page opens the file and closes it again


def _tiff_dpi(image: Any) -> tuple[float, float]:
    """The page's resolution as MuPDF takes it, so that page units (and boxes) stay the same:
    inches or centimetres only (no unit, or no resolution: 96 dpi, "unknown"), whole dpi, and
    MuPDF's sanity rule for values below 72 or above 4800 (`fz_image_resolution`)."""
    tags = image.tag_v2
    try:
        xres, yres = float(tags.get(282, 0)), float(tags.get(283, 0))
    except (TypeError, ValueError, ZeroDivisionError):
        xres = yres = 0.0
    unit = tags.get(296, 2)  # TIFF's default unit is the inch
    if xres <= 0 or yres <= 0 or unit not in (2, 3):
        return _ASSUMED_DPI, _ASSUMED_DPI
    xres, yres = float(int(xres)), float(int(yres))  # MuPDF keeps whole numbers, then converts
    if unit == 3:
        xres, yres = float(int(xres) * 254 // 100), float(int(yres) * 254 // 100)
    sane, insane = 72.0, 4800.0
    if min(xres, yres) < sane or max(xres, yres) > insane:
        if xres == yres:
            return sane, sane
        if xres < yres:
            xres, yres = sane, float(int(yres * sane / xres))
        else:
            xres, yres = float(int(xres * sane / yres)), sane
        if xres == yres or min(xres, yres) < sane or max(xres, yres) > insane:
            return sane, sane
    return xres, yres


def _gray(image: Any) -> Any:
    """8-bit grayscale: a 16-bit scan keeps its top 8 bits (Pillow's convert would clip it)."""
    from PIL import Image

    if image.mode == "L":
        return image
    if image.mode.startswith("I;16"):
        return Image.fromarray((np.asarray(image, dtype=np.uint16) >> 8).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA"):  # on white, as MuPDF renders a transparent page
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("L")
    return image.convert("L")


def _mupdf_failure(exc: Exception, what: str) -> Exception:
    """MuPDF (or Pillow, for a TIFF) fails the same way on every attempt, except when memory ran out."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if is_allocation_failure(text):
        return MemoryError(f"{what}: {text}")
    return InvalidInput(f"damaged document: {what} ({text})")


def readable_chars(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace() and ch != _UNREADABLE)


@dataclass
class Raster:
    """A page rendered for the engine: what `prepare_page` leaves for `recognize`."""

    number: int
    image: np.ndarray | None
    zoom: float
    source: float | None
    stored: bool  # the source resolution is the file's own (not MuPDF's 96 dpi for none)
    started: float
    result: dict[str, Any]


def read_page(doc: "pymupdf.Document | TiffPages", index: int, document: inputs.Document,
              settings: OcrSettings) -> dict[str, Any]:
    """One page's result: its text layer when it has a real one, otherwise OCR of its raster."""
    page = prepare_page(doc, index, document, settings)
    if isinstance(page, Raster):
        return recognize(page, engines.engine(settings.plan.engine, settings.engine_settings), settings).result
    return page


def prepare_page(doc: "pymupdf.Document | TiffPages", index: int, document: inputs.Document,
                 settings: OcrSettings) -> "dict[str, Any] | Raster":
    """A page's text layer when it has a real one (its whole result), else its raster for the engine.
    MuPDF is not thread-safe: this runs on the pass's thread only."""
    started = time.monotonic()
    number = index + 1
    page: pymupdf.Page | None = None
    source: float | None = None
    try:
        if isinstance(doc, TiffPages):
            width, height, source = doc.page(index)
            rect = pymupdf.Rect(0, 0, width, height)
        else:
            page = doc.load_page(index)
            rect = page.rect
        text = page.get_text("text") if page is not None and document.kind == "pdf" else ""
    except Exception as exc:
        raise _mupdf_failure(exc, f"page {number} cannot be read") from None
    result: dict[str, Any] = {"width": round(rect.width, 2), "height": round(rect.height, 2)}
    if page is not None and readable_chars(text) >= max(1, settings.text_layer_min_chars):
        result.update(text=text, lines=text_layer_lines(page), method="text_layer")
        _note_warnings(result)
        result["seconds"] = round(time.monotonic() - started, 3)
        return result
    if page is not None:
        source = source_dpi(page)
    stored = not (document.kind != "pdf" and source is not None and abs(source - _ASSUMED_DPI) < 0.5)
    zoom = render_zoom(rect, source, settings, stored)
    try:
        if isinstance(doc, TiffPages):
            image = doc.render(index, zoom)
        else:
            assert page is not None
            image = render_gray(page, zoom)
    except MemoryError:
        raise  # the copy of the pixels, or Pillow's decode: outcome oom, not damaged input
    except Exception as exc:
        raise _mupdf_failure(exc, f"page {number} cannot be rendered") from None
    # The page holds the decoded image of an image file (a PNG's or a JPEG's): rendered now,
    # so it goes before the engine's peak.
    del page
    _note_warnings(result)
    return Raster(number, image, zoom, source, stored, started, result)


def recognize(raster: Raster, engine: engines.OcrEngine, settings: OcrSettings) -> Raster:
    """Read the raster with `engine` (on the pass's thread, or on a reader with an engine of its own)."""
    image, raster.image = raster.image, None
    assert image is not None
    lines = engine(image)
    del image
    fix = corrector(*settings.vocabulary)
    if fix:
        lines = [(box, fix.line(text), conf) for box, text, conf in lines]
    raster.result.update(
        text="\n".join(line[1] for line in lines),
        lines=[[_scale_box(box, raster.zoom), text, round(conf, 4)] for box, text, conf in lines],
        method="ocr",
        engine=settings.plan.engine,
        dpi=round(72 * raster.zoom, 1),
        source_dpi=round(raster.source, 1) if raster.source and raster.stored else None,
    )
    raster.result["seconds"] = round(time.monotonic() - raster.started, 3)
    return raster


def _note_warnings(result: dict[str, Any]) -> None:
    warnings = pymupdf.TOOLS.mupdf_warnings(reset=True)
    if warnings:
        result["warnings"] = warnings.splitlines()[:5]


def render_gray(page: pymupdf.Page, zoom: float) -> np.ndarray:
    """The page in grayscale at `zoom`, as an array over a `bytes` object, and nothing else held.

    The engine's peak comes on top of what is alive when it starts: MuPDF's decoded image
    of the scan (in its store) and the pixmap go first, so only the page's pixels remain
    (an engine hands the `bytes` to Tesseract without another copy). On a 300 dpi A4 page
    that is two page-sized buffers (17 MB) less at the peak.
    """
    pix = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), colorspace=pymupdf.csGRAY, alpha=False)
    pymupdf.TOOLS.store_shrink(100)  # the decoded scan: rendered now, not needed again for this page
    width, height, stride = pix.width, pix.height, pix.stride
    samples = pix.samples  # a copy, then the pixmap goes
    del pix
    image = np.frombuffer(samples, dtype=np.uint8).reshape(height, stride)
    return image if stride == width else image[:, :width]


# MuPDF gives an image without a stored resolution 96 dpi; scanners write 100, 150, 200,
# 300... So 96 means "unknown" (a phone photo, a screenshot): such an image is read at its
# own pixels, since upscaling a 4000-pixel photo "from 96 dpi" would only waste memory.
_ASSUMED_DPI = 96.0
# An image smaller than this share of the page is a logo or a stamp, not the page's scan.
_SCAN_AREA = 0.3


def source_dpi(page: pymupdf.Page) -> float | None:
    """The resolution the page was scanned at: the pixels of the image covering it against its size.

    None for a page with no image covering at least a third of it (vector drawings, a
    PDF page of outlined text). For a fax at 200×100 dpi it is 200: the finer axis
    holds the detail worth keeping.
    """
    try:
        infos = page.get_image_info()
    except Exception:  # reading the resolution is a refinement; rendering will report real damage
        return None
    page_area = max(1e-6, abs(page.rect))
    best: tuple[float, float] | None = None
    for info in infos:
        x0, y0, x1, y1 = info["bbox"]
        shown_w, shown_h = abs(x1 - x0), abs(y1 - y0)
        if shown_w * shown_h < _SCAN_AREA * page_area or shown_w < 1 or shown_h < 1:
            continue
        width, height = info["width"], info["height"]
        a, b = info["transform"][:2]
        if abs(b) > abs(a):  # turned by 90°: the image's width runs down the page
            width, height = height, width
        dpi = max(width / shown_w, height / shown_h) * 72.0
        if best is None or shown_w * shown_h > best[0]:
            best = (shown_w * shown_h, dpi)
    return best[1] if best else None


def render_dpi(source: float | None, stored: bool, plan_dpi: float, min_dpi: float,
               max_dpi: float | None) -> float:
    """The resolution a page is rendered at for the engine, before the pixel budget.

    A scan is read at its own resolution brought into the engine's range: upscaled to
    `min_dpi` when coarser (a 110 dpi scan at 200), scaled down to `max_dpi` when finer
    (Tesseract reads a 300 or 600 dpi scan at 200), and never above the plan's dpi. A page
    with no scan on it (`source` None) is rendered at the lower of the two ceilings. An
    image file that stores no resolution (`stored` False: MuPDF assumed 96 dpi) is read at
    its own pixels: its real resolution is unknown.
    """
    ceiling = float(plan_dpi) if max_dpi is None else float(min(plan_dpi, max_dpi))
    if source is None:
        return ceiling
    if not stored:
        return float(source)
    return min(ceiling, max(float(source), float(min_dpi)))


def render_zoom(rect: pymupdf.Rect, source: float | None, settings: OcrSettings, stored: bool = True) -> float:
    """Scale from page units (1/72 in) to pixels for the engine: `render_dpi`, then the pixel
    budget bounds it all."""
    dpi = render_dpi(source, stored, settings.plan.dpi, settings.min_dpi, settings.max_dpi)
    zoom = dpi / 72.0
    area = rect.width * rect.height * zoom * zoom
    if area > settings.plan.max_render_pixels:
        zoom *= math.sqrt(settings.plan.max_render_pixels / area)
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
