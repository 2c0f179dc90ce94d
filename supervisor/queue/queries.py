"""Named SQL statements and migrations, read from the `.sql` files beside this module.

A statement file is a list of blocks, each opened by a line `-- name --`, then
optional comment lines (its documentation), then the SQL:

    -- claim_jobs --
    -- Take up to `limit` due jobs ...
    UPDATE ...

The model is Procrastinate's `queries.sql`: the SQL is read and reviewed as SQL,
and Python refers to a statement only by its name. Migrations live in
`migrations/<backend>/NNNN_name.sql`, applied in the order of their names.
"""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z0-9_]+) --\n", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """{name: statement} from the text of a statement file (the header before the first block is ignored)."""
    parts = _HEADER.split(text)
    statements: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in statements:
            raise ValueError(f"statement {name!r} is defined twice")
        lines = body.strip().splitlines()
        while lines and lines[0].startswith("--"):  # the block's documentation, not sent to the server
            lines.pop(0)
        statements[name] = "\n".join(lines).strip()
    return statements


def load(filename: str, **substitute: str) -> dict[str, str]:
    """The statements of one backend's file, with each `{key}` in `substitute` replaced (e.g. the schema)."""
    text = resources.files(__package__).joinpath(filename).read_text(encoding="utf-8")
    for key, value in substitute.items():
        text = text.replace("{" + key + "}", value)
    return parse(text)


def migrations(backend: str, **substitute: str) -> list[tuple[str, str]]:
    """[(name, script)] for `backend`, in order; a shipped migration is never edited, only followed by a new one."""
    folder = resources.files(__package__).joinpath("migrations", backend)
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            script = entry.read_text(encoding="utf-8")
            for key, value in substitute.items():
                script = script.replace("{" + key + "}", value)
            found.append((entry.name[: -len(".sql")], script))
    return found
