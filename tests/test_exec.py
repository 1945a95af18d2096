"""`dbtool exec`, heartbeats, dead-job detection, spooled reports, output files, and the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import dbtool_argv, query, wait_for
from dbtool.core.errors import Refused

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)

PY = sys.executable


@pytest.fixture
def run(area):
    area.set_config("tests", "dead_check_interval", "1")
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    return area


def exec_(area, *args: str, cmd: list[str], **kw):
    return area.run("exec", "--run-id", "1", *args, "--", *cmd, **kw)


def info(area, testname: str, item: str = "") -> dict:
    test_id = area.ok("get-test-id", "--run-id", "1", "--testname", testname, "--item-path", item).out.strip()
    return area.ok("get-test-info-by-id", "--test-id", test_id, "--json").json


def test_pass_fail_killed_and_exit_codes_pass_through(run, tmp_path):
    ok = exec_(
        run,
        "--testname",
        "unit",
        "--item-path",
        "a",
        cmd=[PY, "-c", "print('out'); import sys; print('err', file=sys.stderr)"],
    )
    assert ok.code == 0 and ok.out == "out\n" and ok.err == "err\n"
    failed = exec_(run, "--testname", "unit", "--item-path", "b", cmd=[PY, "-c", "raise SystemExit(3)"])
    assert failed.code == 3
    a, b, top = info(run, "unit", "a"), info(run, "unit", "b"), info(run, "unit")
    assert (a["state"], a["status"], a["comment"]) == ("COMPLETED", "PASS", "")
    assert (b["state"], b["status"], b["comment"]) == ("COMPLETED", "FAIL", "exit code 3")
    assert (top["state"], top["status"]) == ("COMPLETED", "FAIL")  # rolled up
    assert a["host"] == os.uname().nodename and a["rundir"] == str(Path.cwd())
    assert run.ok("get-run-state-status", "--run-id", "1", "--json").json == {"state": "COMPLETED", "status": "FAIL"}
    proc = run.popen("exec", "--run-id", "1", "--testname", "long", "--", PY, "-c", "import time; time.sleep(60)")
    assert wait_for(lambda: run.run("get-test-id", "--run-id", "1", "--testname", "long").code == 0)
    assert wait_for(lambda: info(run, "long")["attemptnum"] != 0)  # the command's pid arrived
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)  # forwarded to the command
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    proc.stdout.close()
    proc.stderr.close()
    killed = info(run, "long")
    assert (killed["state"], killed["status"], killed["comment"]) == ("KILLED", "KILLED", "killed by SIGTERM")


def test_log_rundir_heartbeats_and_process_registration(run, tmp_path):
    rundir = tmp_path / "rd"
    rundir.mkdir()
    script = (
        "import os, sys, time; sys.stdout.write(os.getcwd() + '\\n'); sys.stdout.flush(); "
        "sys.stderr.write('e\\n'); sys.stderr.flush(); time.sleep(1.5)"
    )
    proc = run.popen(
        "exec",
        "--run-id",
        "1",
        "--testname",
        "t",
        "--heartbeat",
        "0.3",
        "--rundir",
        str(rundir),
        "--log",
        "job.log",
        "--",
        PY,
        "-c",
        script,
        cwd=tmp_path,
    )
    assert wait_for(lambda: query(run, "select count(*) from heartbeats") == [(1,)])
    running = info(run, "t")
    assert running["state"] == "RUNNING" and running["rundir"] == str(rundir)
    assert running["final_logf"] == str(tmp_path / "job.log")
    assert proc.wait(timeout=60) == 0
    out = proc.stdout.read()
    proc.stdout.close()
    proc.stderr.close()
    assert out == f"{rundir}\n"  # the command ran in its run directory; its output passed through
    assert sorted((tmp_path / "job.log").read_text().splitlines()) == sorted([str(rundir), "e"])
    samples = query(run, "select cpuload, diskfree, run_duration from test_rundat")
    assert len(samples) >= 3 and all(s[1] > 0 for s in samples) and samples[-1][2] >= 1
    assert query(run, "select count(*) from heartbeats") == [(0,)]  # ended: no longer expected to beat
    assert query(run, "select purpose, status, reason from processes") == [("exec", "done", "exit code 0")]
    done = info(run, "t")
    assert done["run_duration"] >= 1 and done["attemptnum"] > 0
    outputs = run.ok("test-get-output-files", "--test-id", str(done["id"]), "--json").json
    assert [(o["path"], o["role"]) for o in outputs] == [(str(tmp_path / "job.log"), "log")]


def test_kill_9_of_wrapper_and_command_shows_dead_within_three_heartbeats(run):
    proc = run.popen(
        "exec",
        "--run-id",
        "1",
        "--testname",
        "victim",
        "--heartbeat",
        "0.5",
        "--",
        PY,
        "-c",
        "import time; time.sleep(120)",
    )
    assert wait_for(lambda: run.run("get-test-id", "--run-id", "1", "--testname", "victim").code == 0)
    assert wait_for(lambda: info(run, "victim")["attemptnum"] != 0)
    child = info(run, "victim")["attemptnum"]
    os.kill(child, signal.SIGKILL)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    killed_at = time.monotonic()
    assert wait_for(lambda: info(run, "victim")["status"] == "DEAD", 30)
    took = time.monotonic() - killed_at
    dead = info(run, "victim")
    assert (
        dead["state"] == "COMPLETED"
        and "no heartbeat for" in dead["comment"]
        and "3 periods of 0.5 s" in dead["comment"]
    )
    print(f"\nkill -9 → DEAD after {took:.1f} s (heartbeat 0.5 s)")
    events = run.ok("watch", "--since", "0", "--no-follow", "--json").json_lines
    assert any(e["event"] == "mark-incomplete" and e["status"] == "DEAD" for e in events)


def test_server_killed_mid_job_the_final_status_still_lands(run):
    proc = run.popen(
        "exec",
        "--run-id",
        "1",
        "--testname",
        "survivor",
        "--heartbeat",
        "0.5",
        "--",
        PY,
        "-c",
        "import time; time.sleep(2)",
    )
    assert wait_for(lambda: run.run("get-test-id", "--run-id", "1", "--testname", "survivor").code == 0)
    first = run.server_info["pid"]
    os.kill(first, signal.SIGKILL)
    assert proc.wait(timeout=120) == 0
    proc.stdout.close()
    proc.stderr.close()
    assert run.server_info["pid"] != first  # the report started a new server and landed
    final = info(run, "survivor")
    assert (final["state"], final["status"]) == ("COMPLETED", "PASS")


def _catches(pid: int, sig: int) -> bool:
    """Whether process ``pid`` has a handler installed for signal ``sig`` (SigCgt in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (sig - 1)))


