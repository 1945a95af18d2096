"""Keys, targets and runs (reference A.17, C.2, C.6, C.7, C.19, D.3, D.5, D.7; SPEC 9.2, 9.6, 9.9)."""

from __future__ import annotations

from sqlalchemy import and_, case, delete, func, insert, or_, select, update
from sqlalchemy.sql import ColumnElement

from ..db.context import Db
from ..db.dialect import insert_ignore, lock_row
from ..db.dialect import inserted as inserted_row
from ..db.schema import DELETED
from ..errors import NotFound, Refused
from ..protocol import Records
from ..rules.names import bad_key_values
from ..rules.patterns import LIKE, element_kind
from ..rules.rollup import roll_up_run
from .arealock import bump_version
from .common import (
    RUN_DELETED,
    RUN_LOCKED,
    check_runname,
    field_filter,
    find_run,
    lookup_run,
    not_deleted_run,
    page,
    parse_record,
    pattern_cond,
    refuse_if_locked,
    require_run,
    run_columns,
    run_state,
    split_target,
    target_expr,
    testpatt_filter,
)

# -- keys and targets ------------------------------------------------------------------------------


def get_keys(db: Db) -> list[str]:
    return list(db.keys)


def get_target(db: Db, *, run_id: int) -> str:
    return lookup_run(db, run_id)["target"]


def get_targets(db: Db, *, include_deleted: bool = False) -> Records:
    """Distinct key-value combinations of the runs, each with its target."""
    query = select(target_expr(db).label("target"), *db.t.key_columns).distinct().order_by(*db.t.key_columns)
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    return db.table(query)


def get_key_vals(db: Db, *, run_id: int) -> list[str]:
    run = lookup_run(db, run_id)
    return ["" if run[k] is None else run[k] for k in db.keys]


def get_key_val_pairs(db: Db, *, run_id: int) -> dict:
    run = lookup_run(db, run_id)
    return {k: "" if run[k] is None else run[k] for k in db.keys}


# -- registering and inserting runs ----------------------------------------------------------------


def register_run(
    db: Db,
    *,
    target: str,
    runname: str,
    state: str = "new",
    status: str = "n/a",
    owner: str | None = None,
    contour: str = "",
) -> int:
    """C.19: insert-or-ignore by (runname, key values); a deleted run is revived; returns the id."""
    runs = db.t.runs
    check_runname(runname)
    values = split_target(db, target)
    _check_own_state(state)
    owner = owner or db.ctx.client.get("user") or ""
    row = {"runname": runname, "state": state, "status": status, "owner": owner, "event_time": db.now}
    row["contour"] = contour or ""
    row.update(zip(db.keys, values, strict=True))
    inserted = db.conn.execute(insert_ignore(db.dialect, runs, row, ("runname", *db.keys)))
    run_id, deleted_at = db.conn.execute(
        select(runs.c.id, runs.c.deleted_at).where(_same_run(db, runname, values))
    ).one()
    if inserted_row(inserted):
        db.emit(run_id=run_id, state=state, status=status, runname=runname, target=target)
    elif deleted_at is not None:  # the only way back for a deleted run (C.19)
        revived = {"state": state, "status": status, "event_time": db.now, "deleted_at": None}
        db.conn.execute(update(runs).where(runs.c.id == run_id).values(revived))
        db.emit(run_id=run_id, state=state, status=status, runname=runname, target=target, revived=True)
    return run_id


def _check_own_state(state: str | None) -> None:
    """'deleted' and 'locked' are not states a caller writes: they follow a run's deletion and lock."""
    if state == RUN_DELETED:
        raise Refused("a run's state cannot be set to 'deleted': `dbtool delete-run --run-id N` deletes it")
    if state == RUN_LOCKED:
        raise Refused("a run's state cannot be set to 'locked': `dbtool lock-unlock-run --run-id N --lock` locks it")


def _same_run(db: Db, runname: str, values: list) -> ColumnElement:
    return and_(db.t.runs.c.runname == runname, *(col == v for col, v in zip(db.t.key_columns, values, strict=True)))


