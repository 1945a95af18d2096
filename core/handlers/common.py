"""Helpers shared by handler families: lookups that refuse politely, records, pattern filters."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Column, Float, Integer, Table, and_, bindparam, case, false, func, literal, or_, select, update
from sqlalchemy.sql import ColumnElement

from ..db.context import Db
from ..db.dialect import glob, like
from ..db.schema import NumberOrText
from ..errors import NotFound, Refused
from ..rules.names import bad_key_values, bad_run_name, bad_test_name
from ..rules.patterns import GLOB, field_patterns, parse_testpatt
from ..rules.records import INTEGER, NUMBER_OR_TEXT, REAL, TEXT, bad_value

NA = "-na-"  # how a NULL key value renders in a target (reference A.17)
DELETED = "DELETED"  # the status of a soft-deleted step or data row


# -- runs ---------------------------------------------------------------------------------------


RUN_DELETED, RUN_LOCKED = "deleted", "locked"  # the states a deleted / locked run reports (reference B.3)


def run_columns(db: Db) -> list[ColumnElement]:
    """The columns of a run record, in the order records show them."""
    r = db.t.runs.c
    return [
        r.id,
        r.runname,
        target_expr(db).label("target"),
        *db.t.key_columns,
        run_state(db).label("state"),
        r.status,
        r.owner,
        r.event_time,
        r.comment,
        r.contour,
        r.fail_count,
        r.pass_count,
        r.last_update,
        r.locked_by,
        r.locked_at,
        r.deleted_at,
    ]


def run_state(db: Db) -> ColumnElement:
    """The state a run reports: 'deleted' or 'locked' while it is, else its own (rolled-up) state,
    which a lock keeps underneath and gives back on unlock."""
    r = db.t.runs.c
    return case((r.deleted_at.is_not(None), RUN_DELETED), (r.locked_by.is_not(None), RUN_LOCKED), else_=r.state)


def target_expr(db: Db) -> ColumnElement:
    """SQL for a run's target: key values joined by '/', NULL shown as -na-."""
    parts = [func.coalesce(col, NA) for col in db.t.key_columns]
    expr = parts[0]
    for part in parts[1:]:
        expr = expr + literal("/") + part
    return expr


def find_run(db: Db, run_id: int) -> dict | None:
    key = ("find_run", tuple(db.keys))
    return db.fast.one(key, lambda: select(*run_columns(db)).where(db.t.runs.c.id == bindparam("id")), {"id": run_id})


def require_run(db: Db, run_id: int) -> dict:
    """The run a write refers to. Refused (exit 4): an unknown id, and a deleted run (nothing is
    written into it until register-run revives it)."""
    run = find_run(db, run_id)
    if run is None:
        raise Refused(f"no run with id {run_id}; `dbtool get-runs` lists the runs")
    refuse_changes(run)
    return run


def refuse_changes(run: dict, *, deleting: bool = False) -> None:
    """Refuse a write into a deleted run, and a deletion in a locked one (a run record, or the
    lifecycle fields of ``run_lifecycle``)."""
    if run["deleted_at"] is not None:
        raise Refused(
            f"run {run['id']} is deleted (since {_when(run['deleted_at'])}), so nothing can be written to it; "
            f"`dbtool register-run --target {run['target']} --runname {run['runname']}` revives it"
        )
    if deleting:
        refuse_if_locked(run)


def refuse_if_locked(run: dict) -> None:
    """Refuse a deletion in a locked run, saying who locked it, when, and how to unlock it."""
    if run["locked_by"] is not None:
        who = f"by {run['locked_by']} " if run["locked_by"] else ""
        raise Refused(
            f"run {run['id']} is locked {who}since {_when(run['locked_at'])}, so nothing of it can be deleted; "
            f"unlock it first with `dbtool lock-unlock-run --run-id {run['id']} --unlock`"
        )


