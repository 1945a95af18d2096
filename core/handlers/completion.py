"""Run completion: a run is complete when it has tests and every one is in a final state.

The answer is kept in the database (``runs.completed_at``: when the run last became complete, NULL
while it is not) and decided in the transaction of the write that changed a test: after a write
handler returns, ``settle_runs`` looks at each run whose tests it touched — the run's row locked
after the test and toplevel rows (the lock order of every roll-up), then one probe of the partial
index of unfinished tests — and on a change of the answer stores it and emits ``run-complete``
(after rolling the run up, so the event carries its final state and status) or ``run-reopened``.
A write that leaves the answer as it was (a final state rewritten, a heartbeat) emits nothing more.
"""

from __future__ import annotations

from sqlalchemy import Boolean, and_, bindparam, exists, func, literal_column, select, update

from ..db.context import Db
from ..db.dialect import lock_row
from ..db.schema import DELETED, UNFINISHED_SQL
from ..errors import NotFound
from ..rules.vocab import FINAL_STATES
from .common import find_run, not_deleted_run

RUN_COMPLETE, RUN_REOPENED = "run-complete", "run-reopened"


def settle_runs(db: Db) -> None:
    """Bring ``completed_at`` of the runs whose tests this request changed up to date (see above)."""
    runs = db.touched
    if db.touched_tests:
        t = db.t.tests.c
        found = db.conn.execute(select(t.run_id).where(t.id.in_(sorted(db.touched_tests))).distinct()).scalars()
        runs = runs | set(found)
        db.touched_tests.clear()
    if not runs:
        return
    for run_id in sorted(runs):  # (in id order: two requests lock the same runs in the same order)
        _settle(db, run_id)
    db.touched.clear()


def _completion_query(db: Db):
    r, t = db.t.runs.c, db.t.tests.c
    # (SQLite: INDEXED BY, since without statistics it would as soon take tests_run and step through
    # every test of the run; the partial index holds only the unfinished ones)
    hint = " INDEXED BY tests_unfinished" if db.dialect == "sqlite" else ""
    unfinished = literal_column(
        f"EXISTS (SELECT 1 FROM tests{hint} WHERE tests.run_id = runs.id AND {UNFINISHED_SQL})", Boolean
    )
    live = exists().where(t.run_id == r.id, t.state != DELETED)
    return select(r.completed_at, r.deleted_at, unfinished.label("unfinished"), live.label("live")).where(
        r.id == bindparam("id")
    )


def _settle(db: Db, run_id: int) -> None:
    lock_row(db, db.t.runs, run_id)  # (PostgreSQL) then what other front-ends committed is seen below
    rows = db.fast.rows(("run_completion", db.dialect), lambda: _completion_query(db), {"id": run_id})
    if not rows:
        return
    completed_at, deleted_at, unfinished, live = rows[0]
    if deleted_at is not None:
        return
    complete = bool(live) and not unfinished
    if complete == (completed_at is not None):
        return
    if complete:
        from .runs import set_state_status_and_roll_up_run

        rolled = set_state_status_and_roll_up_run(db, run_id=run_id)
        _store(db, run_id, db.now)
        db.emit(
            cmd=RUN_COMPLETE, run_id=run_id, state=rolled["state"], status=rolled["status"], tests=_count(db, run_id)
        )
    else:
        _store(db, run_id, None)
        r = db.t.runs.c
        state, status = db.conn.execute(select(r.state, r.status).where(r.id == run_id)).one()
        db.emit(cmd=RUN_REOPENED, run_id=run_id, state=state, status=status)


def _store(db: Db, run_id: int, when: int | None) -> None:
    runs = db.t.runs
    db.conn.execute(update(runs).where(runs.c.id == run_id).values(completed_at=when))


def _count(db: Db, run_id: int) -> int:
    t = db.t.tests.c
    return db.conn.execute(select(func.count()).where(t.run_id == run_id, t.state != DELETED)).scalar_one()


def get_run_completion(db: Db, *, run_id: int) -> dict:
    """Whether a run is complete, with its state, status and how many of its tests are final."""
    # The last event first: a run that becomes complete after it is read here has its run-complete
    # event after this seq (a watcher from seq sees it), whatever the isolation of this read.
    seq = db.conn.execute(select(func.max(db.t.events.c.seq))).scalar() or 0
    run = find_run(db, run_id)
    if run is None:
        raise NotFound(f"no run with id {run_id}")
    r, t = db.t.runs.c, db.t.tests.c
    stored = db.conn.execute(select(r.state, r.status, r.completed_at).where(r.id == run_id)).one()
    counts = db.conn.execute(
        select(func.count(), func.count().filter(t.state.in_(FINAL_STATES))).where(
            t.run_id == run_id, t.state != DELETED
        )
    ).one()
    return {
        "run_id": run_id,
        "complete": stored.completed_at is not None,
        "completed_at": stored.completed_at,
        "state": stored.state,
        "status": stored.status,
        "tests": counts[0],
        "final": counts[1],
        "seq": seq,
    }


def baseline_run(db: Db, run_id: int) -> int | None:
    """The most recent complete run of the same target before ``run_id`` (by event time, then id),
    not deleted; None when there is none."""
    run = find_run(db, run_id)
    if run is None:
        return None
    r = db.t.runs.c
    same_target = [col == run[col.name] for col in db.t.key_columns]
    earlier = (r.event_time < run["event_time"]) | and_(r.event_time == run["event_time"], r.id < run_id)
    query = (
        select(r.id)
        .where(*same_target, r.completed_at.is_not(None), not_deleted_run(db), earlier)
        .order_by(r.event_time.desc(), r.id.desc())
        .limit(1)
    )
    return db.conn.execute(query).scalar()


def baseline_status(db: Db, run_id: int, testname: str, item_path: str) -> tuple[int, str] | None:
    """(baseline run id, the test's status there) for a leaf test of ``run_id``, or None."""
    baseline = baseline_run(db, run_id)
    if baseline is None:
        return None
    t = db.t.tests.c
    status = db.conn.execute(
        select(t.status).where(
            t.run_id == baseline, t.testname == testname, t.item_path == item_path, t.state != DELETED
        )
    ).scalar()
    return None if status is None else (baseline, status)


def is_leaf(db: Db, run_id: int, testname: str, item_path: str) -> bool:
    """An item, or a toplevel that has no items."""
    if item_path:
        return True
    t = db.t.tests.c
    items = select(t.id).where(t.run_id == run_id, t.testname == testname, t.item_path != "").limit(1)
    return db.conn.execute(items).first() is None