def insert_run(db: Db, *, record: str) -> int:
    runs = db.t.runs
    row = parse_record(record, [c for c in runs.c if c.name != "id"], "the runs table", not_null=("runname",))
    row.setdefault("event_time", db.now)
    _lifecycle_from_state(row, db.now)
    values = [row.get(k) for k in db.keys]
    runname = row.get("runname", "norun")  # the column's default (reference A.2)
    check_runname(runname)
    problem = bad_key_values(db.keys, values)
    if problem:
        raise Refused(f"--record {problem}")
    existing = db.conn.execute(select(runs.c.id).where(_same_run(db, runname, values))).scalar()
    if existing is not None:
        raise Refused(f"run {runname!r} for target {'/'.join(map(str, values))} exists already (id {existing})")
    run_id = db.conn.execute(insert(runs).values(row)).inserted_primary_key[0]
    db.emit(run_id=run_id, state=row.get("state"), status=row.get("status"), runname=runname)
    return run_id


def _lifecycle_from_state(row: dict, now: int) -> None:
    """A record copied from Megatest (or an older dbtool) says 'deleted'/'locked' in its state:
    give it the fields that make it so here, as the schema migration does."""
    if row.get("state") == RUN_DELETED and row.get("deleted_at") is None:
        row["deleted_at"] = now
    elif row.get("state") == RUN_LOCKED and row.get("locked_by") is None:
        row.update(state="unlocked", locked_by="", locked_at=row.get("locked_at") or now)


# -- listing runs -----------------------------------------------------------------------------------


def _newest_first(db: Db) -> list:
    return [db.t.runs.c.event_time.desc(), db.t.runs.c.id.desc()]


def get_runs(
    db: Db,
    *,
    runname: str | None = None,
    target: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    include_deleted: bool = False,
) -> Records:
    """Runs matching the run-name and target pattern lists, newest first."""
    query = select(*run_columns(db)).order_by(*_newest_first(db))
    query = _run_filters(db, query, runname, target, include_deleted)
    return db.table(page(query, limit, offset))


def _run_filters(db: Db, query, runname: str | None, target: str | None, include_deleted: bool):
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    if runname:
        query = query.where(field_filter(db, db.t.runs.c.runname, runname))
    if target:
        query = query.where(field_filter(db, target_expr(db), target))
    return query


def simple_get_runs(
    db: Db,
    *,
    runname: str | None = None,
    target: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    include_deleted: bool = False,
) -> Records:
    r = db.t.runs.c
    columns = [target_expr(db).label("target"), r.id, r.runname, run_state(db).label("state"), r.status, r.owner]
    columns.append(r.event_time)
    query = select(*columns).order_by(*_newest_first(db))
    query = _run_filters(db, query, runname, None, include_deleted)
    if target:
        query = query.where(pattern_cond(db, target_expr(db), LIKE, target))
    return db.table(page(query, limit, offset))


def _by_patt_filter(db: Db, runname: str | None, target: str | None) -> list[ColumnElement]:
    """get-runs-by-patt: one run-name pattern; the target split per key, a missing part matching ''."""
    conditions = []
    if runname:
        conditions.append(pattern_cond(db, db.t.runs.c.runname, element_kind(runname), runname))
    if target is not None:
        parts = target.split("/")
        for i, column in enumerate(db.t.key_columns):
            part = parts[i] if i < len(parts) else ""
            conditions.append(pattern_cond(db, column, element_kind(part), part) if part else column == "")
    return conditions


DEFAULT_RUN_FIELDS = ["id", "runname", "state", "status", "owner", "event_time"]


def get_runs_by_patt(
    db: Db,
    *,
    runname: str | None = None,
    target: str | None = None,
    limit: int | None = None,
    offset: int = 0,
    fields: list[str] | None = None,
    last_update: int | None = None,
    include_deleted: bool = False,
) -> Records:
    runs = db.t.runs
    names = fields or DEFAULT_RUN_FIELDS
    unknown = [f for f in names if f not in runs.c]
    if unknown:
        raise Refused(f"unknown run field(s) {', '.join(unknown)}; the runs table has: {', '.join(runs.c.keys())}")
    columns = [*db.t.key_columns]
    columns += [run_state(db).label("state") if f == "state" else runs.c[f] for f in names if f not in db.keys]
    query = select(*columns).where(*_by_patt_filter(db, runname, target))
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    if last_update is not None:
        query = query.where(runs.c.last_update >= last_update)
    query = query.order_by(runs.c.event_time, runs.c.id)
    return db.table(page(query, limit, offset))


