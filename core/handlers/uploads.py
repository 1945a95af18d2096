"""Test data uploaded in parts: all of an input stored, or none of it (csv-to-test-data --file).

An input too large for one request comes as numbered parts of one upload (an id the client
chose). Each part is checked and parsed as csv-to-test-data does, and its rows are staged
(test_data_staged, committed: they survive a server restart) but stay invisible. The final part
copies every staged row into test_data, then stores its own rows, with csv-to-test-data's
replacement rules (a (category, variable) the test has is replaced; within the upload the last
row of a key wins), and drops the staging, in one transaction. A client killed mid-upload leaves nothing visible; its
staged rows are pruned a day later, when another upload begins.

A part is idempotent (its rows replace the ones staged under its number), so a part resent after
a lost answer is harmless. A part > 0 of an upload the server does not know (never begun, finished,
or pruned) is NotFound (exit 1): the client then starts over.
"""

from __future__ import annotations

from sqlalchemy import Integer, bindparam, delete, insert, literal, select, update

from ..db.context import Db
from ..errors import NotFound, Refused
from ..rules.testdata import FIELDS, data_rows, latest_per_key, read_records
from .common import emit_for_test, require_test
from .testdata import INSERT_NAMES, _store_rows

STALE = 24 * 3600  # seconds after its last part when an unfinished upload is pruned
MAX_UPLOAD_ID = 64  # characters
STAGED_NAMES = ("upload_id", "part", "seq", *FIELDS)


def test_data_upload_part(
    db: Db,
    *,
    test_id: int,
    upload: str,
    part: int,
    csv: str,
    final: bool = False,
    run_id: int | None = None,
) -> dict | None:
    """Stage one part of an upload; the final part makes the whole upload visible at once."""
    test = require_test(db, test_id, run_id)
    if len(upload) > MAX_UPLOAD_ID:
        raise Refused(f"an upload id has at most {MAX_UPLOAD_ID} characters")
    try:
        records = read_records(csv)
    except ValueError as err:
        why = f"bad CSV in part {part} of upload {upload} for test {test_id}: {err}; nothing was stored"
        raise Refused(why) from None
    upload_id, parts, staged = _upload(db, test_id, upload, part)
    u = db.t.test_data_uploads
    if not final:
        parts = max(parts, part + 1)
        staged += _stage(db, upload_id, part, data_rows(records))
        db.conn.execute(update(u).where(u.c.id == upload_id).values(parts=parts, rows=staged, touched=db.now))
        return {"upload": upload, "parts": parts}
    staged += _stage(db, upload_id, part, [])  # the final part's rows go straight to test_data, after the staged ones
    replaced = _publish(db, test_id, upload_id, staged)
    rows = data_rows(latest_per_key(records), (test_id,))
    if rows:
        replaced += _store_rows(db, test_id, rows)
    emit_for_test(db, test, cmd="csv-to-test-data", rows=staged + len(rows), replaced=replaced, parts=part + 1)
    return None


def _upload(db: Db, test_id: int, upload: str, part: int) -> tuple[int, int, int]:
    """The upload's id, parts and rows staged so far; part 0 begins it (pruning stale uploads)."""
    u = db.t.test_data_uploads
    found = db.conn.execute(select(u.c.id, u.c.test_id, u.c.parts, u.c.rows).where(u.c.upload == upload)).first()
    if found is None and part == 0:
        _prune(db)
        upload_id = db.conn.execute(insert(u).values(upload=upload, test_id=test_id)).inserted_primary_key[0]
        return upload_id, 0, 0
    if found is None or found.parts < part:
        raise NotFound(
            f"upload {upload} of test {test_id} has no part {part - 1} here (it finished, was pruned after "
            f"{STALE // 3600} h without a part, or never began); send the upload again from part 0"
        )
    if found.test_id != test_id:
        raise Refused(f"upload {upload} is for test {found.test_id}, not {test_id}")
    return found.id, found.parts, found.rows


def _stage(db: Db, upload_id: int, part: int, rows: list[tuple]) -> int:
    """Stage the part's rows, replacing any staged under its number before (a resent part);
    returns how many more rows are staged now."""
    s = db.t.test_data_staged
    dropped = db.conn.execute(delete(s).where(s.c.upload_id == upload_id, s.c.part == part)).rowcount
    if rows:
        db.fast.execute_tuples(
            "stage_data",
            lambda: insert(s).values({name: bindparam(name) for name in STAGED_NAMES}),
            STAGED_NAMES,
            [(upload_id, part, seq, *row) for seq, row in enumerate(rows)],
        )
    return len(rows) - dropped


def _publish(db: Db, test_id: int, upload_id: int, staged: int) -> int:
    """Copy the ``staged`` rows into test_data, then drop the upload; returns how many replaced a row.

    SQLite, in SQL: INSERT OR IGNORE the staged rows in upload order (usually every key is new);
    when some key was there already (the test's, or an earlier row of the upload), INSERT OR
    REPLACE all of them again in that order, so the last row of each key wins, under a new id, as
    csv-to-test-data stores them. Other databases: the last row of each key through
    csv-to-test-data's own store.
    """
    s, data = db.t.test_data_staged, db.t.test_data
    mine = s.c.upload_id == upload_id
    in_order = (s.c.part, s.c.seq)
    if db.dialect == "sqlite":
        rows = select(literal(test_id, Integer), *(s.c[name] for name in FIELDS)).where(mine).order_by(*in_order)
        added = db.conn.execute(insert(data).from_select(INSERT_NAMES, rows).prefix_with("OR IGNORE")).rowcount
        if added < staged:
            db.conn.execute(insert(data).from_select(INSERT_NAMES, rows).prefix_with("OR REPLACE"))
        replaced = staged - added
    else:
        records = db.conn.execute(select(*(s.c[name] for name in FIELDS)).where(mine).order_by(*in_order))
        replaced = _store_rows(db, test_id, [(test_id, *row) for row in latest_per_key([tuple(r) for r in records])])
    db.conn.execute(delete(s).where(mine))
    db.conn.execute(delete(db.t.test_data_uploads).where(db.t.test_data_uploads.c.id == upload_id))
    return replaced


def _prune(db: Db) -> None:
    """Drop the uploads whose client went away: no part for STALE seconds."""
    u, s = db.t.test_data_uploads, db.t.test_data_staged
    stale = [row.id for row in db.conn.execute(select(u.c.id).where(u.c.touched < db.now - STALE))]
    for upload_id in stale:
        db.conn.execute(delete(s).where(s.c.upload_id == upload_id))
    if stale:
        db.conn.execute(delete(u).where(u.c.id.in_(stale)))
