"""A deployment's own pass, installed as a separate distribution, found by name."""

from __future__ import annotations

import textwrap
from pathlib import Path

from .daemon import Env

# What pip writes for a package that declares
#   [project.entry-points."docsuper.passes"] wordcount = "clinic_passes.wordcount:run"
ENTRY_POINTS = '[docsuper.passes]\nwordcount = clinic_passes.wordcount:run\n'

PASS_SOURCE = '''
from docsuper.passes.api import InvalidInput, PassContext


def run(ctx: PassContext) -> dict:
    """Count words per page of an earlier pass (the clinic's Pass 1 would call its AI here)."""
    source = ctx.options.get("from", "pages")
    pages = ctx.pages(source)
    if not pages:
        raise InvalidInput(f"no {source} pages to read")
    done = ctx.resumed()
    for number, page in pages.items():
        if number not in done:
            ctx.page_result(number, {"words": len(page["text"].split())})
        ctx.progress(number, len(pages))
    return {"pages": len(pages), "words": sum(r["words"] for r in ctx.pages("wordcount").values())}
'''


def install_example(root: Path) -> Path:
    site = root / "site"
    package = site / "clinic_passes"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "wordcount.py").write_text(textwrap.dedent(PASS_SOURCE))
    dist = site / "clinic_passes-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: clinic-passes\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)
    return site


def test_a_pass_from_another_distribution_runs_after_the_builtin_ones(env: Env, tmp_path: Path):
    env.set(PYTHONPATH=str(install_example(tmp_path)))
    [job_id] = env.submit("pages,wordcount", pages=3)
    env.drain()
    with env.queue() as q:
        job = q.get(job_id)
        words = q.pages(job_id, "wordcount")
    assert job.status == "succeeded", job.last_error
    assert job.result["wordcount"] == {"pages": 3, "words": 6}  # "page N" per page
    assert [(p, r["words"]) for _, p, r in words] == [(1, 2), (2, 2), (3, 2)]


def test_an_unknown_pass_is_refused_at_submit(env: Env):
    result = env.cli("submit", "--passes", "pages,wordcount", check=False)
    assert result.returncode == 2
    assert "unknown pass wordcount" in result.stderr and "installed:" in result.stderr
