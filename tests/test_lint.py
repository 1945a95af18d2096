"""The code stays clean under ruff (check and format), as the repository contract requires."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed; it is part of the [test] extra")
    return [exe]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]])
def test_ruff(args):
    proc = subprocess.run(ruff() + args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def cli_imports() -> dict[str, set[str]]:
    """For each module of cli/, the cli modules it imports (at the top or inside a function)."""
    import ast

    graph = {}
    for path in sorted((ROOT / "cli").glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    found.add(node.module.split(".")[0])
                elif node.module and node.module.startswith("dbtool.cli."):
                    found.add(node.module.split(".")[2])
        graph[path.stem] = found
    return graph


def test_cli_entry_point_is_imported_by_nothing():
    """main.py is the entry point only: no cli module imports it back (its helpers live in binder,
    dispatch and output), so the cli package has no import circle through it."""
    graph = cli_imports()
    assert {name for name, deps in graph.items() if "main" in deps} == {"__main__"}


def test_cli_helpers_form_no_circle_at_import_time():
    """The modules main.py, dispatch.py, binder.py and output.py import at the top form no circle."""
    import ast

    top = {}
    for name in ("main", "dispatch", "binder", "output"):
        tree = ast.parse((ROOT / "cli" / f"{name}.py").read_text())
        top[name] = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}
    seen: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, " → ".join((*path, name))
        for dep in top.get(name, ()):
            visit(dep, (*path, name))
        seen.append(name)

    visit("main", ())
    assert set(seen) >= {"main", "dispatch", "binder", "output"}