def get_runs_cnt_by_patt(db: Db, *, runname: str | None = None, target: str | None = None) -> int:
    query = (
        select(func.count()).select_from(db.t.runs).where(not_deleted_run(db), *_by_patt_filter(db, runname, target))
    )
    return db.conn.execute(query).scalar_one()


def get_num_runs(db: Db, *, runname: str = "%") -> int:
    query = select(func.count()).select_from(db.t.runs)
    query = query.where(not_deleted_run(db), pattern_cond(db, db.t.runs.c.runname, LIKE, runname))
    return db.conn.execute(query).scalar_one()


def get_all_run_ids(db: Db, *, include_deleted: bool = False) -> list[int]:
    query = select(db.t.runs.c.id).order_by(*_newest_first(db))
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    return list(db.conn.execute(query).scalars())


def get_all_runids(db: Db, *, include_deleted: bool = False) -> list[int]:
    query = select(db.t.runs.c.id).order_by(db.t.runs.c.id)
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    return list(db.conn.execute(query).scalars())


def get_prev_run_ids(db: Db, *, run_id: int, include_deleted: bool = False) -> list[int]:
    """Other runs with the same key values (the same target), newest first."""
    run = lookup_run(db, run_id)
    runs = db.t.runs
    query = select(runs.c.id).where(runs.c.id != run_id, *(col == run[col.name] for col in db.t.key_columns))
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    return list(db.conn.execute(query.order_by(*_newest_first(db))).scalars())


def get_run_ids_matching_target(
    db: Db,
    *,
    target: str | None = None,
    runname: str | None = None,
    keynames: list[str] | None = None,
    testpatt: str | None = None,
    statepatt: str | None = None,
    statuspatt: str | None = None,
    include_deleted: bool = False,
) -> list[int]:
    """Each key LIKE its part of the target (a missing part matches anything), run name LIKE."""
    runs = db.t.runs
    query = select(runs.c.id).order_by(runs.c.id)
    if target:
        for column, part in zip(db.t.key_columns, target.split("/"), strict=False):
            query = query.where(pattern_cond(db, column, LIKE, part))
    if runname:
        query = query.where(pattern_cond(db, runs.c.runname, LIKE, runname))
    if not include_deleted:
        query = query.where(not_deleted_run(db))
    return list(db.conn.execute(query).scalars())


def get_run_record_ids(
    db: Db, *, target: str | None = None, runname: str | None = None, testpatt: str | None = None, since: int = 0
) -> list[int]:
    """Runs that changed after ``since``, themselves or through one of their tests (matching testpatt)."""
    runs, tests = db.t.runs, db.t.tests
    changed_tests = select(tests.c.id).where(tests.c.run_id == runs.c.id, tests.c.last_update > since)
    if testpatt:
        changed_tests = changed_tests.where(testpatt_filter(db, testpatt))
    query = select(runs.c.id).where(or_(runs.c.last_update > since, changed_tests.exists()))
    query = _run_filters(db, query, runname, target, False).order_by(runs.c.id)
    return list(db.conn.execute(query).scalars())


# -- one run ----------------------------------------------------------------------------------------


def get_run_info(db: Db, *, run_id: int) -> dict:
    return lookup_run(db, run_id)


def get_run_name_from_id(db: Db, *, run_id: int) -> str:
    return lookup_run(db, run_id)["runname"]


def get_run_status(db: Db, *, run_id: int) -> str:
    return lookup_run(db, run_id)["status"]


def get_run_state(db: Db, *, run_id: int) -> str:
    return lookup_run(db, run_id)["state"]


def get_run_state_status(db: Db, *, run_id: int) -> dict:
    run = lookup_run(db, run_id)
    return {"state": run["state"], "status": run["status"]}


def _set_run(db: Db, run_id: int, values: dict, cmd_data: dict | None = None) -> None:
    require_run(db, run_id)
    _check_own_state(values.get("state"))
    if values:
        db.conn.execute(update(db.t.runs).where(db.t.runs.c.id == run_id).values(values))
    db.emit(run_id=run_id, state=values.get("state"), status=values.get("status"), **(cmd_data or {}))


