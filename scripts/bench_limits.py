#!/usr/bin/env python3
"""Which kernel memory limit binds on the OCR stack without breaking it.

    .venv/bin/python scripts/bench_limits.py

For RLIMIT_AS and RLIMIT_DATA at several sizes, a child sets the limit on itself
and then does what an OCR job does: import the stack, start the lean RapidOCR
engine, read one scanned A4 page. Each is tried as a fresh interpreter (spawn)
and as a fork of a process that preloaded numpy, cv2 and pymupdf (the fork
server's case). A row says whether the page came through, and if not, how the
child failed: a clean Python exception is what a limit should produce.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

WORKLOAD = textwrap.dedent("""
    import sys
    import numpy, cv2, pymupdf
    from docsuper.passes.lean_ocr import EngineSettings, engine
    from docsuper.supervisor.config import OcrConfig
    doc = pymupdf.open(sys.argv[1])
    pix = doc[0].get_pixmap(dpi=300, colorspace=pymupdf.csGRAY)
    image = numpy.frombuffer(pix.samples, dtype=numpy.uint8).reshape(pix.height, pix.width)
    lines = engine(EngineSettings.from_section(OcrConfig()))(image)
    print(f"ok: {len(lines)} lines")
""")

LIMITS = {"RLIMIT_AS": resource.RLIMIT_AS, "RLIMIT_DATA": resource.RLIMIT_DATA}


def spawned(kind: str, mb: int, pdf: Path) -> str:
    code = (f"import resource; resource.setrlimit(resource.{kind}, ({mb << 20}, {mb << 20}))\n" + WORKLOAD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    result = subprocess.run([sys.executable, "-c", code, str(pdf)], capture_output=True, text=True, env=env,
                            timeout=300)
    return describe(result.returncode, result.stdout, result.stderr)


def forked(kind: str, mb: int, pdf: Path) -> str:
    """Fork from this process (which has the three libraries loaded), limit, then work."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        code = 1
        try:
            resource.setrlimit(LIMITS[kind], (mb << 20, mb << 20))
            sys.argv = ["workload", str(pdf)]
            exec(compile(WORKLOAD, "workload", "exec"), {"__name__": "__main__"})
            code = 0
        except BaseException as exc:  # report whatever the limit did
            os.write(2, f"{type(exc).__name__}: {exc}\n".encode())
        finally:
            sys.stdout.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        output = fh.read()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return describe(code, output if code == 0 else "", output)


def describe(code: int, stdout: str, stderr: str) -> str:
    if code == 0 and stdout.startswith("ok"):
        return stdout.strip().splitlines()[0]
    if code < 0:
        return f"killed by signal {-code}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit {code}"
    return f"failed: {last[:90]}"


def main() -> None:
    import numpy  # noqa: F401  (the fork server's preload)
    import cv2  # noqa: F401
    import pymupdf  # noqa: F401

    from make_samples import scan_of

    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "page.pdf"
        lines = [f"Line {i}: the quick brown fox jumps over the lazy dog, {i * 13} mg" for i in range(1, 30)]
        scan_of([lines], dpi=300).save(pdf)
        print(f"{'limit':<12}{'MB':>6}  {'spawned child':<44}{'forked from preloaded'}")
        for kind, sizes in (("RLIMIT_AS", (450, 600, 800, 1200)), ("RLIMIT_DATA", (200, 250, 300, 450, 550))):
            for mb in sizes:
                print(f"{kind:<12}{mb:>6}  {spawned(kind, mb, pdf):<44}{forked(kind, mb, pdf)}", flush=True)


if __name__ == "__main__":
    main()
