"""Results across runs: compare a run with a baseline, a test's history, flaky tests (the CI loop).

The rules that judge results are in rules/compare.py; this module fetches the rows. A "leaf" test
is what carries a result of its own: an item, or a toplevel that has no items.
"""

from __future__ import annotations

from collections import defaultdict

from sqlalchemy import and_, exists, func, or_, select
from sqlalchemy.sql import ColumnElement

from ..db.context import Db
from ..errors import Refused
from ..protocol import Records
from ..rules.compare import (
    CLASSES,
    classify,
    flip_rate,
    flips,
    outcome,
    reruns,
)
from ..rules.vocab import FAIL_LIKE, FINAL_STATES, PASS_LIKE
from .common import field_filter, find_run, not_deleted_run, page, target_expr

DELETED = "DELETED"  # the state of a soft-deleted test
AUTO = "auto"


# -- completeness ----------------------------------------------------------------------------------


def run_is_complete(db: Db, run_id: int) -> bool:
    """Whether the run is complete — as the writer keeps it in ``runs.completed_at``
    (handlers/completion.py: it has tests, every one in a final state)."""
    r = db.t.runs.c
    return db.conn.execute(select(r.completed_at).where(r.id == run_id)).scalar() is not None


# -- compare ---------------------------------------------------------------------------------------


def compare(db: Db, *, run_id: int, baseline: str = AUTO, runname: str | None = None) -> dict:
    """The run's leaf tests against the baseline's, by class (rules/compare.py ``classify``)."""
    run = _existing_run(db, run_id, "--run-id")
    if baseline == AUTO:
        base_id = find_baseline(db, run, runname)
    else:
        if runname:
            raise Refused("--runname narrows --baseline auto; leave it out when --baseline names a run")
        base_id = _baseline_id(baseline)
        if base_id == run_id:
            raise Refused(f"--baseline {base_id} is the run itself; give an earlier run, or --baseline auto")
        _existing_run(db, base_id, "--baseline")
    classes: dict[str, list[dict]] = {name: [] for name in CLASSES}
    unfinished = 0
    for name, item, state, status, base_state, base_status in sorted(_changed_leaves(db, run_id, base_id)):
        now = None if state is None else (state, status)
        previous = None if base_state is None else (base_state, base_status)
        if now is not None and state not in FINAL_STATES:
            unfinished += 1
        found = classify(now, previous)
        if found is not None:
            classes[found].append(
                {"testname": name, "item_path": item, "status": status, "baseline_status": base_status}
            )
    return {
        "run": run_id,
        "baseline": base_id,
        **{name: classes[name] for name in ("regressions", "fixed", "still_failing", "new", "missing")},
        "infrastructure": classes["infrastructure"],
        "unfinished": unfinished,
    }


def _changed_leaves(db: Db, run_id: int, base_id: int | None) -> list[tuple]:
    """(testname, item_path, state, status, baseline state, baseline status) of the leaf tests of
    either run (None where a run lacks it), except those that pass in the run and passed in the
    baseline — most of a big run, left in the database: each run's row is found through the
    (run_id, testname, item_path) index, and only what may be listed comes back."""
    tests = db.t.tests
    now, before = tests.alias("now"), tests.alias("before")
    pair = and_(before.c.run_id == (base_id or 0), before.c.testname == now.c.testname)
    pair = and_(pair, before.c.item_path == now.c.item_path, _live(before), _leaf(db, before))
    passes = and_(now.c.state == "COMPLETED", now.c.status.in_(PASS_LIKE), before.c.status.in_(PASS_LIKE))
    present = (
        select(now.c.testname, now.c.item_path, now.c.state, now.c.status, before.c.state, before.c.status)
        .select_from(now.outerjoin(before, pair))
        .where(now.c.run_id == run_id, _live(now), _leaf(db, now), ~func.coalesce(passes, False))
    )
    rows = [tuple(row) for row in db.conn.execute(present)]
    if base_id is not None:
        again = and_(now.c.run_id == run_id, now.c.testname == before.c.testname, now.c.item_path == before.c.item_path)
        missing = select(before.c.testname, before.c.item_path, before.c.state, before.c.status).where(
            before.c.run_id == base_id,
            _live(before),
            _leaf(db, before),
            ~exists().where(again, _live(now), _leaf(db, now)),
        )
        rows += [(name, item, None, None, state, status) for name, item, state, status in db.conn.execute(missing)]
    return rows


def _leaf(db: Db, row) -> ColumnElement:
    """SQL: ``row`` (an alias of tests) is a leaf — an item, or a toplevel of a test with no live items."""
    items = db.t.tests.alias("items")
    has_items = exists().where(
        items.c.run_id == row.c.run_id, items.c.testname == row.c.testname, items.c.item_path != "", _live(items)
    )
    return or_(row.c.item_path != "", ~has_items)


def _existing_run(db: Db, run_id: int, option: str) -> dict:
    """A run compare may use: it exists and is not deleted (else refused: exit 4, which a CI gate
    tells apart from the exit 1 of a regression)."""
    run = find_run(db, run_id)
    if run is None:
        raise Refused(f"{option} {run_id}: no such run; `dbtool get-runs` lists the runs")
    if run["deleted_at"] is not None:
        raise Refused(f"{option} {run_id}: the run is deleted; give another run")
    return run


def _baseline_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0 or str(value) != text.strip():
        raise Refused(f"--baseline must be a run id or 'auto', not {text!r}")
    return value


