"""Runs, keys, targets and run statistics: handlers for the combinatorics, the CLI for common paths."""

from __future__ import annotations

import json
import re

import pytest
from dbtool.core.errors import NotFound, Refused

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)


@pytest.fixture
def runs(hdb):
    """Four runs: nightly/weekly on two targets (ids 1-4); run 4 deleted."""
    ids = [
        hdb("register-run", target="v1/linux", runname="nightly"),
        hdb("register-run", target="v1/mac", runname="nightly"),
        hdb("register-run", target="v2/linux", runname="weekly"),
        hdb("register-run", target="v1/linux", runname="old"),
    ]
    for i, run_id in enumerate(ids):  # distinct event times: newest last
        hdb.sql("update runs set event_time = ? where id = ?", 1000 + i, run_id)
    hdb("delete-run", run_id=ids[3])
    return ids


def test_keys_targets_and_key_values(hdb, runs):
    assert hdb("get-keys") == ["RELEASE", "PLATFORM"]
    assert hdb("get-key-vals", run_id=1) == ["v1", "linux"]
    assert hdb("get-key-val-pairs", run_id=2) == {"RELEASE": "v1", "PLATFORM": "mac"}
    assert [t["target"] for t in hdb("get-targets")] == ["v1/linux", "v1/mac", "v2/linux"]
    assert hdb("get-targets")[0] == {"target": "v1/linux", "RELEASE": "v1", "PLATFORM": "linux"}
    with pytest.raises(NotFound):
        hdb("get-key-vals", run_id=99)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, [3, 2, 1]),
        ({"include_deleted": True}, [4, 3, 2, 1]),
        ({"runname": "nightly"}, [2, 1]),
        ({"runname": "NIGHT%"}, [2, 1]),
        ({"runname": "Night*"}, []),
        ({"runname": "weekly,nightly"}, [3, 2, 1]),
        ({"target": "v1/*"}, [2, 1]),
        ({"target": "*/linux"}, [3, 1]),
        ({"target": "V1/%"}, [2, 1]),
        ({"target": "v1/linux,v2/linux"}, [3, 1]),
        ({"runname": "nightly", "target": "*/mac"}, [2]),
        ({"limit": 2}, [3, 2]),
        ({"limit": 2, "offset": 2}, [1]),
    ],
)
def test_get_runs_patterns(hdb, runs, params, expected):
    assert [r["id"] for r in hdb("get-runs", **params)] == expected


def test_simple_get_runs_and_by_patt(hdb, runs):
    simple = hdb("simple-get-runs", target="v1/%")
    assert [r["id"] for r in simple] == [2, 1]
    assert set(simple[0]) == {"target", "id", "runname", "state", "status", "owner", "event_time"}
    # get-runs-by-patt: oldest first, the target split per key; a missing part matches only ''
    assert [r["id"] for r in hdb("get-runs-by-patt", target="v1/%")] == [1, 2]
    assert [r["id"] for r in hdb("get-runs-by-patt", target="v1")] == []
    assert [r["id"] for r in hdb("get-runs-by-patt", runname="week*")] == [3]
    rows = hdb("get-runs-by-patt", target="%/linux", fields=["id", "state"])
    assert rows == [
        {"RELEASE": "v1", "PLATFORM": "linux", "id": 1, "state": "new"},
        {"RELEASE": "v2", "PLATFORM": "linux", "id": 3, "state": "new"},
    ]
    assert hdb("get-runs-cnt-by-patt", target="%/linux") == 2
    assert hdb("get-runs-by-patt", last_update=10**10) == []
    with pytest.raises(Refused, match="unknown run field"):
        hdb("get-runs-by-patt", fields=["id", "nosuch"])


