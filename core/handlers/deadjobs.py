"""Dead jobs: finding and marking the running tests that stopped reporting (reference C.8, SPEC 9.8).

The rule that judges one test is pure and lives in ``rules/deadjobs.py``; this module reads the
candidate rows, marks the dead ones, and gives the server's periodic scan what it needs.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select

from ..db.context import Db
from ..db.dialect import one_at_a_time
from ..db.postgres import DEAD_JOBS_LOCK
from ..errors import Refused
from ..rules.deadjobs import CANDIDATE_STATES, DEAD_STATE, DEAD_STATUS, classify
from .arealock import close_dead
from .common import deleted_run_ids, require_run, require_test
from .runs import set_state_status_and_roll_up_run
from .tests import apply_state_status

DEFAULT_DEADTIME = 7200  # SPEC 9.8


def _deadtime(db: Db, given: int | None) -> int:
    value = given if given is not None else db.setting("tests", "deadtime", DEFAULT_DEADTIME)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Refused(f"tests.deadtime in config.toml must be a number of seconds, not {value!r}") from None


def find_dead(db: Db, run_id: int | None, running_deadtime: int, remote_deadtime: int) -> dict[str, list[dict]]:
    t, hb = db.t.tests.c, db.t.heartbeats.c
    columns = [t.id, t.run_id, t.testname, t.item_path, t.state, t.status, t.event_time, t.run_duration, t.uname]
    query = (
        select(*columns, hb.period.label("hb_period"), hb.last_beat.label("hb_last"))
        .select_from(db.t.tests.outerjoin(db.t.heartbeats, hb.test_id == t.id))
        .where(t.state.in_(CANDIDATE_STATES), t.run_id.not_in(deleted_run_ids(db)))
    )
    if run_id is not None:
        query = query.where(t.run_id == run_id)
    rows = db.records(query.order_by(t.id))
    return classify(rows, db.now, running_deadtime, remote_deadtime)


def get_toplevels_and_incompletes(
    db: Db,
    *,
    run_id: int | None = None,
    running_deadtime: int | None = None,
    remotehoststart_deadtime: int | None = None,
) -> dict:
    running = _deadtime(db, running_deadtime)
    return find_dead(
        db, run_id, running, _deadtime(db, remotehoststart_deadtime) if remotehoststart_deadtime else running
    )


def have_incompletes(db: Db, *, run_id: int | None = None, deadtime: int | None = None) -> bool:
    """Whether mark-incomplete would mark anything (placeholder toplevels, which it leaves alone, do not count)."""
    deadtime = _deadtime(db, deadtime)
    found = find_dead(db, run_id, deadtime, deadtime)
    return bool(found["incompletes"] or found["old_launched"])


def mark_incomplete(db: Db, *, run_id: int | None = None, deadtime: int | None = None) -> list[int]:
    """C.8 (working, SPEC 9.5): dead tests → COMPLETED/DEAD with the reason; items roll up.
    Deleted runs are left alone; a run id given must be a run that is not deleted."""
    if run_id is not None:
        require_run(db, run_id)
    one_at_a_time(db, DEAD_JOBS_LOCK)  # front-ends over one PostgreSQL database mark in turn
    db.open_tests = None  # a test open for a job that died is what this marks (and closes)
    deadtime = _deadtime(db, deadtime)
    found = find_dead(db, run_id, deadtime, deadtime)
    marked = []
    for row in found["incompletes"] + found["old_launched"]:
        test = require_test(db, row["id"])
        apply_state_status(db, test, DEAD_STATE, DEAD_STATUS, f"Test failed to complete: {row['reason']}")
        marked.append(row["id"])
    if marked:
        db.conn.execute(delete(db.t.heartbeats).where(db.t.heartbeats.c.test_id.in_(marked)))
        close_dead(db, marked)
        for run in sorted({row["run_id"] for row in found["incompletes"] + found["old_launched"]}):
            set_state_status_and_roll_up_run(db, run_id=run)
    return marked


def dead_job_scan(db: Db) -> dict:
    """What the server's periodic check needs: are there dead jobs, and the shortest live heartbeat."""
    deadtime = _deadtime(db, None)
    found = find_dead(db, None, deadtime, deadtime)
    shortest = db.conn.execute(select(func.min(db.t.heartbeats.c.period))).scalar()
    return {"dead": len(found["incompletes"]) + len(found["old_launched"]), "shortest_heartbeat": shortest}
