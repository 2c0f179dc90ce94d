#!/usr/bin/env python3
"""Run `docsuper run --drain` inside a 512 MB memory cgroup, as on a Render Starter box.

    sudo .venv/bin/python scripts/bench_box.py [--limit-mb 512] [--concurrency 5] [--quick] [--logs DIR] [--favour-cpu]

Creates a memory cgroup (v1 or v2) below the one this process is in, limits it,
starts the supervisor in it and feeds it a burst of 16 mixed jobs like the crash
file's: low-resolution scans, ~20 MB uncompressed TIFFs, a 142-page scan, images
(a phone photo, a PNG, a G4 fax) and text-layer PDFs. Runs the same burst at
WORKER_CONCURRENCY=5 and then at 1, one after the other in one run, and prints per run:
outcomes, the kernel's OOM kills inside the box (must be 0), the box's peak memory,
the most OCR children alive at once, pages/s and the ratio of the two runs.

Beside them it prints what bounds the ratio. At concurrency 1 the run takes the sum of
its jobs' times; at 5 it can take no less than the CPU work spread over the cores, and,
were no cores lent (`workers.cores = 1`), no less than the longest job alone (then one
single-threaded child). So the best ratio this burst allows on this machine is
c1 seconds / (c1 seconds / cores), or c1 seconds / max(longest job at c1, c1 seconds /
cores) without lending; `most readers` is the most pages one job read at once (lent cores);
`tail` is how long the last job ran alone at the end (one core busy, the others idle), and
`CPU` is the CPU time the burst got against cores × seconds (other processes on the
machine take the rest: the load average is printed beside every run). `--logs DIR`
keeps each run's supervisor log: its `admission` lines say why jobs waited. Needs root.
`--favour-cpu` runs the bench in a CPU cgroup weighted far above the rest of the machine,
so that on a shared box it gets the cores as on a quiet one.
`scripts/bench_ocr.py` calls `burst_figures` for the same table.
"""

from __future__ import annotations

import argparse
import collections
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
sys.path.insert(0, str(ROOT / "tests"))