def test_run_id_lists(hdb, runs):
    assert hdb("get-num-runs") == 3
    assert hdb("get-num-runs", runname="night%") == 2
    assert hdb("get-all-run-ids") == [3, 2, 1]
    assert hdb("get-all-runids") == [1, 2, 3]
    assert hdb("get-all-runids", include_deleted=True) == [1, 2, 3, 4]
    assert hdb("get-prev-run-ids", run_id=1) == []  # run 4 (same target) is deleted
    assert hdb("get-prev-run-ids", run_id=1, include_deleted=True) == [4]
    assert hdb("get-run-ids-matching-target", target="v1/%") == [1, 2]
    assert hdb("get-run-ids-matching-target", target="v1") == [1, 2]  # a missing part matches anything
    assert hdb("get-run-ids-matching-target", runname="week%") == [3]


def test_get_run_record_ids_follows_run_and_test_changes(hdb, runs):
    hdb("register-test", run_id=2, testname="t")
    hdb("drop-all-triggers")  # so that the test can set last_update itself
    hdb.sql("update runs set last_update = 100")
    hdb.sql("update tests set last_update = 500")
    assert hdb("get-run-record-ids", since=400) == [2]
    assert hdb("get-run-record-ids", since=400, testpatt="other") == []
    assert hdb("get-run-record-ids", since=50) == [1, 2, 3]
    assert hdb("get-run-record-ids", since=50, target="*/mac") == [2]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/", "target '/' leaves RELEASE and PLATFORM empty"),
        ("v1/", "target 'v1/' leaves PLATFORM empty"),
        ("/linux", "target '/linux' leaves RELEASE empty"),
    ],
)
def test_register_run_refuses_empty_key_values_naming_the_key(hdb, target, message):
    with pytest.raises(Refused, match=message):
        hdb("register-run", target=target, runname="n")
    assert hdb.sql("select count(*) from runs") == [(0,)]


def test_register_run_refuses_an_empty_run_name(hdb):
    from dbtool.core.db.context import Db
    from dbtool.core.handlers.runs import register_run
    from dbtool.core.request import RequestContext

    # the registry refuses '' before the handler runs; the handler refuses it on its own too
    with hdb.engine.connect() as conn, conn.begin():
        db = Db(conn, hdb.schema, RequestContext("t", "register-run", {}, hdb.client))
        with pytest.raises(Refused, match="invalid run name '': it must be non-empty text"):
            register_run(db, target="v1/linux", runname="")


def test_run_state_status_commands(hdb, runs):
    hdb("set-run-status", run_id=1, status="FAIL", comment="broken")
    assert hdb("get-run-status", run_id=1) == "FAIL"
    assert hdb("get-run-info", run_id=1)["comment"] == "broken"
    hdb("set-run-state-status", run_id=1, state="COMPLETED", status="PASS")
    assert hdb("get-run-state-status", run_id=1) == {"state": "COMPLETED", "status": "PASS"}
    assert hdb("get-run-state", run_id=1) == "COMPLETED"
    assert hdb("get-run-name-from-id", run_id=3) == "weekly"
    with pytest.raises(Refused):
        hdb("set-run-state-status", run_id=1)
    with pytest.raises(Refused, match="no run with id 77"):
        hdb("set-run-status", run_id=77, status="X")
    with pytest.raises(NotFound):
        hdb("get-run-status", run_id=77)
    hdb.sql("update runs set event_time = 5 where id = 1")
    hdb("update-run-event-time", run_id=1)
    assert hdb("get-run-info", run_id=1)["event_time"] > 5


def test_roll_up_run_from_toplevels(hdb, runs):
    assert hdb("set-state-status-and-roll-up-run", run_id=1) == {"state": "new", "status": "n/a"}  # no tests yet
    hdb("set-state-status-and-roll-up-items", run_id=1, testname="a", state="COMPLETED", status="PASS")
    hdb("set-state-status-and-roll-up-items", run_id=1, testname="b", item_path="i", state="RUNNING", status="n/a")
    assert hdb("set-state-status-and-roll-up-run", run_id=1) == {"state": "RUNNING", "status": "PASS"}
    assert hdb("get-run-state-status", run_id=1) == {"state": "RUNNING", "status": "PASS"}
    hdb("set-state-status-and-roll-up-items", run_id=1, testname="b", item_path="i", state="COMPLETED", status="FAIL")
    hdb("set-state-status-and-roll-up-items", run_id=1, testname="c", state="DELETED", status="n/a")
    assert hdb("set-state-status-and-roll-up-run", run_id=1) == {"state": "COMPLETED", "status": "FAIL"}


