"""The no-sync key/value store and its faux locks (reference A.13, C.16)."""

from __future__ import annotations

from sqlalchemy import delete, select

from ..db.context import Db
from ..db.dialect import insert_ignore, inserted, upsert
from ..errors import NotFound
from ..rules.numbers import numeric_or_text


def no_sync_set(db: Db, *, var: str, value: str) -> None:
    table = db.t.no_sync_metadat
    db.conn.execute(upsert(db.dialect, table, {"var": var, "val": value}, ("var",), ("val",)))
    db.emit(var=var, value=value)


def no_sync_get_default(db: Db, *, var: str, default: str | None = None) -> object:
    n = db.t.no_sync_metadat.c
    row = db.conn.execute(select(n.val).where(n.var == var)).first()
    if row is None:
        if default is None:
            raise NotFound(f"no-sync value {var!r} is not set")
        return numeric_or_text(default)
    return numeric_or_text(row[0])


def no_sync_del(db: Db, *, var: str) -> None:
    table = db.t.no_sync_metadat
    if db.conn.execute(delete(table).where(table.c.var == var)).rowcount:
        db.emit(var=var, deleted=True)


def no_sync_get_lock(db: Db, *, var: str) -> dict:
    """Take the lock when free: {acquired: true, value: now}; else {acquired: false, value: its time}.

    Atomic under the single writer (and an INSERT that ignores conflicts on PostgreSQL).
    """
    table = db.t.no_sync_metadat
    now = str(db.now)
    taken = inserted(db.conn.execute(insert_ignore(db.dialect, table, {"var": var, "val": now}, ("var",))))
    if taken:
        db.emit(var=var, value=db.now, lock=True)
        return {"acquired": True, "value": db.now}
    held = db.conn.execute(select(table.c.val).where(table.c.var == var)).scalar()
    return {"acquired": False, "value": numeric_or_text(held)}
