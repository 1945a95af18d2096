"""Test data: measured values with pass/fail against expected±tol (reference C.4)."""

from __future__ import annotations

from sqlalchemy import func, select, update

from ..db.context import Db


def rollup_test_data(db: Db, test_id: int) -> None:
    """C.4 test-data-rollup: store pass/fail counts of the test's data; FAIL/PASS the test from them."""
    data = db.t.test_data.c
    counts = db.conn.execute(
        select(
            func.count().filter(func.lower(data.status) == "fail"),
            func.count().filter(func.lower(data.status) == "pass"),
        ).where(data.test_id == test_id)
    ).one()
    fail_count, pass_count = counts
    tests = db.t.tests
    status = db.conn.execute(select(tests.c.status).where(tests.c.id == test_id)).scalar()
    values: dict = {"fail_count": fail_count, "pass_count": pass_count}
    if fail_count > 0:
        values["status"] = "FAIL"
    elif pass_count > 0 and status not in ("WARN", "FAIL"):
        values["status"] = "PASS"
    db.conn.execute(update(tests).where(tests.c.id == test_id).values(values))
    if values.get("status", status) != status:
        db.emit(test_id=test_id, status=values["status"], cmd="test-data-rollup")
