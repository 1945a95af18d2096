"""A run's lock and its deletion: kept apart from its state, so that nothing but their own commands
changes them (SPEC 9.2), and a deletion that is all-or-nothing however it is interrupted."""

from __future__ import annotations

import json

import pytest
from dbtool.core.errors import Refused

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)

UNLOCK_HINT = "dbtool lock-unlock-run --run-id 1 --unlock"
REVIVE_HINT = "register-run --target v1/linux --runname nightly"


@pytest.fixture
def run(hdb):
    """Run 1 (v1/linux nightly) with a toplevel test 'a' and an iterated test 'b' (item 'x')."""
    run_id = hdb("register-run", target="v1/linux", runname="nightly")
    hdb("set-state-status-and-roll-up-items", run_id=run_id, testname="a", state="COMPLETED", status="PASS")
    hdb("set-state-status-and-roll-up-items", run_id=run_id, testname="b", item_path="x", state="RUNNING", status="n/a")
    return run_id


def _test_id(hdb, run_id: int, testname: str, item_path: str = "") -> int:
    return hdb("get-test-id", run_id=run_id, testname=testname, item_path=item_path)


# -- locks ----------------------------------------------------------------------------------------------


def test_lock_survives_roll_ups_and_status_writes(hdb, run):
    hdb("lock-unlock-run", run_id=run, lock=True, user="alice")
    hdb("set-state-status-and-roll-up-items", run_id=run, testname="c", state="COMPLETED", status="FAIL")
    hdb("set-state-status-and-roll-up-run", run_id=run)
    hdb("set-run-status", run_id=run, status="WARN")
    hdb("set-run-state-status", run_id=run, state="COMPLETED")
    info = hdb("get-run-info", run_id=run)
    assert (info["state"], info["status"], info["locked_by"]) == ("locked", "WARN", "alice")
    assert isinstance(info["locked_at"], int)
    assert hdb("get-run-state", run_id=run) == "locked"
    assert [r["state"] for r in hdb("get-runs")] == ["locked"]
    hdb("lock-unlock-run", run_id=run, unlock=True)
    info = hdb("get-run-info", run_id=run)
    assert (info["state"], info["locked_by"], info["locked_at"]) == ("COMPLETED", None, None)  # the state kept under it


def test_locked_run_refuses_delete_run_naming_who_when_and_how_to_unlock(hdb, run):
    hdb("lock-unlock-run", run_id=run, lock=True, user="alice")
    hdb("set-state-status-and-roll-up-run", run_id=run)  # a roll-up does not clear the lock
    with pytest.raises(Refused, match=r"run 1 is locked by alice since .*; .*" + UNLOCK_HINT):
        hdb("delete-run", run_id=run)
    assert hdb("get-run-state", run_id=run) == "locked"
    assert hdb("get-test-info-by-id", test_id=_test_id(hdb, run, "a"))["state"] == "COMPLETED"


@pytest.mark.parametrize(
    ("cmd", "params"),
    [
        ("delete-test-records", {}),
        ("delete-steps-for-test", {}),
        ("general-call", {"stmt": "delete-test-step-records"}),
        ("general-call", {"stmt": "delete-test-data-records"}),
    ],
)
def test_locked_run_refuses_deleting_its_tests(hdb, run, cmd, params):
    a = _test_id(hdb, run, "a")
    hdb("teststep-set-status", test_id=a, stepname="s", state="start")
    hdb("lock-unlock-run", run_id=run, user="alice")
    if cmd == "general-call":
        params = {**params, "args": [str(a)]}
    else:
        params = {"test_id": a}
    with pytest.raises(Refused, match=UNLOCK_HINT):
        hdb(cmd, **params)
    assert hdb("get-test-info-by-id", test_id=a)["state"] == "COMPLETED"
    assert [s["status"] for s in hdb("get-steps-for-test", test_id=a)] == ["n/a"]


