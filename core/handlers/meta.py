"""Test meta records (reference C.14)."""

from __future__ import annotations

from sqlalchemy import select, update

from ..db.context import Db
from ..db.dialect import insert_ignore, inserted
from ..db.schema import NumberOrText
from ..errors import NotFound, Refused
from ..rules.numbers import number_out_of_range
from .common import check_testname

# The columns testmeta-update-field may set (SPEC 7: no field names from input without a whitelist).
UPDATABLE_FIELDS = (
    "author",
    "owner",
    "description",
    "reviewed",
    "iterated",
    "avg_runtime",
    "avg_disk",
    "tags",
    "jobgroup",
)


def testmeta_add_record(db: Db, *, testname: str) -> None:
    check_testname(testname)
    row = {"testname": testname, **{f: "" for f in UPDATABLE_FIELDS if f != "jobgroup"}}
    if inserted(db.conn.execute(insert_ignore(db.dialect, db.t.test_meta, row, ("testname",)))):
        db.emit(testname=testname, meta="added")


def testmeta_update_field(db: Db, *, testname: str, field: str, value: str) -> None:
    if field not in UPDATABLE_FIELDS:
        raise Refused(f"test_meta has no updatable field {field!r}; use one of {', '.join(UPDATABLE_FIELDS)}")
    m = db.t.test_meta
    if isinstance(m.c[field].type, NumberOrText) and number_out_of_range(value):  # REAL affinity: it would be inf
        raise Refused(f"{field} {value} is out of range for a number; give a smaller number or text")
    if not db.conn.execute(update(m).where(m.c.testname == testname).values({field: value})).rowcount:
        raise Refused(
            f"no meta record for test {testname!r}; create it with `dbtool testmeta-add-record --testname {testname}`"
        )
    db.emit(testname=testname, field=field, value=value)


def testmeta_get_record(db: Db, *, testname: str) -> dict:
    m = db.t.test_meta
    row = db.conn.execute(select(m).where(m.c.testname == testname)).first()
    if row is None:
        raise NotFound(f"no meta record for test {testname!r}")
    return dict(row._mapping)


def get_tests_tags(db: Db) -> dict[str, list[str]]:
    m = db.t.test_meta.c
    tags: dict[str, list[str]] = {}
    for testname, text in db.conn.execute(select(m.testname, m.tags).order_by(m.testname)):
        for tag in (t.strip() for t in (text or "").split(",")):
            if tag and testname not in tags.setdefault(tag, []):
                tags[tag].append(testname)
    return dict(sorted(tags.items()))
