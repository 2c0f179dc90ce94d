"""The shape figures the refactoring notes quote: the largest classes and the functions over 40 lines.

    .venv/bin/python scripts/code_shape.py [TREE]      # TREE defaults to this checkout

Counts `supervisor/` and `passes/` by their syntax tree (lines from a definition's first line
to its last, docstrings and comments included), so two commits compare like for like:
`git worktree add /tmp/old REV && scripts/code_shape.py /tmp/old`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def shape(root: Path) -> tuple[list[tuple[int, int, str]], list[tuple[int, str]]]:
    classes: list[tuple[int, int, str]] = []
    long_functions: list[tuple[int, str]] = []
    for path in sorted([*root.glob("supervisor/**/*.py"), *root.glob("passes/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            name = f"{path.relative_to(root)}:{getattr(node, 'name', '')}"
            lines = (getattr(node, "end_lineno", 0) or 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef):
                methods = sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in node.body)
                classes.append((lines, methods, name))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and lines > 40:
                long_functions.append((lines, name))
    return sorted(classes, reverse=True), sorted(long_functions, reverse=True)


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
    classes, long_functions = shape(root)
    print("largest classes (lines, methods):")
    for lines, methods, name in classes[:5]:
        print(f"  {lines:5} {methods:4}  {name}")
    print(f"functions over 40 lines: {len(long_functions)}")
    for lines, name in long_functions:
        print(f"  {lines:5}  {name}")


if __name__ == "__main__":
    main()
