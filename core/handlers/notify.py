"""Cursors of the ``[[notify]]`` entries: the last event seq each has handled (server/notifier.py)."""

from __future__ import annotations

from sqlalchemy import select

from ..db.context import Db
from ..db.dialect import upsert


def notify_cursors(db: Db) -> dict[str, int]:
    """Every stored cursor, by entry name."""
    c = db.t.notify_cursors.c
    return {name: seq for name, seq in db.conn.execute(select(c.name, c.seq))}


def set_notify_cursor(db: Db, *, name: str, seq: int) -> None:
    """Store an entry's cursor (written through the server's writer, like any write)."""
    row = {"name": name, "seq": seq, "updated": db.now}
    db.conn.execute(upsert(db.dialect, db.t.notify_cursors, row, ("name",), ("seq", "updated")))