def test_run_roll_up_does_not_hide_failures_behind_tests_not_started(hdb, runs):
    for name, state, status in [
        ("f", "COMPLETED", "FAIL"),
        ("k", "KILLED", "KILLED"),
        ("d", "COMPLETED", "DEAD"),
        ("n1", "NOT_STARTED", "n/a"),
        ("n2", "NOT_STARTED", "n/a"),
    ]:
        hdb("set-state-status-and-roll-up-items", run_id=1, testname=name, state=state, status=status)
    assert hdb("set-state-status-and-roll-up-run", run_id=1) == {"state": "NOT_STARTED", "status": "FAIL"}
    assert hdb("get-run-state-status", run_id=1) == {"state": "NOT_STARTED", "status": "FAIL"}


def test_delete_run_removes_steps_and_data_and_revives(hdb, runs):
    t = hdb("register-test", run_id=1, testname="t")
    hdb.sql("insert into test_steps (test_id, stepname, state) values (?, 's', 'start')", t)
    hdb.sql("insert into test_data (test_id, category, variable, value) values (?, 'c', 'v', 1)", t)
    hdb("delete-run", run_id=1)
    assert hdb.sql("select count(*) from test_steps")[0][0] == 0
    assert hdb.sql("select count(*) from test_data")[0][0] == 0
    assert hdb("get-test-info-by-id", test_id=t)["state"] == "DELETED"
    assert hdb("get-run-info", run_id=1)["state"] == "deleted"
    assert 1 not in hdb("get-all-run-ids")
    assert hdb("register-run", target="v1/linux", runname="nightly") == 1
    assert hdb("get-run-info", run_id=1)["state"] == "new"


def test_locked_run_refuses_delete_and_changes_nothing(hdb, runs):
    t = hdb("register-test", run_id=1, testname="t")
    hdb("lock-unlock-run", run_id=1, lock=True, user="alice")
    with pytest.raises(Refused, match="locked"):
        hdb("delete-run", run_id=1)
    assert hdb("get-run-info", run_id=1)["state"] == "locked"
    assert hdb("get-test-info-by-id", test_id=t)["state"] == "NOT_STARTED"
    hdb("lock-unlock-run", run_id=1, unlock=True)
    assert hdb("get-run-info", run_id=1)["state"] == "new"  # the state the lock kept underneath
    hdb("lock-unlock-run", run_id=2)  # neither flag: lock (fail-safe)
    assert hdb("get-run-state", run_id=2) == "locked"
    assert hdb.sql('select "user", args from access_log order by id') == [
        ("alice", "locked 1"),
        ("tester", "unlocked 1"),
        ("tester", "locked 2"),
    ]
    with pytest.raises(Refused, match="not both"):
        hdb("lock-unlock-run", run_id=1, lock=True, unlock=True)


def test_run_statistics(hdb, runs):
    for name, item, state, status in [
        ("a", "", "COMPLETED", "PASS"),
        ("b", "1", "COMPLETED", "FAIL"),
        ("b", "2", "RUNNING", "n/a"),
    ]:
        hdb("set-state-status-and-roll-up-items", run_id=1, testname=name, item_path=item, state=state, status=status)
    hdb("set-state-status-and-roll-up-items", run_id=2, testname="a", state="COMPLETED", status="PASS")
    hdb.sql("update tests set uname = 'host1' where item_path = '' and testname = 'a'")
    raw = hdb("get-raw-run-stats", run_id=1)  # b's toplevel is a placeholder (never ran on a host)
    assert raw == [
        {"state": "COMPLETED", "status": "FAIL", "count": 1},
        {"state": "COMPLETED", "status": "PASS", "count": 1},
        {"state": "RUNNING", "status": "n/a", "count": 1},
    ]
    hdb("update-run-stats", run_id=1)
    assert hdb("get-main-run-stats", run_id=1) == raw
    hdb("update-run-stats", run_id=1, stat=["COMPLETED,PASS,5"])
    assert {r["count"] for r in hdb("get-main-run-stats", run_id=1) if r["status"] == "PASS"} == {5}
    with pytest.raises(Refused, match="STATE,STATUS,COUNT"):
        hdb("update-run-stats", run_id=1, stat=["bad"])
    with pytest.raises(Refused, match=r"--stat ',,-5': COUNT must be a whole number of tests \(0 or more\)"):
        hdb("update-run-stats", run_id=1, stat=[",,-5"])
    assert {r["count"] for r in hdb("get-main-run-stats", run_id=1) if r["status"] == "PASS"} == {5}
    with pytest.raises(NotFound):
        hdb("get-main-run-stats", run_id=4)  # deleted
    stats = hdb("get-run-stats")
    totals = [r for r in stats if r["runname"] == "Totals"]
    assert [(r["netstate"], r["count"]) for r in totals] == [("FAIL", 1), ("PASS", 2), ("RUNNING", 2)]
    assert stats[: len(totals)] == totals
    per_run = [(r["run_id"], r["netstate"], r["count"]) for r in stats[len(totals) :]]
    assert per_run == [(2, "PASS", 1), (1, "FAIL", 1), (1, "PASS", 1), (1, "RUNNING", 2)]


