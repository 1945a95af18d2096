"""Tests family beyond the skeleton: plain writes, deletion, counters (C.10), dead jobs (C.8), reads (D.6)."""

from __future__ import annotations

import json
import re
import time

import pytest
from dbtool.core.errors import NotFound, Refused

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)


@pytest.fixture
def run(hdb):
    return hdb("register-run", target="v1/linux", runname="r")


def setup_tests(hdb, run_id, rows):
    """rows of (testname, item_path, state, status) → ids, written with roll-up like a job would."""
    return [
        hdb(
            "set-state-status-and-roll-up-items",
            run_id=run_id,
            testname=name,
            item_path=item,
            state=state,
            status=status,
        )
        for name, item, state, status in rows
    ]


def test_test_set_state_status_does_not_roll_up(hdb, run):
    a, _b = setup_tests(hdb, run, [("t", "a", "COMPLETED", "PASS"), ("t", "b", "COMPLETED", "PASS")])
    top = hdb("get-test-id", run_id=run, testname="t")
    hdb("test-set-state-status", test_id=a, state="COMPLETED", status="FAIL", comment="c")
    assert hdb("get-test-state-status-by-id", test_id=top) == {"state": "COMPLETED", "status": "PASS"}
    assert hdb("get-test-info-by-id", test_id=a)["comment"] == "c"
    with pytest.raises(Refused):
        hdb("test-set-state-status", test_id=999, state="X")


def test_set_tests_state_status(hdb, run):
    setup_tests(
        hdb, run, [("unit", "a", "RUNNING", "n/a"), ("unit", "b", "COMPLETED", "PASS"), ("lint", "", "RUNNING", "n/a")]
    )
    top_unit = hdb("get-test-id", run_id=run, testname="unit")
    top_lint = hdb("get-test-id", run_id=run, testname="lint")
    ids = hdb(
        "set-tests-state-status",
        run_id=run,
        testnames=["unit", "li%"],
        curr_state="RUNNING",
        new_state="KILLED",
        new_status="KILLED",
    )
    assert ids == [top_unit, top_lint]
    states = {(r["testname"], r["item_path"]): (r["state"], r["status"]) for r in hdb("get-tests-for-run", run_id=run)}
    assert states[("unit", "a")] == ("KILLED", "KILLED")
    assert states[("unit", "")] == ("KILLED", "KILLED")  # the toplevel was RUNNING too
    assert states[("unit", "b")] == ("COMPLETED", "PASS")  # not in the current state
    assert states[("lint", "")] == ("KILLED", "KILLED")
    # without a new status the current status is kept (the reference used the current *state*: a bug)
    hdb(
        "set-tests-state-status",
        run_id=run,
        testnames=["unit"],
        curr_state="COMPLETED",
        curr_status="PASS",
        new_state="ARCHIVED",
    )
    assert hdb(
        "get-test-state-status-by-id", test_id=hdb("get-test-id", run_id=run, testname="unit", item_path="b")
    ) == {
        "state": "ARCHIVED",
        "status": "PASS",
    }


def test_update_pass_fail_counts_and_legacy_rollup_are_scoped_to_the_run(hdb, run):
    other = hdb("register-run", target="v2/linux", runname="r")
    setup_tests(
        hdb, run, [("t", "1", "COMPLETED", "PASS"), ("t", "2", "COMPLETED", "WARN"), ("t", "3", "COMPLETED", "FAIL")]
    )
    setup_tests(hdb, other, [("t", "1", "COMPLETED", "FAIL"), ("t", "2", "COMPLETED", "FAIL")])
    assert hdb("update-pass-fail-counts", run_id=run, testname="t") == {"pass_count": 2, "fail_count": 1}
    top = hdb("get-test-info-by-id", test_id=hdb("get-test-id", run_id=run, testname="t"))
    assert (top["pass_count"], top["fail_count"]) == (2, 1)
    # the toplevel now has fail_count 1 → the legacy roll-up says FAIL
    assert hdb("top-test-set-per-pf-counts", run_id=run, testname="t")["status"] == "FAIL"
    other_top = hdb("get-test-info-by-id", test_id=hdb("get-test-id", run_id=other, testname="t"))
    assert other_top["pass_count"] == 0  # untouched
    with pytest.raises(Refused, match="no toplevel test"):
        hdb("update-pass-fail-counts", run_id=run, testname="missing")


