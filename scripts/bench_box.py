#!/usr/bin/env python3
"""Run `docsuper run --drain` inside a 512 MB memory cgroup, as on a Render Starter box.

    sudo .venv/bin/python scripts/bench_box.py [--limit-mb 512] [--jobs 12] [--pages 4]

Creates a memory cgroup (v1 or v2) below the one this process is in, limits it,
starts the supervisor in it (with WORKER_CONCURRENCY=5), and feeds it scanned
PDFs for the OCR pass plus a few memory bombs. Prints each outcome's count, the
peak memory of the whole box as the kernel counted it, and how often the
kernel's OOM killer fired (the number that must be 0). Needs root.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from make_samples import scan_of  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit-mb", type=int, default=512)
    parser.add_argument("--jobs", type=int, default=12, help="scanned PDFs to OCR")
    parser.add_argument("--pages", type=int, default=4, help="pages per PDF")
    parser.add_argument("--bombs", type=int, default=2, help="memory-bomb jobs among them")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_box: needs root to create a memory cgroup")

    with tempfile.TemporaryDirectory(prefix="docsuper-box-") as tmp:
        work = Path(tmp)
        lines = [f"Line {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(1, 25)]
        pdf = work / "scan.pdf"
        scan_of([lines] * args.pages, dpi=300).save(pdf)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSUPER_")}
        env.pop("DATABASE_URL", None)
        env.update({"DOCSUPER_QUEUE_URL": f"sqlite:///{work / 'queue.db'}", "DOCSUPER_CONFIG": str(work / "none.toml"),
                    "WORKER_CONCURRENCY": "5", "DOCSUPER_INPUTS_ALLOWED_ROOTS": str(work),
                    "DOCSUPER_LOG_LEVEL": "info", "DOCSUPER_RETRY_BACKOFF_BASE_S": "0.5"})
        (work / "none.toml").write_text("")
        cli = [sys.executable, "-m", "docsuper.supervisor.cli"]
        subprocess.run([*cli, "submit", *[str(pdf)] * args.jobs], env=env, check=True, capture_output=True)
        if args.bombs:
            subprocess.run([*cli, "submit", "--passes", "alloc", "--count", str(args.bombs), "--max-attempts", "1",
                            "--option", "alloc_mb=2000"], env=env, check=True, capture_output=True)
        box = MemoryCgroup(f"docsuper-bench-{os.getpid()}", args.limit_mb)
        try:
            started = time.monotonic()
            run = subprocess.run(box.enter_command([*cli, "run", "--drain"]), env=env, capture_output=True, text=True)
            seconds = time.monotonic() - started
            peak, kills = box.peak_mb(), box.oom_kills()
        finally:
            box.remove()

    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    finished = [r for r in records if r["event"] == "job_finished"]
    ready = next((r for r in records if r["event"] == "launcher_ready"), {})
    outcomes = collections.Counter(r["outcome"] for r in finished)
    ocr_peaks = [r["peak_mb"] for r in finished if r["outcome"] == "succeeded" and r["peak_mb"]]
    print(f"box: {args.limit_mb} MB memory cgroup (v{box.version}), WORKER_CONCURRENCY=5, "
          f"{args.jobs} OCR jobs x {args.pages} pages + {args.bombs} memory bombs")
    print(f"supervisor exit code {run.returncode}; budget for children {ready.get('box_budget_mb')} MB; "
          f"{seconds:.1f} s in all")
    print("outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())))
    if ocr_peaks:
        print(f"OCR job peak (USS of the tree): max {max(ocr_peaks):.0f} MB, "
              f"mean {sum(ocr_peaks) / len(ocr_peaks):.0f} MB")
    print(f"whole box peak as the kernel counted it: {peak:.0f} MB of {args.limit_mb} MB")
    print(f"kernel OOM kills inside the box: {kills}")
    if run.returncode != 0:
        print(run.stderr[-2000:], file=sys.stderr)
    sys.exit(0 if run.returncode == 0 and kills == 0 else 1)


if __name__ == "__main__":
    main()
