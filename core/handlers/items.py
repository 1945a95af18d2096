"""Free-form data items of a test (CCP4i's DbSetData, DbGetData, DbItemExists): name → text."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from ..commands import MAX_ITEM_NAME, MAX_ITEM_VALUE
from ..db.context import Db
from ..db.dialect import upsert
from ..errors import NotFound, Refused
from .common import emit_for_test, lookup_test, require_test


def _check_name(item: str) -> None:
    if len(item) > MAX_ITEM_NAME:
        raise Refused(f"an item name has at most {MAX_ITEM_NAME} characters, not {len(item)}")


def test_set_item(db: Db, *, test_id: int, item: str, value: str) -> None:
    """Set (or overwrite) one item; an event names it."""
    _check_name(item)
    if len(value) > MAX_ITEM_VALUE:
        raise Refused(
            f"item {item!r} has {len(value)} characters; an item holds at most {MAX_ITEM_VALUE // 1024} KiB "
            "(attach a larger one as a file: test-add-output-file)"
        )
    test = require_test(db, test_id)
    row = {"test_id": test_id, "name": item, "value": value, "updated": db.now}
    db.conn.execute(upsert(db.dialect, db.t.test_items, row, ("test_id", "name"), ("value", "updated")))
    emit_for_test(db, test, item=item)


def _value(db: Db, test_id: int, name: str) -> str | None:
    i = db.t.test_items.c
    return db.fast.scalar(
        "test_item",
        lambda: select(i.value).where(i.test_id == bindparam("test_id"), i.name == bindparam("name")),
        {"test_id": test_id, "name": name},
    )


def test_get_item(db: Db, *, test_id: int, item: str) -> str:
    _check_name(item)
    lookup_test(db, test_id)
    value = _value(db, test_id, item)
    if value is None:
        raise NotFound(
            f"test {test_id} has no item {item!r}; `dbtool test-get-items --test-id {test_id}` lists its items"
        )
    return value


def test_has_item(db: Db, *, test_id: int, item: str) -> bool:
    _check_name(item)
    lookup_test(db, test_id)
    return _value(db, test_id, item) is not None


def test_get_items(db: Db, *, test_id: int) -> dict[str, str]:
    lookup_test(db, test_id)
    i = db.t.test_items.c
    rows = db.conn.execute(select(i.name, i.value).where(i.test_id == test_id).order_by(i.name))
    return {name: value for name, value in rows}
