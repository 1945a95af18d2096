"""Tests: registration, state/status with item roll-up, lookups and listings (C.1, C.3, D.2, D.6, D.10)."""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select, update

from ..db.context import Db
from ..db.dialect import insert_ignore
from ..errors import NotFound, Refused
from ..rules.rollup import merge_item, roll_up
from .common import lookup_test, require_run, require_test, test_record, testpatt_filter

EVENT_TIME_RESET_STATES = ("LAUNCHED", "REMOTEHOSTSTART")


def _ensure_test(db: Db, run_id: int, testname: str, item_path: str) -> int:
    """Insert-or-ignore a test row (NOT_STARTED, n/a) and return its id; emits when it is new."""
    tests = db.t.tests
    row = {
        "run_id": run_id,
        "testname": testname,
        "item_path": item_path,
        "state": "NOT_STARTED",
        "status": "n/a",
        "event_time": db.now,
    }
    inserted = db.conn.execute(insert_ignore(db.dialect, tests, row, ("run_id", "testname", "item_path")))
    test_id = db.conn.execute(
        select(tests.c.id).where(tests.c.run_id == run_id, tests.c.testname == testname, tests.c.item_path == item_path)
    ).scalar_one()
    if inserted.rowcount:
        db.emit(
            cmd="register-test",
            run_id=run_id,
            test_id=test_id,
            testname=testname,
            item_path=item_path,
            state="NOT_STARTED",
            status="n/a",
        )
    return test_id


def _check_testname(testname: str) -> None:
    if not testname or "/" in testname:
        raise Refused(f"invalid test name {testname!r}: it must be non-empty and contain no '/'")


def register_test(db: Db, *, run_id: int, testname: str, item_path: str = "") -> int:
    require_run(db, run_id)
    _check_testname(testname)
    if item_path:
        _ensure_test(db, run_id, testname, "")
    return _ensure_test(db, run_id, testname, item_path)


def _set_fields(db: Db, test_id: int, values: dict) -> None:
    if values:
        db.conn.execute(update(db.t.tests).where(db.t.tests.c.id == test_id).values(values))


def apply_state_status(
    db: Db, test: dict, state: str | None, status: str | None, comment: str | None, *, roll: bool = True
) -> dict:
    """C.1 steps 2-4 on an existing test row: set the fields, roll items into the toplevel, AUTO status.

    Returns the test's new (state, status) and, for an item, the toplevel's.
    """
    changes: dict = {}
    if state is not None:
        changes["state"] = state
        if state in EVENT_TIME_RESET_STATES:
            changes["event_time"] = db.now
    if status is not None:
        changes["status"] = status
    if comment is not None:
        changes["comment"] = comment
    _set_fields(db, test["id"], changes)
    new_state = state if state is not None else test["state"]
    new_status = status if status is not None else test["status"]
    db.emit(
        run_id=test["run_id"],
        test_id=test["id"],
        testname=test["testname"],
        item_path=test["item_path"],
        state=new_state,
        status=new_status,
    )
    result = {"test_id": test["id"], "state": new_state, "status": new_status}
    if roll and test["item_path"]:
        result["toplevel"] = roll_up_items(
            db, test["run_id"], test["testname"], test["item_path"], new_state, new_status
        )
    if status == "AUTO":
        from .testdata import rollup_test_data

        rollup_test_data(db, test["id"])
    return result


def roll_up_items(db: Db, run_id: int, testname: str, item_path: str, state: str, status: str) -> dict:
    """Recompute the toplevel's state/status from its items after one item changed (C.1 step 3b-h)."""
    tests = db.t.tests.c
    groups = db.conn.execute(
        select(tests.state, tests.status, func.count())
        .where(
            tests.run_id == run_id,
            tests.testname == testname,
            tests.item_path != "",
            tests.item_path != item_path,
        )
        .group_by(tests.state, tests.status)
    ).all()
    top_state, top_status = roll_up(merge_item(groups, state, status), state, status)
    top_id = _ensure_test(db, run_id, testname, "")
    current = db.conn.execute(select(tests.state, tests.status).where(tests.id == top_id)).one()
    if tuple(current) != (top_state, top_status):
        _set_fields(db, top_id, {"state": top_state, "status": top_status})
        db.emit(
            run_id=run_id,
            test_id=top_id,
            testname=testname,
            item_path="",
            state=top_state,
            status=top_status,
            rollup=True,
        )
    return {"test_id": top_id, "state": top_state, "status": top_status}