def set_run_status(db: Db, *, run_id: int, status: str, comment: str | None = None) -> None:
    values = {"status": status}
    if comment is not None:
        values["comment"] = comment
    _set_run(db, run_id, values)


def set_run_state_status(db: Db, *, run_id: int, state: str | None = None, status: str | None = None) -> None:
    if state is None and status is None:
        raise Refused("give --state and/or --status")
    _set_run(db, run_id, {k: v for k, v in (("state", state), ("status", status)) if v is not None})


def update_run_event_time(db: Db, *, run_id: int) -> None:
    _set_run(db, run_id, {"event_time": db.now})


def set_state_status_and_roll_up_run(
    db: Db, *, run_id: int, state: str | None = None, status: str | None = None
) -> dict:
    """C.2 / SPEC 9.2: the run's state by the item roll-up rules applied to its toplevel tests, its
    status the worst of theirs (``roll_up_run``); stored on the run (under a lock too)."""
    run = require_run(db, run_id)
    lock_row(db, db.t.runs, run_id)  # (PostgreSQL) after its tests' locks: see dialect.lock_row
    tests, r = db.t.tests.c, db.t.runs.c
    groups = db.conn.execute(
        select(tests.state, tests.status, func.count())
        .where(tests.run_id == run_id, tests.item_path == "", tests.state != DELETED)
        .group_by(tests.state, tests.status)
    ).all()
    if not groups:
        return {"state": run["state"], "status": run["status"]}
    stored = tuple(db.conn.execute(select(r.state, r.status).where(r.id == run_id)).one())  # under a lock too
    current = (state if state is not None else stored[0], status if status is not None else stored[1])
    new = roll_up_run(groups)
    if new != current or new != stored:
        _set_run(db, run_id, {"state": new[0], "status": new[1]}, {"rollup": True})
    return {"state": new[0], "status": new[1]}


# -- deleting and locking -----------------------------------------------------------------------------


def delete_run(db: Db, *, run_id: int, batch: int | None = None) -> dict | None:
    """C.6: the run → deleted and its tests → DELETED, then its steps and data hard-deleted.

    The first request does the deletion itself, all of it in its one transaction: from its commit
    on the run is deleted and hidden, however the purge that follows is interrupted. Without
    ``batch`` that request also purges everything; with ``batch`` each request purges the steps and
    data of at most ``batch`` more tests (so a huge run does not hold the writer, and a client can
    show progress) and returns {"tests": purged in this request, "remaining": tests left to purge}.
    delete-run on a deleted run goes on with an interrupted purge (a no-op once there is nothing left).
    """
    run = find_run(db, run_id)
    if run is None:
        raise Refused(f"no run with id {run_id}; `dbtool get-runs` lists the runs")
    refuse_if_locked(run)
    first = run["deleted_at"] is None
    if first:
        _mark_deleted(db, run_id)
    purged = _purge(db, run_id, batch)
    remaining = _left_to_purge(db, run_id) if batch is not None else 0
    if first:
        db.emit(run_id=run_id, state=RUN_DELETED, purged=purged, remaining=remaining)
    elif purged:
        db.emit(run_id=run_id, purged=purged, remaining=remaining)
    return None if batch is None else {"tests": purged, "remaining": remaining}


def _mark_deleted(db: Db, run_id: int) -> None:
    """The deletion proper: the run deleted, every test of it DELETED, their heartbeats and open
    records gone."""
    tests = db.t.tests
    of_run = select(tests.c.id).where(tests.c.run_id == run_id)
    db.conn.execute(update(tests).where(tests.c.run_id == run_id).values(state="DELETED", comment=""))
    db.conn.execute(delete(db.t.heartbeats).where(db.t.heartbeats.c.test_id.in_(of_run)))
    if db.conn.execute(delete(db.t.test_jobs).where(db.t.test_jobs.c.test_id.in_(of_run))).rowcount:
        bump_version(db)  # (no job writes into a deleted run: its tests are open to none, nor when it revives)
    values = {"state": RUN_DELETED, "comment": "", "deleted_at": db.now}
    db.conn.execute(update(db.t.runs).where(db.t.runs.c.id == run_id).values(values))
    from .junit import forget_imports

    forget_imports(db, run_id)  # a revived run takes the same JUnit files again


