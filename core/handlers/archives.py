"""Archive disks, blocks and allocations (reference A.12, C.18)."""

from __future__ import annotations

from sqlalchemy import insert, or_, select, update

from ..db.context import Db
from ..errors import NotFound, Refused
from ..protocol import Records


def archive_register_disk(db: Db, *, disk_name: str, disk_path: str, df: int = -1) -> int:
    """An existing (name, path) gets its free space updated; otherwise a new disk is inserted."""
    d = db.t.archive_disks
    disk_id = db.conn.execute(
        select(d.c.id).where(d.c.archive_area_name == disk_name, d.c.disk_path == disk_path)
    ).scalar()
    if disk_id is None:
        values = {"archive_area_name": disk_name, "disk_path": disk_path, "last_df": df, "last_df_time": db.now}
        disk_id = db.conn.execute(insert(d).values(creation_time=db.now, **values)).inserted_primary_key[0]
    else:
        db.conn.execute(update(d).where(d.c.id == disk_id).values(last_df=df, last_df_time=db.now))
    db.emit(disk_id=disk_id, disk_path=disk_path, df=df)
    return disk_id


def archive_register_block_name(db: Db, *, disk_id: int, archive_path: str, du: int | None = None) -> int:
    """An existing (disk, path) is returned (its usage updated when given; H's broken branch fixed)."""
    d, b = db.t.archive_disks, db.t.archive_blocks
    if db.conn.execute(select(d.c.id).where(d.c.id == disk_id)).scalar() is None:
        raise Refused(f"no archive disk with id {disk_id}; register it with `dbtool archive-register-disk`")
    block_id = db.conn.execute(
        select(b.c.id).where(b.c.archive_disk_id == disk_id, b.c.disk_path == archive_path)
    ).scalar()
    if block_id is None:
        row = {"archive_disk_id": disk_id, "disk_path": archive_path, "last_du": du or 0, "last_du_time": db.now}
        block_id = db.conn.execute(insert(b).values(creation_time=db.now, **row)).inserted_primary_key[0]
    elif du is not None:
        db.conn.execute(update(b).where(b.c.id == block_id).values(last_du=du, last_du_time=db.now))
    db.emit(block_id=block_id, disk_id=disk_id, archive_path=archive_path)
    return block_id


def test_get_archive_block_info(db: Db, *, block_id: int) -> dict:
    b = db.t.archive_blocks
    row = db.conn.execute(select(b).where(b.c.id == block_id)).first()
    if row is None:
        raise NotFound(f"no archive block with id {block_id}")
    return dict(row._mapping)


def archive_get_allocations(db: Db, *, testname: str, item_path: str = "", dneeded: int = 0) -> Records:
    """Blocks already holding this test/item, on disks with more than ``dneeded`` free (reference H).

    A block holds a test/item when test-set-archive-block-id gave it to a test of that name and
    item path (in any run), or when an archive_allocations row says so.
    """
    a, b, d, t = db.t.archive_allocations.c, db.t.archive_blocks.c, db.t.archive_disks.c, db.t.tests.c
    allocated = select(a.archive_block_id).where(a.testname == testname, a.item_path == item_path)
    given = select(t.archived).where(t.testname == testname, t.item_path == item_path, t.archived != 0)
    query = (
        select(b.id, b.archive_disk_id, b.disk_path, b.last_du, d.disk_path.label("disk"), d.last_df)
        .join_from(db.t.archive_blocks, db.t.archive_disks, d.id == b.archive_disk_id)
        .where(or_(b.id.in_(allocated), b.id.in_(given)), d.last_df > dneeded)
        .order_by(b.id)
    )
    return db.table(query)