def _when(seconds: int | None) -> str:
    return "an unknown time" if seconds is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def run_lifecycle(db: Db, run_id: int) -> dict | None:
    """A run's id, name, target and lock/deletion fields (None when there is no such run)."""
    r = db.t.runs.c

    def build():
        columns = [r.id, r.runname, target_expr(db).label("target"), r.locked_by, r.locked_at, r.deleted_at]
        return select(*columns).where(r.id == bindparam("id"))

    return db.fast.one(("run_lifecycle", tuple(db.keys)), build, {"id": run_id})


def deleted_run_ids(db: Db):
    """SELECT of the ids of the deleted runs."""
    return select(db.t.runs.c.id).where(db.t.runs.c.deleted_at.is_not(None))


def locked_run_ids(db: Db):
    """SELECT of the ids of the locked runs (whose tests a bulk deletion leaves alone, as Megatest
    skips locked runs)."""
    return select(db.t.runs.c.id).where(db.t.runs.c.locked_by.is_not(None))


def lookup_run(db: Db, run_id: int) -> dict:
    """The run a read asks for; an unknown id is "not found" (exit 1)."""
    run = find_run(db, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    return run


def not_deleted_run(db: Db) -> ColumnElement:
    return db.t.runs.c.deleted_at.is_(None)


def split_target(db: Db, target: str) -> list[str]:
    """A target's key values, in key order; the number of parts must match the keys."""
    parts = target.split("/")
    if len(parts) != len(db.keys):
        raise Refused(
            f"target {target!r} has {len(parts)} part(s) but the area's keys are "
            f"{'/'.join(db.keys)} ({len(db.keys)}); give one value per key, joined by '/'"
        )
    problem = bad_key_values(db.keys, parts)
    if problem:
        raise Refused(f"target {target!r} {problem} ({'/'.join(db.keys)})")
    return parts


# -- whole records (replication) ------------------------------------------------------------------------


def parse_record(text: str, columns: list[Column], what: str, not_null: tuple[str, ...] = ()) -> dict:
    """A --record JSON object: only the given columns, each value of its column's type
    (rules/records.py), NULL only where the column takes it."""
    try:
        record = json.loads(text)
    except ValueError as err:
        raise Refused(f"--record is not valid JSON: {err}") from None
    if not isinstance(record, dict) or not record:
        raise Refused("--record must be a non-empty JSON object of column: value")
    by_name = {c.name: c for c in columns}
    unknown = sorted(set(record) - set(by_name))
    if unknown:
        raise Refused(f"{what} has no column(s) {', '.join(unknown)}; allowed: {', '.join(by_name)}")
    for name, value in record.items():
        problem = bad_value(name, column_kind(by_name[name]), value, nullable=name not in not_null)
        if problem:
            raise Refused(f"--record: {problem}")
    return record


def column_kind(column: Column) -> str:
    """The kind of values a column holds, as rules/records.py names them."""
    if isinstance(column.type, NumberOrText):
        return NUMBER_OR_TEXT
    if isinstance(column.type, Integer):
        return INTEGER
    if isinstance(column.type, Float):  # REAL
        return REAL
    return TEXT


# -- tests --------------------------------------------------------------------------------------


def test_record(row: Any) -> dict:
    return dict(row._mapping)


def find_test(db: Db, test_id: int) -> dict | None:
    tests = db.t.tests
    return db.fast.one("find_test", lambda: select(tests).where(tests.c.id == bindparam("id")), {"id": test_id})


def require_test(db: Db, test_id: int, run_id: int | None = None, *, deleting: bool = False) -> dict:
    """The test a write refers to. Refused (exit 4): an unknown id; a ``run_id`` given (the
    --run-id a command takes for compatibility) that is not the test's run; a test of a deleted
    run; for a deletion (``deleting``), a test of a locked run; a test open for another job."""
    test = find_test(db, test_id)
    if test is None:
        raise Refused(f"no test with id {test_id}; `dbtool get-tests-for-run --run-id N` lists a run's tests")
    if run_id is not None and run_id != test["run_id"]:
        raise Refused(
            f"test {test_id} belongs to run {test['run_id']}, not run {run_id}; "
            "give the test's own run id, or leave --run-id out"
        )
    run = run_lifecycle(db, test["run_id"])
    if run is not None:
        refuse_changes(run, deleting=deleting)
    if db.open_tests:  # a test open for one job: only that job writes it
        db.guard_test(test_id)
    return test


def check_testname(testname: object) -> None:
    """Refuse (exit 4) a name no test can have (rules/names.py)."""
    problem = bad_test_name(testname)
    if problem:
        raise Refused(problem)


def check_runname(runname: object) -> None:
    problem = bad_run_name(runname)
    if problem:
        raise Refused(problem)


def set_test_fields(db: Db, test_id: int, values: dict) -> None:
    """Set some columns of one test row (a prepared statement per set of column names)."""
    if not values:
        return
    tests = db.t.tests
    names = tuple(sorted(values))

    def build():
        return update(tests).where(tests.c.id == bindparam("test_id")).values({n: bindparam(f"v_{n}") for n in names})

    db.fast.execute(("set_fields", names), build, {"test_id": test_id, **{f"v_{n}": values[n] for n in names}})


def lookup_test(db: Db, test_id: int) -> dict:
    test = find_test(db, test_id)
    if test is None:
        raise NotFound(f"no test with id {test_id}")
    return test


# -- pattern filters (reference C.15) ---------------------------------------------------------------


def pattern_cond(db: Db, column: ColumnElement, kind: str, pattern: str) -> ColumnElement:
    """One pattern element: GLOB (case-sensitive) or LIKE (case-insensitive)."""
    return glob(db.dialect, column, pattern) if kind == GLOB else like(db.dialect, column, pattern)


def field_filter(db: Db, column: ColumnElement, pattern: str) -> ColumnElement:
    """A field pattern list as one parenthesised OR of LIKE/GLOB conditions."""
    return or_(*(pattern_cond(db, column, kind, element) for kind, element in field_patterns(pattern)))


def testpatt_filter(db: Db, testpatt: str) -> ColumnElement:
    """A test pattern as SQL: OR of (testname cond AND item cond); an empty pattern matches nothing."""
    t = db.t.tests.c
    conditions = []
    for (t_kind, t_patt), item in parse_testpatt(testpatt):
        test_cond = pattern_cond(db, t.testname, t_kind, t_patt)
        conditions.append(test_cond if item is None else and_(test_cond, pattern_cond(db, t.item_path, *item)))
    return or_(*conditions) if conditions else false()


# -- a test's steps and data ------------------------------------------------------------------------


def emit_for_test(db: Db, test: dict, **data: object) -> None:
    """An event about a test: its ids and names, plus ``state``/``status`` when given (they are the
    test's, so a step's own go in the data) and the rest as the event's data."""
    db.emit(run_id=test["run_id"], test_id=test["id"], testname=test["testname"], item_path=test["item_path"], **data)


def status_not_deleted(table: Table) -> ColumnElement:
    """Rows of a steps or data table that are not soft-deleted (a NULL status counts as live)."""
    return func.coalesce(table.c.status, "") != DELETED


def soft_delete_rows(db: Db, table: Table, test_id: int, cmd: str, counted_as: str) -> int:
    """Mark the test's live rows of ``table`` DELETED; returns how many changed. One event
    (``cmd``, ``{counted_as: count}``) when any did."""
    count = db.conn.execute(
        update(table).where(table.c.test_id == test_id, status_not_deleted(table)).values(status=DELETED)
    ).rowcount
    test = find_test(db, test_id) if count else None
    if test is not None:
        emit_for_test(db, test, cmd=cmd, **{counted_as: count})
    return count


def page(query, limit: int | None, offset: int):
    """The query with --limit/--offset applied (none when not given)."""
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return query