def _unpurged(db: Db) -> ColumnElement:
    """A test that still has steps or data rows."""
    tests, steps, data = db.t.tests, db.t.test_steps, db.t.test_data
    return or_(
        select(steps.c.id).where(steps.c.test_id == tests.c.id).exists(),
        select(data.c.id).where(data.c.test_id == tests.c.id).exists(),
    )


def _purge(db: Db, run_id: int, batch: int | None) -> int:
    """Hard-delete the steps and data of the run's tests (of the next ``batch`` tests that have
    any); returns how many tests were purged."""
    tests, steps, data = db.t.tests, db.t.test_steps, db.t.test_data
    pending = select(tests.c.id).where(tests.c.run_id == run_id, _unpurged(db))
    if batch is None:
        count = db.conn.execute(select(func.count()).select_from(pending.subquery())).scalar_one()
        part = select(tests.c.id).where(tests.c.run_id == run_id)
        db.conn.execute(delete(steps).where(steps.c.test_id.in_(part)))
        db.conn.execute(delete(data).where(data.c.test_id.in_(part)))
        return count
    ids = list(db.conn.execute(pending.order_by(tests.c.id).limit(batch)).scalars())
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        db.conn.execute(delete(steps).where(steps.c.test_id.in_(part)))
        db.conn.execute(delete(data).where(data.c.test_id.in_(part)))
    return len(ids)


def _left_to_purge(db: Db, run_id: int) -> int:
    tests = db.t.tests
    return db.conn.execute(select(func.count()).where(tests.c.run_id == run_id, _unpurged(db))).scalar_one()


def lock_unlock_run(db: Db, *, run_id: int, lock: bool = False, unlock: bool = False, user: str | None = None) -> None:
    """C.7 (lock is the fail-safe default), recorded in access_log; the lock lives in locked_by/locked_at,
    so the run's own state is kept underneath and the run reports 'locked' until it is unlocked."""
    if lock and unlock:
        raise Refused("give --lock or --unlock, not both")
    require_run(db, run_id)
    user = user or db.ctx.client.get("user") or ""
    action = "unlocked" if unlock else "locked"
    values = {"locked_by": None, "locked_at": None} if unlock else {"locked_by": user, "locked_at": db.now}
    r = db.t.runs.c
    db.conn.execute(update(db.t.runs).where(r.id == run_id).values(values))
    db.conn.execute(insert(db.t.access_log).values(user=user, accessed=db.now, args=f"{action} {run_id}"))
    state = db.conn.execute(select(r.state).where(r.id == run_id)).scalar() if unlock else RUN_LOCKED
    db.emit(run_id=run_id, state=state, user=user, **{action: True})


# -- statistics ---------------------------------------------------------------------------------------


def _not_placeholder(db: Db) -> ColumnElement:
    """Placeholder toplevels (never launched on a host: uname n/a, item_path '') are not counted."""
    t = db.t.tests.c
    return or_(func.coalesce(t.uname, "") != "n/a", t.item_path != "")


def get_raw_run_stats(db: Db, *, run_id: int, include_deleted: bool = False) -> list[dict]:
    t = db.t.tests.c
    query = (
        select(t.state, t.status, func.count().label("count"))
        .where(t.run_id == run_id, _not_placeholder(db))
        .group_by(t.state, t.status)
        .order_by(t.state, t.status)
    )
    if not include_deleted:
        query = query.where(t.state != DELETED)
    return db.records(query)


def update_run_stats(db: Db, *, run_id: int, stat: list[str] | None = None) -> None:
    """Replace the run_stats rows of the given (state, status) pairs; others are left alone."""
    require_run(db, run_id)
    triples = (
        [_parse_stat(s) for s in stat]
        if stat
        else [(r["state"], r["status"], r["count"]) for r in get_raw_run_stats(db, run_id=run_id, include_deleted=True)]
    )
    rs = db.t.run_stats
    for state, status, count in triples:
        db.conn.execute(delete(rs).where(rs.c.run_id == run_id, rs.c.state == state, rs.c.status == status))
        db.conn.execute(insert(rs).values(run_id=run_id, state=state, status=status, count=count, last_update=db.now))
    db.emit(run_id=run_id, stats=len(triples))