def _has_socket(pid: int) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def test_a_signal_while_the_wrapper_starts_records_killed_and_never_starts_cmd(run, tmp_path):
    marker = tmp_path / "ran"
    server = run.server_info["pid"]
    os.kill(server, signal.SIGSTOP)  # exec-begin now waits for the server
    try:
        proc = run.popen("exec", "--run-id", "1", "--testname", "early", "--", PY, "-c", f"open({str(marker)!r}, 'w')")
        assert wait_for(lambda: _catches(proc.pid, signal.SIGTERM) and _has_socket(proc.pid))
        proc.send_signal(signal.SIGTERM)  # as a batch system does while the wrapper is still starting
    finally:
        os.kill(server, signal.SIGCONT)
    assert proc.wait(timeout=90) == 128 + signal.SIGTERM
    proc.stdout.close()
    proc.stderr.close()
    assert not marker.exists()
    early = info(run, "early")
    assert (early["state"], early["status"], early["comment"]) == ("KILLED", "KILLED", "killed by SIGTERM")
    assert query(run, "select count(*) from heartbeats") == [(0,)]


HOLD_LOCK = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1]); lock.acquire(); print("held", flush=True)
sys.stdin.readline()
"""


def test_unreachable_server_spools_reports_and_the_next_server_ingests_them(run, tmp_path):
    run.ok("server", "stop")
    assert run.wait_no_server()
    holder = subprocess.Popen(
        [PY, "-c", HOLD_LOCK, str(run.run_dir / "server.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"  # no server can start now
    try:
        marker = tmp_path / "ran"
        job = exec_(
            run,
            "--testname",
            "offline",
            "--timeout",
            "2",
            cmd=[PY, "-c", f"open({str(marker)!r}, 'w'); raise SystemExit(7)"],
        )
        assert job.code == 7 and marker.exists()  # the job ran, and its exit code is its own
        assert job.err.count("waits in") == 2 and "spool" in job.err
        assert len(list((run.dir / "spool").glob("*.jsonl"))) == 2  # a file per report
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
        holder.stdout.close()
    assert run.server_pids() == []  # nothing replaced the server that held the lock meanwhile
    run.ok("set-var", "wake", "1")  # the next write starts a server, which ingests the spool
    final = info(run, "offline")
    assert (final["state"], final["status"], final["comment"]) == ("COMPLETED", "FAIL", "exit code 7")
    assert list((run.dir / "spool").glob("*.jsonl*")) == []
    assert (run.run_dir / "logs" / "server.log").read_text().count("ingested 1 spooled report(s)") == 2


def test_step_mode_records_start_and_end(run):
    run.ok("register-test", "--run-id", "1", "--testname", "t")
    assert exec_(run, "--testname", "t", "--step", "build", cmd=[PY, "-c", "raise SystemExit(2)"]).code == 2
    assert exec_(run, "--testname", "t", "--step", "test", cmd=[PY, "-c", "pass"]).code == 0
    test_id = str(info(run, "t")["id"])
    steps = run.ok("get-steps-for-test", "--test-id", test_id, "--json").json
    assert [(s["stepname"], s["state"], s["status"]) for s in steps] == [
        ("build", "start", "-"),
        ("build", "end", "2"),
        ("test", "start", "-"),
        ("test", "end", "0"),
    ]
    assert info(run, "t")["state"] == "NOT_STARTED"  # a step does not change its test


def test_exec_refusals_and_usage(run, tmp_path):
    marker = tmp_path / "ran"
    refused = run.run("exec", "--run-id", "99", "--testname", "t", "--", PY, "-c", f"open({str(marker)!r}, 'w')")
    assert refused.code == 4 and "no run with id 99" in refused.err and not marker.exists()
    assert run.run("exec", "--run-id", "1", "--testname", "t").code == 2


@pytest.mark.parametrize("where", ["missing/job.log", "."])
def test_a_log_that_cannot_be_written_is_refused_before_anything_runs(run, tmp_path, where):
    run.ok("register-test", "--run-id", "1", "--testname", "logbad")
    before = info(run, "logbad")
    marker = tmp_path / "ran"
    log = tmp_path / where
    bad = exec_(run, "--testname", "logbad", "--log", str(log), cmd=[PY, "-c", f"open({str(marker)!r}, 'w')"])
    why = "No such file or directory" if where.startswith("missing") else "Is a directory"
    assert bad.code == 2 and bad.out == ""
    assert bad.err == f"dbtool: error: cannot write --log {log}: {why} (see 'dbtool exec --help')\n"
    assert not marker.exists() and info(run, "logbad") == before


def test_a_command_that_cannot_start_fails_the_test_with_the_reason(run, tmp_path):
    missing = exec_(run, "--testname", "nocmd", "--heartbeat", "0.2", cmd=["/nonexistent/cmd", "x"])
    why = "cannot run /nonexistent/cmd: No such file or directory"
    assert missing.code == 127 and missing.err == f"dbtool: error: {why}\n"
    nocmd = info(run, "nocmd")
    assert (nocmd["state"], nocmd["status"], nocmd["comment"]) == ("COMPLETED", "FAIL", why)
    script = tmp_path / "script.sh"
    script.write_text("echo hi\n")
    script.chmod(0o644)
    denied = exec_(run, "--testname", "noexec", cmd=[str(script)])
    assert denied.code == 126 and denied.err == f"dbtool: error: cannot run {script}: Permission denied\n"
    noexec = info(run, "noexec")
    assert (noexec["state"], noexec["status"], noexec["comment"]) == (
        "COMPLETED",
        "FAIL",
        f"cannot run {script}: Permission denied",
    )
    assert query(run, "select count(*) from heartbeats") == [(0,)]  # nothing expected to beat
    assert [r[0] for r in query(run, "select status from processes")] == ["done", "done"]
    step = exec_(run, "--testname", "nocmd", "--step", "build", cmd=["/nonexistent/cmd"])
    assert step.code == 127 and step.err == f"dbtool: error: {why}\n"
    steps = run.ok("get-steps-for-test", "--test-id", str(nocmd["id"]), "--json").json
    assert [(s["state"], s["status"]) for s in steps] == [("start", "-"), ("end", "127")]


@pytest.mark.parametrize("period", ["nan", "inf", "-inf", "1e300", "86401", "0", "-1"])
def test_a_heartbeat_that_is_no_usable_period_is_refused_before_anything_runs(run, tmp_path, period):
    test_id = run.ok("register-test", "--run-id", "1", "--testname", "hb").out.strip()
    before = info(run, "hb")
    marker = tmp_path / "ran"
    refused = exec_(run, "--testname", "hb", "--heartbeat", period, cmd=[PY, "-c", f"open({str(marker)!r}, 'w')"])
    assert refused.code == 4 and refused.out == ""
    assert refused.err.startswith("dbtool: error: --heartbeat must be") and refused.err.count("\n") == 1
    assert not marker.exists()
    assert info(run, "hb") == before  # the test untouched
    assert query(run, "select count(*) from heartbeats where test_id = ?", int(test_id)) == [(0,)]


@pytest.mark.parametrize("timeout", ["nan", "inf", "1e300"])
def test_a_timeout_that_is_no_usable_duration_never_fails_the_job(run, tmp_path, timeout):
    marker = tmp_path / "ran"
    job = run.run(
        "--timeout", timeout, "exec", "--run-id", "1", "--testname", "to", "--", PY, "-c", f"open({str(marker)!r}, 'w')"
    )
    if job.code in (2, 4):  # refused before anything ran (the global option checked where it enters)
        assert not marker.exists() and run.run("get-test-id", "--run-id", "1", "--testname", "to").code == 1
    else:
        assert job.code == 0 and marker.exists() and job.err == ""
        assert (info(run, "to")["state"], info(run, "to")["status"]) == ("COMPLETED", "PASS")


@pytest.mark.parametrize("period", [float("nan"), float("inf"), 1e300])
def test_the_heartbeat_thread_bounds_its_wait_whatever_the_period(run, period):
    from dbtool.cli.jobexec import Heartbeats, Reporter
    from dbtool.core.area import Area as CoreArea

    reporter = Reporter(CoreArea(str(run.root)), 30.0)
    where = {"run_id": 1, "testname": "beats", "item_path": ""}
    reporter.report("exec-begin", {**where, "host": "h", "pid": os.getpid(), "heartbeat": 1.0})
    failures = []
    previous, threading.excepthook = threading.excepthook, failures.append
    try:
        beats = Heartbeats(reporter, where, os.getpid(), period, time.time(), str(run.root))
        beats.start()
        assert wait_for(lambda: query(run, "select count(*) from test_rundat") == [(1,)])
        time.sleep(0.5)  # a flood (no wait between beats) would show here
        beats.stop()
        assert not beats.is_alive()
    finally:
        threading.excepthook = previous
    assert failures == []
    assert query(run, "select count(*) from test_rundat") == [(1,)]


def test_output_files(run, tmp_path):
    test_id = run.ok("register-test", "--run-id", "1", "--testname", "t").out.strip()
    inside = run.root / "results" / "report.html"
    inside.parent.mkdir()
    inside.write_text("x")
    # a relative path is relative to where the caller stands; stored relative to the area when inside it
    for cwd, path, role in ((run.root, "results/report.html", "artifact"), (inside.parent, "report.html", "log")):
        argv = dbtool_argv("--area", str(run.root), "test-add-output-file", "--test-id", test_id, "--path", path)
        subprocess.run([*argv, "--role", role], cwd=cwd, check=True, timeout=60)
    run.ok("test-add-output-file", "--test-id", test_id, "--path", str(tmp_path / "outside.txt"))
    files = run.ok("test-get-output-files", "--test-id", test_id, "--json").json
    assert [(f["path"], f["role"]) for f in files] == [
        ("results/report.html", "log"),  # the same file again: its role updated
        (str(tmp_path / "outside.txt"), "artifact"),
    ]
    assert files[0]["abs_path"] == str(inside)
    bad = run.run("test-add-output-file", "--test-id", "999", "--path", "x")
    assert bad.code == 4 and "no test with id 999" in bad.err
    assert run.run("test-add-output-file", "--test-id", test_id, "--path", "x", "--role", "other").code == 2
    events = run.ok("watch", "--since", "0", "--no-follow", "--json").json_lines
    assert [e["data"]["output"] for e in events if e["event"] == "test-add-output-file"] == [
        "results/report.html",
        "results/report.html",
        str(tmp_path / "outside.txt"),
    ]


def test_heartbeat_rule_on_demand_and_revival(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="r")
    test_id = hdb("exec-begin", run_id=run_id, testname="t", host="h", pid=1, heartbeat=10)
    assert hdb("have-incompletes", run_id=run_id) is False
    hdb.sql("update heartbeats set last_beat = last_beat - 31 where test_id = ?", test_id)
    found = hdb("get-toplevels-and-incompletes", run_id=run_id)
    assert [r["id"] for r in found["incompletes"]] == [test_id]
    assert "no heartbeat for" in found["incompletes"][0]["reason"]
    assert hdb("have-incompletes", run_id=run_id) is True
    assert hdb("mark-incomplete", run_id=run_id) == [test_id]
    assert hdb("get-test-state-status-by-id", test_id=test_id) == {"state": "COMPLETED", "status": "DEAD"}
    assert hdb("get-run-state-status", run_id=run_id)["status"] == "DEAD"  # the run rolled up too
    hdb("exec-heartbeat", run_id=run_id, testname="t", run_duration=40)  # it was alive after all
    info = hdb("get-test-info-by-id", test_id=test_id)
    assert (info["state"], info["status"], info["run_duration"]) == ("RUNNING", "n/a", 40)
    assert "resumed" in info["comment"]
    with pytest.raises(Refused, match="exec-begin first"):
        hdb("exec-heartbeat", run_id=run_id, testname="never-began")


def test_demo_runs_and_cleans_up(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(dbtool_argv("demo"), capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "22 jobs start under `dbtool exec`" in out
    assert " KILLED KILLED " in out and " COMPLETED FAIL " in out and " COMPLETED PASS " in out
    assert "the run (toplevels roll up their items)" in out and "rolled up: KILLED FAIL" in out
    assert out.count("COMPLETED PASS") >= 15
    assert list(tmp_path.iterdir()) == []  # the area is gone
