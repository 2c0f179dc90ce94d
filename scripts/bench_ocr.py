#!/usr/bin/env python
"""The figures behind the OCR pass's choices, measured in one run and printed as tables.

    sudo .venv/bin/python scripts/bench_ocr.py          # everything, ~20 minutes on 2 shared cores
    sudo .venv/bin/python scripts/bench_ocr.py --quick  # one page per kind, a 20-page long scan
    .venv/bin/python scripts/bench_ocr.py --no-box      # without the 512 MB box (no root needed)

Every measurement runs in a fresh subprocess (a fresh interpreter), so peaks do not
leak from one configuration into the next. Peak RSS is the child's own high-water
mark (VmHWM; not ru_maxrss, which carries the parent's over fork and exec). CPU
s/page is the pages' own CPU time (the engine is made before the clock starts).
MB are 10^6 bytes. The box is shared: compare ratios and CPU seconds, not wall times.

Measured, by default:
1. Each engine (Tesseract, RapidOCR) on each kind of input of `docgen.SAMPLES`
   (100-300 dpi JPEG scans, G4 faxes at 200x200 and 200x100 dpi, a phone photo, a
   two-column letter, a ruled table; full A4 pages with clinical text): CER with and
   without spaces, clinical tokens lost, render dpi, s/page, CPU s/page, peak RSS.
2. A 142-page scan, a ~20 MB two-page TIFF, an uncompressed A3 TIFF at 300 dpi and an
   A2 poster at 240 dpi (rendered at the 9 M pixel budget) on the default engine: peak
   RSS and RSS after the first and the last page.
2b. One dense 300 dpi scan read by one reader and by two (`--readers` alone): the
   pass's time, its CPU and peak RSS, as when the parent lends a job an idle core.
3. As root, the box (`bench_box.burst_figures`): 16 mixed jobs through `docsuper run
   --drain` in a 512 MB memory cgroup at WORKER_CONCURRENCY=5 and at 1: kernel OOM
   kills, the box's peak, the most OCR children at once, pages/s and their ratio.
With --rapidocr-settings, --ablation, --start: RapidOCR's defaults against its lean
settings, the per-page cleanup's parts, spawn against fork-server child start.

`--throughput` prints only pages/s of `docsuper run --drain` over a 30-page corpus at
concurrency 2 against the best in-process loop over the same pages, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # docgen: the synthetic documents

LEAN_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "4194304",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
}
DEFAULTS_CONFIG = {"det_max_side": 0, "use_angle_cls": True, "rec_batch": 6, "threads": 0}


# --- corpus -----------------------------------------------------------------------

def make_corpus(directory: Path, quick: bool) -> dict[str, Any]:
    """Generate the documents and their ground truth; returns {name: {"path", "truth", ...}}."""
    import docgen

    directory.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, Any] = {}
    styles = [
        docgen.ScanStyle(font="helv", angle=0.6),
        docgen.ScanStyle(font="tiro", angle=-0.4, blur=1.0),
        docgen.ScanStyle(font="cour", angle=0.3, noise=8.0, fontsize=10.0),
        docgen.ScanStyle(font="helv", angle=-0.8, jpeg_quality=60),
    ]
    count = 1 if quick else 4
    pdf = directory / f"a4_scans_{count}.pdf"
    truth = []
    import pymupdf

    doc = pymupdf.open()
    for i, style in enumerate(styles[:count]):
        page = docgen.scanned_page(100 + i, style)
        out = doc.new_page(width=style.page_size[0], height=style.page_size[1])
        out.insert_image(out.rect, stream=docgen.encode_jpeg(page.image, style.jpeg_quality))
        truth.append(page.text)
    doc.save(pdf)
    doc.close()
    corpus["a4"] = {"path": pdf, "truth": truth}

    # The long scan: letters of ~15 lines scanned at 150 dpi, like the 142-page reference file.
    pages = 20 if quick else 142
    long_style = docgen.ScanStyle(dpi=150, blur=0.5, noise=4.0, jpeg_quality=50)
    long_pdf = directory / f"long_{pages}.pdf"
    long_truth = docgen.scanned_pdf(long_pdf, range(1000, 1000 + pages), long_style, lines=15)
    corpus["long"] = {"path": long_pdf, "truth": [p.text for p in long_truth]}
    # Its first 40 pages, for the runs that leave out part of the per-page cleanup.
    short_pdf = directory / "long_first_40.pdf"
    src, dst = pymupdf.open(long_pdf), pymupdf.open()
    dst.insert_pdf(src, to_page=min(39, pages - 1))
    dst.save(short_pdf)
    src.close()
    dst.close()
    corpus["long40"] = {"path": short_pdf, "truth": [p.text for p in long_truth[:40]]}

    # Two dense pages, uncompressed grayscale: ~20 MB like the reference TIFF.
    tiff_dpi = 200 if quick else 320
    tiff_style = docgen.ScanStyle(dpi=tiff_dpi)
    tiff_pages = [docgen.scanned_page(2000 + i, tiff_style) for i in range(2)]
    tiff = directory / "two_pages.tif"
    docgen.multipage_tiff(tiff, tiff_pages, dpi=tiff_dpi, compression=None)
    corpus["tiff"] = {"path": tiff, "truth": [p.text for p in tiff_pages]}
    # The largest pages within the pixel budget: an uncompressed A3 TIFF at 300 dpi (read at
    # 200 dpi: 7.7 M pixels, ~5 000 characters) and an A2 poster at 240 dpi (rendered at the
    # 9 M pixel budget).
    a3_style = docgen.ScanStyle(dpi=300, page_size=(842.0, 1191.0))
    a3_page = docgen.scanned_page(3000, a3_style)
    a3 = directory / "a3_300dpi.tif"
    docgen.multipage_tiff(a3, [a3_page], dpi=300, compression=None)
    corpus["a3_tiff"] = {"path": a3, "truth": [a3_page.text]}
    poster_style = docgen.ScanStyle(dpi=240, page_size=(1191.0, 1684.0), fontsize=22, margin=90)
    poster_page = docgen.scanned_page(3001, poster_style, lines=30)
    poster = directory / "a2_poster_240dpi.pdf"
    out = pymupdf.open()
    new_page = out.new_page(width=poster_style.page_size[0], height=poster_style.page_size[1])
    new_page.insert_image(new_page.rect, stream=docgen.encode_jpeg(poster_page.image, 60))
    out.save(poster)
    out.close()
    corpus["poster"] = {"path": poster, "truth": [poster_page.text]}
    for item in corpus.values():
        item["mb"] = round(item["path"].stat().st_size / 1e6, 1)
        item["pages"] = len(item["truth"])
    return corpus


# --- the measured process ------------------------------------------------------------

def _uss_mb() -> float:
    import psutil

    return psutil.Process().memory_full_info().uss / 1e6


def worker(job: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh interpreter (or a forked child): one configuration over one document."""
    t_start = time.time()
    out: dict[str, Any] = {"pid": os.getpid()}
    if job["mode"] == "naive":
        out.update(_naive(job))
    else:
        out.update(_through_pass(job))
    from docsuper.passes.ocr import peak_rss_mb

    out["maxrss_mb"] = peak_rss_mb()  # VmHWM: ru_maxrss would include this script's own RSS
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_s"] = usage.ru_utime + usage.ru_stime
    out["sys_s"] = usage.ru_stime
    out["wall_s"] = time.time() - t_start
    return out