def _parse_stat(text: str) -> tuple[str, str, int]:
    parts = text.split(",")
    if len(parts) != 3:
        raise Refused(f"--stat {text!r} must be STATE,STATUS,COUNT")
    try:
        count = int(parts[2])
    except ValueError:
        count = -1
    if not 0 <= count < 2**63:
        raise Refused(f"--stat {text!r}: COUNT must be a whole number of tests (0 or more)")
    return parts[0].strip(), parts[1].strip(), count


def get_main_run_stats(db: Db, *, run_id: int) -> Records:
    run = lookup_run(db, run_id)
    if run["deleted_at"] is not None or run["state"] == "DELETED":  # B.3: upper case counts here too
        raise NotFound(f"run {run_id} is deleted")
    rs = db.t.run_stats.c
    query = select(rs.state, rs.status, rs["count"]).where(rs.run_id == run_id).order_by(rs.state, rs.status)
    return db.table(query)


def get_run_stats(db: Db, *, include_deleted: bool = False) -> list[dict]:
    """Per run: counts of its tests by net state; Totals first (by net state), then runs newest first."""
    runs, t = db.t.runs.c, db.t.tests.c
    netstate = _netstate(db).label("netstate")
    query = (
        select(
            runs.id.label("run_id"),
            runs.runname,
            target_expr(db).label("target"),
            netstate,
            func.count().label("count"),
        )
        .join_from(db.t.runs, db.t.tests, t.run_id == runs.id)
        .where(not_deleted_run(db))
        .group_by(runs.id, runs.runname, target_expr(db), netstate)
    )
    if not include_deleted:
        query = query.where(t.state != DELETED)
    rows = db.records(query)
    order = {run_id: i for i, run_id in enumerate(get_all_run_ids(db))}
    rows.sort(key=lambda r: (order.get(r["run_id"], len(order)), r["netstate"] or ""))
    totals: dict[str, int] = {}
    for r in rows:
        totals[r["netstate"]] = totals.get(r["netstate"], 0) + r["count"]
    head = [
        {"run_id": None, "runname": "Totals", "target": None, "netstate": k, "count": v}
        for k, v in sorted(totals.items(), key=lambda kv: kv[0] or "")
    ]
    return head + rows


def _netstate(db: Db) -> ColumnElement:
    t = db.t.tests.c
    return case((t.state == "COMPLETED", t.status), else_=t.state)


def get_run_times(db: Db, *, runname: str = "%", target: str = "%", include_deleted: bool = False) -> list[dict]:
    """Per run: minutes from its first test start to its last test end."""
    runs, t = db.t.runs.c, db.t.tests.c
    span = func.max(t.event_time + t.run_duration) - func.min(t.event_time)
    query = (
        select(runs.runname, span.label("seconds"), target_expr(db).label("target"))
        .join_from(db.t.runs, db.t.tests, t.run_id == runs.id)
        .where(pattern_cond(db, runs.runname, LIKE, runname), pattern_cond(db, target_expr(db), LIKE, target))
        .group_by(runs.id, runs.runname, target_expr(db))
        .order_by(runs.id)
    )
    if not include_deleted:
        query = query.where(not_deleted_run(db), t.state != DELETED)
    return [
        {"runname": r.runname, "runtime_minutes": int(r.seconds or 0) // 60, "target": r.target}
        for r in db.conn.execute(query)
    ]


def get_test_times(db: Db, *, runname: str, target: str, include_deleted: bool = False) -> Records:
    runs, t = db.t.runs.c, db.t.tests.c
    query = (
        select(t.testname, t.item_path, t.run_duration)
        .join_from(db.t.tests, db.t.runs, t.run_id == runs.id)
        .where(runs.runname == runname, target_expr(db) == target)
        .order_by(t.testname, t.item_path)
    )
    if not include_deleted:
        query = query.where(not_deleted_run(db), t.state != DELETED)
    return db.table(query)
