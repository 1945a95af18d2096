"""Black-box CLI tests: init, the issue-2 commands, output formats, exit codes 0-4."""

from __future__ import annotations

import os
import sqlite3
import stat

from conftest import dbtool_argv

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)


SECTION_A_TABLES = {
    "keys",
    "runs",
    "run_stats",
    "tests",
    "test_steps",
    "test_data",
    "test_rundat",
    "test_meta",
    "tasks_queue",
    "metadat",
    "extradat",
    "access_log",
    "archives",
    "archive_disks",
    "archive_blocks",
    "archive_allocations",
    "no_sync_metadat",
    "processes",
}


def test_init_creates_area_with_full_schema(tmp_path):
    import subprocess

    root = tmp_path / "proj"
    proc = subprocess.run(dbtool_argv("init", str(root), "--keys", "RELEASE,PLATFORM"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    dot = root / ".dbtool"
    assert stat.S_IMODE(dot.stat().st_mode) == 0o700
    assert (dot / "config.toml").read_text().count('keys = ["RELEASE", "PLATFORM"]') == 1
    con = sqlite3.connect(dot / "dbtool.db")
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert SECTION_A_TABLES | {"events", "test_outputs"} <= tables
    runs_cols = [r[1] for r in con.execute("pragma table_info(runs)")]
    assert runs_cols[1:3] == ["RELEASE", "PLATFORM"]
    triggers = {r[0] for r in con.execute("select name from sqlite_master where type='trigger'")}
    assert {f"update_{t}_trigger" for t in ("runs", "run_stats", "tests", "test_steps", "test_data")} <= triggers
    assert con.execute("select fieldname from keys order by id").fetchall() == [("RELEASE",), ("PLATFORM",)]
    # the unique constraints of reference A
    indexes = con.execute("select sql from sqlite_master where type='table' and name='tests'").fetchone()[0]
    assert "UNIQUE (run_id, testname, item_path)" in indexes
    assert con.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_init_again_same_keys_is_noop_and_other_keys_refused(area):
    again = area.run("init", str(area.root), "--keys", "RELEASE,PLATFORM")
    assert again.code == 0 and again.out == ""
    other = area.run("init", str(area.root), "--keys", "RELEASE")
    assert other.code == 4
    assert "already a dbtool area with keys RELEASE,PLATFORM" in other.err


def test_init_refuses_bad_key_names(tmp_path):
    import subprocess

    for keys, why in (("runname,X", "clashes"), ("1abc", "not a valid name"), ("A,a", "twice")):
        proc = subprocess.run(dbtool_argv("init", str(tmp_path / "x"), "--keys", keys), capture_output=True, text=True)
        assert proc.returncode == 4, proc
        assert why in proc.stderr
        assert proc.stderr.startswith("dbtool: error: ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "x" / ".dbtool" / "config.toml").exists()


def test_write_autostarts_server_with_private_server_json(area):
    assert area.server_info is None
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "nightly").out
    assert run_id == "1\n"
    info = area.server_info
    assert info is not None and info["address"] == "127.0.0.1"
    assert stat.S_IMODE(os.stat(area.run_dir / "server.json").st_mode) == 0o600
    assert area.server_pids() == [info["pid"]]
    # same target and name → same id, existing run unchanged
    assert area.ok("register-run", "--target", "v1/linux", "--runname", "nightly", "--state", "X").out == "1\n"
    assert area.ok("get-run-info", "--run-id", "1", "--json").json["state"] == "new"


def test_read_without_server_starts_none_when_start_on_read_is_off(area):
    area.set_config("server", "start_on_read", "false")  # (the default starts one: test_start_on_read.py)
    assert area.ok("get-runs").out == ""
    assert area.ok("get-keys", "--json").json == ["RELEASE", "PLATFORM"]
    assert area.run("get-run-info", "--run-id", "9").code == 1
    assert area.server_info is None and area.server_pids() == []


def test_reads_work_the_same_with_and_without_server(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "a")
    area.ok(
        "set-state-status-and-roll-up-items",
        "--run-id",
        "1",
        "--testname",
        "t",
        "--state",
        "RUNNING",
        "--status",
        "n/a",
    )
    via_server = area.ok("get-tests-for-run", "--run-id", "1", "--json").json
    area.set_config("server", "start_on_read", "false")  # the next read stays direct
    area.ok("server", "stop")
    assert area.wait_no_server()
    direct = area.ok("get-tests-for-run", "--run-id", "1", "--json").json
    assert direct == via_server and direct[0]["state"] == "RUNNING"
    assert area.server_pids() == []


def test_exit_codes(area):
    # 2: usage errors — unknown option, missing required option, wrong type
    for args in (("get-runs", "--bogus"), ("get-test-id", "--run-id", "1"), ("get-run-info", "--run-id", "x")):
        r = area.run(*args)
        assert r.code == 2, r
        assert "Traceback" not in r.err
    # 3: no server for a server command
    r = area.run("ping")
    assert r.code == 3 and "no server is running" in r.err
    # 4: refused — unknown run id for a write, wrong target
    r = area.run(
        "set-state-status-and-roll-up-items", "--run-id", "42", "--testname", "t", "--state", "X", "--status", "Y"
    )
    assert r.code == 4 and "no run with id 42" in r.err and "[request " in r.err
    r = area.run("register-run", "--target", "a/b/c", "--runname", "x")
    assert r.code == 4 and "RELEASE/PLATFORM" in r.err
    # 1: lookup found nothing
    area.ok("register-run", "--target", "v1/linux", "--runname", "a")
    r = area.run("get-test-id", "--run-id", "1", "--testname", "nope")
    assert r.code == 1 and r.out == ""
    assert area.run("get-var", "nope").code == 1
    # 0: success, and a ping answers with the server's identity
    ping = area.ok("ping", "--json").json
    assert ping["pid"] == area.server_info["pid"] and ping["area"] == str(area.root)


def test_no_area_is_refused(tmp_path):
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "DBTOOL_AREA"}
    proc = subprocess.run(dbtool_argv("get-runs"), capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 4 and "no dbtool area at or above" in proc.stderr


def test_area_found_from_subdirectory_and_env(area, tmp_path):
    import subprocess

    sub = area.root / "deep" / "er"
    sub.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "DBTOOL_AREA"}
    proc = subprocess.run(dbtool_argv("get-keys"), capture_output=True, text=True, cwd=sub, env=env)
    assert proc.returncode == 0 and proc.stdout == "RELEASE\nPLATFORM\n"
    env["DBTOOL_AREA"] = str(area.root)
    proc = subprocess.run(dbtool_argv("get-keys"), capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.stdout == "RELEASE\nPLATFORM\n"


def test_tests_roll_up_and_lookups(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "a")
    base = ("--run-id", "1", "--testname", "unit")
    a = area.ok(
        "set-state-status-and-roll-up-items", *base, "--item-path", "a", "--state", "RUNNING", "--status", "n/a"
    ).out
    b = area.ok(
        "set-state-status-and-roll-up-items", *base, "--item-path", "b", "--state", "COMPLETED", "--status", "PASS"
    ).out
    top_id = area.ok("get-test-id", *base).out.strip()
    top = area.ok("get-test-info-by-id", "--test-id", top_id, "--json").json
    assert (top["state"], top["status"], top["item_path"]) == ("RUNNING", "PASS", "")
    area.ok(
        "test-set-state-status-by-id",
        "--run-id",
        "1",
        "--test-id",
        a.strip(),
        "--state",
        "COMPLETED",
        "--status",
        "FAIL",
    )
    top = area.ok("get-test-info-by-id", "--test-id", top_id, "--json").json
    assert (top["state"], top["status"]) == ("COMPLETED", "FAIL")
    assert area.ok("get-test-id", *base, "--item-path", "b").out == b
    # register-test returns the existing id
    assert area.ok("register-test", *base, "--item-path", "b").out == b
    # LAUNCHED resets event_time; comment stored
    area.ok("test-set-state-status-by-id", "--test-id", b.strip(), "--state", "LAUNCHED", "--comment", "queued")
    info = area.ok("get-test-info-by-id", "--test-id", b.strip(), "--json").json
    assert (info["state"], info["status"], info["comment"]) == ("LAUNCHED", "PASS", "queued")
    assert area.run("test-set-state-status-by-id", "--test-id", "999", "--state", "X").code == 4


def test_get_tests_for_run_filters(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "a")
    rows = [
        ("build", "", "COMPLETED", "PASS"),
        ("unit", "a", "COMPLETED", "FAIL"),
        ("unit", "b", "RUNNING", "n/a"),
        ("lint", "", "NOT_STARTED", "n/a"),
    ]
    for name, item, state, status in rows:
        area.ok(
            "set-state-status-and-roll-up-items",
            "--run-id",
            "1",
            "--testname",
            name,
            "--item-path",
            item,
            "--state",
            state,
            "--status",
            status,
        )

    def names(*args):
        got = area.ok("get-tests-for-run", "--run-id", "1", *args, "--json").json
        return [f"{r['testname']}/{r['item_path']}" for r in got]

    assert names() == ["build/", "unit/a", "unit/", "unit/b", "lint/"]
    assert names("--testpatt", "unit") == ["unit/a", "unit/", "unit/b"]
    assert names("--testpatt", "unit/") == ["unit/"]
    assert names("--testpatt", "unit/a,b%") == ["build/", "unit/a"]
    assert names("--testpatt", "U%/%") == ["unit/a", "unit/", "unit/b"]
    assert names("--testpatt", "U*") == []  # glob is case-sensitive
    assert names("--states", "RUNNING") == ["unit/", "unit/b"]
    assert names("--states", "RUNNING,NOT_STARTED", "--not-in") == ["build/", "unit/a"]
    assert names("--statuses", "FAIL,PASS") == ["build/", "unit/a", "unit/"]  # unit/ rolled up to FAIL
    assert names("--states", "COMPLETED", "--statuses", "FAIL") == ["unit/a"]
    assert names("--states", "RUNNING", "--statuses", "FAIL", "--mode", "dashboard") == ["unit/a", "unit/", "unit/b"]
    assert names("--sort-by", "testname", "--limit", "2") == ["build/", "lint/"]
    assert names("--sort-by", "testname", "--sort-order", "desc", "--limit", "2", "--offset", "1") == [
        "unit/a",
        "unit/b",
    ]
    fields = area.ok("get-tests-for-run", "--run-id", "1", "--fields", "id,testname", "--limit", "1", "--json").json
    assert fields == [{"id": 1, "testname": "build"}]
    bad = area.run("get-tests-for-run", "--run-id", "1", "--sort-by", "nosuch")
    assert bad.code == 4 and "unknown sort field 'nosuch'" in bad.err
    assert area.run("get-tests-for-run", "--run-id", "1", "--mode", "weird").code == 2


def test_output_formats(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "a")
    table = area.ok("get-runs").out.splitlines()
    assert table[0].split() == ["id", "target", "runname", "state", "status", "owner", "event_time"]
    assert table[1].split()[:5] == ["1", "v1/linux", "a", "new", "n/a"]
    csv_out = area.ok("get-runs", "--format", "csv").out.splitlines()
    assert csv_out[0].startswith("id,runname,target,RELEASE,PLATFORM,state,status")
    tsv_out = area.ok("get-runs", "--format", "tsv").out.splitlines()
    assert tsv_out[1].split("\t")[:3] == ["1", "a", "v1/linux"]
    assert area.ok("get-run-info", "--run-id", "1").out.splitlines()[0].split() == ["id", "1"]
    assert area.ok("get-target", "--run-id", "1").out == "v1/linux\n"
    assert area.ok("get-target", "--run-id", "1", "--json").json == "v1/linux"
    assert area.ok("--json", "get-keys").json == ["RELEASE", "PLATFORM"]


def test_get_runs_patterns(area):
    for target, name in (("v1/linux", "nightly"), ("v1/mac", "nightly"), ("v2/linux", "weekly")):
        area.ok("register-run", "--target", target, "--runname", name)

    def ids(*args):
        return [r["id"] for r in area.ok("get-runs", *args, "--json").json] if area.ok("get-runs", *args).out else []

    assert ids() == [3, 2, 1]
    assert ids("--target", "v1/%") == [2, 1]
    assert ids("--target", "*/linux") == [3, 1]
    assert ids("--target", "v2/*,*/mac") == [3, 2]
    assert ids("--runname", "night*") == [2, 1]
    assert ids("--runname", "WEEK%") == [3]
    assert ids("--limit", "1", "--offset", "1") == [2]


def test_vars(area):
    area.ok("set-var", "answer", "42")
    area.ok("set-var", "name", "dbtool")
    assert area.ok("get-var", "answer", "--json").json == 42
    assert area.ok("get-var", "name").out == "dbtool\n"
    area.ok("set-var", "answer", "4.5")
    assert area.ok("get-var", "answer", "--json").json == 4.5
    area.ok("del-var", "answer")
    assert area.run("get-var", "answer").code == 1
    area.ok("del-var", "answer")  # deleting what is not there is fine


def test_help_and_version(area):
    top = area.run("--help")
    assert top.code == 0 and "set-state-status-and-roll-up-items" in top.out and "server" in top.out
    one = area.run("get-tests-for-run", "--help")
    assert one.code == 0 and "--testpatt" in one.out and "--not-in" in one.out
    assert area.ok("--version").out.startswith("dbtool ")
    unknown = area.run("no-such-command")
    assert (
        unknown.code == 2 and unknown.err == "dbtool: error: no such command 'no-such-command' (see 'dbtool --help')\n"
    )
