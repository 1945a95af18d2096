"""Change tracking by last_update (reference C.11)."""

from __future__ import annotations

from sqlalchemy import select

from ..db.context import Db

TRACKED = ("runs", "tests", "test_steps", "test_data", "run_stats")


def _changed(db: Db, table_name: str, since: int) -> list[int]:
    table = getattr(db.t, table_name)
    query = select(table.c.id).where(table.c.last_update > since).order_by(table.c.id)
    return list(db.conn.execute(query).scalars())


def get_changed_record_ids(db: Db, *, since: int = 0) -> dict[str, list[int]]:
    return {name: _changed(db, name, since) for name in TRACKED}


def get_changed_record_test_ids(db: Db, *, since: int = 0) -> list[int]:
    return _changed(db, "tests", since)


def get_changed_record_run_ids(db: Db, *, since: int = 0) -> list[int]:
    return _changed(db, "runs", since)
