#!/usr/bin/env python3
"""How fast the supervisor turns over no-op jobs, beside the floors it is built on, in one run.

    .venv/bin/python scripts/bench_supervisor.py [--jobs 1000] [--concurrency 5]

Prints, measured now on this box:
  - os.fork()+waitpid per second and a bare `python -c pass` per second (the floors);
  - no-op jobs per second through `docsuper run --drain`: the fork server with the
    default preload (numpy, cv2, pymupdf), with nothing preloaded, and spawn; the
    ratios to those floors;
  - the parent's RSS at start and after every 100 jobs;
  - claim → child running its first pass (median and p95) for the no-op pass, and,
    with --ocr, claim → first OCR page for a one-page scan.
Ratios, not absolute numbers, are what carry from one machine to another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fork_rate(n: int = 500) -> float:
    started = time.perf_counter()
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return n / (time.perf_counter() - started)


def python_rate(n: int = 40) -> float:
    started = time.perf_counter()
    for _ in range(n):
        subprocess.run([sys.executable, "-S", "-c", "pass"], check=True)
    return n / (time.perf_counter() - started)


def drain(workdir: Path, jobs: int, concurrency: int, start_method: str, passes: str = "noop",
          paths: list[str] | None = None, preload: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSUPER_")}
    env.pop("DATABASE_URL", None)
    db = workdir / f"bench-{start_method}-{passes}-{preload}.db"
    env.update({
        "DOCSUPER_QUEUE_URL": f"sqlite:///{db}",
        "DOCSUPER_CONFIG": str(workdir / "empty.toml"),
        "WORKER_CONCURRENCY": str(concurrency),
        "DOCSUPER_WORKERS_START_METHOD": start_method,
        "DOCSUPER_LOG_LEVEL": "info",
        "DOCSUPER_INPUTS_ALLOWED_ROOTS": str(workdir),
    })
    if preload is not None:
        env["DOCSUPER_WORKERS_PRELOAD"] = preload
    (workdir / "empty.toml").write_text("")
    cli = [sys.executable, "-m", "docsuper.supervisor.cli"]
    subprocess.run([*cli, "submit", "--passes", passes, "--count", str(jobs), *(paths or [])],
                   env=env, check=True, capture_output=True)
    started = time.perf_counter()
    out = subprocess.run([*cli, "run", "--drain"], env=env, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - started
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    finished = [r for r in records if r["event"] == "job_finished"]
    ready = next(r for r in records if r["event"] == "launcher_ready")
    first, last = finished[0]["ts"], finished[-1]["ts"]
    return {
        "jobs": len(finished),
        "succeeded": sum(r["outcome"] == "succeeded" for r in finished),
        "wall_s": wall,
        "per_s_wall": len(finished) / wall,
        "per_s_steady": (len(finished) - 1) / (last - first) if last > first else float("nan"),
        "start_ms": [r["start_ms"] for r in finished if r.get("start_ms") is not None],
        "first_page_ms": [r["first_page_ms"] for r in finished if r.get("first_page_ms") is not None],
        "rss_start": ready["parent_rss_mb"],
        "rss_marks": {r["jobs"]: r["rss_mb"] for r in records if r["event"] == "parent_memory"},
        "startup_s": ready["seconds"],
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def one_page_scan(workdir: Path) -> str:
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 100), "Benchmark page: the quick brown fox jumps over the lazy dog.", fontsize=14)
    pix = page.get_pixmap(dpi=200, colorspace=pymupdf.csGRAY)
    scan = pymupdf.open()
    scan.new_page(width=page.rect.width, height=page.rect.height).insert_image(page.rect, stream=pix.tobytes("png"))
    path = workdir / "scan.pdf"
    scan.save(path)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--ocr", action="store_true", help="also time claim → first OCR page")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="docsuper-bench-") as tmp:
        workdir = Path(tmp)
        forks = fork_rate()
        pythons = python_rate()
        fork_server = drain(workdir, args.jobs, args.concurrency, "forkserver")
        # A preload that names only docsuper itself: no document libraries in the server.
        bare = drain(workdir, args.jobs, args.concurrency, "forkserver", preload="docsuper")
        spawned = drain(workdir, max(100, args.jobs // 5), args.concurrency, "spawn")
        ocr = None
        if args.ocr:
            ocr = drain(workdir, 5, 1, "forkserver", passes="ocr", paths=[one_page_scan(workdir)])

    print(f"no-op jobs through `docsuper run --drain`, concurrency {args.concurrency}, SQLite queue")
    print(f"{'':<34}{'per second':>12}{'÷ fork+wait':>13}{'÷ python -c pass':>18}")
    print(f"{'os.fork()+waitpid':<34}{forks:>12.0f}{1.0:>13.2f}{forks / pythons:>18.2f}")
    print(f"{'python -S -c pass':<34}{pythons:>12.0f}{pythons / forks:>13.3f}{1.0:>18.2f}")
    for name, r in (("forkserver (wall, incl. start-up)", fork_server), ("forkserver (steady state)", fork_server),
                    ("forkserver, no preload (wall)", bare), ("forkserver, no preload (steady)", bare),
                    ("spawn (wall, incl. start-up)", spawned), ("spawn (steady state)", spawned)):
        rate = r["per_s_steady"] if "steady" in name else r["per_s_wall"]
        print(f"{name:<34}{rate:>12.0f}{rate / forks:>13.3f}{rate / pythons:>18.2f}")
    print(f"\njobs succeeded: forkserver {fork_server['succeeded']}/{fork_server['jobs']}, "
          f"spawn {spawned['succeeded']}/{spawned['jobs']}; fork server ready in {fork_server['startup_s']} s")
    marks = fork_server["rss_marks"]
    print(f"parent RSS: {fork_server['rss_start']:.1f} MB at start; "
          + ", ".join(f"{v:.1f} MB after {k}" for k, v in sorted(marks.items())))
    if 100 in marks and 500 in marks:
        print(f"parent RSS growth from job 100 to job 500: {marks[500] - marks[100]:+.2f} MB")
    print("\nclaim → child about to run its first pass")
    runs = [("noop, forkserver", fork_server), ("noop, no preload", bare), ("noop, spawn", spawned)]
    if ocr:
        runs.append(("ocr, forkserver", ocr))
    for name, r in runs:
        print(f"  {name:<18} median {statistics.median(r['start_ms']):6.1f} ms   p95 {pct(r['start_ms'], 0.95):6.1f} ms")
    if ocr:
        fp = ocr["first_page_ms"]
        print(f"claim → first OCR page stored (onnxruntime import, engine start, one page): "
              f"median {statistics.median(fp):.0f} ms")


if __name__ == "__main__":
    main()