def test_bulk_deletions_skip_the_tests_of_locked_runs(hdb, run):
    other = hdb("register-run", target="v1/mac", runname="nightly")
    hdb("set-state-status-and-roll-up-items", run_id=other, testname="a", state="COMPLETED", status="PASS")
    hdb("lock-unlock-run", run_id=run, user="alice")
    hdb("general-call", stmt="delete-tests-in-state", args=["COMPLETED"])
    assert hdb("get-test-info-by-id", test_id=_test_id(hdb, run, "a"))["state"] == "COMPLETED"
    assert hdb("get-test-info-by-id", test_id=_test_id(hdb, other, "a"))["state"] == "DELETED"
    hdb("set-state-status-and-roll-up-items", run_id=run, testname="gone", state="DELETED", status="n/a")
    hdb.sql("update tests set event_time = 0 where state = 'DELETED'")
    assert hdb("delete-old-deleted-test-records") == 1  # run 2's test; not the locked run's
    assert hdb.sql("select run_id, testname from tests where state = 'DELETED'") == [(run, "gone")]


def test_status_writes_and_test_writes_are_accepted_while_locked(hdb, run):
    hdb("lock-unlock-run", run_id=run)
    a = _test_id(hdb, run, "a")
    hdb("test-set-state-status-by-id", test_id=a, state="COMPLETED", status="FAIL")
    hdb("csv-to-test-data", test_id=a, csv="c,v,1,1,0")
    assert hdb("get-test-info-by-id", test_id=a)["status"] == "FAIL"


# -- deletions --------------------------------------------------------------------------------------------


def test_deleted_run_is_found_by_id_and_hidden_from_lists(hdb, run):
    hdb("delete-run", run_id=run)
    info = hdb("get-run-info", run_id=run)
    assert info["state"] == "deleted" and isinstance(info["deleted_at"], int)
    assert hdb("get-runs") == [] and hdb("get-all-run-ids") == [] and hdb("get-num-runs") == 0
    assert [r["id"] for r in hdb("get-runs", include_deleted=True)] == [run]


def _test_writes(a: int, run_id: int) -> list[tuple[str, dict]]:
    job = {"run_id": run_id, "testname": "a"}
    return [
        ("register-test", {"run_id": run_id, "testname": "new"}),
        ("set-state-status-and-roll-up-items", {**job, "state": "RUNNING"}),
        ("test-set-state-status-by-id", {"test_id": a, "state": "RUNNING"}),
        ("test-set-state-status", {"test_id": a, "state": "RUNNING"}),
        ("csv-to-test-data", {"test_id": a, "csv": "c,v,1"}),
        ("teststep-set-status", {"test_id": a, "stepname": "s", "state": "start"}),
        ("test-data-rollup", {"test_id": a}),
        ("test-set-top-process-pid", {"test_id": a, "pid": 5}),
        ("test-set-archive-block-id", {"test_id": a, "block_id": 0}),
        ("test-add-output-file", {"test_id": a, "path": "/x/log"}),
        ("insert-test", {"run_id": run_id, "record": json.dumps({"testname": "ins"})}),
        ("exec-begin", {**job, "host": "h", "pid": 1}),
        ("exec-heartbeat", job),
        ("exec-end", {**job, "exit_code": 0}),
        ("exec-step", {**job, "stepname": "s", "state": "start"}),
        ("set-tests-state-status", {"run_id": run_id, "testnames": ["a"], "new_state": "RUNNING"}),
        ("top-test-set-per-pf-counts", {"run_id": run_id, "testname": "b"}),
        ("update-pass-fail-counts", {"run_id": run_id, "testname": "b"}),
        ("general-call", {"stmt": "set-test-state", "args": ["RUNNING", str(a)]}),
        ("general-call", {"stmt": "top-test-set-running", "args": ["a", str(run_id)]}),
        ("mark-incomplete", {"run_id": run_id}),
    ]


def test_deleted_run_refuses_every_test_write_and_says_how_to_revive_it(hdb, run):
    a = _test_id(hdb, run, "a")
    hdb("delete-run", run_id=run)
    before = hdb.sql("select * from tests order by id")
    for cmd, params in _test_writes(a, run):
        with pytest.raises(Refused, match=f"run 1 is deleted.*{REVIVE_HINT}"):
            hdb(cmd, **params)
    assert hdb.sql("select * from tests order by id") == before
    assert hdb.sql("select count(*) from test_steps") == hdb.sql("select count(*) from test_data") == [(0,)]