def test_pid_archive_block_and_reads(hdb, run):
    (t,) = setup_tests(hdb, run, [("t", "", "RUNNING", "n/a")])
    hdb("test-set-top-process-pid", test_id=t, pid=4242)
    assert hdb("test-get-top-process-pid", test_id=t) == 4242
    disk = hdb("archive-register-disk", disk_name="arch", disk_path="/d1")
    block = hdb("archive-register-block-name", disk_id=disk, archive_path="/d1/b")
    hdb("test-set-archive-block-id", test_id=t, block_id=block)
    assert hdb("get-test-info-by-id", test_id=t)["archived"] == block
    assert hdb("get-testinfo-state-status", test_id=t) == {
        "id": t,
        "run_id": run,
        "testname": "t",
        "state": "RUNNING",
        "status": "n/a",
        "item_path": "",
    }
    assert hdb("test-get-rundir-from-test-id", test_id=t) == "/tmp/badname"
    assert hdb("test-get-logfile-info", run_id=run, testname="t") == {
        "rundir": "/tmp/badname",
        "final_logf": "logs/final.log",
    }
    for name in ("get-test-state-status-by-id", "get-testinfo-state-status", "test-get-rundir-from-test-id"):
        with pytest.raises(NotFound):
            hdb(name, test_id=999)
    with pytest.raises(NotFound):
        hdb("test-get-logfile-info", run_id=run, testname="nope")


def test_items_index_and_counts(hdb, run):
    setup_tests(hdb, run, [("t", "b", "COMPLETED", "PASS"), ("t", "a", "RUNNING", "n/a"), ("t", "c", "DELETED", "n/a")])
    assert [r["item_path"] for r in hdb("test-get-records-for-index-file", run_id=run, testname="t")] == ["a", "b"]
    assert len(hdb("test-get-records-for-index-file", run_id=run, testname="t", include_deleted=True)) == 3
    assert set(hdb("test-get-records-for-index-file", run_id=run, testname="t")[0]) == {
        "id",
        "item_path",
        "state",
        "status",
        "run_duration",
        "final_logf",
        "comment",
    }
    assert hdb("test-toplevel-num-items", run_id=run, testname="t") == 2
    assert hdb("get-not-completed-cnt", run_id=run) == 2  # item a and the RUNNING toplevel


def test_running_counters(hdb, run):
    other = hdb("register-run", target="v2/linux", runname="r")
    setup_tests(
        hdb, run, [("t", "a", "RUNNING", "n/a"), ("t", "b", "LAUNCHED", "n/a"), ("u", "", "REMOTEHOSTSTART", "n/a")]
    )
    setup_tests(hdb, other, [("t", "a", "RUNNING", "n/a"), ("v", "", "COMPLETED", "PASS")])
    hdb.sql("update tests set uname = 'host1' where testname = 'u'")  # u ran on a host: not a placeholder
    # t's toplevels are RUNNING placeholders (never launched on a host): not counted
    assert hdb("get-count-tests-running-for-run-id", run_id=run) == 3
    assert hdb("get-count-tests-running", run_id=run) == 4  # every run
    assert hdb("get-count-tests-running-for-testname", run_id=run, testname="t") == 2
    hdb("testmeta-add-record", testname="t")
    hdb("testmeta-update-field", testname="t", field="jobgroup", value="heavy")
    assert hdb("get-count-tests-running-in-jobgroup", jobgroup="heavy") == 3  # t items in both runs
    assert hdb("get-count-tests-running-in-jobgroup", jobgroup="none") == 0


def test_dead_job_detection_and_marking(hdb, run):
    running, launched, fine, _placeholder_item = setup_tests(
        hdb,
        run,
        [
            ("dead", "", "RUNNING", "n/a"),
            ("stale", "", "LAUNCHED", "n/a"),
            ("fine", "", "RUNNING", "n/a"),
            ("top", "i", "COMPLETED", "PASS"),
        ],
    )
    hdb.sql("update tests set uname = 'host1' where testname in ('dead', 'stale', 'fine')")
    now = int(time.time())
    hdb.sql("update tests set event_time = ?, run_duration = 100 where id = ?", now - 10000, running)
    hdb.sql("update tests set event_time = ? where id = ?", now - 90000, launched)
    hdb.sql("update tests set event_time = ?, run_duration = 9999 where id = ?", now - 10000, fine)
    top = hdb("get-test-id", run_id=run, testname="top")
    hdb.sql("update tests set state = 'RUNNING', event_time = 0 where id = ?", top)  # a dead-looking placeholder
    found = hdb("get-toplevels-and-incompletes", run_id=run)
    assert [r["id"] for r in found["incompletes"]] == [running]
    assert [r["id"] for r in found["old_launched"]] == [launched]
    assert [r["id"] for r in found["toplevels"]] == [top]
    assert hdb("have-incompletes", run_id=run) is True
    assert hdb("have-incompletes", run_id=run, deadtime=10**6) is True  # LAUNCHED for over a day still counts
    assert hdb("mark-incomplete", run_id=run) == [running, launched]
    info = hdb("get-test-info-by-id", test_id=running)
    assert (info["state"], info["status"]) == ("COMPLETED", "DEAD")
    assert info["comment"].startswith("Test failed to complete: no progress for")
    assert hdb("get-test-state-status-by-id", test_id=fine)["state"] == "RUNNING"
    assert hdb("get-test-state-status-by-id", test_id=top)["state"] == "RUNNING"  # placeholders are left alone
    assert hdb("have-incompletes", run_id=run) is False
    assert hdb("mark-incomplete") == []


