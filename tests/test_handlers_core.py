"""Handlers on a real SQLite file: runs, tests, roll-ups, events, triggers."""

from __future__ import annotations

import time

import pytest
from dbtool.core.db.schema import SCHEMA_VERSION
from dbtool.core.errors import NotFound, Refused


def test_register_run_revives_deleted_run(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    hdb("set-run-status", run_id=run_id, status="gone")
    hdb("delete-run", run_id=run_id)
    assert hdb("get-runs") == []
    assert hdb("register-run", target="v1/linux", runname="n", state="again") == run_id
    run = hdb("get-run-info", run_id=run_id)
    assert (run["state"], run["status"], run["owner"]) == ("again", "n/a", "tester")
    revived = [(e["data"] or {}).get("revived") for e in hdb.events if e["cmd"] == "register-run"]
    assert revived == [None, True]


def test_init_writes_the_version_vars(hdb):
    assert hdb("get-var", var="MEGATEST_VERSION") == "test-dbtl"  # reference A.10: <version>-<4 chars>
    assert hdb("get-var", var="DBTOOL_VERSION") == "test"
    assert hdb("get-var", var="DBTOOL_SCHEMA") == SCHEMA_VERSION == 5


def test_dbtool_init_writes_megatest_version(area):
    from dbtool.core import __version__

    assert area.ok("get-var", "MEGATEST_VERSION").out == f"{__version__}-dbtl\n"


def test_register_run_contour_does_not_distinguish_runs(hdb):
    a = hdb("register-run", target="v1/linux", runname="n", contour="c1")
    b = hdb("register-run", target="v1/linux", runname="n", contour="c2")
    assert a == b
    assert hdb("register-run", target="v1/mac", runname="n") != a


def test_target_renders_null_keys_and_refuses_wrong_arity(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    hdb.sql('update runs set "PLATFORM"=NULL where id=?', run_id)
    assert hdb("get-target", run_id=run_id) == "v1/-na-"
    with pytest.raises(Refused, match="1 part"):
        hdb("register-run", target="v1", runname="n")
    with pytest.raises(NotFound):
        hdb("get-target", run_id=99)


def test_item_write_creates_toplevel_and_rolls_up(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    a = hdb(
        "set-state-status-and-roll-up-items",
        run_id=run_id,
        testname="t",
        item_path="a",
        state="COMPLETED",
        status="PASS",
    )
    top = hdb("get-test-id", run_id=run_id, testname="t")
    assert hdb("get-test-info-by-id", test_id=top)["state"] == "COMPLETED"
    hdb("set-state-status-and-roll-up-items", run_id=run_id, testname="t", item_path="b", state="KILLED", status="n/a")
    info = hdb("get-test-info-by-id", test_id=top)
    assert (info["state"], info["status"]) == ("KILLED", "PASS")
    # a toplevel's own change does not roll anything
    hdb("test-set-state-status-by-id", test_id=top, state="COMPLETED", status="FAIL")
    assert hdb("get-test-info-by-id", test_id=a)["status"] == "PASS"


def test_unchanged_fields_are_kept(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    t = hdb(
        "set-state-status-and-roll-up-items", run_id=run_id, testname="t", state="RUNNING", status="n/a", comment="c1"
    )
    hdb("test-set-state-status-by-id", test_id=t, status="PASS")
    info = hdb("get-test-info-by-id", test_id=t)
    assert (info["state"], info["status"], info["comment"]) == ("RUNNING", "PASS", "c1")


def test_auto_status_rolls_up_test_data(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    t = hdb("register-test", run_id=run_id, testname="t")
    hdb.sql(
        "insert into test_data (test_id, category, variable, status) "
        "values (?, 'c', 'v1', 'pass'), (?, 'c', 'v2', 'PASS')",
        t,
        t,
    )
    hdb("test-set-state-status-by-id", test_id=t, state="COMPLETED", status="AUTO")
    info = hdb("get-test-info-by-id", test_id=t)
    assert (info["status"], info["pass_count"], info["fail_count"]) == ("PASS", 2, 0)
    hdb.sql("insert into test_data (test_id, category, variable, status) values (?, 'c', 'v3', 'fail')", t)
    hdb("test-set-state-status-by-id", test_id=t, status="AUTO")
    assert hdb("get-test-info-by-id", test_id=t)["status"] == "FAIL"


def test_writes_append_events(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    hdb("set-state-status-and-roll-up-items", run_id=run_id, testname="t", item_path="i", state="RUNNING", status="n/a")
    rows = hdb.sql("select seq, cmd, run_id, testname, item_path, state, status, client from events order by seq")
    assert [r[0] for r in rows] == list(range(1, len(rows) + 1))  # gap-free
    assert rows[0][1:4] == ("register-run", run_id, None)
    assert ("set-state-status-and-roll-up-items", run_id, "t", "i", "RUNNING", "n/a", "tester@testhost:1") in [
        r[1:] for r in rows
    ]
    assert any(r[4] == "" and r[5] == "RUNNING" for r in rows)  # the toplevel's roll-up


def test_last_update_trigger(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    t = hdb("register-test", run_id=run_id, testname="t")
    hdb.sql("update tests set last_update = 5 where id = ?", t)
    with hdb.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("update tests set comment = 'x' where id = " + ("%s" if hdb.pg_schema else "?"), (t,))
    (last,) = hdb.sql("select last_update from tests where id = ?", t)[0]
    assert abs(last - time.time()) < 5


def test_register_test_refuses_bad_names_and_unknown_runs(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    with pytest.raises(Refused, match="no run with id 5"):
        hdb("register-test", run_id=5, testname="t")
    with pytest.raises(Refused, match="invalid test name"):
        hdb("register-test", run_id=run_id, testname="a/b")
    item = hdb("register-test", run_id=run_id, testname="t", item_path="x/y")
    assert hdb("get-test-id", run_id=run_id, testname="t", item_path="x/y") == item
    assert hdb("get-test-id", run_id=run_id, testname="t") != item


def test_deleted_tests_hidden_unless_asked(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="n")
    t = hdb("register-test", run_id=run_id, testname="t")
    hdb("register-test", run_id=run_id, testname="u")
    hdb.sql("update tests set state='DELETED' where id=?", t)
    assert [r["testname"] for r in hdb("get-tests-for-run", run_id=run_id)] == ["u"]
    assert [r["testname"] for r in hdb("get-tests-for-run", run_id=run_id, include_deleted=True)] == ["t", "u"]
    assert [r["testname"] for r in hdb("get-tests-for-run", run_id=run_id, last_update=0)] == ["t", "u"]
    assert hdb("get-test-info-by-id", test_id=t)["state"] == "DELETED"
