"""The named-statement files: parsed by name, every statement the shared code names exists in both."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from docsuper.supervisor.queue import queries

QUEUE_DIR = Path(queries.__file__).parent


def test_parse_reads_blocks_by_name_and_drops_their_documentation() -> None:
    text = "-- file header\n\n-- first --\n-- what it does\nSELECT 1\n\n-- second --\nSELECT 2;\n"
    assert queries.parse(text) == {"first": "SELECT 1", "second": "SELECT 2;"}
    with pytest.raises(ValueError, match="twice"):
        queries.parse("-- a --\nSELECT 1\n-- a --\nSELECT 2\n")


def _names_used(path: Path) -> set[str]:
    """String constants passed as the first argument of tx.all/one/run/many in a module."""
    used = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("all", "one", "run", "many") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            used.add(node.args[0].value)
    return used


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_statement_the_shared_code_names_exists(backend: str) -> None:
    statements = queries.load(f"{backend}.sql", s='"x"')
    shared = _names_used(QUEUE_DIR / "sqlqueue.py") - {"open_attempt"}  # SQLite only: PostgreSQL opens it in claim
    own = _names_used(QUEUE_DIR / f"{backend}.py")
    assert shared | own <= set(statements), sorted((shared | own) - set(statements))


def test_no_sql_is_written_in_the_queue_package_python() -> None:
    # Upper-case keywords as this project writes SQL; "LISTEN failed" in a message is not a statement.
    sql_start = re.compile(r'^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|WITH|PRAGMA|BEGIN|COMMIT|ROLLBACK)\b'
                           r'|^\s*UNLISTEN\s|^\s*LISTEN\s+"?\w+"?\s*$')
    found = []
    for path in QUEUE_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and sql_start.match(node.value):
                found.append(f"{path.name}:{node.lineno}: {node.value[:50]!r}")
    assert not found, found


def test_migrations_are_listed_in_order() -> None:
    for backend in ("sqlite", "postgres"):
        names = [name for name, _ in queries.migrations(backend)]
        assert names == sorted(names) and names[0] == "0001_initial"


def test_the_package_data_globs_ship_every_sql_file() -> None:
    # A non-editable install copies only what these globs match; a missed file is a
    # queue that cannot start (checked by hand with `pip install . --target DIR`).
    import fnmatch
    import tomllib

    pyproject = tomllib.loads((QUEUE_DIR.parent.parent / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["docsuper.supervisor.queue"]
    sql_files = [p.relative_to(QUEUE_DIR).as_posix() for p in QUEUE_DIR.rglob("*.sql")]
    assert sql_files
    missed = [f for f in sql_files if not any(fnmatch.fnmatchcase(f, g) and f.count("/") == g.count("/")
                                               for g in globs)]
    assert not missed, missed
