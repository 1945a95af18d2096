"""Steps of a test: one row per (step, state), normally 'start' and 'end' (reference B.4, C.5, C.6, D.4, D.8)."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.sql import ColumnElement

from ..db.context import Db
from ..errors import NotFound, Refused
from .common import find_test, require_test

DELETED = "DELETED"  # the status of a soft-deleted step


def _step_columns(db: Db, *, with_comment: bool = True) -> list[ColumnElement]:
    """A step record's fields, in order; logfile and comment NULL read as ''."""
    s = db.t.test_steps.c
    columns = [
        s.id,
        s.test_id,
        s.stepname,
        s.state,
        s.status,
        s.event_time,
        func.coalesce(s.logfile, "").label("logfile"),
    ]
    if with_comment:
        columns.append(func.coalesce(s.comment, "").label("comment"))
    return columns


def _not_deleted(db: Db) -> ColumnElement:
    return func.coalesce(db.t.test_steps.c.status, "") != DELETED


def _emit_for_test(db: Db, test: dict, **data: object) -> None:
    """An event about a test's steps; the step's own state and status go in its data, since an
    event's state and status are the test's."""
    db.emit(
        run_id=test["run_id"],
        test_id=test["id"],
        testname=test["testname"],
        item_path=test["item_path"],
        **data,
    )


def teststep_set_status(
    db: Db,
    *,
    test_id: int,
    stepname: str,
    state: str,
    run_id: int | None = None,
    status: str | None = "n/a",
    comment: str | None = "",
    logfile: str | None = "",
) -> None:
    """Record (or replace) the row of one (step, state) with the request's time.

    A replaced row is deleted and inserted again, so it gets a new id as well as the new time.
    """
    test = require_test(db, test_id)
    status = "n/a" if status is None else status
    if not stepname:
        raise Refused("the step name must not be empty; give --stepname NAME")
    if not state:
        raise Refused("the step state must not be empty; give --state start or --state end")
    steps = db.t.test_steps
    db.conn.execute(
        delete(steps).where(steps.c.test_id == test_id, steps.c.stepname == stepname, steps.c.state == state)
    )
    step_id = db.conn.execute(
        insert(steps).values(
            test_id=test_id,
            stepname=stepname,
            state=state,
            status=status,
            event_time=db.now,
            comment=comment or "",
            logfile=logfile or "",
        )
    ).inserted_primary_key[0]
    _emit_for_test(db, test, step_id=step_id, stepname=stepname, step_state=state, step_status=status)


def soft_delete_steps(db: Db, test_id: int) -> int:
    """Mark every step of the test DELETED (hidden from the step readers); returns how many changed.

    Emits one event when any step changed.
    """
    test = find_test(db, test_id)
    steps = db.t.test_steps
    count = db.conn.execute(
        update(steps).where(steps.c.test_id == test_id, _not_deleted(db)).values(status=DELETED)
    ).rowcount
    if count and test is not None:
        _emit_for_test(db, test, cmd="delete-steps-for-test", steps=count)
    return count


def delete_steps_for_test(db: Db, *, test_id: int, run_id: int | None = None) -> None:
    require_test(db, test_id)
    soft_delete_steps(db, test_id)


def _steps(db: Db, test_id: int, include_deleted: bool, with_comment: bool) -> list[dict]:
    s = db.t.test_steps.c
    query = select(*_step_columns(db, with_comment=with_comment)).where(s.test_id == test_id).order_by(s.id)
    if not include_deleted:
        query = query.where(_not_deleted(db))
    return db.records(query)


def get_steps_for_test(db: Db, *, test_id: int, run_id: int | None = None, include_deleted: bool = False) -> list[dict]:
    return _steps(db, test_id, include_deleted, with_comment=True)


def get_steps_data(db: Db, *, test_id: int, run_id: int | None = None, include_deleted: bool = False) -> list[dict]:
    return _steps(db, test_id, include_deleted, with_comment=False)


def get_steps_info_by_id(db: Db, *, step_id: int) -> dict:
    row = db.conn.execute(select(*_step_columns(db)).where(db.t.test_steps.c.id == step_id)).first()
    if row is None:
        raise NotFound(f"no step with id {step_id}; `dbtool get-steps-for-test --test-id ID` lists a test's steps")
    return dict(row._mapping)
