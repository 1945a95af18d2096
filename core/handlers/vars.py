"""Vars: the metadat key/value table (reference C.12)."""

from __future__ import annotations

from sqlalchemy import delete, select

from ..db.context import Db
from ..db.dialect import upsert
from ..errors import NotFound
from ..rules.numbers import numeric_or_text


def set_var(db: Db, *, var: str, value: str) -> None:
    db.conn.execute(upsert(db.dialect, db.t.metadat, {"var": var, "val": value}, ("var",), ("val",)))
    db.emit(var=var, value=value)


def get_var(db: Db, *, var: str) -> object:
    m = db.t.metadat.c
    row = db.conn.execute(select(m.val).where(m.var == var)).first()
    if row is None:
        raise NotFound(f"variable {var!r} is not set")
    return numeric_or_text(row[0])


def del_var(db: Db, *, var: str) -> None:
    m = db.t.metadat
    if db.conn.execute(delete(m).where(m.c.var == var)).rowcount:
        db.emit(var=var, deleted=True)
