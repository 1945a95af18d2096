"""The results grid's reads (``report``, ``dashboard``): the runs of a grid, their cells page by
page, and the details of tests.

A grid may hold a million tests, so its cells come in pages of a few thousand to tens of thousands
(``grid_cells``: keyset pages over the runs in the order given, each run's tests in id order, found
through the (run_id) index), and the details (comment, host, steps, data, output files) only for
the tests asked for (``grid_details``).
"""

from __future__ import annotations

from sqlalchemy import and_, func, not_, select

from ..commands import INT64
from ..db.context import Db
from ..db.schema import DELETED
from ..errors import Refused
from ..protocol import Records
from .common import field_filter, not_deleted_run, run_state, status_not_deleted, target_expr

CELL_COLUMNS = ("run_id", "id", "testname", "item_path", "state", "status")
LOOKUP_IDS = 500  # ids in one IN (...) list


def grid_runs(db: Db, *, run_ids: list[str] | None = None, target: str | None = None, last: int | None = None) -> dict:
    """The runs of a grid, newest first — those given by id, or the ``last`` runs whose target
    matches ``target`` — and the seq of the last event stored before they were read (a live view
    follows the events after it)."""
    e, r = db.t.events.c, db.t.runs.c
    seq = db.conn.execute(select(func.max(e.seq))).scalar() or 0
    columns = [
        r.id,
        target_expr(db).label("target"),
        r.runname,
        run_state(db).label("state"),
        r.status,
        r.owner,
        r.event_time,
        r.completed_at,
        r.deleted_at,
    ]
    query = select(*columns).order_by(r.event_time.desc(), r.id.desc())
    if run_ids:
        ids = _ids(run_ids, "--run-id")
        query = query.where(r.id.in_(ids))
        runs = db.records(query)
        missing = sorted(set(ids) - {run["id"] for run in runs})
        if missing:
            raise Refused(f"no run with id {', '.join(map(str, missing))}; `dbtool get-runs` lists the runs")
        deleted = [run["id"] for run in runs if run["deleted_at"] is not None]
        if deleted:
            raise Refused(f"run {', '.join(map(str, deleted))} is deleted; leave it out")
        return {"seq": seq, "runs": runs}
    query = query.where(not_deleted_run(db))
    if target:
        query = query.where(field_filter(db, target_expr(db), target))
    if last is not None:
        query = query.limit(last)
    return {"seq": seq, "runs": db.records(query)}


def _first_run(run_ids: list[str], after_run: int | None) -> tuple[list[int], int]:
    """The runs' ids, and the position of the one a page goes on from (``after_run``; 0 without)."""
    ids = _ids(run_ids, "--run-ids")
    if after_run is None:
        return ids, 0
    if after_run not in ids:
        raise Refused(f"--after-run {after_run} is not one of --run-ids")
    return ids, ids.index(after_run)


def grid_cells(
    db: Db, *, run_ids: list[str], after_run: int | None = None, after_id: int = 0, limit: int = 20000
) -> Records:
    """One page of the grid's cells: up to ``limit`` live tests of the runs, run by run in the
    order given, each run's in id order, after test ``after_id`` of run ``after_run`` (the last
    cell of the previous page). Fewer than ``limit`` rows: the last page."""
    ids, start = _first_run(run_ids, after_run)
    t = db.t.tests.c
    rows: list = []
    for position in range(start, len(ids)):
        run_id = ids[position]
        query = select(t.run_id, t.id, t.testname, t.item_path, t.state, t.status).where(
            t.run_id == run_id, t.state != DELETED
        )
        if position == start and after_run is not None:
            query = query.where(t.id > after_id)
        rows += db.fast.table(query.order_by(t.id).limit(limit - len(rows))).rows
        if len(rows) >= limit:
            break
    return Records(CELL_COLUMNS, rows)


def grid_details(
    db: Db,
    *,
    run_ids: list[str],
    after_run: int | None = None,
    after_id: int = 0,
    limit: int = 1000,
    not_passed: bool = False,
    testname: str | None = None,
    item_path: str = "",
) -> list[dict]:
    """Details of tests of the runs (paged as ``grid_cells``): state, status, comment, host,
    duration, times, run directory and log, steps, test data with pass/fail, output files. Only
    the tests that did not pass (not COMPLETED PASS) with ``not_passed``; only the test
    ``testname``/``item_path`` with ``testname``."""
    ids, start = _first_run(run_ids, after_run)
    t = db.t.tests.c
    columns = (t.run_id, t.id, t.testname, t.item_path, t.state, t.status, t.comment, t.host, t.run_duration)
    columns += (t.event_time, t.last_update, t.rundir, t.final_logf)
    tests: list[dict] = []
    for position in range(start, len(ids)):
        query = select(*columns).where(t.run_id == ids[position], t.state != DELETED)
        if testname is not None:
            query = query.where(t.testname == testname, t.item_path == item_path)
        if not_passed:
            query = query.where(not_(and_(t.state == "COMPLETED", t.status == "PASS")))
        if position == start and after_run is not None:
            query = query.where(t.id > after_id)
        tests += db.records(query.order_by(t.id).limit(limit - len(tests)))
        if len(tests) >= limit:
            break
    _attach(db, tests)
    return tests


def _attach(db: Db, tests: list[dict]) -> None:
    """Each test's steps, data and output files (a few queries for the whole page)."""
    by_id = {test["id"]: test for test in tests}
    for test in tests:
        test["steps"], test["data"], test["outputs"] = [], [], []
    s, d, o = db.t.test_steps, db.t.test_data, db.t.test_outputs
    ids = list(by_id)
    for first in range(0, len(ids), LOOKUP_IDS):
        chunk = ids[first : first + LOOKUP_IDS]
        steps = select(s.c.test_id, s.c.stepname, s.c.state, s.c.status, s.c.event_time, s.c.comment, s.c.logfile)
        steps = steps.where(s.c.test_id.in_(chunk), status_not_deleted(s)).order_by(s.c.test_id, s.c.id)
        for test_id, *step in db.conn.execute(steps):
            by_id[test_id]["steps"].append(step)
        data = select(d.c.test_id, d.c.category, d.c.variable, d.c.value, d.c.expected, d.c.tol, d.c.units)
        data = data.add_columns(d.c.status, d.c.comment)
        data = data.where(d.c.test_id.in_(chunk), status_not_deleted(d)).order_by(d.c.test_id, d.c.id)
        for test_id, *row in db.conn.execute(data):
            by_id[test_id]["data"].append(row)
        outputs = select(o.c.test_id, o.c.path, o.c.role).where(o.c.test_id.in_(chunk)).order_by(o.c.test_id, o.c.id)
        for test_id, *row in db.conn.execute(outputs):
            by_id[test_id]["outputs"].append(row)


def _ids(values: list[str], option: str) -> list[int]:
    """Run ids given as text (a list parameter), in order, each once."""
    ids: dict[int, None] = {}
    for value in values:
        try:
            run_id = int(value)
        except ValueError:
            raise Refused(f"{option} takes run ids (integers), not {value!r}") from None
        if not -INT64 <= run_id < INT64:
            raise Refused(f"{option} {value} is out of range (64-bit integers only)")
        ids[run_id] = None
    return list(ids)