class FavouredCpu:
    """This process (and all it starts) in a CPU cgroup weighted far above everything else on
    the machine: on a box others share, the bench gets the cores as on a quiet one, and what
    it measures is not what the neighbours happened to be doing. v1: cpu.shares 262144 (the
    most; a task of the root group weighs 1024); v2: cpu.weight 10000 (the most; default 100).
    The figures still say the load beside each run."""

    def __init__(self, name: str) -> None:
        from docsuper.supervisor.budget import own_cgroup_files

        # A v1 CPU hierarchy is listed before the unified one on a hybrid box, as the old walk preferred it.
        ours = next(f for f in own_cgroup_files("cpu.weight", "cpu", "cpu.shares") if f.parent.is_dir())
        weight, value = ours.name, "10000" if ours.name == "cpu.weight" else "262144"
        self.parent = ours.parent
        self.path = self.parent / name
        self.path.mkdir()
        (self.path / weight).write_text(value)
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        (self.parent / "cgroup.procs").write_text(str(os.getpid()))
        for _ in range(50):  # children that exited may take a moment to leave
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class MemoryCgroup:
    """A child memory cgroup of our own; v1 (memory controller) or v2 (unified)."""

    def __init__(self, name: str, limit_mb: int) -> None:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in lines if "memory" in line.split(":")[1].split(",")]
        if v1 and Path("/sys/fs/cgroup/memory").is_dir():
            self.version = 1
            self.path = Path("/sys/fs/cgroup/memory") / v1[0].lstrip("/") / name
        else:
            self.version = 2
            unified = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
            self.path = Path("/sys/fs/cgroup") / unified.lstrip("/") / name
        self.path.mkdir()
        limit = str(limit_mb * 1024 * 1024)
        if self.version == 1:
            (self.path / "memory.limit_in_bytes").write_text(limit)
        else:
            (self.path / "memory.max").write_text(limit)
            (self.path / "memory.swap.max").write_text("0")

    def enter_command(self, command: list[str]) -> list[str]:
        """A command that moves itself into this cgroup, then execs `command`."""
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *command]

    def peak_mb(self) -> float:
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.path / name).read_text()) / 2**20
        except OSError:
            return float("nan")

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def oom_kills(self) -> int:
        if self.version == 1:
            text = (self.path / "memory.oom_control").read_text()
        else:
            text = (self.path / "memory.events").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def make_burst(directory: Path, quick: bool = False) -> list[Path]:
    """The 16 mixed jobs of the crash file (--quick: the same mix, smaller documents)."""
    import docgen

    directory.mkdir(parents=True, exist_ok=True)
    jobs: list[Path] = []
    letter = docgen.ScanStyle(dpi=110, jpeg_quality=35, blur=0.4, clinical=0.2)
    for i in range(6):  # three-page letters scanned at 110 dpi, JPEG 35
        path = directory / f"scan-{i}.pdf"
        docgen.scanned_pdf(path, range(100 * i, 100 * i + (2 if quick else 3)), letter, lines=15)
        jobs.append(path)
    for i in range(2):  # two dense pages at 320 dpi, uncompressed: ~20 MB each
        dpi = 200 if quick else 320
        pages = [docgen.scanned_page(900 + 2 * i + k, docgen.ScanStyle(dpi=dpi)) for k in range(2)]
        path = directory / f"big-{i}.tif"
        docgen.multipage_tiff(path, pages, dpi=dpi, compression=None)
        jobs.append(path)
    long_scan = directory / "long.pdf"  # the crash file itself: 142 letters at 150 dpi, JPEG 50
    docgen.scanned_pdf(long_scan, range(1000, 1000 + (20 if quick else 142)),
                       docgen.ScanStyle(dpi=150, blur=0.5, noise=4.0, jpeg_quality=50), lines=15)
    jobs.append(long_scan)
    jobs.append(docgen.make_sample("photo", directory, seed=3, lines=20).path)
    png = directory / "referral.png"
    png.write_bytes(docgen.encode_png(docgen.scanned_page(77, docgen.ScanStyle(dpi=150), lines=12).image))
    jobs.append(png)
    jobs.append(docgen.make_sample("fax_normal", directory, seed=5, pages=2, lines=20).path)
    for i in range(4):  # born-digital letters: the text layer, no OCR
        path = directory / f"digital-{i}.pdf"
        import random

        rng = random.Random(i)
        docgen.text_pdf(path, [docgen.text_lines(rng, 30, 70) for _ in range(3)])
        jobs.append(path)
    return jobs


