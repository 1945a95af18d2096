"""Vars: the metadat key/value table (reference C.12)."""

from __future__ import annotations

import math

from sqlalchemy import delete, select

from ..db.context import Db
from ..db.dialect import upsert
from ..errors import NotFound, Refused
from ..rules.numbers import numeric_or_text, parse_number


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


def _add(db: Db, var: str, n: float) -> int | float:
    """val := val + n; a missing variable counts as 0; a non-numeric one is refused, and so is a
    result no finite float holds (ints stay exact)."""
    m = db.t.metadat.c
    current = db.conn.execute(select(m.val).where(m.var == var)).scalar()
    base = 0 if current is None else parse_number(current)
    if base is None:
        raise Refused(f"variable {var!r} holds {_brief(current)!r}, not a number")
    if isinstance(base, int) and float(n).is_integer():
        n = int(n)
    try:
        value = base + n
    except OverflowError:  # an int beyond any float, plus a fraction
        value = math.inf
    if isinstance(value, float) and not math.isfinite(value):
        raise Refused(
            f"adding {n:g} to variable {var!r} ({_brief(current)}) gives a number out of range; "
            "the variable is unchanged"
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    db.conn.execute(upsert(db.dialect, db.t.metadat, {"var": var, "val": str(value)}, ("var",), ("val",)))
    db.emit(var=var, value=value)
    return value


def _brief(text: object) -> str:
    text = str(text)
    return text if len(text) <= 40 else text[:37] + "..."


def inc_var(db: Db, *, var: str) -> int | float:
    return _add(db, var, 1)


def dec_var(db: Db, *, var: str) -> int | float:
    return _add(db, var, -1)


def add_var(db: Db, *, var: str, n: float) -> int | float:
    return _add(db, var, n)
