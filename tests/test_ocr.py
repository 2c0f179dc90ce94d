"""The `ocr` pass on generated scans: accuracy, the text-layer fast path, resume, flat memory.

The pass runs in process here (its events go to a file); memory is measured in
fresh subprocesses, each reading its own peak. CER limits are the figures
committed to in docs/ocr.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from docsuper.passes import ocr
from docsuper.passes.api import InvalidInput, PassContext
from docsuper.supervisor.config import load_config
from docsuper.supervisor.protocol import JobSpec

from . import docgen

# Committed in docs/ocr.md for 300 dpi-class scans (rendered text, skew, blur, noise, JPEG).
CER_MAX = 0.01
CER_MAX_NO_SPACES = 0.01
ROOT = Path(__file__).resolve().parent.parent


def run_ocr(source: Path | str, tmp_path: Path, resume: dict[int, dict[str, Any]] | None = None,
            **ocr_overrides: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The pass in this process, as the child runs it; returns (summary, events)."""
    config = load_config(None, {}).as_dict()
    config["inputs"]["allowed_roots"] = [str(tmp_path)]
    config["ocr"].update(ocr_overrides)
    spec = JobSpec(job_id="test-job", attempt=2 if resume else 1, source=str(source), passes=["ocr"],
                   config=config, resume={"ocr": resume} if resume else {})
    events_path = tmp_path / f"events-{time.monotonic_ns()}.jsonl"
    fd = os.open(events_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        ctx = PassContext(spec, fd, workdir=tmp_path / "work")
        ctx.pass_name = "ocr"
        summary = ocr.run(ctx)
    finally:
        os.close(fd)
    return summary, [json.loads(line) for line in events_path.read_text().splitlines()]


def page_results(events: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {e["page"]: e["result"] for e in events if e["type"] == "page"}


def assert_cer(truth: list[str], results: dict[int, dict[str, Any]]) -> tuple[float, float]:
    ref = "\n".join(truth)
    hyp = "\n".join(results[n]["text"] for n in sorted(results))
    with_spaces, without = docgen.cer(ref, hyp), docgen.cer(ref, hyp, spaces=False)
    assert with_spaces <= CER_MAX and without <= CER_MAX_NO_SPACES, (with_spaces, without, hyp)
    return with_spaces, without


# --- accuracy on synthetic scans ----------------------------------------------------------

@pytest.mark.ocr
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tesseract", "rapidocr"])
def test_scanned_pdf_with_skew_blur_noise_and_jpeg(tmp_path: Path, engine: str):
    """Two scans in one PDF, in two typefaces, turned by up to a degree, as a copier makes them."""
    doc = tmp_path / "scan.pdf"
    styles = [docgen.ScanStyle(font="helv", angle=0.8, blur=0.9, noise=7.0, jpeg_quality=70),
              docgen.ScanStyle(font="tiro", angle=-0.5, blur=1.0, noise=5.0, jpeg_quality=60)]
    import pymupdf

    out = pymupdf.open()
    truth = []
    for seed, style in zip((31, 32), styles):
        page = docgen.scanned_page(seed, style, lines=10)
        new = out.new_page(width=style.page_size[0], height=style.page_size[1])
        new.insert_image(new.rect, stream=docgen.encode_jpeg(page.image, style.jpeg_quality))
        truth.append(page.text)
    out.save(doc)
    out.close()

    summary, events = run_ocr(doc, tmp_path, engine=engine)
    results = page_results(events)
    assert summary["pages"] == summary["pages_ocr"] == 2 and summary["pages_text_layer"] == 0
    assert summary["engine"] == engine and summary["plan"] == "standard"
    assert summary["chars"] == sum(len(r["text"]) for r in results.values())
    assert "text" not in summary
    assert_cer(truth, results)
    for result in results.values():
        # 300 dpi scans: RapidOCR reads them at 300 dpi, Tesseract at its ceiling of 200.
        assert result["method"] == "ocr" and result["dpi"] == {"tesseract": 200.0, "rapidocr": 300.0}[engine]
        assert result["source_dpi"] == pytest.approx(300, abs=1)
        assert result["seconds"] > 0 and result["rss_mb"] > 0
        assert (result["width"], result["height"]) == (595.0, 842.0)
        box, text, confidence = result["lines"][0]
        # Boxes are in page points: the first line sits near the top-left margin.
        assert len(box) == 4 and all(0 <= x <= 595 and 0 <= y <= 842 for x, y in box)
        assert box[0][0] < 100 and box[0][1] < 100
        assert text and 0.5 <= confidence <= 1.0


@pytest.mark.ocr
@pytest.mark.slow
def test_multipage_tiff(tmp_path: Path):
    pages = [docgen.scanned_page(41 + i, docgen.ScanStyle(font="cour", fontsize=10), lines=8) for i in range(2)]
    path = tmp_path / "fax.tif"
    docgen.multipage_tiff(path, pages, dpi=300)
    summary, events = run_ocr(path, tmp_path)
    results = page_results(events)
    assert summary["kind"] == "tiff" and summary["pages_ocr"] == 2
    assert_cer([p.text for p in pages], results)
    # A 300 dpi TIFF: page units are points at that resolution, and Tesseract reads it at 200 dpi.
    assert results[1]["source_dpi"] == pytest.approx(300, abs=1)
    assert results[1]["dpi"] == pytest.approx(200, abs=1)


@pytest.mark.ocr
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_single_images(tmp_path: Path, kind: str):
    page = docgen.scanned_page(51, docgen.ScanStyle(angle=-0.7), lines=8)
    path = tmp_path / "photo.bin"
    path.write_bytes(docgen.encode_png(page.image) if kind == "png" else docgen.encode_jpeg(page.image, 80))
    summary, events = run_ocr(path, tmp_path)
    assert summary["kind"] == kind and summary["pages_ocr"] == 1
    assert_cer([page.text], page_results(events))


@pytest.mark.ocr
def test_render_is_clamped_to_the_pixel_budget(tmp_path: Path):
    path = tmp_path / "scan.pdf"
    docgen.scanned_pdf(path, [61], docgen.ScanStyle(dpi=150), lines=3)
    _, events = run_ocr(path, tmp_path, max_render_pixels=2_000_000)
    result = page_results(events)[1]
    # A4 at 300 dpi is 8.7 M pixels; two million allows about 143 dpi.
    assert result["dpi"] == pytest.approx(72 * (2_000_000 / (595 * 842)) ** 0.5, rel=0.01)
    assert result["text"]


def test_every_sample_kind_is_a_document_the_worker_accepts(tmp_path: Path):
    """The generated look-alikes of real inputs pass validation, with the pages and resolution meant."""
    import pymupdf

    from docsuper.passes import inputs

    limits = inputs.Limits.from_config({"inputs": {"allowed_roots": [str(tmp_path)]}})
    for kind in docgen.SAMPLES:
        sample = docgen.make_sample(kind, tmp_path, seed=2, pages=2 if kind.startswith("fax") else 1, lines=6)
        document = inputs.validate(sample.path, limits)
        assert document.pages == len(sample.truth), kind
        assert all(text.strip() for text in sample.truth), kind
        if kind.startswith("fax"):
            assert document.kind == "tiff"
            with pymupdf.open(sample.path) as doc:  # G4 decodes, and the page keeps its paper size
                assert doc[0].rect.width == pytest.approx(595, abs=2)
                assert doc[0].rect.height == pytest.approx(842, abs=2)
    clinical = docgen.text_lines(__import__("random").Random(1), 40, 64, clinical=0.3)
    assert any(unit in " ".join(clinical).split() for unit in ("mg", "mcg"))


# CER with spaces each kind of input must stay within, on the default engine (the issue's
# targets; measured figures in docs/ocr.md). One page of ten lines each: ~500 characters, so
# 0.3 % is one wrong character.
KIND_CER_MAX = {
    "scan300_q60": 0.003, "scan200_q50": 0.005, "scan150_q40": 0.005, "scan110_q35": 0.005,
    "scan100_q30": 0.005, "fax_fine": 0.01, "fax_normal": 0.01, "photo": 0.01, "two_column": 0.01, "table": 0.01,
}


@pytest.mark.ocr
def test_cer_per_kind_of_input(tmp_path: Path):
    """Every kind of input people send, read by the default engine within its CER bound, in
    reading order: a two-column letter column by column, a table row by row."""
    assert set(KIND_CER_MAX) == set(docgen.SAMPLES)
    failures = {}
    for kind, bound in KIND_CER_MAX.items():
        sample = docgen.make_sample(kind, tmp_path, seed=4, lines=10)
        summary, events = run_ocr(sample.path, tmp_path)
        results = page_results(events)
        hyp = "\n".join(results[n]["text"] for n in sorted(results))
        measured = docgen.cer("\n".join(sample.truth), hyp)
        if measured > bound:
            failures[kind] = (round(measured * 100, 2), hyp)
        assert summary["engine"] == "tesseract"
        if kind == "scan110_q35":  # upscaled for the engine, not rendered at 300 dpi
            assert (results[1]["source_dpi"], results[1]["dpi"]) == (pytest.approx(110, abs=1), 200.0)
        if kind == "scan300_q60":  # scaled down to the engine's ceiling, same CER bound
            assert (results[1]["source_dpi"], results[1]["dpi"]) == (pytest.approx(300, abs=1), 200.0)
    assert not failures, failures


@pytest.mark.ocr
def test_clinical_terms_survive_a_low_resolution_scan(tmp_path: Path):
    """Doses, units and lab names on a 100 dpi JPEG scan: the corrections put back what the
    engine misreads ("meg" for "mcg", "HbAtc" for "HbA1c"); without them more are lost."""
    sample = docgen.make_sample("scan100_q30", tmp_path, seed=25, lines=24)
    truth = "\n".join(sample.truth)
    missing = {}
    for vocabulary in (True, False):
        _, events = run_ocr(sample.path, tmp_path, clinical_vocabulary=vocabulary)
        missing[vocabulary], total = docgen.token_errors(truth, page_results(events)[1]["text"])
    assert total >= 100
    assert missing[True] <= 1 and missing[False] >= missing[True] + 3, (missing, total)


# --- the text layer -----------------------------------------------------------------------

def test_text_layer_pages_are_not_ocred(tmp_path: Path):
    """A born-digital PDF: taken as it is, and the OCR engine is never even imported."""
    lines = [[f"Line {i} of page {p}: discharge summary and follow up plan" for i in range(5)] for p in (1, 2)]
    path = tmp_path / "digital.pdf"
    docgen.text_pdf(path, lines)
    code = f"""
import json, os, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.test_ocr import run_ocr, page_results
from pathlib import Path
summary, events = run_ocr({str(path)!r}, Path({str(tmp_path)!r}))
print(json.dumps({{"summary": summary, "pages": page_results(events),
                  "onnxruntime": "onnxruntime" in sys.modules, "rapidocr": "rapidocr_onnxruntime" in sys.modules}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout.splitlines()[-1])
    assert out["summary"]["pages_text_layer"] == 2 and out["summary"]["pages_ocr"] == 0
    assert not out["onnxruntime"] and not out["rapidocr"]
    for number, result in out["pages"].items():
        assert result["method"] == "text_layer"
        assert result["text"].split("\n")[:5] == lines[int(number) - 1]
        assert [line[1] for line in result["lines"]] == lines[int(number) - 1]
        assert all(line[2] == 1.0 for line in result["lines"])


@pytest.mark.ocr
def test_mixed_document_ocrs_only_the_scanned_page(tmp_path: Path):
    path = tmp_path / "mixed.pdf"
    first, second = docgen.mixed_pdf(path, seed=71, style=docgen.ScanStyle())
    summary, events = run_ocr(path, tmp_path)
    results = page_results(events)
    assert (results[1]["method"], results[2]["method"]) == ("text_layer", "ocr")
    assert results[1]["text"].split() == " ".join(first).split()
    assert docgen.cer("\n".join(second), results[2]["text"]) <= CER_MAX
    assert (summary["pages_text_layer"], summary["pages_ocr"]) == (1, 1)


def test_a_few_characters_are_not_a_text_layer(tmp_path: Path):
    """A page stamp ("Page 1") over a scan does not make the page born-digital."""
    import pymupdf

    path = tmp_path / "stamped.pdf"
    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((500, 820), "Page 1", fontname="helv", fontsize=8)
    doc.save(path)
    doc.close()
    assert ocr.readable_chars("Page 1") < load_config(None, {}).ocr.text_layer_min_chars
    assert ocr.readable_chars("\ufffd" * 40 + " \n") == 0  # glyphs without Unicode are not text


# --- resume -----------------------------------------------------------------------------

def test_resume_skips_the_stored_pages(tmp_path: Path):
    path = tmp_path / "five.pdf"
    docgen.text_pdf(path, [[f"page {p} line {i} of the referral letter" for i in range(3)] for p in range(1, 6)])
    stored = {1: {"text": "stored one", "method": "ocr"}, 2: {"text": "stored two", "method": "ocr"},
              4: {"text": "stored four", "method": "ocr"}}
    summary, events = run_ocr(path, tmp_path, resume=stored)
    assert sorted(page_results(events)) == [3, 5]
    progress = [(e["done"], e["total"]) for e in events if e["type"] == "progress"]
    assert progress == [(3, 5), (4, 5), (5, 5)]
    assert summary["resumed_pages"] == 3 and summary["pages"] == 5
    assert summary["pages_text_layer"] == 2
    fresh = sum(len(r["text"]) for r in page_results(events).values())
    assert summary["chars"] == fresh + len("stored one") + len("stored two") + len("stored four")


@pytest.mark.ocr
def test_resume_after_a_kill_redoes_only_the_missing_pages(tmp_path: Path):
    """Page results stream out as they finish: what a killed attempt sent is what a retry skips."""
    path = tmp_path / "scan.pdf"
    docgen.scanned_pdf(path, [81, 82, 83], docgen.ScanStyle(dpi=150), lines=3)
    code = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from tests import test_ocr
from docsuper.passes import ocr
real = ocr.prepare_page
def read_then_die(doc, index, *args):
    if index == 2:
        os._exit(9)  # as a watchdog kill would, in the middle of page 3
    return real(doc, index, *args)
ocr.prepare_page = read_then_die
test_ocr.run_ocr({str(path)!r}, Path({str(tmp_path)!r}))
"""
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    events = [json.loads(line) for f in sorted(tmp_path.glob("events-*.jsonl")) for line in f.read_text().splitlines()]
    stored = page_results(events)
    assert sorted(stored) == [1, 2]
    summary, retry_events = run_ocr(path, tmp_path, resume=stored)
    assert sorted(page_results(retry_events)) == [3]
    assert summary["resumed_pages"] == 2 and summary["pages_ocr"] == 1


# --- bad input through the pass ------------------------------------------------------------

def test_bad_input_is_refused_before_the_engine_starts(tmp_path: Path):
    started = time.monotonic()
    with pytest.raises(InvalidInput, match="password-protected"):
        run_ocr(docgen.encrypted_pdf(tmp_path / "locked.pdf"), tmp_path)
    assert time.monotonic() - started < 2.0


def test_importing_the_pass_starts_no_thread():
    """The fork server preloads docsuper.passes.ocr and tesserocr: neither may start a thread or
    bring onnxruntime along. Making the Tesseract engine starts none either."""
    code = ("import os, sys; import docsuper.passes.ocr, tesserocr; "
            "n = len(os.listdir('/proc/self/task')); "
            "from docsuper.passes import engines; from docsuper.supervisor.config import OcrConfig; "
            "engines.engine('tesseract', engines.settings_for('tesseract', OcrConfig())); "
            "print(n, len(os.listdir('/proc/self/task')), 'onnxruntime' in sys.modules)")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split() == ["1", "1", "False"]
    assert "tesserocr" in load_config(None, {}).workers.preload


# --- memory -------------------------------------------------------------------------------

PEAK_CODE = """
import json, os, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from tests.test_ocr import run_ocr
summary, events = run_ocr({path!r}, Path({tmp!r}), dpi={dpi})
pages = [e["result"] for e in events if e["type"] == "page"]
print(json.dumps({{"peak_mb": summary["peak_rss_mb"], "pages": summary["pages_ocr"],
                  "rss": [p["rss_mb"] for p in pages]}}))
"""


def measure_peak(path: Path, tmp_path: Path, dpi: int) -> dict[str, Any]:
    """Run the pass in a fresh interpreter with the child's environment; its own peak RSS.

    The peak is VmHWM (the pass's summary), not ru_maxrss: that one would carry this
    pytest process's own high-water mark over into the child and hide any difference.
    """
    from docsuper.supervisor.launcher import child_environment

    code = PEAK_CODE.format(root=str(ROOT), path=str(path), tmp=str(tmp_path), dpi=dpi)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_environment(),
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.ocr
@pytest.mark.slow
def test_peak_memory_of_a_long_scan_is_that_of_one_page(tmp_path: Path):
    """100 scanned pages (small, so the test stays short) peak within 10 % of one page.

    The test has teeth: without the per-page cleanup the same run peaks ~2x higher, and
    without MuPDF's store_shrink alone ~25 % higher (docs/ocr.md)."""
    style = docgen.ScanStyle(page_size=docgen.A6, margin=24, fontsize=9, dpi=150, jpeg_quality=70)
    one, long = tmp_path / "one.pdf", tmp_path / "long.pdf"
    docgen.scanned_pdf(one, [900], style, lines=5)
    docgen.scanned_pdf(long, range(900, 1000), style, lines=5)
    single = measure_peak(one, tmp_path, dpi=150)
    many = measure_peak(long, tmp_path, dpi=150)
    assert many["pages"] == 100 and single["pages"] == 1
    growth = many["peak_mb"] / single["peak_mb"] - 1
    assert growth <= 0.10, (f"peak {many['peak_mb']:.0f} MB over 100 pages against {single['peak_mb']:.0f} MB "
                            f"for one page; RSS after each page: {many['rss']}")


# --- through the daemon ----------------------------------------------------------------------

def test_bad_inputs_are_dead_after_one_attempt_through_the_daemon(env: Any):
    """`docsuper run --drain` on every kind of bad document: invalid_input at once, no retry."""
    root = env.root
    whole = root / "whole.pdf"
    docgen.scanned_pdf(whole, [1, 2], docgen.ScanStyle(dpi=72), lines=3)
    expected = {
        docgen.empty_file(root / "empty.pdf"): "empty file",
        docgen.unsupported_file(root / "anim.gif"): "unsupported file type: GIF image",
        docgen.corrupt_pdf(root / "corrupt.pdf"): "damaged PDF",
        docgen.truncated_pdf(root / "cut.pdf", whole, 0.5): "damaged PDF",
        docgen.encrypted_pdf(root / "locked.pdf"): "password-protected PDF",
        docgen.big_file(root / "big.pdf", 1.2): "file too large",
        docgen.many_pages_pdf(root / "many.pdf", 6): "too many pages: 6",
        docgen.huge_page_pdf(root / "poster.pdf"): "page 1 at 300 dpi is too large",
        docgen.png_bomb(root / "bomb.png"): "the image is too large: 100000×100000",
        docgen.tiff_bomb(root / "bomb.tif"): "page 1 is too large: 50000×50000",
        docgen.pdf_with_bomb_image(root / "bomb.pdf"): "an image on page 1 is too large",
    }
    env.set(DOCSUPER_INPUTS_MAX_FILE_MB="1", DOCSUPER_INPUTS_MAX_PAGES="5")
    submitted = json.loads(env.cli("submit", *map(str, expected), "--passes", "ocr", "--json").stdout)
    env.drain()
    with env.queue() as q:
        for item in submitted:
            job = q.get(item["id"])
            attempts = q.attempts(job.id)
            want = expected[Path(item["source"])]
            assert (job.status, job.attempts, job.last_outcome) == ("dead", 1, "invalid_input"), (item, job)
            assert want in (job.last_error or ""), (want, job.last_error)
            assert len(attempts) == 1 and attempts[0].traceback in (None, ""), attempts


@pytest.mark.ocr
@pytest.mark.slow
def test_a_killed_job_resumes_at_its_first_missing_page_through_the_daemon(env: Any):
    """Two text-layer pages, then a scan: with a cap too small for the OCR engine every
    memory plan is killed on page 3 and the job is dead; the retry, with room, reads only
    page 3, on the standard plan again (a manual retry starts the plans over)."""
    import pymupdf

    path = env.root / "letter.pdf"
    lines = [[f"Page {p} line {i}: referral letter for the clinic" for i in range(4)] for p in (1, 2)]
    docgen.text_pdf(path, lines)
    # 30 lines: the engine stays loaded, above the cap, for most of a second on every plan, so
    # the watchdog's sampling cannot miss it even on a loaded box (3 lines took 0.1 s: CI missed it).
    scan = docgen.scanned_page(91, docgen.ScanStyle(), lines=30)
    doc = pymupdf.open(path)
    page = doc.new_page(width=595, height=842)
    page.insert_image(page.rect, stream=docgen.encode_jpeg(scan.image))
    doc.saveIncr()
    doc.close()

    [item] = json.loads(env.cli("submit", str(path), "--passes", "ocr", "--max-attempts", "1", "--json").stdout)
    # The watchdog's cap, not the kernel's: the headroom keeps RLIMIT_DATA out of the way. The
    # text-layer pages stay far below 20 MB of USS; reading a scan passes it on the lightest plan
    # too (23-26 MB measured, against 33 MB over a 30 MB cap before).
    env.set(DOCSUPER_MEMORY_JOB_LIMIT_MB="20", DOCSUPER_MEMORY_KERNEL_HEADROOM_MB="1000")
    env.drain()
    with env.queue() as q:
        job = q.get(item["id"])
        first = q.attempts(job.id)
        stored = q.pages(job.id, "ocr")
    assert job.status == "dead" and job.last_outcome == "oom", (job.last_outcome, job.last_error)
    assert [a.plan["name"] for a in first] == ["standard", "lighter", "lightest"]
    assert [p for _, p, _ in stored] == [1, 2]

    env.set(DOCSUPER_MEMORY_JOB_LIMIT_MB="450")
    env.cli("retry", item["id"])
    env.drain()
    with env.queue() as q:
        job = q.get(item["id"])
        stored = q.pages(job.id, "ocr")
    assert job.status == "succeeded", (job.last_outcome, job.last_error, first)
    summary = job.result["ocr"]
    assert (summary["resumed_pages"], summary["pages_ocr"], summary["pages"]) == (2, 1, 3)
    assert summary["plan"] == "standard"
    assert [p for _, p, _ in stored] == [1, 2, 3]
    text = env.cli("show", item["id"], "--text").stdout
    pages = text.split("\f")
    assert len(pages) == 3 and pages[0].startswith("Page 1 line 0")
    assert docgen.cer(scan.text, pages[2]) <= CER_MAX


def _poster(path: Path) -> list[str]:
    """An A1 page scanned at 200 dpi (31 M pixels, large print): read whole (Tesseract reads
    at 200 dpi), it needs far more than a page rendered within a lighter plan's 4 M pixels."""
    import random

    import pymupdf

    style = docgen.ScanStyle(dpi=200, page_size=(1684.0, 2384.0), fontsize=31, margin=127, angle=0, blur=0, noise=0)
    lines = docgen.text_lines(random.Random(3), 8, 40)
    doc = pymupdf.open()
    page = doc.new_page(width=style.page_size[0], height=style.page_size[1])
    page.insert_image(page.rect, stream=docgen.encode_jpeg(docgen.render_page(lines, style), 60))
    doc.save(path)
    doc.close()
    return lines


@pytest.mark.ocr
@pytest.mark.slow
def test_an_oom_is_retried_with_a_lighter_plan_through_the_daemon(env: Any):
    """A page too big for the job's cap on the standard plan: the attempt ends `oom`, the
    next one runs the lighter plan (lower resolution, smaller pixel budget) and succeeds.
    Each attempt records its plan. With a cap no plan fits, the job is dead only after the
    lightest plan failed too, and its error says so."""
    path = env.root / "poster.pdf"
    lines = _poster(path)
    # ocr.dpi 200: an A1 page passes validation (its pixels are counted at this resolution).
    env.set(DOCSUPER_OCR_DPI="200", DOCSUPER_OCR_MAX_RENDER_PIXELS="40000000", DOCSUPER_MEMORY_JOB_LIMIT_MB="110")
    [item] = json.loads(env.cli("submit", str(path), "--passes", "ocr", "--max-attempts", "1", "--json").stdout)
    env.drain()
    with env.queue() as q:
        job = q.get(item["id"])
        attempts = q.attempts(job.id)
    assert job.status == "succeeded", (job.last_outcome, job.last_error, attempts)
    assert [a.outcome for a in attempts] == ["oom", "succeeded"]
    assert [a.plan["name"] for a in attempts] == ["standard", "lighter"]
    assert attempts[1].plan["max_render_pixels"] == 4_000_000 and attempts[1].plan["dpi"] == 200
    summary = job.result["ocr"]
    assert (summary["plan"], summary["pages_ocr"]) == ("lighter", 1)
    text = env.cli("show", item["id"], "--text").stdout
    assert docgen.cer("\n".join(lines), text) <= 0.02
    assert "plan lighter" in env.cli("show", item["id"]).stdout

    # 20 MB: the loaded engine alone passes it, for the whole page, on every plan (30 was within
    # a few MB of the lightest plan's peak: a race with the watchdog's sampling).
    env.set(DOCSUPER_MEMORY_JOB_LIMIT_MB="20", DOCSUPER_MEMORY_KERNEL_HEADROOM_MB="1000")
    [item] = json.loads(env.cli("submit", str(path), "--passes", "ocr", "--max-attempts", "1", "--json").stdout)
    env.drain()
    with env.queue() as q:
        job = q.get(item["id"])
        attempts = q.attempts(job.id)
    assert (job.status, job.last_outcome) == ("dead", "oom"), (job.last_error, attempts)
    assert [a.plan["name"] for a in attempts] == ["standard", "lighter", "lightest"]
    assert "lightest memory plan" in (job.last_error or "")