@pytest.mark.parametrize(
    ("cmd", "params"),
    [
        ("set-run-status", {"status": "PASS"}),
        ("set-run-state-status", {"state": "COMPLETED"}),
        ("set-state-status-and-roll-up-run", {}),
        ("update-run-event-time", {}),
        ("update-run-stats", {}),
        ("lock-unlock-run", {"lock": True}),
        ("lock-unlock-run", {"unlock": True}),
    ],
)
def test_run_level_writes_do_not_bring_a_deleted_run_back(hdb, run, cmd, params):
    hdb("delete-run", run_id=run)
    with pytest.raises(Refused, match=f"run 1 is deleted.*{REVIVE_HINT}"):
        hdb(cmd, run_id=run, **params)
    assert hdb("get-run-state", run_id=run) == "deleted"
    assert hdb("get-all-run-ids") == []


def test_only_register_run_of_the_same_target_and_name_revives(hdb, run):
    hdb("set-run-status", run_id=run, status="FAIL")
    hdb("delete-run", run_id=run)
    assert hdb("register-run", target="v1/mac", runname="nightly") != run
    assert hdb("get-run-state", run_id=run) == "deleted"
    hdb.sql("update runs set event_time = 5 where id = ?", run)
    assert hdb("register-run", target="v1/linux", runname="nightly", state="again") == run
    info = hdb("get-run-info", run_id=run)
    assert (info["state"], info["status"], info["deleted_at"]) == ("again", "n/a", None)
    assert info["event_time"] > 5
    assert run in hdb("get-all-run-ids")
    hdb("register-test", run_id=run, testname="fresh")  # writable again


def test_dead_job_scan_leaves_deleted_runs_alone(hdb, run):
    hdb("delete-run", run_id=run)
    hdb.sql("update tests set state = 'RUNNING', event_time = 0 where run_id = ?", run)  # e.g. left by another tool
    assert hdb("have-incompletes") is False
    assert hdb("mark-incomplete") == []
    assert {r[0] for r in hdb.sql("select state from tests")} == {"RUNNING"}
    assert hdb("get-run-state", run_id=run) == "deleted"


# -- delete-run is all-or-nothing -------------------------------------------------------------------------


@pytest.fixture
def big_run(hdb):
    """Run 1 with five tests, each with a step and a data row."""
    run_id = hdb("register-run", target="v1/linux", runname="nightly")
    for i in range(5):
        t = hdb("register-test", run_id=run_id, testname=f"t{i}")
        hdb("teststep-set-status", test_id=t, stepname="s", state="start")
        hdb("csv-to-test-data", test_id=t, csv="c,v,1")
    return run_id


def test_the_first_batch_deletes_the_whole_run_and_a_second_delete_run_finishes_the_purge(hdb, big_run):
    assert hdb("delete-run", run_id=big_run, batch=1) == {"tests": 1, "remaining": 4}
    # as if the client were killed here: the run is deleted and hidden, its tests too
    assert hdb("get-run-state", run_id=big_run) == "deleted"
    assert hdb("get-runs") == [] and hdb("get-tests-for-run", run_id=big_run) == []
    assert {r[0] for r in hdb.sql("select state from tests")} == {"DELETED"}
    with pytest.raises(Refused, match="is deleted"):
        hdb("register-test", run_id=big_run, testname="late")
    assert hdb.sql("select count(*) from test_steps") == [(4,)]
    assert hdb("delete-run", run_id=big_run) is None  # finishes what was left
    assert hdb.sql("select count(*) from test_steps") == hdb.sql("select count(*) from test_data") == [(0,)]
    assert hdb("delete-run", run_id=big_run) is None  # nothing left: a no-op success
    assert hdb("delete-run", run_id=big_run, batch=2) == {"tests": 0, "remaining": 0}
    assert [e["state"] for e in hdb.events if e["cmd"] == "delete-run"] == ["deleted", None]


def test_delete_run_in_batches_to_the_end(hdb, big_run):
    assert hdb("delete-run", run_id=big_run, batch=2) == {"tests": 2, "remaining": 3}
    assert hdb("delete-run", run_id=big_run, batch=2) == {"tests": 2, "remaining": 1}
    assert hdb("delete-run", run_id=big_run, batch=2) == {"tests": 1, "remaining": 0}
    assert hdb.sql("select count(*) from test_data") == [(0,)]
    assert hdb("get-run-state", run_id=big_run) == "deleted"