def test_delete_test_records_is_soft(hdb, run):
    (t,) = setup_tests(hdb, run, [("t", "", "COMPLETED", "PASS")])
    hdb.sql("insert into test_steps (test_id, stepname, state, status) values (?, 's', 'end', '0')", t)
    hdb.sql("insert into test_data (test_id, category, variable, status) values (?, 'c', 'v', 'pass')", t)
    hdb("delete-test-records", test_id=t)
    assert hdb("get-test-state-status-by-id", test_id=t) == {"state": "DELETED", "status": "n/a"}
    assert hdb.sql("select status from test_steps") == [("DELETED",)]
    assert hdb.sql("select status from test_data") == [("DELETED",)]
    assert hdb("get-tests-for-run", run_id=run) == []
    # purge: only DELETED tests older than the age go, with their rows
    assert hdb("delete-old-deleted-test-records") == 0
    hdb.sql("update tests set event_time = 0 where id = ?", t)
    assert hdb("delete-old-deleted-test-records") == 1
    assert hdb.sql("select count(*) from tests") == [(0,)]
    assert hdb.sql("select count(*) from test_steps") == [(0,)]
    with pytest.raises(Refused):
        hdb("delete-test-records", test_id=t)


def test_insert_test(hdb, run):
    t = hdb(
        "insert-test",
        run_id=run,
        record=json.dumps(
            {
                "testname": "copy",
                "item_path": "i",
                "state": "COMPLETED",
                "status": "PASS",
                "host": "h1",
                "run_duration": 12,
            }
        ),
    )
    info = hdb("get-test-info-by-id", test_id=t)
    assert (info["state"], info["host"], info["run_duration"], info["run_id"]) == ("COMPLETED", "h1", 12, run)
    with pytest.raises(Refused, match="already has test"):
        hdb("insert-test", run_id=run, record='{"testname": "copy", "item_path": "i"}')
    with pytest.raises(Refused, match="no column"):
        hdb("insert-test", run_id=run, record='{"testname": "x", "run_id": 5}')
    with pytest.raises(Refused, match="needs a testname"):
        hdb("insert-test", run_id=run, record='{"state": "X"}')
    with pytest.raises(Refused, match="no run"):
        hdb("insert-test", run_id=999, record='{"testname": "x"}')


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"state": 123}, "state must be text, not 123"),
        ({"run_duration": "long"}, "run_duration must be an integer, not 'long'"),
        ({"event_time": "now"}, "event_time must be an integer, not 'now'"),
        ({"cpuload": "high"}, "cpuload must be a number, not 'high'"),
        ({"cpuload": 1e400}, "cpuload must be a number, not inf"),
        ({"archived": False}, "archived must be an integer, not False"),
        ({"item_path": None}, "item_path must not be null"),
        ({"testname": 5}, "testname must be text, not 5"),
        ({"testname": "a/b"}, "invalid test name 'a/b'"),
    ],
)
def test_insert_test_refuses_values_of_the_wrong_type(hdb, run, fields, message):
    with pytest.raises(Refused, match=re.escape(message)):
        hdb("insert-test", run_id=run, record=json.dumps({"testname": "zz", **fields}))
    assert hdb.sql("select count(*) from tests") == [(0,)]


def test_insert_test_takes_an_int_for_a_real_column(hdb, run):
    t = hdb("insert-test", run_id=run, record='{"testname": "zz", "cpuload": 2, "comment": null}')
    assert hdb("get-test-info-by-id", test_id=t)["cpuload"] == 2