def test_run_and_test_times(hdb, runs):
    a = hdb("register-test", run_id=1, testname="a")
    b = hdb("register-test", run_id=1, testname="b")
    hdb.sql("update tests set event_time = 1000, run_duration = 60 where id = ?", a)
    hdb.sql("update tests set event_time = 1100, run_duration = 200 where id = ?", b)
    assert hdb("get-run-times", runname="night%") == [
        {"runname": "nightly", "runtime_minutes": 5, "target": "v1/linux"}
    ]
    assert hdb("get-test-times", runname="nightly", target="v1/linux") == [
        {"testname": "a", "item_path": "", "run_duration": 60},
        {"testname": "b", "item_path": "", "run_duration": 200},
    ]
    assert hdb("get-test-times", runname="nightly", target="v1/%") == []  # exact target


def test_insert_run(hdb, runs):
    record = {"runname": "copied", "RELEASE": "v9", "PLATFORM": "bsd", "state": "COMPLETED", "status": "PASS"}
    run_id = hdb("insert-run", record=json.dumps(record))
    info = hdb("get-run-info", run_id=run_id)
    assert (info["target"], info["state"], info["status"]) == ("v9/bsd", "COMPLETED", "PASS")
    with pytest.raises(Refused, match="exists already"):
        hdb("insert-run", record=json.dumps(record))
    with pytest.raises(Refused, match="no column"):
        hdb("insert-run", record='{"runname": "x", "bogus": 1}')
    with pytest.raises(Refused, match="not valid JSON"):
        hdb("insert-run", record="{")
    with pytest.raises(Refused, match="no column"):
        hdb("insert-run", record='{"id": 99}')


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"event_time": "yesterday"}, "event_time must be an integer, not 'yesterday'"),
        ({"fail_count": "many"}, "fail_count must be an integer, not 'many'"),
        ({"fail_count": True}, "fail_count must be an integer, not True"),
        ({"event_time": 1.5}, "event_time must be an integer, not 1.5"),
        ({"event_time": 2**70}, "event_time must be an integer"),
        ({"comment": 5}, "comment must be text, not 5"),
        ({"runname": None}, "runname must not be null"),
        ({"runname": ""}, "invalid run name ''"),
        ({"RELEASE": ""}, "leaves RELEASE empty"),
        ({"PLATFORM": "a/b"}, "PLATFORM must be text without '/'"),
    ],
)
def test_insert_run_refuses_values_of_the_wrong_type(hdb, fields, message):
    record = {"runname": "q", "RELEASE": "a", "PLATFORM": "b", **fields}
    with pytest.raises(Refused, match=re.escape(message)):
        hdb("insert-run", record=json.dumps(record))
    assert hdb.sql("select count(*) from runs") == [(0,)]


