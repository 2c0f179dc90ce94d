"""The OCR pass's pure policy: memory plans, render resolution, clinical corrections, layout choice."""

from __future__ import annotations

import pymupdf
import pytest

from docsuper.passes import memory_plan, ocr
from docsuper.passes.clinical_terms import Corrector, corrector, skeleton
from docsuper.passes.tesseract_ocr import page_bytes, two_columns, without_rules

A4 = pymupdf.Rect(0, 0, 595, 842)


# --- memory plans ------------------------------------------------------------------------

def test_each_oom_makes_the_plan_lighter_until_the_lightest():
    plans = [memory_plan.plan_for(memory_plan.oom_attempts(["oom"] * n), 300, 9_000_000, "rapidocr", "tesseract")
             for n in range(5)]
    assert [p.name for p in plans] == ["standard", "lighter", "lightest", "lightest", "lightest"]
    assert plans[0] == memory_plan.MemoryPlan(0, "standard", 300, 9_000_000, "rapidocr")
    assert [p.engine for p in plans[1:]] == ["tesseract"] * 4
    dpis = [p.dpi for p in plans]
    pixels = [p.max_render_pixels for p in plans]
    assert dpis == sorted(dpis, reverse=True) and dpis[2] < dpis[1] < dpis[0]
    assert pixels == sorted(pixels, reverse=True) and pixels[2] < pixels[1] < pixels[0]
    assert [p.lightest for p in plans] == [False, False, True, True, True]


def test_a_lighter_plan_never_raises_what_the_operator_set():
    plan = memory_plan.plan_for(1, 120, 1_000_000, "tesseract", "tesseract")
    assert (plan.dpi, plan.max_render_pixels) == (120, 1_000_000)


def test_only_oom_attempts_count():
    assert memory_plan.oom_attempts(["error", "oom", "timeout", "crashed", "oom"]) == 2
    assert memory_plan.oom_attempts(None) == 0


# --- the page image handed to the engine ------------------------------------------------

def _scan_page(doc: pymupdf.Document) -> pymupdf.Page:
    import numpy as np

    page = doc.new_page(width=595, height=842)
    image = np.full((1286, 909), 255, np.uint8)  # A4 at 110 dpi
    image[100:110, 100:800] = 0
    page.insert_image(page.rect, stream=pymupdf.Pixmap(pymupdf.csGRAY, 909, 1286, image.tobytes(), False).tobytes("png"))
    return page


def test_the_render_leaves_only_the_pages_pixels_behind():
    """render_gray: the page's pixels as an array over one `bytes` (no pixmap behind it), which
    the engine hands to Tesseract without another copy."""
    import numpy as np

    doc = pymupdf.open()
    page = _scan_page(doc)
    pymupdf.TOOLS.store_shrink(100)
    image = ocr.render_gray(page, 200 / 72)
    assert image.shape == (round(842 * 200 / 72), round(595 * 200 / 72)) and image.dtype == np.uint8
    assert image[0, 0] == 255 and image.min() < 64  # the rule drawn on the scan is there
    assert page_bytes(image) is page_bytes(image)  # the bytes under it, not a copy each time
    assert isinstance(page_bytes(image), bytes) and len(page_bytes(image)) == image.nbytes


def test_the_tesseract_engine_keeps_opencv_to_the_childs_one_thread():
    import cv2

    from docsuper.passes import tesseract_ocr

    if not tesseract_ocr.available():
        pytest.skip("tesserocr or its model is not installed")
    cv2.setNumThreads(-1)  # OpenCV's default: a worker per core
    tesseract_ocr.Engine(tesseract_ocr.TesseractSettings("auto", False, "", "", ""))
    assert cv2.getNumThreads() == 1


def test_the_engine_gets_the_buffer_under_an_array_and_a_copy_of_a_view():
    import numpy as np

    raw = bytes(range(12))
    image = np.frombuffer(raw, np.uint8).reshape(3, 4)
    assert page_bytes(image) is raw
    assert page_bytes(image[:, :2]) == bytes([0, 1, 4, 5, 8, 9])  # a strided view: its own pixels
    assert page_bytes(image[1:]) == raw[4:]
    assert page_bytes(np.zeros((2, 2), np.uint8)) == bytes(4)


# --- render resolution -------------------------------------------------------------------