def _naive(job: dict[str, Any]) -> dict[str, Any]:
    """What a first attempt looks like: RapidOCR() out of the box on 300 dpi colour renders."""
    import numpy as np
    import pymupdf
    from rapidocr_onnxruntime import RapidOCR

    t0 = time.time()
    engine = RapidOCR()
    ready = time.time() - t0
    doc = pymupdf.open(job["path"])
    pages = []
    for page in doc:
        t = time.time()
        pix = page.get_pixmap(dpi=300)
        image = np.frombuffer(pix.samples, dtype=np.uint8).reshape(pix.height, pix.width, pix.n)[:, :, ::-1]
        result, _ = engine(np.ascontiguousarray(image))
        text = "\n".join(r[1].strip() for r in result or [])
        pages.append({"text": text, "seconds": time.time() - t, "uss_mb": _uss_mb()})
    return {"engine_s": ready, "pages": pages}


def _through_pass(job: dict[str, Any]) -> dict[str, Any]:
    """The real `ocr` pass, in process, with the job's config; USS read after each page."""
    from docsuper.passes import ocr
    from docsuper.passes.api import PassContext
    from docsuper.supervisor.config import load_config
    from docsuper.supervisor.protocol import JobSpec

    config = load_config(None, {}).as_dict()
    config["inputs"]["allowed_roots"] = ["/"]
    config["ocr"].update(job.get("ocr", {}))
    if job.get("without"):
        _ablate(ocr, job["without"])
    pages: list[dict[str, Any]] = []

    cpu = [time.process_time()]

    class Recorder(PassContext):
        def page_result(self, page: int, result: dict[str, Any]) -> None:
            now = time.process_time()
            pages.append({"page": page, "text": result["text"], "seconds": result["seconds"],
                          "cpu_s": now - cpu[0], "rss_mb": result["rss_mb"], "uss_mb": _uss_mb(),
                          "method": result["method"], "dpi": result.get("dpi")})
            cpu[0] = time.process_time()

    events = os.open(os.devnull, os.O_WRONLY)
    spec = JobSpec(job_id="bench", attempt=1, source=str(job["path"]), passes=["ocr"], config=config)
    readers = int(job.get("readers", 1))  # as if the parent had lent the job readers - 1 idle cores
    ctx = Recorder(spec, events, workdir=Path(tempfile.mkdtemp(prefix="bench-")), readers=lambda: readers)
    ctx.pass_name = "ocr"
    # The engine is made before the clock starts: per-page CPU is the pages' own, and the
    # start (imports and models, once per child) is reported apart.
    t_engine = time.process_time()
    settings = ocr.OcrSettings.from_config(config)
    if job.get("warm", True):
        from docsuper.passes import engines

        engines.engine(settings.plan.engine, settings.engine_settings)
    engine_cpu_s = time.process_time() - t_engine
    t0 = time.time()
    cpu[0] = time.process_time()
    summary = ocr.run(ctx)
    return {"pages": pages, "summary": summary, "pass_s": time.time() - t0, "engine_cpu_s": engine_cpu_s}