def test_insert_run_refuses_json_nan_and_keeps_null_keys(hdb):
    with pytest.raises(Refused, match="pass_count must be an integer, not nan"):
        hdb("insert-run", record='{"runname": "q", "RELEASE": "a", "PLATFORM": "b", "pass_count": NaN}')
    run_id = hdb("insert-run", record='{"runname": "q", "RELEASE": "a", "owner": null}')
    assert hdb("get-target", run_id=run_id) == "a/-na-"


# -- the CLI over a real server ------------------------------------------------------------------------------


def test_runs_cli_common_paths(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "nightly")
    area.ok("register-run", "--target", "v1/mac", "--runname", "nightly")
    assert area.ok("get-run-name-from-id", "--run-id", "2").out == "nightly\n"
    assert area.ok("get-num-runs", "--runname", "night%").out == "2\n"
    assert area.ok("get-all-run-ids", "--json").json == [2, 1]
    assert area.ok("get-key-vals", "--run-id", "2").out == "v1\nmac\n"
    area.ok("set-run-status", "--run-id", "1", "--status", "FAIL")
    assert area.ok("get-run-status", "--run-id", "1").out == "FAIL\n"
    area.ok("lock-unlock-run", "--run-id", "1", "--lock", "--user", "ci")
    locked = area.run("delete-run", "--run-id", "1")
    assert locked.code == 4 and "locked" in locked.err
    assert area.ok("get-run-state", "--run-id", "1").out == "locked\n"
    area.ok("lock-unlock-run", "--run-id", "1", "--unlock")
    area.ok("delete-run", "--run-id", "1")
    assert area.ok("get-all-run-ids", "--json").json == [2]
    assert area.run("delete-run", "--run-id", "99").code == 4
    # the Megatest spellings are accepted over the protocol too (see test_misc_family)
    stats = area.ok("get-run-stats", "--json").json
    assert stats == []


def test_delete_run_in_batches(hdb, runs):
    ids = [hdb("register-test", run_id=1, testname=f"t{i}") for i in range(5)]
    for test_id in ids:
        hdb.sql("insert into test_steps (test_id, stepname, state) values (?, 's', 'start')", test_id)
    hdb.sql("update tests set state = 'DELETED' where id = ?", ids[4])  # soft-deleted earlier, steps still there
    assert hdb("delete-run", run_id=1, batch=2) == {"tests": 2, "remaining": 3}
    assert hdb("get-run-state", run_id=1) == "deleted"  # the first request deletes the run; the purge goes on
    assert hdb("delete-run", run_id=1, batch=2) == {"tests": 2, "remaining": 1}
    assert hdb("delete-run", run_id=1, batch=2) == {"tests": 1, "remaining": 0}
    assert hdb("get-run-state", run_id=1) == "deleted"
    assert hdb.sql("select count(*) from test_steps") == [(0,)]
    with pytest.raises(Refused, match="at least 1"):
        hdb("delete-run", run_id=2, batch=0)


def test_delete_run_shows_progress_on_a_terminal(area):
    from conftest import dbtool_argv, execute, query, run_in_pty

    area.ok("register-run", "--target", "v1/linux", "--runname", "big")
    area.ok("server", "stop")
    assert area.wait_no_server()
    rows = [(f"t{i}",) for i in range(4500)]
    execute(area, "insert into tests (run_id, testname, state) values (1, ?, 'COMPLETED')", rows)
    ids = [(i,) for (i,) in query(area, "select id from tests order by id")]
    execute(area, "insert into test_data (test_id, category, variable) values (?, 'c', 'v')", ids)
    code, out = run_in_pty(dbtool_argv("--area", str(area.root), "delete-run", "--run-id", "1"))
    assert code == 0, out
    assert "delete-run [" in out and "4500/4500 tests" in out
    assert area.ok("get-run-state", "--run-id", "1").out == "deleted\n"
    assert query(area, "select count(*) from test_data") == [(0,)]
    assert query(area, "select count(*) from tests where state != 'DELETED'") == [(0,)]
    # not on a terminal: one transaction, nothing printed
    area.ok("register-run", "--target", "v1/mac", "--runname", "small")
    quiet = area.ok("delete-run", "--run-id", "2")
    assert quiet.out == "" and quiet.err == ""