def settings(dpi: int = 300, pixels: int = 9_000_000, min_dpi: int = 200,
             max_dpi: int | None = None) -> ocr.OcrSettings:
    plan = memory_plan.MemoryPlan(0, "standard", dpi, pixels, "tesseract")
    return ocr.OcrSettings(plan=plan, text_layer_min_chars=16, engine_settings=None, min_dpi=min_dpi,
                           max_dpi=max_dpi, vocabulary=(False, ""))


@pytest.mark.parametrize("source, expected", [
    (110, 200),    # a low-resolution scan is upscaled to the engine's minimum, not to 300
    (150, 200),
    (240, 240),    # read at its own resolution
    (300, 300),
    (600, 300),    # never above the plan's dpi
    (None, 300),   # no scan on the page: the plan's dpi
])
def test_a_scan_is_read_near_its_own_resolution(source, expected):
    assert ocr.render_zoom(A4, source, settings()) * 72 == pytest.approx(expected)


@pytest.mark.parametrize("source, expected", [
    (100, 200),    # upscaled to the engine's minimum
    (200, 200),
    (300, 200),    # scaled down to the engine's ceiling: more pixels only cost CPU and memory
    (600, 200),
    (None, 200),   # no scan on the page: the lower of the plan's dpi and the engine's ceiling
])
def test_an_engine_with_a_ceiling_reads_every_scan_within_its_range(source, expected):
    assert ocr.render_dpi(source, True, 300, 200, 200) == pytest.approx(expected)
    assert ocr.render_zoom(A4, source, settings(max_dpi=200)) * 72 == pytest.approx(expected)


def test_the_plan_dpi_bounds_the_engine_range_and_a_ceiling_never_raises_it():
    assert ocr.render_dpi(300, True, 150, 200, 200) == 150   # the lightest plan's cap wins over the minimum
    assert ocr.render_dpi(None, True, 150, 200, 200) == 150
    assert ocr.render_dpi(300, True, 300, 200, 240) == 240
    assert ocr.render_dpi(220, True, 300, 200, 240) == 220   # within the range: its own resolution
    assert ocr.render_dpi(600, True, 300, 200, None) == 300  # no ceiling of the engine's: the plan's dpi


def test_an_image_without_a_stored_resolution_keeps_its_pixels_whatever_the_range():
    assert ocr.render_dpi(96.0, False, 300, 200, 200) == 96.0


def test_the_readers_range_is_each_engines_own():
    from docsuper.passes import engines

    assert (engines.min_dpi("tesseract"), engines.max_dpi("tesseract")) == (200, 200)
    assert (engines.min_dpi("rapidocr"), engines.max_dpi("rapidocr")) == (200, None)


def test_an_image_without_a_stored_resolution_is_read_at_its_own_pixels():
    assert ocr.render_zoom(A4, 96.0, settings(), stored=False) * 72 == pytest.approx(96)


def test_the_pixel_budget_bounds_every_render():
    zoom = ocr.render_zoom(A4, 110, settings(pixels=2_000_000))
    assert A4.width * A4.height * zoom * zoom == pytest.approx(2_000_000, rel=1e-6)
    assert ocr.render_zoom(A4, 110, settings(dpi=150)) * 72 == pytest.approx(150)  # a lighter plan's cap


def test_the_source_resolution_comes_from_the_image_on_the_page():
    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    pix = pymupdf.Pixmap(pymupdf.csGRAY, pymupdf.IRect(0, 0, 909, 1286), False)  # A4 at 110 dpi
    pix.clear_with(255)
    page.insert_image(page.rect, pixmap=pix)
    logo = doc.new_page(width=595, height=842)
    logo.insert_image(pymupdf.Rect(10, 10, 110, 60), pixmap=pix)  # a small image is no scan
    doc.new_page()
    assert ocr.source_dpi(doc[0]) == pytest.approx(110, abs=0.5)
    assert ocr.source_dpi(doc[1]) is None
    assert ocr.source_dpi(doc[2]) is None


# --- clinical corrections ----------------------------------------------------------------

@pytest.fixture(scope="module")
def fix() -> Corrector:
    return corrector(True, "")