def test_mindata_state_status_and_multi_run_lists(hdb, run):
    other = hdb("register-run", target="v2/linux", runname="r")
    a, b = setup_tests(hdb, run, [("a", "", "COMPLETED", "PASS"), ("b", "", "DELETED", "n/a")])
    (c,) = setup_tests(hdb, other, [("a", "", "RUNNING", "n/a")])
    mind = hdb("get-tests-for-run-mindata", run_id=run)
    assert [r["id"] for r in mind] == [a]
    assert set(mind[0]) == {"id", "run_id", "testname", "state", "status", "event_time", "item_path"}
    assert [r["id"] for r in hdb("get-tests-for-run-mindata", run_id=run, include_deleted=True)] == [a, b]
    assert [r["id"] for r in hdb("get-tests-for-runs-mindata")] == [a, c]
    assert [r["id"] for r in hdb("get-tests-for-runs-mindata", run_ids=[str(other)])] == [c]
    assert [r["id"] for r in hdb("get-tests-for-runs-mindata", testpatt="a", states=["RUNNING"])] == [c]
    with pytest.raises(Refused, match="comma list of run ids"):
        hdb("get-tests-for-runs-mindata", run_ids=["x"])
    short = hdb("get-tests-for-run-state-status", run_id=run, include_deleted=True)
    assert [tuple(r.values()) for r in short] == [
        (a, run, "a", "COMPLETED", "PASS", ""),
        (b, run, "b", "DELETED", "n/a", ""),
    ]


def test_run_ids_of_a_multi_run_list_must_be_ids(hdb, run):
    for bad in (["x"], [str(2**70)], ["-1"]):
        with pytest.raises(Refused, match="--run-ids must be a comma list of run ids"):
            hdb("get-tests-for-runs-mindata", run_ids=bad)


def test_previous_run_records(hdb, run):
    setup_tests(hdb, run, [("t", "", "COMPLETED", "FAIL"), ("t", "i", "COMPLETED", "FAIL")])
    second = hdb("register-run", target="v1/linux", runname="r2")
    setup_tests(hdb, second, [("t", "", "COMPLETED", "PASS")])
    third = hdb("register-run", target="v1/linux", runname="r3")
    other_target = hdb("register-run", target="v9/x", runname="r")
    setup_tests(hdb, other_target, [("t", "", "COMPLETED", "ABORT")])
    hdb.sql("update runs set event_time = id * 1000")
    prev = hdb("get-previous-test-run-record", run_id=third, testname="t")
    assert (prev["run_id"], prev["status"]) == (second, "PASS")
    assert hdb("get-previous-test-run-record", run_id=third, testname="t", item_path="i")["run_id"] == run
    with pytest.raises(NotFound):
        hdb("get-previous-test-run-record", run_id=run, testname="t")
    matching = hdb("get-matching-previous-test-run-records", run_id=third, testname="t", item_path="%")
    assert sorted((r["item_path"], r["run_id"]) for r in matching) == [("", second), ("i", run)]


def test_paths_matching(hdb, run):
    setup_tests(hdb, run, [("a", "", "COMPLETED", "PASS"), ("b", "", "COMPLETED", "FAIL")])
    hdb.sql("update tests set rundir = '/runs/' || testname, event_time = id")
    assert hdb("test-get-paths-matching-keynames-target-new", run_id=run) == ["/runs/b", "/runs/a"]
    assert hdb("test-get-paths-matching-keynames-target-new", run_id=run, statuspatt="pass", res=["/x"]) == [
        "/runs/a",
        "/x",
    ]


def test_get_tests_for_run_match(hdb, run):
    setup_tests(
        hdb,
        run,
        [
            ("unit_fast", "", "COMPLETED", "PASS"),
            ("unit_slow", "", "COMPLETED", "FAIL"),
            ("lint", "", "RUNNING", "n/a"),
        ],
    )

    def names(*match):
        return [r["testname"] for r in hdb("get-tests-for-run", run_id=run, match=list(match))]

    assert names("testname=^unit") == ["unit_fast", "unit_slow"]
    assert names("testname=^unit", "status=FAIL") == ["unit_slow"]
    assert names("id=^3$") == ["lint"]
    with pytest.raises(Refused, match="bad regular expression"):
        names("testname=(")
    with pytest.raises(Refused, match="unknown match field"):
        names("nosuch=x")
    with pytest.raises(Refused, match="FIELD=REGEX"):
        names("testname")
    with pytest.raises(Refused, match="longer than"):
        names("testname=" + "a" * 300)


# -- CLI ----------------------------------------------------------------------------------------------------


