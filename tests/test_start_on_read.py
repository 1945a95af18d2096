"""SPEC 3.2: a read with no server is answered directly and, in an area the caller may write to,
starts a server in the background (``server.start_on_read``, default true) for the next call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import dbtool_argv, kill_area, wait_for


def logged_commands(area) -> list[str]:
    try:
        text = (area.dir / "logs" / "requests.jsonl").read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line)["cmd"] for line in text.splitlines() if line.strip()]


def test_a_direct_read_starts_a_server_for_the_next_read(area):
    started = time.monotonic()
    r = area.ok("get-runs", "--json", "--trace")
    assert time.monotonic() - started < 10
    assert "read-only (no server running)" in r.err  # answered directly, not by a server
    assert r.json == []
    assert wait_for(lambda: area.server_info is not None and len(area.server_pids()) == 1, 15)
    assert "get-runs" not in logged_commands(area)
    area.ok("get-runs", "--json")
    assert wait_for(lambda: "get-runs" in logged_commands(area), 5)  # served: the server logged it
    status = area.ok("server", "status", "--json").json
    assert status["pid"] == area.server_info["pid"]


def test_a_read_answering_not_found_starts_one_too(area):
    r = area.run("get-run-info", "--run-id", "999")
    assert r.code == 1
    assert wait_for(lambda: len(area.server_pids()) == 1, 15)


def test_racing_readers_start_exactly_one_server(area):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: area.run("get-runs", "--json"), range(16)))
    assert all(r.code == 0 for r in results), [r for r in results if r.code]
    assert wait_for(lambda: area.server_info is not None, 15)
    time.sleep(1.0)  # any second start would have shown up by now
    assert len(area.server_pids()) == 1
    log = (area.dir / "logs" / "server.log").read_text()
    assert "dbtool: error:" not in log, log


def test_start_on_read_false_keeps_reads_serverless(area):
    area.set_config("server", "start_on_read", "false")
    area.ok("get-runs")
    time.sleep(1.5)
    assert area.server_pids() == [] and area.server_info is None


@pytest.mark.skipif(os.getuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_an_area_the_caller_cannot_write_gets_no_server_from_a_read():
    shared = Path(tempfile.mkdtemp(prefix="dbtool-ro-", dir="/tmp"))
    root = shared / "area"
    try:
        shared.chmod(0o755)
        proc = subprocess.run(dbtool_argv("init", str(root), "--keys", "K"), capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        dot = root / ".dbtool"
        import sqlite3

        con = sqlite3.connect(dot / "dbtool.db")  # (a reader of a WAL file must write its -shm)
        con.execute("PRAGMA journal_mode = DELETE")
        con.close()
        dot.chmod(0o755)  # readable by everyone, writable by its owner (root) only
        for name in ("config.toml", "dbtool.db"):
            (dot / name).chmod(0o644)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        env = {**os.environ, "HOME": str(shared), "PYTHONDONTWRITEBYTECODE": "1"}
        r = subprocess.run(
            as_nobody + dbtool_argv("--area", str(root), "get-runs", "--json"),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == []
        time.sleep(1.5)
        assert not (dot / "server.json").exists()
        from conftest import area_processes

        assert area_processes(str(root)) == []
    finally:
        kill_area(str(root))
        shutil.rmtree(shared)
