"""RapidOCR set up to fit a small memory cap: the engine, its settings, and the per-page cleanup.

Why each setting (measured by scripts/bench_ocr.py, figures in docs/ocr.md):
- Detector input limited to `det_max_side` (~800 px). rapidocr-onnxruntime 1.4.4
  ignores det_limit_type/det_limit_side_len for page-sized images: its
  `TextDetector.get_preprocess` picks 2000 px itself above 1500 px. At that size
  detection alone takes RSS from ~180 MB to 460-715 MB, which the heap keeps, and
  it merges the words of a line (spaces get lost). So the detector's preprocessing
  is replaced here; the boxes are mapped back to the full page and the
  recognition crops still come from the full-resolution image.
- No angle classifier: at its 0.9 threshold it flips clean upright lines, which
  then read as garbage and are dropped. Scans that arrive upside down are rare
  enough to be a job option, not a default.
- Recognition batch 1: a batch is padded to its widest line, so batching wide
  lines multiplies the tensor size for no gain on one core.
- One ONNX thread (intra and inter op): a child per core is the unit of
  parallelism; more threads per child only add arenas and contention.

onnxruntime starts a thread when it is imported, and the fork server must stay
single-threaded, so nothing here imports it (or rapidocr) at module level.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from docsuper.supervisor.config import OcrConfig

Line = tuple[list[list[float]], str, float]  # box (four [x, y] corners), text, confidence


NAME = "rapidocr"
# Below this a scan is upscaled: on 110 dpi JPEG scans the recogniser read 200 dpi renders
# better than the scan's own pixels (CER 10 % against 15 %) and no worse than 300 dpi.
MIN_DPI = 200
# No ceiling of its own: a scan finer than 200 dpi is read at its resolution, up to `ocr.dpi`.
MAX_DPI: int | None = None


@dataclass(frozen=True)
class EngineSettings:
    """RapidOCR's settings; their defaults and bounds are the `[ocr]` section's (config.OcrConfig)."""

    det_max_side: int         # 0: leave the detector's input size to RapidOCR
    use_angle_cls: bool
    rec_batch: int
    threads: int              # 0: onnxruntime's default (one per core)

    @classmethod
    def from_section(cls, ocr: "OcrConfig") -> "EngineSettings":
        return cls(det_max_side=ocr.det_max_side, use_angle_cls=ocr.use_angle_cls, rec_batch=ocr.rec_batch,
                   threads=ocr.threads)


class Engine:
    """One RapidOCR instance with the lean settings; call it with a grayscale page."""

    name = NAME
    min_dpi = MIN_DPI

    def __init__(self, settings: EngineSettings) -> None:
        tune_malloc()  # before the models are loaded, so their buffers follow it too
        from rapidocr_onnxruntime import RapidOCR  # lazy: importing onnxruntime starts a thread

        self.settings = settings
        kwargs: dict[str, Any] = {
            "use_cls": settings.use_angle_cls,
            "rec_batch_num": settings.rec_batch,
            "print_verbose": False,
        }
        if settings.threads:
            kwargs["intra_op_num_threads"] = settings.threads
            kwargs["inter_op_num_threads"] = settings.threads
        self._ocr = RapidOCR(**kwargs)
        if settings.det_max_side:
            _limit_detector(self._ocr.text_det, settings.det_max_side)

    def __call__(self, image: np.ndarray) -> list[Line]:
        """Lines found on `image` (uint8, grayscale or BGR), boxes in its pixel coordinates."""
        result, _ = self._ocr(image)
        if not result:
            return []
        return [(box, text.strip(), float(score)) for box, text, score in result if text.strip()]


def _limit_detector(text_det: Any, max_side: int) -> None:
    """Make the detector see at most `max_side` pixels on the long side.

    Replaces `TextDetector.get_preprocess` (1.4.4), which ignores the configured
    limit above 1500 px. DetPreProcess with limit_type "max" scales the long side
    down to `max_side` (rounded to the network's multiple of 32); the detector's
    post-processing already maps boxes back to the original image's size.
    """
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    preprocess = DetPreProcess(max_side, "max", text_det.mean, text_det.std)
    text_det.limit_side_len = max_side
    text_det.limit_type = "max"
    text_det.get_preprocess = lambda max_wh: preprocess


def available(tessdata_dir: str = "") -> bool:
    """RapidOCR is a hard dependency: always there, the fallback of `ocr.engine = "auto"`."""
    return True


@functools.lru_cache(maxsize=2)
def engine(settings: EngineSettings) -> Engine:
    """The engine for these settings, made once per process (~0.2 s, ~60 MB of models)."""
    return Engine(settings)


_libc: Any = None

# mallopt(3) parameters, and the values the child's environment should carry anyway.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_TUNING = (
    # Buffers of 4 MB and more (the detector's feature maps) get their own mapping and go
    # back to the kernel when freed, instead of staying in the heap as its high-water mark.
    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, 4 * 1024 * 1024),
    # Setting the mmap threshold freezes the trim threshold at 128 KB, so every op's
    # temporaries were handed back and faulted in again: 2 M page faults and 5 s of system
    # time on a dense A4 page. Keeping 32 MB of free heap costs no peak (malloc_trim after
    # each page returns it) and halves the page time.
    ("MALLOC_TRIM_THRESHOLD_", _M_TRIM_THRESHOLD, 32 * 1024 * 1024),
    ("MALLOC_ARENA_MAX", _M_ARENA_MAX, 2),
)


def _load_libc() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL("libc.so.6")
        except OSError:  # not glibc (musl, macOS): nothing to tune or trim
            _libc = False
    return _libc


def tune_malloc() -> None:
    """Apply MALLOC_TUNING through mallopt, except where the environment already set a value.

    glibc reads the MALLOC_*_ variables only at process start, so the launcher sets them
    in the child's environment; this makes the pass behave the same however it was started.
    """

    libc = _load_libc()
    if not libc:
        return
    for variable, parameter, value in MALLOC_TUNING:
        if variable not in os.environ:
            libc.mallopt(parameter, value)


def release_memory() -> None:
    """Give back what a page left behind: MuPDF's decoded-image cache and glibc's free heap.

    Without the first, a long scan grows by the size of its decoded images
    (~280 MB over 142 pages); without the second, fragmentation keeps ~10 MB a page.
    """
    import pymupdf

    pymupdf.TOOLS.store_shrink(100)
    libc = _load_libc()
    if libc:
        libc.malloc_trim(0)
