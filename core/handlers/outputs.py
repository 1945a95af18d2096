"""Output files of a test (CCP4i's AddOutputFile): logs and artifacts a job attaches to its test."""

from __future__ import annotations

import os

from sqlalchemy import select

from ..db.context import Db
from ..db.dialect import upsert
from .common import emit_for_test, lookup_test, require_test


def area_relative(db: Db, path: str) -> str:
    """A path inside the area relative to the area's root; any other path absolute."""
    root = str(db.setting("area", "root", "") or "")
    if not root:
        return path
    full = os.path.normpath(os.path.join(root, path))
    inside = os.path.commonpath([full, root]) == root
    return os.path.relpath(full, root) if inside else full


def add_output(db: Db, test: dict, path: str, role: str) -> str:
    stored = area_relative(db, path)
    row = {"test_id": test["id"], "path": stored, "role": role, "created": db.now}
    db.conn.execute(upsert(db.dialect, db.t.test_outputs, row, ("test_id", "path"), ("role",)))
    emit_for_test(db, test, output=stored, role=role)
    return stored


def test_add_output_file(db: Db, *, test_id: int, path: str, role: str = "artifact") -> None:
    add_output(db, require_test(db, test_id), path, role)


def test_get_output_files(db: Db, *, test_id: int) -> list[dict]:
    lookup_test(db, test_id)
    o = db.t.test_outputs.c
    rows = db.conn.execute(
        select(o.id, o.test_id, o.path, o.role, o.created).where(o.test_id == test_id).order_by(o.id)
    )
    root = str(db.setting("area", "root", "") or "")
    return [{**dict(r._mapping), "abs_path": os.path.join(root, r.path) if root else r.path} for r in rows]
