"""The registry is the single source: every declaration is complete and matches its handler."""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import pytest
from dbtool.core.commands import COMMANDS, LOCAL, READ, SERVER, WRITE, lookup
from dbtool.core.handlers import resolve

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_NAMES = {"area", "project", "timeout", "trace", "json", "format", "request_fields"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_declaration_is_complete(name):
    cmd = COMMANDS[name]
    assert cmd.kind in (READ, WRITE, SERVER, LOCAL)
    assert cmd.help and cmd.summary.strip()
    for p in cmd.params:
        assert p.help, f"{name}: parameter {p.name} has no help"
        assert p.name not in GLOBAL_NAMES, f"{name}: parameter {p.name} shadows a global option"
    assert len({p.name for p in cmd.params}) == len(cmd.params)
    assert lookup(cmd.api) is cmd and lookup(name) is cmd


@pytest.mark.parametrize("name", sorted(n for n, c in COMMANDS.items() if c.kind in (READ, WRITE) and not c.dead))
def test_handler_signature_matches_declaration(name):
    cmd = COMMANDS[name]
    fn = resolve(cmd.handler)
    sig = inspect.signature(fn)
    declared = {p.name for p in cmd.wire_params}
    accepted = {n for n, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY}
    assert declared == accepted, f"{name}: registry {sorted(declared)} vs handler {sorted(accepted)}"
    for p in cmd.wire_params:
        hp = sig.parameters[p.name]
        if not p.required:
            assert hp.default is not inspect.Parameter.empty, (
                f"{name}: optional {p.name} needs a default in the handler"
            )


def test_local_commands_have_runners_and_wire_names():
    from dbtool.cli import local

    for cmd in COMMANDS.values():
        if cmd.kind == LOCAL and cmd.handler.startswith("local:"):
            assert callable(getattr(local, cmd.handler.split(":")[1]))
        if cmd.wire:
            assert lookup(cmd.wire) is not None and lookup(cmd.wire).kind == SERVER


def test_client_only_parameters_belong_to_commands_with_a_driver():
    for cmd in COMMANDS.values():
        if any(p.client_only for p in cmd.params):
            assert cmd.driver, cmd.name


def test_every_package_directory_is_packaged():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top, prefix in (("cli", "dbtool.cli"), ("core", "dbtool.core")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            found.add(".".join([prefix, *rel.parts]) if rel.parts else prefix)
    assert found == listed


def test_only_these_commands_spell_an_option_as_a_global_one_does():
    """After such a command's name its own option wins (the binder and the Typer app agree); the
    global one goes before the name there. Keep it to these: it is a trap for everyone else."""
    from dbtool.cli.app import COMMON

    spelled = {decl for _name, decl, _kind, _help in COMMON}
    found = sorted({name for name, cmd in COMMANDS.items() for p in cmd.params if set(p.options) & spelled})
    # A command's own --fields means what the global one does (only these fields of each record),
    # asked of the server instead: the same meaning, so no trap.
    same_meaning = {
        name for name, cmd in COMMANDS.items() for p in cmd.params if p.options == ("--fields",) and p.type == "list"
    }
    assert same_meaning and all("columns" in COMMANDS[name].param("fields").help for name in same_meaning)
    assert [name for name in found if name not in same_meaning] == ["server log", "testmeta-update-field"]
