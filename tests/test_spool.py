"""The report spool: `exec` when the server or the disk cannot take its reports, and the server's ingestion."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import pytest
from conftest import kill_area

PY = sys.executable
JOB = "import sys; print('JOB-RAN', flush=True); print('x' * 200_000); sys.exit(3)"  # more than a pipe holds


def query(area, sql: str, *args) -> list[tuple]:
    con = sqlite3.connect(area.dir / "dbtool.db", timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def _mount(path, *options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")


def _umount(path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 3 MiB tmpfs (unmounted afterwards, its area's servers stopped first)."""
    disk = tmp_path / "disk"
    _mount(disk, "size=3m")
    yield disk
    kill_area(str(disk / "a"))
    _umount(disk)


def _fill(disk) -> None:
    with open(disk / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
        try:
            f.flush()
        except OSError:
            pass


def _warnings(err: str) -> list[str]:
    lines = err.splitlines()
    assert lines and all(line.startswith("dbtool exec: ") for line in lines), err
    return lines


def test_a_full_disk_never_keeps_the_job_from_running(tiny_disk, make_area):
    area = make_area("disk/a", keys="K")
    area.ok("register-run", "--target", "v1", "--runname", "r")
    _fill(tiny_disk)
    log = tiny_disk / "job.log"
    job = area.run(
        "--timeout", "3", "exec", "--run-id", "1", "--testname", "job", "--log", str(log), "--", PY, "-c", JOB,
        timeout=90,
    )  # fmt: skip
    assert job.code == 3  # CMD's own exit code
    assert job.out.startswith("JOB-RAN\n") and len(job.out) > 200_000  # all its output passed through
    warnings = _warnings(job.err)
    for name in ("exec-begin", "exec-end"):
        assert any(f"the {name} report could not be recorded" in w and "No space left" in w for w in warnings), job.err
    assert any(f"cannot write the log {log}" in w for w in warnings), job.err


HOLD_LOCK = """
import sys
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire(); print("held", flush=True)
sys.stdin.readline()
"""


def test_a_read_only_spool_never_keeps_the_job_from_running(area, tmp_path):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("server", "stop")
    assert area.wait_no_server()
    spool = area.dir / "spool"
    _mount(spool, "ro", "size=1m")
    holder = subprocess.Popen(
        [PY, "-c", HOLD_LOCK, str(area.dir / "server.lock")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"  # no server can start: every report is spooled
        job = area.run("--timeout", "2", "exec", "--run-id", "1", "--testname", "job", "--", PY, "-c", JOB)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
        _umount(spool)
    assert job.code == 3 and job.out.startswith("JOB-RAN\n")
    warnings = _warnings(job.err)
    for name in ("exec-begin", "exec-end"):
        assert any(f"the {name} report could not be recorded" in w and "Read-only" in w for w in warnings), job.err