def test_tests_cli_common_paths(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    t = area.ok(
        "set-state-status-and-roll-up-items",
        "--run-id",
        "1",
        "--testname",
        "t",
        "--item-path",
        "a",
        "--state",
        "RUNNING",
        "--status",
        "n/a",
    ).out.strip()
    assert area.ok("test-toplevel-num-items", "--run-id", "1", "--testname", "t").out == "1\n"
    assert area.ok("get-count-tests-running-for-run-id", "--run-id", "1").out == "1\n"
    assert area.ok("get-test-state-status-by-id", "--test-id", t, "--json").json == {
        "state": "RUNNING",
        "status": "n/a",
    }
    area.ok("test-set-state-status", "--test-id", t, "--state", "COMPLETED", "--status", "PASS")
    assert area.ok("have-incompletes", "--run-id", "1").out == "false\n"
    assert area.ok("mark-incomplete", "--run-id", "1").out == ""
    match = area.ok("get-tests-for-run", "--run-id", "1", "--match", "item_path=^a$", "--json").json
    assert [r["id"] for r in match] == [int(t)]
    bad = area.run("get-tests-for-run", "--run-id", "1", "--match", "nosuch=x")
    assert bad.code == 4 and "unknown match field" in bad.err
    refused = area.run("test-set-top-process-pid", "--test-id", "999", "--pid", "1")
    assert refused.code == 4 and "no test with id 999" in refused.err


# -- writes that take --run-id for compatibility: when given, it must be the test's run (B18) ---------------

TEST_WRITE_PARAMS = {
    "test-set-state-status-by-id": {"state": "RUNNING"},
    "test-set-state-status": {"state": "RUNNING"},
    "delete-test-records": {},
    "test-set-top-process-pid": {"pid": 7},
    "test-set-archive-block-id": {"block_id": 0},
    "teststep-set-status": {"stepname": "s", "state": "start"},
    "delete-steps-for-test": {},
    "csv-to-test-data": {"csv": "c,v,1"},
    "test-data-upload-part": {"upload": "u1", "part": 0, "csv": "c,v,1", "final": True},
    "test-data-rollup": {},
}


def test_every_test_write_with_a_compatibility_run_id_is_checked():
    from dbtool.core.commands import COMMANDS, WRITE

    writes = {
        c.name
        for c in COMMANDS.values()
        if c.kind == WRITE and {"run_id", "test_id"} <= {p.name for p in c.params} and not c.param("run_id").required
    }
    assert writes == set(TEST_WRITE_PARAMS)


@pytest.mark.parametrize("cmd", sorted(TEST_WRITE_PARAMS))
def test_a_test_write_refuses_a_run_id_that_is_not_the_tests_run(hdb, run, cmd):
    t = hdb("register-test", run_id=run, testname="t")
    other = hdb("register-run", target="v2/linux", runname="other")
    before = hdb.sql("select * from tests"), hdb.sql("select count(*) from events")
    for wrong in (999, other):
        with pytest.raises(Refused, match=f"test {t} belongs to run {run}, not run {wrong}"):
            hdb(cmd, run_id=wrong, test_id=t, **TEST_WRITE_PARAMS[cmd])
    assert (hdb.sql("select * from tests"), hdb.sql("select count(*) from events")) == before
    hdb(cmd, run_id=run, test_id=t, **TEST_WRITE_PARAMS[cmd])  # the right run, or none, is fine
    hdb(cmd, test_id=t, **TEST_WRITE_PARAMS[cmd])


def test_mark_incomplete_refuses_an_unknown_run(hdb, run):
    with pytest.raises(Refused, match="no run with id 999"):
        hdb("mark-incomplete", run_id=999)
    assert hdb("mark-incomplete", run_id=run) == []


def test_archive_block_id_must_name_a_block_or_be_zero(hdb, run):
    t = hdb("register-test", run_id=run, testname="t")
    with pytest.raises(Refused, match="no archive block with id 999; register it with `dbtool archive-register-block"):
        hdb("test-set-archive-block-id", test_id=t, block_id=999)
    assert hdb("get-test-info-by-id", test_id=t)["archived"] == 0
    disk = hdb("archive-register-disk", disk_name="arch", disk_path="/d1")
    block = hdb("archive-register-block-name", disk_id=disk, archive_path="/d1/b")
    hdb("test-set-archive-block-id", test_id=t, block_id=block)
    assert hdb("get-test-info-by-id", test_id=t)["archived"] == block
    hdb("test-set-archive-block-id", test_id=t, block_id=0)  # not archived (any more)
    assert hdb("get-test-info-by-id", test_id=t)["archived"] == 0