def set_state_status_and_roll_up_items(
    db: Db,
    *,
    run_id: int,
    testname: str,
    item_path: str = "",
    state: str | None = None,
    status: str | None = None,
    comment: str | None = None,
) -> int:
    require_run(db, run_id)
    _check_testname(testname)
    test_id = _ensure_test(db, run_id, testname, item_path)
    test = require_test(db, test_id)
    apply_state_status(db, test, state, status, comment)
    return test_id


def test_set_state_status_by_id(
    db: Db,
    *,
    test_id: int,
    run_id: int | None = None,
    state: str | None = None,
    status: str | None = None,
    comment: str | None = None,
) -> None:
    apply_state_status(db, require_test(db, test_id), state, status, comment)


def get_test_id(db: Db, *, run_id: int, testname: str, item_path: str = "") -> int:
    t = db.t.tests.c
    test_id = db.conn.execute(
        select(t.id).where(t.run_id == run_id, t.testname == testname, t.item_path == item_path)
    ).scalar()
    if test_id is None:
        where = f"{testname}/{item_path}" if item_path else testname
        raise NotFound(f"no test {where!r} in run {run_id}")
    return test_id


def get_test_info_by_id(db: Db, *, test_id: int, run_id: int | None = None) -> dict:
    return lookup_test(db, test_id)


def _column(db: Db, name: str, what: str):
    column = db.t.tests.c.get(name)
    if column is None:
        raise Refused(f"unknown {what} {name!r}; the tests table has: {', '.join(db.t.tests.c.keys())}")
    return column


def state_status_filter(db: Db, states: list[str] | None, statuses: list[str] | None, not_in: bool, mode: str):
    """The states/statuses selection of D.10 (the dashboard OR-form parenthesised, SPEC 9.5)."""
    t = db.t.tests.c
    if states and statuses:
        if mode == "dashboard":
            if not_in:
                return or_(
                    and_(t.state == "COMPLETED", t.status.not_in(statuses)),
                    and_(t.state != "COMPLETED", t.state.not_in(states)),
                )
            return or_(
                and_(t.state == "COMPLETED", t.status.in_(statuses)),
                and_(t.state.not_in(["COMPLETED", "DELETED"]), t.state.in_(states)),
            )
        if not_in:
            return and_(t.state.not_in(states), t.status.not_in(statuses))
        return and_(t.state.in_(states), t.status.in_(statuses))
    if states:
        return t.state.not_in(states) if not_in else t.state.in_(states)
    if statuses:
        return t.status.not_in(statuses) if not_in else t.status.in_(statuses)
    return None


def get_tests_for_run(
    db: Db,
    *,
    run_id: int,
    testpatt: str | None = None,
    states: list[str] | None = None,
    statuses: list[str] | None = None,
    not_in: bool = False,
    mode: str = "normal",
    sort_by: str = "id",
    sort_order: str = "asc",
    limit: int | None = None,
    offset: int = 0,
    last_update: int | None = None,
    fields: list[str] | None = None,
    include_deleted: bool = False,
) -> list[dict]:
    t = db.t.tests.c
    columns = [_column(db, f, "field") for f in fields] if fields else list(db.t.tests.c)
    query = select(*columns).where(t.run_id == run_id)
    if last_update is not None:
        query = query.where(t.last_update >= last_update)
    elif not include_deleted:
        query = query.where(t.state != "DELETED")
    if testpatt:
        query = query.where(testpatt_filter(db, testpatt))
    selection = state_status_filter(db, states, statuses, not_in, mode)
    if selection is not None:
        query = query.where(selection)
    descending = sort_order == "desc"

    def order(col):
        return col.desc() if descending else col.asc()

    if sort_by == "rundir":
        query = query.order_by(order(func.length(t.rundir)), t.id)
    elif sort_by == "testname":
        query = query.order_by(order(t.testname), t.item_path, t.id)
    elif sort_by == "statestatus":
        query = query.order_by(order(t.state), t.status, t.id)
    else:
        query = query.order_by(order(_column(db, sort_by, "sort field")), t.id)
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return [test_record(r) for r in db.conn.execute(query)]
