"""Prerequisites: ``get-prereqs-not-met`` (reference C.9, algorithm "B"; D.6).

The rules themselves are pure and live in ``rules/prereqs.py``; this module reads the rows they
judge. Decisions where the reference leaves room:

* Soft-deleted rows (state DELETED) do not count: a waiton whose rows are all DELETED is "never
  seen" (its name record blocks), and a deleted item is as if it had never been registered. The
  reference reads through ``get-tests-for-run-state-status``, which keeps them, but a DELETED row
  records something removed that nothing will ever finish: counting it would leave a waiting item
  blocked on it for good, while SPEC 9.9 hides soft-deleted rows from every list.
* A run id with no run is a run with no rows, as in Megatest: each waiton blocks by its name.
* ``exclusive`` applies even when the waiton list is empty: it is about the waiting test itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from ..db.context import Db
from ..db.schema import DELETED
from ..errors import Refused
from ..rules.prereqs import (
    RECORD_KEYS,
    ItemMap,
    Modes,
    parse_itemmap,
    parse_modes,
    unique_records,
    waiton_blockers,
    wanted_item_path,
)
from ..rules.vocab import COUNTED_RUNNING_STATES


def get_prereqs_not_met(
    db: Db,
    *,
    run_id: int,
    waitons: list[str],
    ref_testname: str,
    ref_item_path: str = "",
    mode: list[str] | None = None,
    itemmap: list[str] | None = None,
) -> list[dict]:
    """What blocks test ``ref_testname``/``ref_item_path`` of the run from starting; ``[]`` = nothing.

    Every element is a record ``{id, run_id, testname, item_path, state, status}``:

    1. with mode ``exclusive``: every test in **any** run named ``ref_testname`` (and, when
       ``ref_item_path`` is not empty, with that item path) that is LAUNCHED, REMOTEHOSTSTART or
       RUNNING;
    2. for each waiton W, in the order given: what ``waiton_blockers`` (rules/prereqs.py) says
       blocks — some of W's rows in this run, or, when W has no rows, the record
       ``{"id": None, "run_id": run_id, "testname": W, "item_path": None, "state": None, "status": None}``.

    A row or name appears once, at its first place. The item path W's rows are compared with is
    ``ref_item_path`` mapped by the first ``itemmap`` whose test pattern matches W.
    """
    modes, itemmaps = _checked_request(waitons, ref_testname, mode, itemmap)
    records = _running_instances(db, ref_testname, ref_item_path) if modes.exclusive else []
    rows = _waiton_rows(db, run_id, waitons)
    for name in waitons:
        records += waiton_blockers(
            name,
            rows.get(name, []),
            run_id=run_id,
            ref_item_path=ref_item_path,
            wanted=wanted_item_path(itemmaps, name, ref_item_path),
            modes=modes,
        )
    return unique_records(records)


def _checked_request(
    waitons: Sequence[str], ref_testname: str, mode: list[str] | None, itemmap: list[str] | None
) -> tuple[Modes, list[ItemMap]]:
    """The parsed mode set and itemmaps; anything malformed is refused (exit 4) with the reason."""
    if not ref_testname or "/" in ref_testname:
        raise Refused(f"invalid --ref-testname {ref_testname!r}: give the waiting test's name (no '/')")
    for name in waitons:
        if "/" in name:
            raise Refused(f"invalid waiton {name!r}: waitons are test names, without '/' and item paths")
    try:
        return parse_modes(mode if mode is not None else ["normal"]), [parse_itemmap(s) for s in itemmap or []]
    except ValueError as err:
        raise Refused(str(err)) from None


def _record_columns(db: Db) -> list:
    t = db.t.tests.c
    return [t[key] for key in RECORD_KEYS]


def _waiton_rows(db: Db, run_id: int, waitons: Sequence[str]) -> dict[str, list[dict]]:
    """The non-DELETED rows of each waiton in the run, toplevel first, then items by item path."""
    if not waitons:
        return {}
    t = db.t.tests.c
    query = (
        select(*_record_columns(db))
        .where(t.run_id == run_id, t.testname.in_(set(waitons)), t.state != DELETED)
        .order_by(t.testname, t.item_path, t.id)
    )
    rows: dict[str, list[dict]] = {}
    for row in db.conn.execute(query):
        rows.setdefault(row.testname, []).append(dict(row._mapping))
    return rows


def _running_instances(db: Db, ref_testname: str, ref_item_path: str) -> list[dict]:
    """Tests of any run with the waiting test's name (and item, if any) that are launched or running."""
    t = db.t.tests.c
    query = select(*_record_columns(db)).where(t.testname == ref_testname, t.state.in_(COUNTED_RUNNING_STATES))
    if ref_item_path:
        query = query.where(t.item_path == ref_item_path)
    return db.records(query.order_by(t.run_id, t.item_path, t.id))
