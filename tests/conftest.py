from __future__ import annotations

import os
from pathlib import Path

import pytest

from .daemon import Env


@pytest.fixture
def env(tmp_path: Path) -> Env:
    """A throwaway SQLite queue and fast timings for running the real `docsuper` command."""
    return Env(tmp_path)


# -- queue back-ends (the queue contract and PostgreSQL tests) ------------------

from typing import Iterator  # noqa: E402

from docsuper.supervisor.queue.base import Queue  # noqa: E402

from .queuekit import POSTGRES_URL, QueueSpec, drop_schema, new_schema_name, postgres_problem  # noqa: E402

_postgres_checked: list[str | None] = []


def require_postgres() -> str:
    """The test server's URL; skips the test when it is down, except under CI=true where that is a failure."""
    if not _postgres_checked:
        _postgres_checked.append(postgres_problem())
    problem = _postgres_checked[0]
    if problem is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{problem} (CI=true: PostgreSQL is required; run scripts/ensure_postgres)")
        pytest.skip(problem)
    return POSTGRES_URL


@pytest.fixture
def postgres_spec() -> Iterator[QueueSpec]:
    """A fresh, migrated PostgreSQL schema of its own for one test, dropped afterwards."""
    url = require_postgres()
    spec = QueueSpec("postgres", url, new_schema_name())
    with spec.open() as q:
        q.migrate()
    try:
        yield spec
    finally:
        drop_schema(url, spec.schema)


@pytest.fixture
def sqlite_spec(tmp_path: Path) -> QueueSpec:
    return QueueSpec("sqlite", f"sqlite:///{tmp_path / 'queue.db'}")


@pytest.fixture(params=["sqlite", "postgres"])
def queue_spec(request: pytest.FixtureRequest) -> QueueSpec:
    """Each backend in turn: the contract tests run once per backend."""
    return request.getfixturevalue(f"{request.param}_spec")


@pytest.fixture
def queue(queue_spec: QueueSpec) -> Iterator[Queue]:
    with queue_spec.open() as q:
        yield q