@pytest.mark.parametrize("read, meant", [
    ("Metformin 500 meg twice daily", "Metformin 500 mcg twice daily"),
    ("Metiormin 500 mg", "Metformin 500 mg"),
    ("HbAtc 48 mmol/mo!", "HbA1c 48 mmol/mol"),
    ("HbA1¢ on 21/05/2022,", "HbA1c on 21/05/2022,"),
    ("given 10 mi at night", "given 10 ml at night"),
    ("weight 54kq", "weight 54kg"),
    ("179mI daily", "179ml daily"),
    ("(Amlodipine), 5 mg", "(Amlodipine), 5 mg"),
])
def test_misread_clinical_words_are_put_right(fix, read, meant):
    assert fix.line(read) == meant


@pytest.mark.parametrize("text", [
    "Meg was seen in clinic",     # a unit's look-alike that follows no number is a word
    "insulin started in March",   # only the case differs: left alone
    "the mi of it",
    "time  and\ttabs kept",       # spacing is kept as it was
])
def test_ordinary_words_are_left_alone(fix, text):
    assert fix.line(text) == text


def test_a_deployment_adds_its_own_words(tmp_path):
    own = tmp_path / "words.txt"
    own.write_text("# our drugs\nZapotrexin\n")
    assert corrector(False, str(own)).line("Zapotrexln 20 mg") == "Zapotrexin 20 mg"
    assert not corrector(False, "")
    assert skeleton("HbA1c") == skeleton("HbAtc") == skeleton("HbAic")


# --- Tesseract's layout ------------------------------------------------------------------

def test_only_two_prose_columns_are_read_as_columns():
    """Two columns of prose: columns. A one-column letter, a ruled table (its rules painted
    out, as the engine does first) and an empty page: one block, read row by row."""
    import random

    from tests import docgen

    rng = random.Random(5)
    two = docgen.ScanStyle(dpi=150, columns=2, fontsize=10, angle=0.5)
    one = docgen.ScanStyle(dpi=150, angle=0.5)
    rows, cols = docgen.lines_that_fit(two)
    assert two_columns(docgen.render_page(docgen.text_lines(rng, rows, cols), two))
    rows, cols = docgen.lines_that_fit(one)
    assert not two_columns(docgen.render_page(docgen.text_lines(rng, rows, cols), one))
    assert not two_columns(docgen.render_page(docgen.text_lines(rng, 12, cols), one))
    assert not two_columns(without_rules(docgen.table_page(3, docgen.ScanStyle(dpi=150)).image))
    assert not two_columns(docgen.render_page([], one))


def test_an_oom_with_a_lighter_plan_left_is_retried_past_max_attempts():
    from docsuper.supervisor.queue import rules

    assert rules.next_state("oom", 3, 3, lighter_plan=True) == "queued"
    assert rules.next_state("oom", 3, 3) == "dead"
    assert rules.next_state("error", 3, 3, lighter_plan=True) == "dead"  # only memory earns a lighter try
    close = rules.closing("oom", 1, 1, 5.0, lighter_plan=True)
    assert (close.state, close.counted, close.attempts) == ("queued", True, 1)


def test_an_oom_on_the_lightest_plan_is_final_and_says_so():
    from docsuper.supervisor.outcome import Ending, classify

    lighter = {"name": "lighter", "dpi": 200, "max_render_pixels": 4_000_000, "engine": "tesseract", "lightest": False}
    lightest = {**lighter, "name": "lightest", "dpi": 150, "max_render_pixels": 2_000_000, "lightest": True}
    oom = {"stop_outcome": "oom", "stop_message": "used 120 MB"}
    end = classify(Ending(9, plan=lighter, **oom), 100, 200)
    assert (end.outcome, end.lighter_plan, end.plan, end.error) == ("oom", True, lighter, "used 120 MB")
    end = classify(Ending(9, plan=lightest, **oom), 100, 200)
    assert (end.outcome, end.lighter_plan) == ("oom", False)
    assert end.error == "used 120 MB on the lightest memory plan (150 dpi, 2000000 pixels, tesseract)"
    end = classify(Ending(9, stop_outcome="timeout", stop_message="slow", plan=lighter), 100, 200)
    assert (end.outcome, end.lighter_plan, end.plan) == ("timeout", False, lighter)  # only memory earns it
    assert classify(Ending(9, **oom), 100, 200).lighter_plan is False  # a pass without plans: the policy as ever
