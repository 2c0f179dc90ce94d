"""docs/integration.md, run: every code block against a real PostgreSQL and a real `docsuper run`.

Blocks run in the order of the page, sharing one throwaway database. A block is
preceded by `<!-- run: KIND -->` (sql through psql, python, node, sh, toml) or by
`<!-- not run: why -->`; ```text blocks are sample output. The only change made to
a block is the document path, /srv/uploads/scan.pdf, which becomes a PDF made here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from docsuper.supervisor import webhook
from docsuper.supervisor.config import load_config
from docsuper.supervisor.queue.base import open_queue

from .conftest import require_postgres
from .daemon import Env, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DOC = Path(__file__).resolve().parent.parent / "docs" / "integration.md"
DOC_PATH = "/srv/uploads/scan.pdf"
SUPABASE_ROLES = ("anon", "authenticated")
_BLOCK = re.compile(r"<!-- (run: (?P<kind>\w+)|not run: (?P<why>[^>]+)) -->\n```(?P<lang>\w+)\n(?P<code>.*?)```",
                    re.DOTALL)
_FENCE = re.compile(r"^```(\w*)$", re.MULTILINE)


@dataclass
class Block:
    kind: str | None  # None: not run
    lang: str
    code: str
    line: int


def blocks() -> list[Block]:
    text = DOC.read_text()
    return [Block(m["kind"], m["lang"], m["code"], text.count("\n", 0, m.start()) + 2) for m in _BLOCK.finditer(text)]


def test_every_code_block_is_run_or_says_why_not() -> None:
    text = DOC.read_text()
    opening = [m for i, m in enumerate(_FENCE.finditer(text)) if i % 2 == 0]
    marked = {b.line for b in blocks()}
    unmarked = [f"line {text.count(chr(10), 0, m.start()) + 1}" for m in opening
                if m.group(1) != "text" and text.count("\n", 0, m.start()) + 1 not in marked]
    assert not unmarked, f"code blocks with no <!-- run: … --> marker: {unmarked}"
    kinds = {b.kind for b in blocks()}
    assert {"sql", "python", "node", "sh", "toml"} <= kinds


@dataclass
class World:
    url: str
    env: dict[str, str]
    root: Path
    outputs: list[tuple[Block, str]]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = require_postgres()
    root = tmp_path_factory.mktemp("integration")
    from .docgen import text_pdf  # the OCR stack, only for this module

    pdf = root / "scan.pdf"
    text_pdf(pdf, [["Befund: unauffällig", "Datum 2026-11-29"], ["Seite zwei", "Ende"]])
    dbname = f"dsdoc_{uuid.uuid4().hex[:12]}"
    url = urlunsplit(urlsplit(base)._replace(path=f"/{dbname}"))
    created_roles: list[str] = []
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{dbname}"')
        for role in SUPABASE_ROLES:  # what a Supabase project has; cluster-wide, so only made when missing
            if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                admin.execute(f'CREATE ROLE "{role}" NOLOGIN')
                created_roles.append(role)
    daemon_env = Env(root, url=url, DOCSUPER_WORKERS_PRELOAD="json")
    env = {k: v for k, v in daemon_env.vars.items() if k != "DOCSUPER_QUEUE_URL"}
    env["DATABASE_URL"] = url  # as a deployment sets it
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    world = World(url, env, root, [])
    daemon = None
    try:
        for block in blocks():
            if block.kind is None or block.kind == "node":
                continue
            if block.kind == "sql" and "docsuper.job_" in block.code and "enqueue" not in block.code:
                settle(url)  # reading results: let the daemon finish what was enqueued so far
            world.outputs.append((block, run_block(block, world, pdf)))
            if block.kind == "sh" and "docsuper migrate" in block.code and daemon is None:
                daemon = daemon_env.start()
        yield world
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.communicate(timeout=30)
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            for role in created_roles:
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


def settle(url: str) -> None:
    with open_queue(url, listen=False) as q:
        wait_for(lambda: q.counts()["queued"] + q.counts()["running"] == 0, timeout=120, what="jobs to finish")


def run_block(block: Block, world: World, pdf: Path) -> str:
    code = block.code.replace(DOC_PATH, str(pdf))
    where = f"docs/integration.md line {block.line} ({block.kind})"
    if block.kind == "sql":
        if shutil.which("psql") is None:
            pytest.skip("psql is not installed")
        cmd = ["psql", world.url, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"]
        result = subprocess.run(cmd, input=code, capture_output=True, text=True, timeout=120, env=world.env)
    elif block.kind == "python":
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                                env=world.env, cwd=world.root)
    elif block.kind == "sh":
        result = subprocess.run(["bash", "-e", "-c", code], capture_output=True, text=True, timeout=300,
                                env=world.env, cwd=world.root)
    elif block.kind == "toml":
        path = world.root / f"block_{block.line}.toml"
        path.write_text(code)
        load_config(path, environ={})  # every key must exist and every value be valid
        return code
    else:
        raise AssertionError(f"{where}: unknown kind")
    assert result.returncode == 0, f"{where} failed:\n{code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result.stdout


def output_of(world: World, needle: str) -> str:
    [out] = [out for block, out in world.outputs if needle in block.code]
    return out


def test_enqueue_from_sql_and_a_trigger(world: World) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}\n", output_of(world, "idempotency_key => 'upload-42'"))
    assert re.fullmatch(r"1\|[0-9a-f]{32}\n", output_of(world, "CREATE TRIGGER uploads_queue"))


def test_the_python_snippet_enqueues_waits_and_reads_the_text(world: World) -> None:
    out = output_of(world, "Client.open(os.environ")
    assert out.startswith("succeeded 2 pages"), out
    assert "Befund: unauffällig" in out
    assert 'enqueue: unknown pass "orc" (registered: ' in out


def test_supabase_rpc_as_authenticated_and_not_as_anon(world: World) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}\n", output_of(world, "SET LOCAL ROLE authenticated"))
    refused = subprocess.run(["psql", world.url, "-X", "-At", "-c",
                              "SET ROLE anon; SELECT public.docsuper_enqueue('x.pdf')"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "permission denied for function docsuper_enqueue" in refused.stderr
    refused = subprocess.run(["psql", world.url, "-X", "-At", "-c", "SET ROLE authenticated; "
                              "SELECT docsuper.enqueue('x.pdf')"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "permission denied for schema docsuper" in refused.stderr


def test_reading_results_is_one_select(world: World) -> None:
    status = output_of(world, "FROM uploads u JOIN docsuper.job_status")
    fields = status.strip().split("|")
    assert fields[:3] == ["succeeded", "2", "2"] and "ocr" in json.loads(fields[4])
    assert fields[5].startswith("Befund: unauffällig")
    pages = output_of(world, "FROM docsuper.job_pages")
    assert [line.split("|")[0] for line in pages.split()] == ["1", "2"]


def test_the_python_webhook_check_accepts_docsuper_signatures_only(world: World) -> None:
    namespace: dict[str, object] = {}
    exec(output_code(world, "def verify_docsuper"), namespace)  # noqa: S102 - the page's own snippet
    verify = namespace["verify_docsuper"]
    body = webhook.body("a" * 32, "succeeded", 1, 2)
    now = int(__import__("time").time())
    headers = {"X-Docsuper-Timestamp": str(now), "X-Docsuper-Signature": webhook.sign("s3cret", now, body)}
    assert verify("s3cret", headers, body)  # type: ignore[operator]
    assert not verify("other", headers, body)  # type: ignore[operator]
    assert not verify("s3cret", headers, body.replace(b"succeeded", b"dead"))  # type: ignore[operator]
    stale = {"X-Docsuper-Timestamp": str(now - 3600), "X-Docsuper-Signature": webhook.sign("s3cret", now - 3600, body)}
    assert not verify("s3cret", stale, body)  # type: ignore[operator]


def output_code(world: World, needle: str) -> str:
    [code] = [b.code for b in blocks() if needle in b.code]
    return code


def test_purge_snippets(world: World) -> None:
    assert output_of(world, "--dry-run").startswith("would delete 0 job(s)")


# -- Node ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are needed for the Node snippets")
    prefix = tmp_path_factory.mktemp("node")
    installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(prefix),
                                "pg@8"], capture_output=True, text=True, timeout=300)
    if installed.returncode != 0:
        pytest.skip(f"npm could not install pg: {installed.stderr.strip()[:200]}")
    return prefix / "node_modules"


def run_node(world: World, node_modules: Path, code: str, name: str) -> str:
    script = world.root / name
    script.write_text(code)
    result = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=300,
                            env={**world.env, "NODE_PATH": str(node_modules)}, cwd=world.root)
    assert result.returncode == 0, f"{name}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_node_snippet_enqueues_waits_on_the_channel_and_reads_the_view(world: World, node_modules: Path) -> None:
    [block] = [b for b in blocks() if b.kind == "node" and "LISTEN docsuper_done" in b.code]
    out = run_node(world, node_modules, block.code.replace(DOC_PATH, str(world.root / "scan.pdf")), "enqueue.js")
    assert out.startswith("succeeded 2 pages: Befund: unauffällig"), out


def test_the_node_webhook_check_accepts_docsuper_signatures_only(world: World, node_modules: Path) -> None:
    [block] = [b for b in blocks() if b.kind == "node" and "verifyDocsuper" in b.code]
    (world.root / "verify.js").write_text(block.code)
    body = webhook.body("b" * 32, "dead", 3, None)
    now = int(__import__("time").time())
    cases = [("s3cret", webhook.sign("s3cret", now, body), body, True),
             ("other", webhook.sign("s3cret", now, body), body, False),
             ("s3cret", webhook.sign("s3cret", now, body), body + b" ", False)]
    harness = "const { verifyDocsuper } = require('./verify.js');\nconst cases = " + json.dumps(
        [{"secret": s, "signature": sig, "body": b.decode(), "ts": str(now)} for s, sig, b, _ in cases]) + """;
console.log(JSON.stringify(cases.map((c) => verifyDocsuper(c.secret,
  {"x-docsuper-timestamp": c.ts, "x-docsuper-signature": c.signature}, Buffer.from(c.body)))));
"""
    out = run_node(world, node_modules, harness, "check_verify.js")
    assert json.loads(out) == [expected for *_, expected in cases]
