"""The client path stays light: no SQLModel/SQLAlchemy/pydantic, and no Typer for a well-formed call."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r"""
import json, sys
from dbtool.cli.main import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
HEAVY = {"sqlmodel", "sqlalchemy", "pydantic", "typer", "asyncio", "filelock"}
heavy = sorted({m.split(".")[0] for m in sys.modules} & HEAVY)
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def probe(area, *invocations: list[str]) -> dict:
    calls = [["--area", str(area.root), *argv] for argv in invocations]
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(calls)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_client_write_and_read_import_no_heavy_modules(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")  # server up
    got = probe(
        area,
        [
            "set-state-status-and-roll-up-items",
            "--run-id",
            "1",
            "--testname",
            "t",
            "--state",
            "RUNNING",
            "--status",
            "n/a",
        ],
        ["set-var", "x", "1"],
        ["get-tests-for-run", "--run-id", "1", "--json"],
        ["get-var", "x"],
        ["ping"],
    )
    assert got["codes"] == [0, 0, 0, 0, 0]
    assert got["heavy"] == []


def test_errors_on_the_client_path_stay_light(area):
    area.ok("set-var", "x", "1")
    got = probe(area, ["get-var", "missing"], ["get-test-id", "--run-id", "9", "--testname", "t"])
    assert got["codes"] == [1, 1]
    assert got["heavy"] == []


def test_direct_read_without_server_uses_the_database_layer(area):
    # the fallback is the one place a client imports SQLAlchemy (documented, measured in benchmarks)
    area.set_config("server", "start_on_read", "false")  # (about the direct read alone)
    got = probe(area, ["get-runs"])
    assert got["codes"] == [0]
    assert "sqlalchemy" in got["heavy"]
    assert area.server_pids() == []


def test_the_installed_command_starts_without_re(area):
    """The dbtool command (bin/dbtool) imports only what a call needs: not even ``re`` or ``collections``
    (about 3 ms of CPU per call, a tenth of it)."""
    import dbtool.core

    if "site-packages" not in Path(dbtool.core.__file__).resolve().parts:
        pytest.skip("an editable install's import hook loads re itself; CI installs the package")
    area.ok("set-var", "x", "0")  # server up
    script = Path(sys.executable).parent / "dbtool"
    assert script.exists(), f"no dbtool command next to {sys.executable}: install the package"
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", str(script), "--area", str(area.root), "set-var", "x", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "dbtool.cli.main" in imported
    assert not imported & {"re", "collections", "typing", "typer", "asyncio", "json", "sqlalchemy"}, sorted(imported)
