"""Every command of the seed API (reference D) is registered, classed, documented and exercised.

"Exercised" means: some test function outside the registry checks calls the command by name, as
``area.ok("name", ...)``, ``area.run(...)``, ``area.popen(...)`` or ``hdb("name", ...)``.
Run this file as a script to print the table of commands, classes and covering tests.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from dbtool.core.commands import cli_name, lookup
from seed_commands import SEED_COMMANDS

TESTS = Path(__file__).resolve().parent
NOT_BEHAVIOURAL = {"test_seed_commands.py", "test_registry.py", "test_binder.py", "seed_commands.py", "conftest.py"}


def covering_tests() -> dict[str, set[str]]:
    """Command name → the test functions that call it."""
    found: dict[str, set[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        if path.name in NOT_BEHAVIOURAL:
            continue
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef) or not func.name.startswith("test"):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and node.args:
                    first = node.args[0]
                    if isinstance(first, ast.Constant) and isinstance(first.value, str):
                        found.setdefault(first.value, set()).add(f"{path.name}::{func.name}")
    return found


COVERAGE = covering_tests()


@pytest.mark.parametrize(("section", "api", "kind"), SEED_COMMANDS, ids=[c[1] for c in SEED_COMMANDS])
def test_seed_command_is_registered_classed_documented_and_exercised(section, api, kind):
    cmd = lookup(api)
    assert cmd is not None, f"{api} is not registered"
    assert cmd.name == cli_name(api), f"{api} should be the subcommand {cli_name(api)}"
    assert lookup(cli_name(api)) is cmd, "both spellings must reach the same command"
    assert cmd.kind == kind, f"{api}: class {cmd.kind}, SPEC 2.1 says {kind}"
    assert len(cmd.help) > 20
    assert COVERAGE.get(cmd.name), f"no behavioural test calls {cmd.name}"


def table() -> str:
    lines = ["| command | Megatest name | class | covering tests |", "|---|---|---|---|"]
    for _section, api, kind in SEED_COMMANDS:
        cmd = lookup(api)
        tests = ", ".join(sorted(COVERAGE.get(cmd.name, ()))[:3]) if cmd else ""
        lines.append(f"| {cli_name(api)} | {api} | {kind} | {tests} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
