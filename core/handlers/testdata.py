"""Test data: measured values with pass/fail against expected±tol (reference C.4, C.6, D.4, D.8; SPEC 9.7, 9.9)."""

from __future__ import annotations

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.sql import ColumnElement

from ..db.context import Db
from ..db.dialect import like
from ..errors import NotFound, Refused
from ..rules.testdata import (
    FIELDS,
    NumberOutOfRange,
    data_rows,
    latest_per_key,
    locate_out_of_range,
    read_records,
    rollup_status,
)
from .common import emit_for_test, find_test, require_test, soft_delete_rows, status_not_deleted

# -- writing ----------------------------------------------------------------------------------------


def csv_to_test_data(db: Db, *, test_id: int, run_id: int | None = None, csv: str | None = None) -> None:
    """Store the rows of CSV text (rules in ``rules/testdata.py``); a bad line refuses the whole request.

    A (category, variable) the test already has is replaced: deleted, then inserted with a new id.
    """
    test = require_test(db, test_id, run_id)
    if csv is None:
        raise Refused("csv-to-test-data needs the CSV text: --csv TEXT, --file F or --file - (standard input)")
    try:
        records = read_records(csv)
        rows = data_rows(latest_per_key(records), (test_id,))
    except NumberOutOfRange:
        raise Refused(f"bad CSV for test {test_id}: {locate_out_of_range(csv)}; nothing was stored") from None
    except ValueError as err:
        raise Refused(f"bad CSV for test {test_id}: {err}; nothing was stored") from None
    if not rows:
        return
    replaced = _store_rows(db, test_id, rows)
    emit_for_test(db, test, rows=len(rows), replaced=replaced)


INSERT_NAMES = ("test_id", *FIELDS)  # a test_data row as csv-to-test-data stores it (id, last_update: defaults)
KEY_NAMES = INSERT_NAMES[:3]  # test_id, category, variable: the unique key


def _store_rows(db: Db, test_id: int, rows: list[tuple]) -> int:
    """Insert rows (INSERT_NAMES); a (category, variable) the test has is replaced: deleted, then
    inserted with a new id. Returns how many were replaced.

    SQLite: INSERT OR IGNORE stores the new keys (usually all of them: one statement, no lookups);
    when some were there already, INSERT OR REPLACE stores every row again, each under a new id.
    Other databases delete the test's rows with these keys (unique index), then insert.
    """
    data = db.t.test_data
    values = {name: bindparam(name) for name in INSERT_NAMES}
    fast = db.fast
    if db.dialect == "sqlite":
        added = fast.execute_tuples(
            "insert_new_data",
            lambda: insert(data).values(values).prefix_with("OR IGNORE", dialect="sqlite"),
            INSERT_NAMES,
            rows,
        )
        if added < len(rows):
            fast.execute_tuples(
                "replace_data",
                lambda: insert(data).values(values).prefix_with("OR REPLACE", dialect="sqlite"),
                INSERT_NAMES,
                rows,
            )
        return len(rows) - added
    replaced = fast.execute_tuples(
        "delete_data_keys",
        lambda: delete(data).where(*(data.c[name] == bindparam(name) for name in KEY_NAMES)),
        KEY_NAMES,
        [row[:3] for row in rows],
    )
    fast.execute_tuples("insert_data", lambda: insert(data).values(values), INSERT_NAMES, rows)
    return replaced


def soft_delete_data(db: Db, test_id: int) -> int:
    """Mark every data row of the test DELETED; returns how many changed."""
    return soft_delete_rows(db, db.t.test_data, test_id, "delete-test-data-records", "rows")


def rollup_test_data(db: Db, test_id: int) -> None:
    """C.4 test-data-rollup: store pass/fail counts of the test's data; FAIL/PASS the test from them.

    Counts are case-insensitive (``pass``, ``PASS``); other statuses, DELETED included, count for neither.
    """
    data = db.t.test_data.c
    status = func.lower(data.status)
    fail_count, pass_count = db.conn.execute(
        select(
            func.count().filter(status == "fail"),
            func.count().filter(status == "pass"),
        ).where(data.test_id == test_id)
    ).one()
    tests = db.t.tests
    test = find_test(db, test_id)
    if test is None:
        return
    values = {
        "fail_count": fail_count,
        "pass_count": pass_count,
        "status": rollup_status(test["status"], pass_count, fail_count),
    }
    if all(test[name] == value for name, value in values.items()):
        return
    db.conn.execute(update(tests).where(tests.c.id == test_id).values(values))
    emit_for_test(
        db,
        test,
        cmd="test-data-rollup",
        state=test["state"],
        status=values["status"],
        pass_count=pass_count,
        fail_count=fail_count,
    )


def test_data_rollup(db: Db, *, test_id: int, run_id: int | None = None, status: str | None = None) -> None:
    require_test(db, test_id, run_id)
    rollup_test_data(db, test_id)


# -- reading ----------------------------------------------------------------------------------------


def _data_columns(db: Db) -> list[ColumnElement]:
    d = db.t.test_data.c
    return [
        d.id,
        d.test_id,
        d.category,
        d.variable,
        d.value,
        d.expected,
        d.tol,
        d.units,
        d.comment,
        d.status,
        d.type,
    ]


def _read(db: Db, test_id: int, category: str, variable: str | None, include_deleted: bool) -> list[dict]:
    d = db.t.test_data.c
    query = select(*_data_columns(db)).where(d.test_id == test_id, like(db.dialect, d.category, category))
    if variable is not None:
        query = query.where(like(db.dialect, d.variable, variable))
    if not include_deleted:
        query = query.where(status_not_deleted(db.t.test_data))
    query = query.order_by(d.category, d.variable, d.id)
    return db.records(query)


def read_test_data(
    db: Db, *, test_id: int, run_id: int | None = None, category: str = "%", include_deleted: bool = False
) -> list[dict]:
    return _read(db, test_id, category, None, include_deleted)


def read_test_data_varpatt(
    db: Db,
    *,
    test_id: int,
    run_id: int | None = None,
    category: str = "%",
    variable: str = "%",
    include_deleted: bool = False,
) -> list[dict]:
    return _read(db, test_id, category, variable, include_deleted)


def get_data_info_by_id(db: Db, *, data_id: int) -> dict:
    row = db.conn.execute(select(*_data_columns(db)).where(db.t.test_data.c.id == data_id)).first()
    if row is None:
        raise NotFound(f"no test-data row with id {data_id}; `dbtool read-test-data --test-id ID` lists a test's data")
    return dict(row._mapping)