def test_delete_run_interrupted_is_finished_by_the_next_one_over_the_cli(area):
    from conftest import execute, query

    area.ok("register-run", "--target", "v1/linux", "--runname", "big")
    area.ok("server", "stop")
    assert area.wait_no_server()
    execute(area, "insert into tests (run_id, testname) values (1, ?)", [(f"t{i}",) for i in range(3000)])
    ids = [(i,) for (i,) in query(area, "select id from tests order by id")]
    execute(area, "insert into test_data (test_id, variable) values (?, 'v')", ids)
    # the first batch, as the terminal driver sends it; then the client is gone
    first = area.ok("delete-run", "--run-id", "1", "--batch", "1000", "--json").json
    assert first == {"tests": 1000, "remaining": 2000}
    assert area.ok("get-run-state", "--run-id", "1").out == "deleted\n"
    assert area.ok("get-all-run-ids", "--json").json == []
    assert area.ok("get-tests-for-run", "--run-id", "1", "--json").json == []
    area.ok("delete-run", "--run-id", "1")
    assert query(area, "select count(*) from test_data") == [(0,)]
    assert area.ok("delete-run", "--run-id", "1").out == ""


# -- areas made before the lock and deletion had their own fields ------------------------------------------


def test_create_schema_migrates_an_old_area(hdb):
    from dbtool.core.db.engine import create_schema
    from dbtool.core.db.schema import SCHEMA_VERSION

    for name in ("v1/linux", "v1/mac", "v2/linux"):
        hdb("register-run", target=name, runname="nightly")
    for column in ("locked_by", "locked_at", "deleted_at"):
        hdb.sql(f"alter table runs drop column {column}")
    hdb.sql("update runs set state = 'locked' where id in (1, 2)")
    hdb.sql("update runs set state = 'deleted', last_update = 77 where id = 3")
    hdb.sql('insert into access_log ("user", accessed, args) values (?, 10, ?), (?, 20, ?)', "bob", "locked 1", "eve",
            "locked 12")  # fmt: skip
    hdb.sql("update metadat set val = '1' where var = 'DBTOOL_SCHEMA'")
    with hdb.engine.connect() as conn, conn.begin():
        create_schema(conn, ["RELEASE", "PLATFORM"], "test")
    rows = hdb.sql("select id, state, locked_by, locked_at, deleted_at is not null from runs order by id")
    assert rows[0] == (1, "unlocked", "bob", 10, 0)  # the lock's own row in the access log
    assert rows[1][:3] == (2, "unlocked", "") and rows[1][3] > 0 and rows[1][4] == 0  # no row: '' since now
    assert rows[2][1:] == ("deleted", None, None, 1)
    assert hdb("get-run-state", run_id=1) == "locked"
    assert hdb("get-all-run-ids") == [2, 1]
    hdb("lock-unlock-run", run_id=1, unlock=True)
    assert hdb("get-run-state", run_id=1) == "unlocked"  # what Megatest's unlock wrote
    assert hdb("get-var", var="DBTOOL_SCHEMA") == SCHEMA_VERSION == 5  # (schema 1 → 2 → 3 → 4 → 5 in one go)
    with hdb.engine.connect() as conn, conn.begin():  # idempotent
        create_schema(conn, ["RELEASE", "PLATFORM"], "test")
    assert hdb.sql("select count(*) from runs where locked_by is not null") == [(1,)]


def test_a_read_on_an_area_of_an_older_dbtool_upgrades_it_through_a_server(area):
    """An area made before the lock and deletion fields: a read with no server cannot upgrade it
    (it is read-only), so it starts the server that does, and is answered by it."""
    from conftest import execute

    area.ok("register-run", "--target", "v1/linux", "--runname", "old")
    area.ok("server", "stop")
    assert area.wait_no_server()
    for column in ("locked_by", "locked_at", "deleted_at"):
        execute(area, f"alter table runs drop column {column}")
    execute(area, "update metadat set val = '1' where var = 'DBTOOL_SCHEMA'")
    runs = area.ok("get-runs", "--json").json
    assert [r["runname"] for r in runs] == ["old"] and "deleted_at" in runs[0]
    assert area.server_pids()  # the server that upgraded the area
    from dbtool.core.db.schema import SCHEMA_VERSION

    assert area.ok("get-var", "DBTOOL_SCHEMA").out == f"{SCHEMA_VERSION}\n"
