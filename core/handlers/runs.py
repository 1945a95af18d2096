"""Keys, targets and runs (reference A.17, C.19, D.3, D.5, D.7)."""

from __future__ import annotations

from sqlalchemy import and_, select, update

from ..db.context import Db
from ..db.dialect import insert_ignore
from .common import (
    field_filter,
    lookup_run,
    not_deleted_run,
    run_columns,
    run_record,
    split_target,
    target_expr,
)


def get_keys(db: Db) -> list[str]:
    return list(db.keys)


def get_target(db: Db, *, run_id: int) -> str:
    return lookup_run(db, run_id)["target"]


def register_run(
    db: Db,
    *,
    target: str,
    runname: str,
    state: str = "new",
    status: str = "n/a",
    owner: str | None = None,
    contour: str = "",
) -> int:
    """C.19: insert-or-ignore by (runname, key values); a deleted run is revived; returns the id."""
    runs = db.t.runs
    values = split_target(db, target)
    owner = owner or db.ctx.client.get("user") or ""
    row = {
        "runname": runname,
        "state": state,
        "status": status,
        "owner": owner,
        "event_time": db.now,
        "contour": contour or "",
    }
    row.update(zip(db.keys, values, strict=True))
    inserted = db.conn.execute(insert_ignore(db.dialect, runs, row, ("runname", *db.keys)))
    match = and_(runs.c.runname == runname, *(col == v for col, v in zip(db.t.key_columns, values, strict=True)))
    run_id, current_state = db.conn.execute(select(runs.c.id, runs.c.state).where(match)).one()
    if inserted.rowcount:
        db.emit(run_id=run_id, state=state, status=status, runname=runname, target=target)
    elif current_state == "deleted":
        db.conn.execute(update(runs).where(runs.c.id == run_id).values(state=state, status=status, event_time=db.now))
        db.emit(run_id=run_id, state=state, status=status, runname=runname, target=target, revived=True)
    return run_id


def get_runs(
    db: Db,
    *,
    runname: str | None = None,
    target: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    include_deleted: bool = False,
) -> list[dict]:
    """Runs matching the run-name and target pattern lists, newest first."""
    runs = db.t.runs
    query = select(*run_columns(db)).order_by(runs.c.event_time.desc(), runs.c.id.desc())
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    if runname:
        query = query.where(field_filter(db, runs.c.runname, runname))
    if target:
        query = query.where(field_filter(db, target_expr(db), target))
    if limit is not None:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    return [run_record(r) for r in db.conn.execute(query)]


def get_run_info(db: Db, *, run_id: int) -> dict:
    return lookup_run(db, run_id)
