"""Steps of a test: one row per (step, state), normally 'start' and 'end' (reference B.4, C.5, C.6, D.4, D.8)."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select
from sqlalchemy.sql import ColumnElement

from ..db.context import Db
from ..errors import NotFound
from .common import emit_for_test, require_test, soft_delete_rows, status_not_deleted


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
    test = require_test(db, test_id, run_id)
    status = "n/a" if status is None else status
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
    emit_for_test(db, test, step_id=step_id, stepname=stepname, step_state=state, step_status=status)


def soft_delete_steps(db: Db, test_id: int) -> int:
    """Mark every step of the test DELETED (hidden from the step readers); returns how many changed."""
    return soft_delete_rows(db, db.t.test_steps, test_id, "delete-steps-for-test", "steps")


def delete_steps_for_test(db: Db, *, test_id: int, run_id: int | None = None) -> None:
    require_test(db, test_id, run_id, deleting=True)
    soft_delete_steps(db, test_id)


def _steps(db: Db, test_id: int, include_deleted: bool, with_comment: bool) -> list[dict]:
    s = db.t.test_steps.c
    query = select(*_step_columns(db, with_comment=with_comment)).where(s.test_id == test_id).order_by(s.id)
    if not include_deleted:
        query = query.where(status_not_deleted(db.t.test_steps))
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