def _ablate(ocr_module: Any, without: str) -> None:
    """Replace the per-page cleanup by one that skips `store_shrink` or `malloc_trim`."""
    import ctypes

    import pymupdf

    libc = ctypes.CDLL("libc.so.6")

    def partial_release() -> None:
        if without not in ("store_shrink", "both"):
            pymupdf.TOOLS.store_shrink(100)
        if without not in ("malloc_trim", "both"):
            libc.malloc_trim(0)

    ocr_module.release_memory = partial_release


def run_measured(job: dict[str, Any], lean_env: bool, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    """`worker(job)` in a fresh interpreter, its USS sampled from outside every 100 ms."""
    env = {k: v for k, v in os.environ.items() if k not in LEAN_ENV and not k.startswith("MALLOC_")}
    if lean_env:
        env.update(LEAN_ENV)
    env.update(extra_env or {})
    payload = json.dumps(job, default=str)
    # Files, not pipes: the result of a long document is larger than a pipe holds, and the
    # worker would block writing it while this process waits for it to exit.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", payload], env=env, stdout=out, stderr=err)
        peak = _sample_peak(proc.pid, lambda: proc.poll() is not None)
        proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {stderr[-2000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(peak)
    return result


def _sample_peak(pid: int, finished: Any, interval: float = 0.1) -> dict[str, float]:
    import psutil

    peak_uss = peak_rss = 0.0
    try:
        proc = psutil.Process(pid)
        while not finished():
            try:
                info = proc.memory_full_info()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                break
            peak_uss = max(peak_uss, info.uss / 1e6)
            peak_rss = max(peak_rss, info.rss / 1e6)
            time.sleep(interval)
    except psutil.NoSuchProcess:
        pass
    return {"peak_uss_mb": peak_uss, "sampled_rss_mb": peak_rss}


# --- child start ----------------------------------------------------------------------

START_PAGE_JOB = "start"


def spawn_start(page_pdf: Path) -> dict[str, Any]:
    """A fresh interpreter imports the stack, makes the engine and reads one page."""
    env = {**os.environ, **LEAN_ENV}
    t0 = time.time()
    proc = subprocess.run([sys.executable, __file__, "--start-child", str(page_pdf), str(t0)],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start_child(page_pdf: str, t0: float) -> dict[str, Any]:
    """In the started child: what it takes from process start (or fork) to a read page."""
    import numpy  # noqa: F401  (already loaded in a forked child: free there)
    import cv2  # noqa: F401
    import pymupdf  # noqa: F401

    from docsuper.passes import engines, ocr
    from docsuper.supervisor.config import load_config

    imported = time.time()
    settings = ocr.OcrSettings.from_config(load_config(None, {}).as_dict())
    engines.engine(settings.plan.engine, settings.engine_settings)
    ready = time.time()
    import psutil

    uss_ready = psutil.Process().memory_full_info().uss / 1e6
    job = {"mode": "pass", "path": page_pdf}
    result = _through_pass(job)
    info = psutil.Process().memory_full_info()
    return {"imports_s": imported - t0, "ready_s": ready - t0, "uss_ready_mb": uss_ready,
            "uss_after_page_mb": info.uss / 1e6, "rss_after_page_mb": info.rss / 1e6,
            "pss_after_page_mb": info.pss / 1e6, "page_s": result["pass_s"]}


def zygote_main() -> None:
    """A fork server in miniature: preload, stay single-threaded, fork one child per request."""
    import numpy  # noqa: F401
    import cv2  # noqa: F401
    import pymupdf  # noqa: F401
    import psutil  # noqa: F401

    import docsuper.passes.ocr  # noqa: F401  (numpy, pymupdf, inputs; never onnxruntime)

    threads = len(os.listdir("/proc/self/task"))
    sys.stdout.write(json.dumps({"ready": True, "threads": threads}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        read_fd, write_fd = os.pipe()
        t0 = time.time()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                result = start_child(request["page_pdf"], t0)
                result["threads_at_fork"] = threads
                os.write(write_fd, json.dumps(result).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
        os.close(read_fd)
        os.waitpid(pid, 0)
        sys.stdout.write(data.decode() + "\n")
        sys.stdout.flush()


def fork_start(page_pdf: Path, runs: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    env = {**os.environ, **LEAN_ENV}
    proc = subprocess.Popen([sys.executable, __file__, "--zygote"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout
    hello = json.loads(proc.stdout.readline())
    import psutil

    hello["zygote_rss_mb"] = psutil.Process(proc.pid).memory_info().rss / 1e6
    results = []
    for _ in range(runs):
        proc.stdin.write(json.dumps({"page_pdf": str(page_pdf)}) + "\n")
        proc.stdin.flush()
        results.append(json.loads(proc.stdout.readline()))
    proc.stdin.close()
    proc.wait()
    return hello, results


# --- throughput (for the lead: the daemon half) ----------------------------------------------

def inprocess_throughput(corpus_pdf: Path, processes: int = 2) -> float:
    """Pages/s of the best in-process loop: `processes` fresh interpreters each reading the
    whole corpus with the lean settings, side by side (as many as `docsuper run` would run)."""
    t0 = time.time()
    threads = []
    results: list[dict[str, Any]] = []
    for _ in range(processes):
        job = {"mode": "pass", "path": str(corpus_pdf)}
        thread = threading.Thread(target=lambda: results.append(run_measured(job, lean_env=True)))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    pages = sum(len(r["pages"]) for r in results)
    return pages / (time.time() - t0)


def daemon_throughput(corpus: list[Path], concurrency: int = 2) -> float:
    """Pages/s through `docsuper run --drain` over `corpus` (one job per file) at `concurrency`,
    on a fresh SQLite queue: every job a fresh child that starts its own OCR engine."""
    work = Path(tempfile.mkdtemp(prefix="bench-ocr-daemon-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSUPER_")}
    env.pop("DATABASE_URL", None)
    (work / "none.toml").write_text("")
    env.update({"DOCSUPER_CONFIG": str(work / "none.toml"), "DOCSUPER_QUEUE_URL": f"sqlite:///{work / 'q.db'}",
                "WORKER_CONCURRENCY": str(concurrency), "DOCSUPER_LOG_LEVEL": "warning",
                "DOCSUPER_INPUTS_ALLOWED_ROOTS": str(corpus[0].parent)})
    cli = [sys.executable, "-m", "docsuper.supervisor.cli"]
    subprocess.run([*cli, "submit", *map(str, corpus)], env=env, check=True, capture_output=True)
    t0 = time.time()
    subprocess.run([*cli, "run", "--drain"], env=env, check=True, capture_output=True)
    elapsed = time.time() - t0
    listing = json.loads(subprocess.run([*cli, "list", "--json", "--limit", "1000"], env=env, check=True,
                                        capture_output=True, text=True).stdout)
    if any(job["status"] != "succeeded" for job in listing):
        raise RuntimeError(f"daemon run left jobs unfinished: {[j['last_error'] for j in listing]}")
    pages = sum(job["result"]["ocr"]["pages"] for job in listing)
    return pages / elapsed


def throughput_table(directory: Path, pages: int = 30, per_job: int = 3, concurrency: int = 2) -> None:
    """The daemon against the best in-process loop, in one run, over the same pages."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_samples import scan_of

    lines = [[f"Page {p} line {i}: the quick brown fox jumps over the lazy dog {p * i}" for i in range(30)]
             for p in range(pages)]
    jobs = []
    for start in range(0, pages, per_job):
        path = directory / f"corpus-{start:03d}.pdf"
        scan_of(lines[start:start + per_job], dpi=300).save(path)
        jobs.append(path)
    half = directory / "corpus-half.pdf"
    scan_of(lines[:pages // concurrency], dpi=300).save(half)
    daemon = daemon_throughput(jobs, concurrency)
    inprocess = inprocess_throughput(half, processes=concurrency)
    print(f"\n{pages} scanned A4 pages at 300 dpi, concurrency {concurrency}")
    print(f"{'':<58}{'pages/s':>8}{'ratio':>8}")
    print(f"{'best in-process loop (' + str(concurrency) + ' processes, one engine each)':<58}{inprocess:>8.2f}{1:>8.2f}")
    print(f"{'docsuper run --drain (' + str(len(jobs)) + ' jobs of ' + str(per_job) + ' pages, fresh child each)':<58}"
          f"{daemon:>8.2f}{daemon / inprocess:>8.2f}")


# --- engines against the kinds of input ------------------------------------------------------

ENGINES = ("tesseract", "rapidocr")


def kinds_table(directory: Path, quick: bool) -> tuple[str, dict[str, Any]]:
    """Every engine on every kind of input (docgen.SAMPLES, full pages), each run in a fresh
    interpreter: CER, s/page, CPU s/page, peak RSS, clinical tokens lost."""
    import docgen

    pages = 1 if quick else 2
    samples = [docgen.make_sample(kind, directory / "kinds", seed=11, pages=pages) for kind in docgen.SAMPLES]
    rows, figures = [], {}
    for engine in ENGINES:
        for sample in samples:
            print(f"  {engine} on {sample.kind} ({len(sample.truth)} pages) …", flush=True)
            r = run_measured({"mode": "pass", "path": str(sample.path), "ocr": {"engine": engine}}, lean_env=True)
            with_spaces, without_spaces = _cer(sample.truth, r["pages"])
            n = len(r["pages"])
            lost, tokens = docgen.token_errors("\n".join(sample.truth), "\n".join(p["text"] for p in r["pages"]))
            chars = sum(len(t) for t in sample.truth)
            cpu = sum(p["cpu_s"] for p in r["pages"])
            row = {"cer": round(100 * with_spaces, 2), "cer_no_spaces": round(100 * without_spaces, 2),
                   "s_per_page": round(sum(p["seconds"] for p in r["pages"]) / n, 2),
                   "cpu_s_per_page": round(cpu / n, 2), "chars_per_page": round(chars / n),
                   "cpu_ms_per_char": round(1000 * cpu / max(1, chars), 2),
                   "engine_cpu_s": round(r["engine_cpu_s"], 2), "peak_rss_mb": round(r["maxrss_mb"]),
                   "dpi": r["pages"][0]["dpi"], "tokens_lost": lost, "tokens": tokens}
            figures[f"{engine} {sample.kind}"] = row
            rows.append([engine, sample.kind, f"{row['cer']:.2f} %", f"{row['cer_no_spaces']:.2f} %",
                         f"{lost}/{tokens}", row["dpi"], row["chars_per_page"], row["s_per_page"],
                         row["cpu_s_per_page"], row["cpu_ms_per_char"], row["peak_rss_mb"]])
    # CPU time is user + system of the whole process (every thread); on a shared box it is far
    # steadier than wall time. The engine is made before the clock starts (engine_cpu_s in --json).
    table = _table(["engine", "input", "CER", "CER no spaces", "clinical tokens lost", "render dpi", "chars/page",
                    "s/page", "CPU s/page", "CPU ms/char", "peak RSS MB"], rows)
    return table, figures


def long_scan_table(corpus: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The 142-page scan, the ~20 MB TIFF and the largest pages on the default engine: peak and growth."""
    rows, figures = [], {}
    for name in ("long", "tiff", "a3_tiff", "poster"):
        item = corpus[name]
        print(f"  default engine on {name} ({item['pages']} pages, {item['mb']} MB) …", flush=True)
        r = run_measured({"mode": "pass", "path": str(item["path"])}, lean_env=True)
        pages = r["pages"]
        with_spaces, _ = _cer(item["truth"], pages)
        row = {"pages": len(pages), "mb": item["mb"], "peak_rss_mb": round(r["maxrss_mb"]), "dpi": pages[0]["dpi"],
               "rss_first_mb": round(pages[0]["rss_mb"], 1), "rss_last_mb": round(pages[-1]["rss_mb"], 1),
               "cpu_s_per_page": round(sum(p["cpu_s"] for p in pages) / len(pages), 2),
               "cer": round(100 * with_spaces, 2), "engine": r["summary"]["engine"]}
        figures[name] = row
        rows.append([name, row["engine"], f"{row['pages']} / {row['mb']} MB", row["dpi"], row["peak_rss_mb"],
                     f"{row['rss_first_mb']} → {row['rss_last_mb']}", row["cpu_s_per_page"], f"{row['cer']:.2f} %"])
    return _table(["document", "engine", "pages / size", "render dpi", "peak RSS MB", "RSS after page 1 → last",
                   "CPU s/page", "CER"], rows), figures


# --- report -----------------------------------------------------------------------------

def readers_table(directory: Path, quick: bool) -> tuple[str, dict[str, Any]]:
    """One job's scan read by one reader, and by two as on a lent core (passes/page_readers.py)."""
    import docgen

    path = directory / "readers.pdf"
    pages = 4 if quick else 8
    truth = docgen.scanned_pdf(path, range(70, 70 + pages), docgen.ScanStyle(dpi=300))
    rows, figures = [], {}
    for readers in (1, 2):
        result = run_measured({"mode": "pass", "path": str(path), "readers": readers}, lean_env=False)
        cer, _ = _cer([p.text for p in truth], result["pages"])
        figures[readers] = {"wall_s": round(result["pass_s"], 2), "cpu_s": round(result["cpu_s"], 2),
                            "peak_rss_mb": result["maxrss_mb"], "cer": cer,
                            "readers": result["summary"]["readers"]}
    for readers, f in figures.items():
        rows.append([readers, f["readers"], pages, f["wall_s"], round(figures[1]["wall_s"] / f["wall_s"], 2),
                     f["cpu_s"], f["peak_rss_mb"], f"{100 * f['cer']:.2f} %"])
    table = _table(["readers allowed", "most at once", "pages (300 dpi, dense)", "pass s", "speed-up",
                    "CPU s (process)", "peak RSS MB", "CER"], rows)
    return table, {str(k): v for k, v in figures.items()}


def _cer(truth: list[str], pages: list[dict[str, Any]]) -> tuple[float, float]:
    import docgen

    ref = "\n".join(truth)
    hyp = "\n".join(p["text"] for p in pages)
    return docgen.cer(ref, hyp, spaces=True), docgen.cer(ref, hyp, spaces=False)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one A4 page, a 20-page long scan, a small TIFF")
    parser.add_argument("--no-box", action="store_true", help="leave out the 512 MB box (needs root anyway)")
    parser.add_argument("--rapidocr-settings", action="store_true",
                        help="also: RapidOCR's defaults against its lean settings (slow)")
    parser.add_argument("--start", action="store_true", help="also: child start, spawn against fork server")
    parser.add_argument("--ablation", action="store_true", help="also run without store_shrink / malloc_trim")
    parser.add_argument("--more-variants", action="store_true",
                        help="also: the defaults' model settings in a lean process, detector at 960 and 640 px")
    parser.add_argument("--start-runs", type=int, default=3, help="children started per start method")
    parser.add_argument("--keep", type=Path, help="generate the documents here and keep them")
    parser.add_argument("--json", type=Path, help="write every figure here as JSON")
    parser.add_argument("--throughput", action="store_true",
                        help="only: pages/s through `docsuper run --drain` against the in-process loop")
    parser.add_argument("--readers", action="store_true", help="only: one scan read by one reader and by two")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--start-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.start_child:
        print(json.dumps(start_child(args.start_child[0], float(args.start_child[1]))))
        return
    if args.zygote:
        zygote_main()
        return

    if args.throughput:
        with tempfile.TemporaryDirectory(prefix="bench-ocr-throughput-") as tmp:
            throughput_table(Path(tmp))
        return

    if args.readers:
        with tempfile.TemporaryDirectory(prefix="bench-ocr-readers-") as tmp:
            print(readers_table(Path(tmp), args.quick)[0])
        return

    began = time.time()
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-ocr-"))
    print(f"generating documents in {directory} …", flush=True)
    corpus = make_corpus(directory, args.quick)
    figures: dict[str, Any] = {"quick": args.quick, "corpus": {
        k: {"path": str(v["path"]), "mb": v["mb"], "pages": v["pages"]} for k, v in corpus.items()}}
    print(f"  done in {time.time() - began:.0f} s: " + ", ".join(
        f"{k} {v['pages']} pages {v['mb']} MB" for k, v in corpus.items()), flush=True)

    report: list[str] = []

    # 1. every engine on every kind of input
    print("engines against the kinds of input …", flush=True)
    table, figures["kinds"] = kinds_table(directory, args.quick)
    report += [f"## Engines by kind of input (full A4 pages, {1 if args.quick else 2} per kind, fresh process each)",
               "", table]

    # 2. the long scan and the large TIFF: flat memory
    print("long scan and large TIFF …", flush=True)
    table, figures["documents"] = long_scan_table(corpus)
    report += ["", "## Long scan, large TIFFs and the largest pages (default engine)", "", table]

    # 2b. one job on a lent core: two readers against one
    print("one scan read by one reader and by two …", flush=True)
    table, figures["readers"] = readers_table(directory, args.quick)
    report += ["", "## One job, one reader against two (a lent core)", "", table]

    # 3. the box: 512 MB, a burst of mixed jobs at concurrency 5 and 1
    if os.geteuid() == 0 and not args.no_box:
        sys.path.insert(0, str(ROOT / "scripts"))
        import bench_box

        print("the box: a burst of 16 mixed jobs in a 512 MB cgroup, concurrency 5 then 1 …", flush=True)
        figures["box"] = bench_box.burst_figures(directory / "burst", 512, args.quick)
    else:
        report += ["", "(the box figures need root: a memory cgroup; run bench_box.py as root)"]

    if args.rapidocr_settings:
        print("RapidOCR's defaults against the lean settings …", flush=True)
        report += ["", "## RapidOCR: defaults against the lean settings", "", rapidocr_settings_table(corpus, args)]
    if args.ablation:
        report += ["", "## Per-page cleanup (first 40 pages of the long scan)", "", ablation_table(corpus)]
    if args.start:
        report += ["", start_section(directory, args.start_runs, figures)]

    print()
    print("\n".join(report))
    if "box" in figures:
        bench_box.print_burst(figures["box"])
    figures["seconds"] = round(time.time() - began)
    print(f"\nbench took {figures['seconds']} s on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def rapidocr_settings_table(corpus: dict[str, Any], args: argparse.Namespace) -> str:
    """RapidOCR() out of the box against the lean settings, on the dense A4 scans."""
    a4 = corpus["a4"]
    pass_job = {"mode": "pass", "path": str(a4["path"]), "ocr": {"engine": "rapidocr"}}
    variants: list[tuple[str, dict[str, Any], bool, dict[str, str]]] = [
        ("RapidOCR defaults", {"mode": "naive", "path": str(a4["path"])}, False, {}),
        ("lean (chosen)", pass_job, True, {}),
        # glibc's frozen default once the mmap threshold is set; the pass raises it to 32 MB.
        ("lean, trim threshold 128 KB", pass_job, True, {"MALLOC_TRIM_THRESHOLD_": "131072"}),
    ]
    if args.more_variants:
        variants.insert(1, ("defaults' model settings, lean process",
                            {**pass_job, "ocr": {"engine": "rapidocr", **DEFAULTS_CONFIG}}, True, {}))
        variants.append(("lean, detector 960 px", {**pass_job, "ocr": {"engine": "rapidocr", "det_max_side": 960}},
                         True, {}))
        variants.append(("lean, detector 640 px", {**pass_job, "ocr": {"engine": "rapidocr", "det_max_side": 640}},
                         True, {}))
    rows = []
    for label, job, lean_env, extra_env in variants:
        print(f"  {label} on {a4['pages']} A4 page(s) …", flush=True)
        r = run_measured(job, lean_env, extra_env)
        with_spaces, without_spaces = _cer(a4["truth"], r["pages"])
        n = len(r["pages"])
        rows.append([label, round(r["maxrss_mb"]), round(r["peak_uss_mb"]),
                     " ".join(str(round(p["uss_mb"])) for p in r["pages"]),
                     round(sum(p["seconds"] for p in r["pages"]) / n, 2),
                     f"{round(r['cpu_s'] / n, 2)} ({round(r['sys_s'] / n, 2)})",
                     f"{100 * with_spaces:.2f} %", f"{100 * without_spaces:.2f} %"])
    return _table(["settings", "peak RSS MB", "peak USS MB", "USS after each page MB", "s/page",
                   "CPU s/page (sys)", "CER", "CER no spaces"], rows)


def ablation_table(corpus: dict[str, Any]) -> str:
    path40 = str(corpus["long40"]["path"])
    rows = []
    for label, without in (("both (chosen)", None), ("no store_shrink", "store_shrink"),
                           ("no malloc_trim", "malloc_trim"), ("no cleanup", "both")):
        job: dict[str, Any] = {"mode": "pass", "path": path40}
        if without:
            job["without"] = without
        print(f"  long40 {label} …", flush=True)
        r = run_measured(job, lean_env=True)
        pages = r["pages"]
        rows.append([label, round(r["maxrss_mb"]), round(r["peak_uss_mb"]),
                     f"{round(pages[0]['rss_mb'])} → {round(pages[-1]['rss_mb'])}"])
    return _table(["cleanup after each page", "peak RSS MB", "peak USS MB", "RSS after page 1 → 40"], rows)


def start_section(directory: Path, runs: int, figures: dict[str, Any]) -> str:
    import docgen

    page_pdf = directory / "one_page.pdf"
    docgen.scanned_pdf(page_pdf, [7], lines=15)
    print("  child start: spawn …", flush=True)
    spawned = [spawn_start(page_pdf) for _ in range(runs)]
    print("  child start: fork from a preloaded zygote …", flush=True)
    hello, forked = fork_start(page_pdf, runs)

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    rows = []
    figures["start"] = {"zygote": hello}
    for label, results in (("spawn", spawned), ("fork from zygote", forked)):
        row = {key: round(median([r[key] for r in results]), 3 if key.endswith("_s") else 1)
               for key in ("imports_s", "ready_s", "uss_ready_mb", "uss_after_page_mb", "pss_after_page_mb",
                           "rss_after_page_mb", "page_s")}
        figures["start"][label] = row
        rows.append([label, row["imports_s"], row["ready_s"], row["uss_ready_mb"], row["uss_after_page_mb"],
                     row["pss_after_page_mb"], row["rss_after_page_mb"], row["page_s"]])
    return (f"## Child start (median of {runs}; zygote: {hello['threads']} thread(s), "
            f"{hello['zygote_rss_mb']:.0f} MB RSS)\n\n"
            + _table(["start method", "imports s", "engine ready s", "USS ready MB", "USS after page MB",
                      "PSS after page MB", "RSS after page MB", "page s"], rows))


if __name__ == "__main__":
    main()
