"""The report spool: `exec` when the server or the disk cannot take its reports, and the server's ingestion."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from conftest import kill_area, query, wait_for

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)

PY = sys.executable
JOB = "import sys; print('JOB-RAN', flush=True); print('x' * 200_000); sys.exit(3)"  # more than a pipe holds


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


@pytest.mark.sqlite_only("the full disk is the one the SQLite file is on")
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
        [PY, "-c", HOLD_LOCK, str(area.run_dir / "server.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
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


def _tests(area) -> list[tuple]:
    return query(area, "select id, state, status, comment from tests where testname = 'short'")


def test_a_live_server_replays_a_spooled_exec_end_without_a_restart(area):
    """F3: the server hangs (SIGSTOP) while a job ends, so exec spools its exec-end; once the same
    server runs again it replays the report within seconds: COMPLETED PASS, applied once, never DEAD."""
    area.set_config("tests", "dead_check_interval", "1")
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    server = area.server_info["pid"]
    sleep = "import time; time.sleep(8)"
    job = area.popen(
        "--timeout", "5", "exec", "--run-id", "1", "--testname", "short", "--heartbeat", "1", "--", PY, "-c", sleep
    )
    try:
        assert wait_for(lambda: query(area, "select count(*) from test_rundat") != [(0,)])  # RUNNING, beating
        os.kill(server, signal.SIGSTOP)
        try:
            assert job.wait(timeout=90) == 0  # the job is unharmed
            assert "the exec-end report waits in" in job.stderr.read()
            assert len(list((area.dir / "spool").glob("*.jsonl"))) == 1
        finally:
            os.kill(server, signal.SIGCONT)
    finally:
        job.kill()
        job.wait(timeout=30)
        job.stdout.close()
        job.stderr.close()
    assert wait_for(lambda: [t[1:3] for t in _tests(area)] == [("COMPLETED", "PASS")])
    assert area.server_info["pid"] == server and area.server_pids() == [server]  # the same server, no restart
    ((test_id, *_),) = _tests(area)
    ends = query(area, "select count(*) from events where cmd = 'exec-end' and test_id = ?", test_id)
    assert ends == [(1,)]  # applied once
    dead = query(area, "select count(*) from events where test_id = ? and status = 'DEAD'", test_id)
    assert dead == [(0,)]  # the dead-job check replays the spool before it marks anything
    assert wait_for(lambda: list((area.dir / "spool").glob("*.jsonl*")) == [])


def _spool(area, cmd: str, params: dict, idem: str | None = None) -> str:
    from dbtool.core import spool
    from dbtool.core.area import Area as CoreArea
    from dbtool.core.client import new_idem

    return spool.append(CoreArea(str(area.root)), cmd, params, idem or new_idem(), {"user": "test", "pid": 1})


def test_reports_are_replayed_in_order_and_exactly_once(area):
    from dbtool.core.area import Area as CoreArea
    from dbtool.core.client import call
    from dbtool.core.commands import COMMANDS

    area.ok("set-var", "start", "1")  # a server runs
    paths = [_spool(area, "set-var", {"var": "k", "value": str(i)}) for i in range(1, 6)]
    assert len(set(paths)) == 5 and paths == sorted(paths, key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0]))
    idem = "f3-twice"
    call(CoreArea(str(area.root)), COMMANDS["inc-var"], {"var": "n"}, idem=idem)  # delivered directly...
    _spool(area, "inc-var", {"var": "n"}, idem)  # ...and spooled too (its answer was lost)
    assert wait_for(lambda: list((area.dir / "spool").glob("*.jsonl*")) == [])
    assert area.ok("get-var", "k").out.strip() == "5"  # oldest first
    assert area.ok("get-var", "n").out.strip() == "1"  # applied once


def test_a_claimed_file_is_taken_once_and_a_crashed_ingestion_resumes_at_start(area):
    from dbtool.core import spool
    from dbtool.core.area import Area as CoreArea

    core = CoreArea(str(area.root))
    path = _spool(area, "set-var", {"var": "left", "value": "over"})
    assert spool.claim(core, resume=False) == [path + spool.CLAIMED]  # as a live server does
    assert spool.claim(core, resume=False) == []  # nobody takes it twice
    area.ok("set-var", "x", "1")  # the next server resumes what a crashed one had claimed
    assert area.ok("get-var", "left").out.strip() == "over"
    assert list((area.dir / "spool").glob("*.jsonl*")) == []


def test_spool_files_are_named_by_dbtools_own_host_name(area, monkeypatch):
    """<host>-<pid>-<seq>.jsonl: the host as every report names it ($DBTOOL_HOSTNAME when set), and
    always one plain file name whatever that variable holds."""
    monkeypatch.setenv("DBTOOL_HOSTNAME", "farm-node7")
    assert os.path.basename(_spool(area, "set-var", {"var": "a", "value": "1"})).startswith(
        f"farm-node7-{os.getpid()}-"
    )
    monkeypatch.setenv("DBTOOL_HOSTNAME", "../n\u00e9/x y")
    path = _spool(area, "set-var", {"var": "b", "value": "2"})
    assert os.path.dirname(path) == str(area.dir / "spool")
    assert os.path.basename(path).startswith(f"_n__x_y-{os.getpid()}-"), path
    area.ok("set-var", "c", "3")  # a server replays both
    assert area.ok("get-var", "b").out.strip() == "2"
