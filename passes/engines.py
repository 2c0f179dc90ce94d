"""The OCR engines behind one interface, and the choice between them (`ocr.engine`).

An engine is made once per process from the job's `[ocr]` settings and called with a
grayscale page (uint8, 2-D); it returns lines as (box, text, confidence), the box four
[x, y] corners in the page image's pixels. Each engine also says the range of resolutions
it reads best: `MIN_DPI` (scans below it are upscaled before it reads them) and `MAX_DPI`
(finer scans are read at it: more pixels only cost time and memory; None: no ceiling
but `ocr.dpi`).

| name | module | what it is |
|---|---|---|
| tesseract | tesseract_ocr | Tesseract 5 LSTM through tesserocr, English fast model, clinical vocabulary |
| rapidocr | lean_ocr | RapidOCR (PP-OCRv4 on onnxruntime) with the lean memory settings |

`auto` is Tesseract when tesserocr and its model are installed, RapidOCR otherwise
(docs/ocr.md has the measurements behind that order). Another engine is one more
module with an `Engine(settings)` class, a settings class with `from_section`,
`MIN_DPI`, `MAX_DPI`, `available(tessdata_dir)` and optionally `PARALLEL_READERS`, and one
more row in `_MODULES`.

Nothing heavy is imported here: each engine's own libraries load when it is made,
in the child (onnxruntime starts a thread at import; the fork server must not).
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from docsuper.supervisor.config import OcrConfig

from .lean_ocr import Line

if TYPE_CHECKING:
    from .memory_plan import MemoryPlan

# name -> module (in this package) holding Engine, available() and the settings class
_MODULES = {"tesseract": "tesseract_ocr", "rapidocr": "lean_ocr"}
_SETTINGS = {"tesseract": "TesseractSettings", "rapidocr": "EngineSettings"}
NAMES = tuple(_MODULES)
AUTO_ORDER = ("tesseract", "rapidocr")


class OcrEngine(Protocol):
    name: str
    min_dpi: int

    def __call__(self, image: np.ndarray) -> list[Line]: ...


def _module(name: str) -> Any:
    return importlib.import_module(f"{__package__}.{_MODULES[name]}")


def resolve(name: str, tessdata_dir: str = "") -> str:
    """The engine `name` stands for: itself, or for "auto" the first one installed."""
    if name != "auto":
        if name not in _MODULES:
            raise ValueError(f"unknown OCR engine {name!r} (one of auto, {', '.join(NAMES)})")
        return name
    for candidate in AUTO_ORDER:
        if _module(candidate).available(tessdata_dir):
            return candidate
    return AUTO_ORDER[-1]


def settings_for(name: str, ocr: OcrConfig) -> Any:
    """The engine's own (hashable) settings, from the `[ocr]` section."""
    return getattr(_module(name), _SETTINGS[name]).from_section(ocr)


def min_dpi(name: str) -> int:
    """Below this resolution a scan is upscaled for the engine (without making it)."""
    return int(_module(name).MIN_DPI)


def max_dpi(name: str) -> int | None:
    """Above this resolution a scan is scaled down for the engine (None: only `ocr.dpi` bounds it)."""
    value = _module(name).MAX_DPI
    return None if value is None else int(value)


@functools.lru_cache(maxsize=2)
def engine(name: str, settings: Any) -> OcrEngine:
    """The engine, made once per process: a lighter memory plan may ask for the other one."""
    return make(name, settings)


def make(name: str, settings: Any) -> OcrEngine:
    """A new instance of the engine (one per reader thread: see page_readers)."""
    engine_obj: OcrEngine = _module(name).Engine(settings)
    return engine_obj


def reads_in_parallel(plan: "MemoryPlan") -> bool:
    """Whether a job on `plan` may read several pages at once on lent cores: only on the
    standard plan (a lighter one is a retry after `oom`), and only with an engine that lets
    go of the GIL and is small enough to load twice (`PARALLEL_READERS` in its module:
    Tesseract ~20 MB an instance; RapidOCR's ~290 MB would not fit the job's cap twice)."""
    return plan.level == 0 and bool(getattr(_module(plan.engine), "PARALLEL_READERS", False))
