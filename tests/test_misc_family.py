"""Misc (D.1), general-call (D.9), vars, no-sync, meta, tasks, processes, archives, change tracking."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from conftest import handshake
from dbtool.core.errors import NotFound, Refused

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)


@pytest.fixture
def run(hdb):
    return hdb("register-run", target="v1/linux", runname="r")


def test_login_checks_area_and_version(hdb, tmp_path):
    from dbtool.core import __version__

    hdb.config["area"] = {"root": str(tmp_path)}
    assert hdb("login", area_path=str(tmp_path), client_version=__version__)["message"] == "successful login"
    with pytest.raises(Refused, match="expects area"):
        hdb("login", area_path="/elsewhere")
    with pytest.raises(Refused, match=r"expects dbtool 0\.0\.0"):
        hdb("login", client_version="0.0.0")


@pytest.mark.parametrize(
    ("stmt", "args", "field", "expected"),
    [
        ("set-test-state", ["RUNNING"], "state", "RUNNING"),
        ("set-test-status", ["PASS"], "status", "PASS"),  # writes the status (the reference wrote state)
        ("state-status", ["COMPLETED", "FAIL"], "status", "FAIL"),
        ("state-status-msg", ["COMPLETED", "WARN", "slow"], "comment", "slow"),
        ("set-test-comment", ["hello"], "comment", "hello"),
        ("update-run-duration", ["42"], "run_duration", 42),
        ("pass-fail-counts", ["3", "1"], "fail_count", 1),
        ("test-set-log", ["logs/x.log"], "final_logf", "logs/x.log"),
        ("update-cpuload-diskfree", ["1.5", "100"], "cpuload", 1.5),
        ("update-uname-host", ["Linux", "h1"], "host", "h1"),
    ],
)
def test_general_call_test_statements(hdb, run, stmt, args, field, expected):
    t = hdb("register-test", run_id=run, testname="t")
    assert hdb("general-call", stmt=stmt, args=[*args, str(t)]) is True
    assert hdb("get-test-info-by-id", test_id=t)[field] == expected


def test_general_call_run_statements(hdb, run):
    assert hdb("general-call", stmt="register-test", args=[str(run), "g", "i"]) is True
    item = hdb("get-test-id", run_id=run, testname="g", item_path="i")
    top = hdb("get-test-id", run_id=run, testname="g")
    hdb("general-call", stmt="top-test-set-running", args=["g", str(run)])
    assert hdb("get-test-state-status-by-id", test_id=top)["state"] == "RUNNING"
    hdb("general-call", stmt="tests:test-set-toplog", args=["top.log", str(run), "g"])
    assert hdb("get-test-info-by-id", test_id=top)["final_logf"] == "top.log"
    hdb("general-call", stmt="test-set-rundir-shortdir", args=["/r/g/i", "g/i", "g", "i", str(run)])
    assert hdb("test-get-rundir-from-test-id", test_id=item) == "/r/g/i"
    # update-test-state touches the items, not the toplevel of an itemized test
    hdb("general-call", stmt="update-test-state", args=["KILLED", "NOT_STARTED", str(run), "g", "g"])
    assert hdb("get-test-state-status-by-id", test_id=item)["state"] == "KILLED"
    assert hdb("get-test-state-status-by-id", test_id=top)["state"] == "RUNNING"
    hdb("general-call", stmt="update-test-status", args=["ABORT", "n%", str(run), "g"])
    assert hdb("get-test-state-status-by-id", test_id=item)["status"] == "ABORT"
    hdb("general-call", stmt="update-pass-fail-counts", args=["g", "g", "g", str(run)])
    assert hdb("get-test-info-by-id", test_id=top)["fail_count"] == 1
    hdb("general-call", stmt="top-test-set-per-pf-counts", args=["g"] * 17, run_id=run)
    assert hdb("get-test-state-status-by-id", test_id=top)["status"] == "FAIL"
    hdb("general-call", stmt="update-test-rundat", args=[str(item), "100", "0.5", "10", "20", "30"])
    assert hdb.sql("select cpuload, run_duration from test_rundat") == [(0.5, 30)]
    hdb("general-call", stmt="delete-tests-in-state", args=["KILLED"])
    assert hdb("get-test-state-status-by-id", test_id=item)["state"] == "DELETED"
    hdb("general-call", stmt="set-test-start-time", args=[str(top)])
    hdb.sql("insert into test_data (test_id, category, variable, status) values (?, 'c', 'v', 'fail')", top)
    hdb("general-call", stmt="test_data-pf-rollup", args=[str(top)] * 4)
    assert hdb("get-test-state-status-by-id", test_id=top)["status"] == "FAIL"
    hdb("general-call", stmt="delete-test-data-records", args=[str(top)])
    hdb("general-call", stmt="delete-test-step-records", args=[str(top)])
    assert hdb.sql("select status from test_data") == [("DELETED",)]


@pytest.mark.parametrize(
    ("stmt", "args", "message"),
    [
        ("drop-table", [], "no statement 'drop-table'"),
        ("set-test-state", ["X"], "takes STATE TEST_ID"),
        ("set-test-state", ["X", "notanumber"], "test_id must be an integer"),
        ("set-test-state", ["X", "999"], "no test with id 999"),
        ("update-test-state", ["A", "B", "1", "x", "y"], "given twice with different values"),
        ("top-test-set-per-pf-counts", ["g"], "needs --run-id"),
    ],
)
def test_general_call_refusals_change_nothing(hdb, run, stmt, args, message):
    t = hdb("register-test", run_id=run, testname="t")
    before = hdb("get-test-info-by-id", test_id=t)
    with pytest.raises(Refused, match=message):
        hdb("general-call", stmt=stmt, args=args)
    assert hdb("get-test-info-by-id", test_id=t) == before


@pytest.mark.parametrize(
    ("stmt", "args", "message"),
    [
        ("update-run-duration", ["-5"], "seconds must be at least 0, not -5"),
        ("pass-fail-counts", ["1", "-1"], "fail_count must be at least 0, not -1"),
        ("pass-fail-counts", [str(2**70), "0"], "pass_count is out of range (64-bit integers only)"),
        ("update-cpuload-diskfree", ["nan", "5"], "cpuload must be a finite number, not 'nan'"),
        ("update-cpuload-diskfree", ["1.5", "-7"], "diskfree must be at least -1, not -7"),
    ],
)
def test_general_call_refuses_numbers_no_column_can_use(hdb, run, stmt, args, message):
    t = hdb("register-test", run_id=run, testname="t")
    before = hdb("get-test-info-by-id", test_id=t)
    with pytest.raises(Refused, match=re.escape(f"general-call {stmt}: {message}")):
        hdb("general-call", stmt=stmt, args=[*args, str(t)])
    assert hdb("get-test-info-by-id", test_id=t) == before


def test_general_call_refuses_a_run_id_that_is_not_the_tests_run(hdb, run):
    t = hdb("register-test", run_id=run, testname="t")
    with pytest.raises(Refused, match=f"test {t} belongs to run {run}, not run 999"):
        hdb("general-call", stmt="set-test-state", args=["RUNNING", str(t)], run_id=999)
    assert hdb("get-test-state-status-by-id", test_id=t)["state"] == "NOT_STARTED"
    hdb("general-call", stmt="set-test-state", args=["RUNNING", str(t)], run_id=run)
    assert hdb("get-test-state-status-by-id", test_id=t)["state"] == "RUNNING"


def test_general_call_statements_are_the_registry_list():
    from dbtool.core.commands import GENERAL_CALL_STATEMENTS, lookup
    from dbtool.core.handlers.misc import STATEMENTS

    assert list(STATEMENTS) == list(GENERAL_CALL_STATEMENTS)
    assert ", ".join(GENERAL_CALL_STATEMENTS) in lookup("general-call").help


@pytest.mark.parametrize(
    ("stored", "data", "status", "expected"),
    [
        ((0, 2), ["pass", "pass"], "PASS", "FAIL"),  # the stored fail count decides, not the data
        ((3, 0), ["fail"], "n/a", "PASS"),
        ((3, 0), [], "WARN", "WARN"),  # a PASS does not hide WARN or FAIL
        ((3, 0), [], "FAIL", "FAIL"),
        ((0, 0), ["fail"], "RUNNING", "RUNNING"),  # no counts: unchanged
    ],
)
def test_general_call_pf_rollup_uses_the_stored_counts(hdb, run, stored, data, status, expected):
    t = hdb("register-test", run_id=run, testname="t")
    hdb("general-call", stmt="pass-fail-counts", args=[str(stored[0]), str(stored[1]), str(t)])
    hdb("general-call", stmt="set-test-status", args=[status, str(t)])
    for i, verdict in enumerate(data):
        hdb("csv-to-test-data", test_id=t, csv=f"c,v{i},1,1,0,,,{verdict}")
    hdb("general-call", stmt="test_data-pf-rollup", args=[str(t)] * 4)
    info = hdb("get-test-info-by-id", test_id=t)
    assert (info["status"], info["pass_count"], info["fail_count"]) == (expected, *stored)


def test_triggers_can_be_dropped_and_restored(hdb, run):
    t = hdb("register-test", run_id=run, testname="t")
    hdb("drop-all-triggers")
    hdb.sql("update tests set last_update = 7 where id = ?", t)
    hdb.sql("update tests set comment = 'x' where id = ?", t)
    assert hdb.sql("select last_update from tests") == [(7,)]
    hdb("create-all-triggers")
    hdb.sql("update tests set comment = 'y' where id = ?", t)
    assert hdb.sql("select last_update from tests")[0][0] > 7


def test_update_tesdata_on_replicated_db(hdb, run):
    t = hdb("register-test", run_id=run, testname="t")
    hdb.sql("update tests set rundir = '/old/links/t', shortdir = '/old/links/s' where id = ?", t)
    hdb("register-test", run_id=run, testname="u")
    assert hdb("update-tesdata-on-repilcate-db", old_linktree="/old/links", new_linktree="/new") == 1  # one test
    assert hdb.sql("select rundir, shortdir from tests where id = ?", t) == [("/new/t", "/new/s")]


def _dirs(hdb, run, paths: dict[str, tuple[str, str]]) -> dict[str, int]:
    ids = {}
    for name, (rundir, shortdir) in paths.items():
        ids[name] = hdb("register-test", run_id=run, testname=name)
        hdb.sql("update tests set rundir = ?, shortdir = ? where id = ?", rundir, shortdir, ids[name])
    return ids


@pytest.mark.parametrize("old", ["/old/links", "/old/links/", "/old/links//"])
def test_update_tesdata_replaces_a_path_prefix_not_a_string_prefix(hdb, run, old):
    _dirs(
        hdb,
        run,
        {
            "a": ("/old/links/a", "/old/linksX/a"),
            "b": ("/old/linksfoo/b", "/OLD/links/b"),
            "c": ("/old/links", "rel/old/links/c"),
            "d": ("/old/l_nks/d", "/old/l%nks/d"),
        },
    )
    assert hdb("update-tesdata-on-repilcate-db", old_linktree=old, new_linktree="/new/") == 2  # tests, not columns
    assert hdb.sql("select testname, rundir, shortdir from tests order by id") == [
        ("a", "/new/a", "/old/linksX/a"),
        ("b", "/old/linksfoo/b", "/OLD/links/b"),
        ("c", "/new", "rel/old/links/c"),
        ("d", "/old/l_nks/d", "/old/l%nks/d"),
    ]


def test_update_tesdata_takes_like_wildcards_literally_and_the_root_as_a_prefix(hdb, run):
    _dirs(hdb, run, {"a": ("/old/l_nks/a", "/old/links/a"), "b": ("/x/b", "y")})
    assert hdb("update-tesdata-on-repilcate-db", old_linktree="/old/l_nks", new_linktree="/n") == 1
    assert hdb.sql("select rundir, shortdir from tests order by id") == [("/n/a", "/old/links/a"), ("/x/b", "y")]
    assert hdb("update-tesdata-on-repilcate-db", old_linktree="/", new_linktree="/mnt") == 2
    rows = hdb.sql("select rundir, shortdir from tests order by id")
    assert rows == [("/mnt/n/a", "/mnt/old/links/a"), ("/mnt/x/b", "y")]


def test_latest_host_load(hdb, run):
    t = hdb("register-test", run_id=run, testname="t")
    hdb.sql("update tests set host = 'node7' where id = ?", t)
    assert hdb("get-latest-host-load", hostname="node7.example.com") == {"cpuload": -1, "update_time": 0}
    hdb.sql(
        "insert into test_rundat (test_id, update_time, cpuload) values (?, 10, 0.5), (?, 20, 1.25), (?, 30, -1)",
        t,
        t,
        t,
    )
    assert hdb("get-latest-host-load", hostname="node7.example.com") == {"cpuload": 1.25, "update_time": 20}


def test_vars_arithmetic(hdb):
    assert hdb("inc-var", var="n") == 1
    assert hdb("inc-var", var="n") == 2
    assert hdb("dec-var", var="n") == 1
    assert hdb("add-var", var="n", n=2.5) == 3.5
    assert hdb("add-var", var="n", n=-0.5) == 3
    assert hdb("get-var", var="n") == 3
    hdb("set-var", var="s", value="text")
    with pytest.raises(Refused, match="not a number"):
        hdb("inc-var", var="s")
    assert hdb("get-var", var="s") == "text"


def test_vars_that_overflow(hdb):
    hdb("set-var", var="h", value="1e400")
    assert hdb("get-var", var="h") == "1e400"  # no float holds it: the text, not inf (or nothing)
    hdb("set-var", var="big", value="1e308")
    with pytest.raises(Refused, match=r"adding 1e\+308 to variable 'big' \(1e308\) gives a number out of range"):
        hdb("add-var", var="big", n=1e308)
    assert hdb("get-var", var="big") == 1e308
    hdb("set-var", var="huge", value="9" * 400)
    with pytest.raises(Refused, match="out of range"):
        hdb("add-var", var="huge", n=0.5)
    assert hdb("add-var", var="huge", n=1) == 10**400  # ints are exact
    with pytest.raises(Refused, match="not a number"):
        hdb("inc-var", var="h")


def test_no_sync_values_and_locks(hdb):
    hdb("no-sync-set", var="a", value="12")
    assert hdb("no-sync-get-default", var="a") == 12
    assert hdb("no-sync-get-default", var="missing", default="d") == "d"
    with pytest.raises(NotFound):
        hdb("no-sync-get-default", var="missing")
    first = hdb("no-sync-get-lock", var="L")
    assert first["acquired"] is True and isinstance(first["value"], int)
    second = hdb("no-sync-get-lock", var="L")
    assert second == {"acquired": False, "value": first["value"]}
    hdb("no-sync-del", var="L")
    assert hdb("no-sync-get-lock", var="L")["acquired"] is True


@pytest.mark.parametrize("name", ["a/b", "/"])
def test_testmeta_add_record_refuses_names_no_test_can_have(hdb, name):
    with pytest.raises(Refused, match="non-empty text and contain no '/'"):
        hdb("testmeta-add-record", testname=name)
    assert hdb.sql("select count(*) from test_meta") == [(0,)]


def test_testmeta_number_fields_refuse_numbers_out_of_range(hdb):
    hdb("testmeta-add-record", testname="unit")
    with pytest.raises(Refused, match="avg_runtime 1e999 is out of range for a number"):
        hdb("testmeta-update-field", testname="unit", field="avg_runtime", value="1e999")
    hdb("testmeta-update-field", testname="unit", field="avg_runtime", value="12.5")
    hdb("testmeta-update-field", testname="unit", field="description", value="1e999")  # text: kept as given
    record = hdb("testmeta-get-record", testname="unit")
    assert (record["avg_runtime"], record["description"]) == (12.5, "1e999")


def test_test_meta(hdb):
    hdb("testmeta-add-record", testname="unit")
    hdb("testmeta-add-record", testname="unit")  # kept
    hdb("testmeta-update-field", testname="unit", field="tags", value="fast, smoke")
    hdb("testmeta-add-record", testname="lint")
    hdb("testmeta-update-field", testname="lint", field="tags", value="smoke")
    record = hdb("testmeta-get-record", testname="unit")
    assert (record["tags"], record["jobgroup"], record["author"]) == ("fast, smoke", "default", "")
    assert hdb("get-tests-tags") == {"fast": ["unit"], "smoke": ["lint", "unit"]}
    with pytest.raises(Refused, match="no updatable field 'id'"):
        hdb("testmeta-update-field", testname="unit", field="id", value="1")
    with pytest.raises(Refused, match="no updatable field"):
        hdb("testmeta-update-field", testname="unit", field="tags = 'x'; --", value="1")
    with pytest.raises(Refused, match="no meta record"):
        hdb("testmeta-update-field", testname="nope", field="tags", value="1")
    with pytest.raises(NotFound):
        hdb("testmeta-get-record", testname="nope")
    assert hdb("testmeta-get-record", testname="unit")["tags"] == "fast, smoke"


def test_tasks(hdb):
    a = hdb("tasks-add", action="run-tests", target="v1/linux", runname="r", testpatt="%", params="-x host1 123")
    b = hdb("tasks-add", action="run-tests", target="v1/linux", runname="r", params="-y host1 456")
    hdb.sql("update tasks_queue set creation_time = id")
    assert hdb("tasks-get-last", target="v1/linux", runname="r")["id"] == b
    assert hdb("tasks-set-state-given-param-key", param_key="% host1 123", state="running") == 1
    assert [r["id"] for r in hdb("find-task-queue-records", target="v1/linux", runname="r", statepatt="run%")] == [a]
    assert len(hdb("find-task-queue-records", target="v1/linux", runname="r")) == 2
    # any state text, as Megatest's does (the help lists the usual ones)
    assert hdb("tasks-set-state-given-param-key", param_key="% host1 456", state="paused-by-ops") == 1
    assert hdb("tasks-get-last", target="v1/linux", runname="r")["state"] == "paused-by-ops"
    with pytest.raises(NotFound):
        hdb("tasks-get-last", target="v1/linux", runname="other")


def test_processes(hdb):
    p = hdb("register-process", host="h1", pid=10, port=4000, purpose="server", dbname="main")
    assert isinstance(p, int)
    hdb("set-process-status", host="h1", pid=10, status="running")
    assert [r["pid"] for r in hdb("get-process-options", purpose="server", dbname="main")] == [10]
    hdb("set-process-done", host="h1", pid=10, reason="idle")
    assert hdb("get-process-options", purpose="server", dbname="main") == []
    assert hdb.sql("select status, reason from processes") == [("done", "idle")]
    with pytest.raises(Refused, match="no process 11"):
        hdb("set-process-status", host="h1", pid=11, status="x")


def test_archives(hdb, run):
    disk = hdb("archive-register-disk", disk_name="arch", disk_path="/d1", df=100)
    assert hdb("archive-register-disk", disk_name="arch", disk_path="/d1", df=50) == disk
    block = hdb("archive-register-block-name", disk_id=disk, archive_path="/d1/2026_q4/suite_abcde")
    assert hdb("archive-register-block-name", disk_id=disk, archive_path="/d1/2026_q4/suite_abcde", du=7) == block
    info = hdb("test-get-archive-block-info", block_id=block)
    assert (info["archive_disk_id"], info["last_du"]) == (disk, 7)
    with pytest.raises(NotFound):
        hdb("test-get-archive-block-info", block_id=999)
    with pytest.raises(Refused, match="no archive disk"):
        hdb("archive-register-block-name", disk_id=999, archive_path="/x")
    hdb.sql("insert into archive_allocations (archive_block_id, testname, item_path) values (?, 't', '')", block)
    assert [r["id"] for r in hdb("archive-get-allocations", testname="t", dneeded=10)] == [block]
    assert hdb("archive-get-allocations", testname="t", dneeded=60) == []


def test_archive_allocations_include_the_blocks_tests_were_given(hdb, run):
    disk = hdb("archive-register-disk", disk_name="arch", disk_path="/d1", df=1000)
    small = hdb("archive-register-disk", disk_name="arch", disk_path="/d2", df=5)
    block = hdb("archive-register-block-name", disk_id=disk, archive_path="/d1/2026_q4/suite_abcde")
    other = hdb("archive-register-block-name", disk_id=small, archive_path="/d2/2026_q4/suite_abcde")
    item = hdb("register-test", run_id=run, testname="t", item_path="i")
    top = hdb("get-test-id", run_id=run, testname="t")
    assert hdb("archive-get-allocations", testname="t", item_path="i") == []
    hdb("test-set-archive-block-id", test_id=item, block_id=block)
    found = hdb("archive-get-allocations", testname="t", item_path="i")
    assert [(r["id"], r["disk_path"], r["disk"]) for r in found] == [(block, "/d1/2026_q4/suite_abcde", "/d1")]
    assert hdb("archive-get-allocations", testname="t") == []  # the toplevel has no block
    hdb("test-set-archive-block-id", test_id=top, block_id=other)
    assert [r["id"] for r in hdb("archive-get-allocations", testname="t")] == [other]
    assert hdb("archive-get-allocations", testname="t", dneeded=10) == []  # not enough room on /d2
    hdb.sql("insert into archive_allocations (archive_block_id, testname, item_path) values (?, 't', 'i')", block)
    assert [r["id"] for r in hdb("archive-get-allocations", testname="t", item_path="i")] == [block]  # once
    later = hdb("register-run", target="v1/linux", runname="later")
    again = hdb("register-test", run_id=later, testname="t", item_path="i")
    hdb("test-set-archive-block-id", test_id=again, block_id=other)  # another run's archive of the same item
    assert [r["id"] for r in hdb("archive-get-allocations", testname="t", item_path="i")] == [block, other]


def test_change_tracking(hdb, run):
    hdb("drop-all-triggers")
    t = hdb("register-test", run_id=run, testname="t")
    hdb.sql("update runs set last_update = 100")
    hdb.sql("update tests set last_update = 200")
    assert hdb("get-changed-record-ids", since=150) == {
        "runs": [],
        "tests": [t],
        "test_steps": [],
        "test_data": [],
        "run_stats": [],
    }
    assert hdb("get-changed-record-test-ids", since=200) == []
    assert hdb("get-changed-record-run-ids", since=99) == [run]


# -- CLI and protocol ---------------------------------------------------------------------------------------


def test_dead_entries_are_refused_without_a_server(area):
    sdb = area.run("sdb-qry", "--qry", "x")
    assert sdb.code == 4 and "dead Megatest entry" in sdb.err
    alloc = area.run("archive-allocate-testsuite-area-to-block")
    assert alloc.code == 4 and "never implemented" in alloc.err
    assert area.server_pids() == []


def test_misc_cli_common_paths(area):
    assert area.ok("get-keys-write", "--json").json == ["RELEASE", "PLATFORM"]  # a write: starts a server
    assert area.server_pids()
    assert area.ok("login", "--area-path", str(area.root), "--json").json["ok"] is True
    wrong = area.run("login", "--area-path", "/somewhere/else")
    assert wrong.code == 4 and "login failed" in wrong.err
    assert area.ok("inc-var", "builds").out == "1\n"
    assert area.ok("add-var", "builds", "10").out == "11\n"
    assert area.ok("dec-var", "builds").out == "10\n"
    area.ok("no-sync-set", "k", "v")
    assert area.ok("no-sync-get-default", "k").out == "v\n"
    assert area.ok("no-sync-get-default", "other", "--default", "d").out == "d\n"
    lock = area.ok("no-sync-get-lock", "L", "--json").json
    assert lock["acquired"] is True
    assert area.ok("no-sync-get-lock", "L", "--json").json == {"acquired": False, "value": lock["value"]}
    area.ok("no-sync-del", "L")
    area.ok("testmeta-add-record", "--testname", "t")
    area.ok("testmeta-update-field", "--testname", "t", "--field", "owner", "--value", "bob")
    assert area.ok("testmeta-get-record", "--testname", "t", "--json").json["owner"] == "bob"
    bad = area.run("testmeta-update-field", "--testname", "t", "--field", "nosuch", "--value", "x")
    assert bad.code == 4 and "no updatable field" in bad.err
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    t = area.ok("register-test", "--run-id", "1", "--testname", "t").out.strip()
    assert area.ok("general-call", "state-status", "COMPLETED", "PASS", t).out == "true\n"
    assert area.ok("get-test-state-status-by-id", "--test-id", t, "--json").json == {
        "state": "COMPLETED",
        "status": "PASS",
    }
    assert area.run("general-call", "nope").code == 4
    wal = area.dir / "dbtool.db-wal"
    assert area.backend == "postgresql" or wal.stat().st_size > 0
    area.ok("sync-cachedb-to-db")  # (on PostgreSQL: nothing to move)
    assert area.backend == "postgresql" or wal.stat().st_size == 0
    assert area.ok("tasks-add", "--action", "run-tests", "--target", "v1/linux", "--runname", "r").out == "1\n"
    assert area.ok("get-changed-record-test-ids", "--since", "0", "--json").json == [int(t)]


def test_start_and_kill_server_aliases(area):
    started = area.ok("start-server").out
    pid = area.server_info["pid"]
    assert f"(pid {pid})" in started
    assert area.ok("start-server").out == started  # hand-off
    area.ok("kill-server")
    assert area.wait_no_server() and area.server_info is None


def raw_request(area, cmd: str, params: dict) -> dict:
    info = area.server_info
    with socket.create_connection((info["address"], info["port"]), timeout=10) as sock:
        f = sock.makefile("rwb")
        handshake(f, info)
        f.write(json.dumps({"id": 1, "cmd": cmd, "params": params}).encode() + b"\n")
        f.flush()
        return json.loads(f.readline())


def test_megatest_spellings_over_the_protocol(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    t = int(area.ok("register-test", "--run-id", "1", "--testname", "t").out)
    assert raw_request(area, "have-incompletes?", {"run_id": 1})["result"] is False
    assert raw_request(area, "lock/unlock-run", {"run_id": 1, "unlock": True})["ok"] is True
    assert raw_request(area, "update-run-event_time", {"run_id": 1})["ok"] is True
    assert raw_request(area, "no-sync-get/default", {"var": "x", "default": "7"})["result"] == 7
    assert raw_request(area, "teststep-set-status!", {"test_id": t, "stepname": "s", "state": "start"})["ok"] is True
    assert raw_request(area, "sdb-qry", {})["error"]["code"] == "refused"
    assert raw_request(area, "start-server", {})["result"]["pid"] == area.server_info["pid"]
    stopped = raw_request(area, "kill-server", {})
    assert stopped["result"]["stopping"] is True
    deadline = time.monotonic() + 15
    while area.server_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert area.server_pids() == []