def _env(work: Path, roots: Path, concurrency: int, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSUPER_")}
    env.pop("DATABASE_URL", None)
    (work / "none.toml").write_text("")
    env.update({"DOCSUPER_QUEUE_URL": f"sqlite:///{work / 'queue.db'}", "DOCSUPER_CONFIG": str(work / "none.toml"),
                "WORKER_CONCURRENCY": str(concurrency), "DOCSUPER_INPUTS_ALLOWED_ROOTS": str(roots),
                "DOCSUPER_LOG_LEVEL": "debug", "DOCSUPER_RETRY_BACKOFF_BASE_S": "0.5", **extra})
    return env


def run_burst(jobs: list[Path], limit_mb: int, concurrency: int, extra_env: dict[str, str] | None = None,
              log_path: Path | None = None, bombs: int = 0) -> dict[str, Any]:
    """The burst through `docsuper run --drain` in a fresh memory cgroup; the box's figures.
    `bombs`: that many fast memory bombs queued after the documents (2000 MB in 50 MB steps
    without a pause: faster than the watchdog's 100 ms sample, so the kernel limit meets them)."""
    with tempfile.TemporaryDirectory(prefix="docsuper-box-") as tmp:
        work = Path(tmp)
        env = _env(work, jobs[0].parent, concurrency, extra_env or {})
        cli = [sys.executable, "-m", "docsuper.supervisor.cli"]
        subprocess.run([*cli, "submit", *map(str, jobs)], env=env, check=True, capture_output=True)
        if bombs:
            subprocess.run([*cli, "submit", "--passes", "alloc", "--count", str(bombs), "--max-attempts", "1",
                            "--option", "alloc_mb=2000", "--option", "alloc_step_mb=50", "--option", "alloc_step_s=0"],
                           env=env, check=True, capture_output=True)
        box = MemoryCgroup(f"docsuper-bench-{os.getpid()}-{concurrency}", limit_mb)
        most = [0]
        done = threading.Event()

        def count_processes() -> None:
            # The parent and the fork server are always there; the rest are job children
            # (a text-layer job's child lives a fraction of a second).
            while not done.is_set():
                most[0] = max(most[0], len(box.pids()))
                time.sleep(0.05)

        sampler = threading.Thread(target=count_processes, daemon=True)
        load_before = os.getloadavg()[0]
        try:
            sampler.start()
            cpu_before = _children_cpu_s()
            started = time.monotonic()
            run = subprocess.run(box.enter_command([*cli, "run", "--drain"]), env=env, capture_output=True,
                                 text=True)
            seconds = time.monotonic() - started
            cpu_s = _children_cpu_s() - cpu_before  # the supervisor's whole tree: each process reaps its own
            done.set()
            sampler.join()
            peak, kills = box.peak_mb(), box.oom_kills()
        finally:
            done.set()
            box.remove()
        listing = json.loads(subprocess.run([*cli, "list", "--json", "--limit", "1000"], env=env, check=True,
                                            capture_output=True, text=True).stdout)
    if log_path is not None:
        log_path.write_text(run.stdout + run.stderr)
    records = [json.loads(line) for line in run.stdout.splitlines() + run.stderr.splitlines()
               if line.startswith("{")]
    pages = sum((job.get("result") or {}).get("ocr", {}).get("pages", 0) for job in listing
                if job["status"] == "succeeded")
    ocr_pages = sum((job.get("result") or {}).get("ocr", {}).get("pages_ocr", 0) for job in listing
                    if job["status"] == "succeeded")
    ready = next((r for r in records if r.get("event") == "launcher_ready"), {})
    finished = sorted((r for r in records if r.get("event") == "job_finished"), key=lambda r: r["ts"])
    longest = max(finished, key=lambda r: r.get("seconds") or 0, default={})
    engines = collections.Counter((job.get("result") or {}).get("ocr", {}).get("engine") for job in listing
                                  if ((job.get("result") or {}).get("ocr", {}).get("pages_ocr") or 0) > 0)
    return {
        "concurrency": concurrency, "exit_code": run.returncode, "seconds": round(seconds, 1),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "cpu_s": round(cpu_s, 1), "cores": _cores(),
        "longest_job": {"document": longest.get("document"), "seconds": longest.get("seconds"),
                        "pages": longest.get("last_page")},
        "tail_s": round(finished[-1]["ts"] - finished[-2]["ts"], 1) if len(finished) > 1 else 0.0,
        "engines": {str(k): v for k, v in engines.items()},
        "bombs": [{"outcome": r.get("outcome"), "peak_mb": r.get("peak_mb"), "peak_rss_mb": r.get("peak_rss_mb"),
                   "error": (r.get("error") or "")[:90]} for r in finished if r.get("document") in (None, "")
                  and r.get("outcome") != "succeeded"],
        "kernel_limit_mb": ready.get("kernel_limit_mb"),
        "admissions_limited": sum(1 for r in records if r.get("event") == "admission" and r.get("limited")),
        "learned_peak_mb": max((r.get("peak_mb") or 0 for r in finished), default=0),
        "statuses": dict(collections.Counter(job["status"] for job in listing)),
        "outcomes": dict(collections.Counter(r["outcome"] for r in records if r.get("event") == "job_finished")),
        "oom_kills": kills, "box_peak_mb": round(peak), "box_budget_mb": ready.get("box_budget_mb"),
        "most_ocr_children": _most_ocr_children(records, listing), "most_processes": most[0],
        "most_readers": max(((job.get("result") or {}).get("ocr", {}).get("readers") or 1 for job in listing),
                            default=1),
        "loans": sum(1 for r in records if r.get("event") == "readers_lent" and r.get("readers", 1) > 1),
        "pages": pages, "ocr_pages": ocr_pages, "pages_per_s": round(pages / seconds, 3),
        "stderr": run.stderr[-1500:] if run.returncode else "",
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _cores() -> int:
    return len(os.sched_getaffinity(0))


def _most_ocr_children(records: list[dict[str, Any]], listing: list[dict[str, Any]]) -> int:
    """The most children reading scanned pages at once, from job_started/job_finished times."""
    ocr_jobs = {job["id"] for job in listing if ((job.get("result") or {}).get("ocr", {}).get("pages_ocr") or 0) > 0
                or job["status"] != "succeeded"}
    edges = []
    for r in records:
        if r.get("job_id") in ocr_jobs and r.get("event") in ("job_started", "job_finished"):
            stamp = r.get("ts") or r.get("t") or r.get("time")
            if isinstance(stamp, (int, float)):
                edges.append((stamp, 1 if r["event"] == "job_started" else -1))
            elif isinstance(stamp, str):
                from datetime import datetime

                edges.append((datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp(),
                              1 if r["event"] == "job_started" else -1))
    running = most = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        running += step
        most = max(most, running)
    return most


def burst_figures(directory: Path, limit_mb: int = 512, quick: bool = False, logs: Path | None = None,
                  concurrency: int = 5) -> dict[str, Any]:
    """The burst at `concurrency` and at 1, in one run; their figures, the pages/s ratio and its bound."""
    jobs = make_burst(directory, quick)
    if logs is not None:
        logs.mkdir(parents=True, exist_ok=True)
    many = run_burst(jobs, limit_mb, concurrency, log_path=logs / f"c{concurrency}.log" if logs else None)
    one = run_burst(jobs, limit_mb, 1, log_path=logs / "c1.log" if logs else None)
    ratio = many["pages_per_s"] / one["pages_per_s"] if one["pages_per_s"] else float("nan")
    # At concurrency 1 the run is the sum of its jobs; spread over the cores it can take no less
    # than the c1 time over the cores, nor, when no core was lent, than the longest job alone.
    floor_s = one["seconds"] / max(1, many["cores"])
    if many["most_readers"] <= 1:
        floor_s = max(one["longest_job"]["seconds"] or 0.0, floor_s)
    best = one["seconds"] / floor_s if floor_s else float("nan")
    return {"jobs": len(jobs), "limit_mb": limit_mb, "quick": quick, "c5": many, "c1": one,
            "speedup": round(ratio, 2), "floor_s": round(floor_s, 1), "best_ratio": round(best, 2)}


def print_burst(figures: dict[str, Any]) -> None:
    many, one = figures["c5"], figures["c1"]
    print(f"\n## The box: {figures['jobs']} mixed jobs in a {figures['limit_mb']} MB memory cgroup"
          f"{' (--quick: smaller documents)' if figures.get('quick') else ''}, {many['cores']} cores\n")
    headers = ["WORKER_CONCURRENCY", "statuses", "kernel OOM kills", "box peak MB", "most OCR children at once",
               "most readers (loans)", "pages", "s", "pages/s", "ratio", "longest job s", "tail s",
               "CPU s (of cores × s)", "load before/after"]
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for r, ratio in ((many, figures["speedup"]), (one, 1.0)):
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
        longest = r["longest_job"]
        print(f"| {r['concurrency']} | {statuses} | {r['oom_kills']} | {r['box_peak_mb']} | {r['most_ocr_children']} "
              f"| {r['most_readers']} ({r['loans']}) | {r['pages']} | {r['seconds']} | {r['pages_per_s']} | {ratio} "
              f"| {longest['seconds']} ({longest['document']}, {longest['pages']} p) | {r['tail_s']} "
              f"| {r['cpu_s']} ({100 * r['cpu_s'] / (r['cores'] * r['seconds']):.0f} % of {r['cores']} × {r['seconds']}) "
              f"| {r['load_before']} / {r['load_after']} |")
        if r["stderr"]:
            print(r["stderr"], file=sys.stderr)
    engines = ", ".join(f"{k} {v}" for k, v in sorted(many["engines"].items())) or "none"
    print(f"\nOCR engine (jobs that read scanned pages): {engines}. Box budget for the children: "
          f"{many['box_budget_mb']} MB; highest peak of a job (USS): {many['learned_peak_mb']} MB; "
          f"admission decisions held back by the budget at concurrency {many['concurrency']}: "
          f"{many['admissions_limited']}.")
    print(f"Ratio {figures['speedup']} against a best of {figures['best_ratio']} for this burst on this machine: "
          f"at concurrency {many['concurrency']} the run cannot take less than {figures['floor_s']} s "
          f"({one['seconds']} s of one-at-a-time work over {many['cores']} cores"
          + ("" if many["most_readers"] > 1 else f", or the longest job alone at concurrency 1, "
             f"{one['longest_job']['seconds']} s ({one['longest_job']['document']}), as no core was lent")
          + f"). The run at {many['concurrency']} took {many['seconds']} s, of which its last job ran alone for "
          f"the last {many['tail_s']} s (on {many['most_readers']} reader(s) at most).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-mb", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=5, help="WORKER_CONCURRENCY of the run compared with 1")
    parser.add_argument("--quick", action="store_true", help="the same mix of jobs, smaller documents")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--bombs", type=int, default=0,
                        help="instead: one run at --concurrency with this many fast memory bombs after the burst")
    parser.add_argument("--logs", type=Path, help="keep each run's supervisor log (JSON lines) in this directory")
    parser.add_argument("--favour-cpu", action="store_true",
                        help="run in a CPU cgroup weighted far above the rest of the machine (a shared box)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_box: needs root to create a memory cgroup", file=sys.stderr)
        sys.exit(2)
    favoured = FavouredCpu(f"docsuper-bench-cpu-{os.getpid()}") if args.favour_cpu else None
    try:
        _run(args)
    finally:
        if favoured is not None:
            favoured.close()


def _run(args: argparse.Namespace) -> None:
    if args.bombs:
        with tempfile.TemporaryDirectory(prefix="docsuper-burst-") as tmp:
            jobs = make_burst(Path(tmp), args.quick)
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
            r = run_burst(jobs, args.limit_mb, args.concurrency, bombs=args.bombs,
                          log_path=args.logs / "bombs.log" if args.logs else None)
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
        print(f"\n## {len(jobs)} mixed jobs and {args.bombs} fast memory bombs in a {args.limit_mb} MB memory cgroup, "
              f"WORKER_CONCURRENCY={args.concurrency}\n")
        print(f"statuses: {statuses}; kernel OOM kills: {r['oom_kills']}; box peak {r['box_peak_mb']} MB; "
              f"children's budget {r['box_budget_mb']} MB; a child's kernel limit (data it may add): "
              f"{r['kernel_limit_mb']} MB; pages {r['pages']}; {r['seconds']} s; load before/after "
              f"{r['load_before']} / {r['load_after']}")
        for bomb in r["bombs"]:
            print(f"  bomb: {bomb['outcome']}, peak USS {bomb['peak_mb']} MB, RSS {bomb['peak_rss_mb']} MB: "
                  f"{bomb['error']}")
        if args.json:
            args.json.write_text(json.dumps(r, indent=2))
        sys.exit(0 if r["oom_kills"] == 0 else 1)
    with tempfile.TemporaryDirectory(prefix="docsuper-burst-") as tmp:
        figures = burst_figures(Path(tmp), args.limit_mb, args.quick, args.logs, args.concurrency)
    print_burst(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    sys.exit(0 if figures["c5"]["oom_kills"] == 0 and figures["c1"]["oom_kills"] == 0 else 1)


if __name__ == "__main__":
    main()