def find_baseline(db: Db, run: dict, runname: str | None = None) -> int | None:
    """The most recent complete run of the same target earlier than ``run`` — by event time, then
    id — whose name matches the run-name pattern list when one is given; None when there is none."""
    r = db.t.runs.c
    same_target = [col.is_(None) if run[col.name] is None else col == run[col.name] for col in db.t.key_columns]
    when = run["event_time"] or 0
    earlier = or_(r.event_time < when, and_(r.event_time == when, r.id < run["id"]))
    query = (
        select(r.id)
        .where(*same_target, not_deleted_run(db), earlier, r.completed_at.is_not(None))
        .order_by(r.event_time.desc(), r.id.desc())
        .limit(1)
    )
    if runname:
        query = query.where(field_filter(db, r.runname, runname))
    return db.conn.execute(query).scalar()


def _live(table) -> ColumnElement:
    """SQL: a row of ``table`` (tests or an alias of it) is not soft-deleted."""
    return func.coalesce(table.c.state, "") != DELETED


# -- history ---------------------------------------------------------------------------------------


def history(
    db: Db, *, testname: str, item_path: str = "", target: str | None = None, limit: int | None = None
) -> Records:
    """One test's results run by run, newest run first (the run's event time, then id); deleted runs
    and deleted tests left out."""
    t, r = db.t.tests.c, db.t.runs.c
    query = (
        select(
            r.id.label("run_id"),
            r.runname,
            target_expr(db).label("target"),
            r.event_time,
            t.state,
            t.status,
            t.comment,
            t.id.label("test_id"),
        )
        .select_from(db.t.tests.join(db.t.runs, r.id == t.run_id))
        .where(t.testname == testname, t.item_path == item_path, _live(db.t.tests), not_deleted_run(db))
        .order_by(r.event_time.desc(), r.id.desc())
    )
    if target:
        query = query.where(field_filter(db, target_expr(db), target))
    return db.table(page(query, limit, 0))


# -- flaky -----------------------------------------------------------------------------------------

FLAKY_COLUMNS = ("testname", "item_path", "target", "runs", "flips", "flip_rate", "reruns")


def flaky(db: Db, *, target: str | None = None, window: int = 20) -> Records:
    """Leaf tests whose result flips between pass and fail over the last ``window`` runs of each
    target, or that passed on a re-run within one run (a FAIL then a PASS among the test's status
    writes in the events table), most flips per chance first."""
    runs = _window_runs(db, target, window)
    if not runs:
        return Records(FLAKY_COLUMNS, [])
    order = {run_id: position for position, (run_id, _) in enumerate(runs)}  # oldest first
    target_of = dict(runs)
    t = db.t.tests.c
    window_ids = _window_ids(db, target, window)
    rows = db.conn.execute(
        select(t.run_id, t.id, t.testname, t.item_path, t.state, t.status).where(
            t.run_id.in_(window_ids), _live(db.t.tests)
        )
    ).all()
    with_items = {(run_id, name) for run_id, _, name, item, _, _ in rows if item}
    series: dict[tuple[str, str, str], list[tuple[int, str | None]]] = defaultdict(list)
    leaf_of: dict[int, tuple[str, str, str]] = {}
    for run_id, test_id, name, item, state, status in rows:
        if item or (run_id, name) not in with_items:
            key = (target_of[run_id], name, item)
            series[key].append((order[run_id], outcome(state, status)))
            leaf_of[test_id] = key
    rerun_counts = _reruns(db, window_ids, leaf_of)
    found = []
    for key, results in series.items():
        counted, changes = flips(result for _, result in sorted(results))
        again = rerun_counts.get(key, 0)
        if changes or again:
            target_name, name, item = key
            found.append((name, item, target_name, counted, changes, flip_rate(counted, changes), again))
    found.sort(key=lambda f: (-f[5], -f[4], -f[6], f[2], f[0], f[1]))
    return Records(FLAKY_COLUMNS, found)


def _window_ids(db: Db, target: str | None, window: int):
    """SELECT of the ids of the last ``window`` runs (not deleted) of each target matching ``target``."""
    r = db.t.runs.c
    newest = func.row_number().over(partition_by=db.t.key_columns, order_by=(r.event_time.desc(), r.id.desc()))
    ranked = select(r.id, newest.label("position")).where(not_deleted_run(db))
    if target:
        ranked = ranked.where(field_filter(db, target_expr(db), target))
    ranked = ranked.subquery()
    return select(ranked.c.id).where(ranked.c.position <= window)


def _window_runs(db: Db, target: str | None, window: int) -> list[tuple[int, str]]:
    """(id, target) of the window's runs, oldest first."""
    r = db.t.runs.c
    query = select(r.id, target_expr(db)).where(r.id.in_(_window_ids(db, target, window))).order_by(r.event_time, r.id)
    return [(run_id, name) for run_id, name in db.conn.execute(query)]


def _reruns(db: Db, window_ids, leaf_of: dict[int, tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
    """Pass-after-fail re-runs per leaf test, from the status writes of the window's runs' events."""
    e = db.t.events.c
    query = (
        select(e.test_id, e.status)
        .where(e.run_id.in_(window_ids), e.test_id.is_not(None), e.status.in_(PASS_LIKE + FAIL_LIKE))
        .order_by(e.seq)
    )
    statuses: dict[int, list[str]] = defaultdict(list)
    for test_id, status in db.conn.execute(query):
        if test_id in leaf_of:
            statuses[test_id].append(status)
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for test_id, written in statuses.items():
        counts[leaf_of[test_id]] += reruns(written)
    return counts
