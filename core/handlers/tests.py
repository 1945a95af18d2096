"""Tests: registration, state/status with item roll-up, lookups and listings (C.1, C.3, D.2, D.6, D.10)."""

from __future__ import annotations

from sqlalchemy import Text, and_, bindparam, cast, delete, func, insert, or_, select, update

from ..db.context import Db
from ..db.dialect import insert_ignore, like, lock_row, regexp
from ..db.schema import DELETED, word
from ..errors import NotFound, Refused
from ..protocol import Records
from ..rules.regex import RegexError, compile_user
from ..rules.rollup import legacy_pf_rollup, merge_item, roll_up
from ..rules.vocab import COUNTED_RUNNING_STATES, FAIL_LIKE, PASS_LIKE
from .common import (
    check_testname,
    emit_for_test,
    locked_run_ids,
    lookup_run,
    lookup_test,
    page,
    parse_record,
    require_run,
    require_test,
    set_test_fields,
    test_record,
    testpatt_filter,
)

RUNNING_WORDS = [word(s) for s in COUNTED_RUNNING_STATES]  # (in the SQL text: see schema.word)
EVENT_TIME_RESET_STATES = ("LAUNCHED", "REMOTEHOSTSTART")


def ensure_test(db: Db, run_id: int, testname: str, item_path: str) -> int:
    """Insert-or-ignore a test row (NOT_STARTED, n/a) and return its id; emits when it is new."""
    tests = db.t.tests
    row = {
        "run_id": run_id,
        "testname": testname,
        "item_path": item_path,
        "state": "NOT_STARTED",
        "status": "n/a",
        "event_time": db.now,
    }
    inserted = db.fast.rowcount(
        "ensure_test",
        lambda: insert_ignore(db.dialect, tests, {k: bindparam(k) for k in row}, ("run_id", "testname", "item_path")),
        row,
    )
    test_id = db.fast.scalar(
        "test_id",
        lambda: select(tests.c.id).where(
            tests.c.run_id == bindparam("run_id"),
            tests.c.testname == bindparam("testname"),
            tests.c.item_path == bindparam("item_path"),
        ),
        row,
    )
    if db.open_tests:  # a test open for one job: only that job writes it
        db.guard_test(test_id)
    if inserted:
        db.emit(
            cmd="register-test",
            run_id=run_id,
            test_id=test_id,
            testname=testname,
            item_path=item_path,
            state="NOT_STARTED",
            status="n/a",
        )
    return test_id


def register_test(db: Db, *, run_id: int, testname: str, item_path: str = "") -> int:
    require_run(db, run_id)
    check_testname(testname)
    if item_path:
        ensure_test(db, run_id, testname, "")
    return ensure_test(db, run_id, testname, item_path)


def apply_state_status(
    db: Db, test: dict, state: str | None, status: str | None, comment: str | None, *, roll: bool = True
) -> dict:
    """C.1 steps 2-4 on an existing test row: set the fields, roll items into the toplevel, AUTO status.

    Returns the test's new (state, status) and, for an item, the toplevel's.
    """
    changes: dict = {}
    if state is not None:
        changes["state"] = state
        if state in EVENT_TIME_RESET_STATES:
            changes["event_time"] = db.now
    if status is not None:
        changes["status"] = status
    if comment is not None:
        changes["comment"] = comment
    set_test_fields(db, test["id"], changes)
    new_state = state if state is not None else test["state"]
    new_status = status if status is not None else test["status"]
    emit_for_test(db, test, state=new_state, status=new_status)
    result = {"test_id": test["id"], "state": new_state, "status": new_status}
    if roll and test["item_path"]:
        result["toplevel"] = roll_up_items(
            db, test["run_id"], test["testname"], test["item_path"], new_state, new_status
        )
    if status == "AUTO":
        from .testdata import rollup_test_data

        rollup_test_data(db, test["id"])
    return result


def roll_up_items(db: Db, run_id: int, testname: str, item_path: str, state: str, status: str) -> dict:
    """Recompute the toplevel's state/status from its items after one item changed (C.1 step 3b-h)."""
    t = db.t.tests.c
    top_id = ensure_test(db, run_id, testname, "")
    lock_row(db, db.t.tests, top_id)  # (PostgreSQL) its items as other front-ends left them, once they commit
    where = {"run_id": run_id, "testname": testname, "item_path": item_path}
    groups = db.fast.rows(
        "item_groups",
        lambda: (
            select(t.state, t.status, func.count())
            .where(
                t.run_id == bindparam("run_id"),
                t.testname == bindparam("testname"),
                t.item_path != "",
                t.item_path != bindparam("item_path"),
            )
            .group_by(t.state, t.status)
        ),
        where,
    )
    top_state, top_status = roll_up(merge_item(groups, state, status), state, status)
    current = db.fast.rows(
        "test_state", lambda: select(t.state, t.status).where(t.id == bindparam("id")), {"id": top_id}
    )
    if tuple(current[0]) != (top_state, top_status):
        set_test_fields(db, top_id, {"state": top_state, "status": top_status})
        db.emit(
            run_id=run_id,
            test_id=top_id,
            testname=testname,
            item_path="",
            state=top_state,
            status=top_status,
            rollup=True,
        )
    return {"test_id": top_id, "state": top_state, "status": top_status}


def set_state_status_and_roll_up_items(
    db: Db,
    *,
    run_id: int,
    testname: str,
    item_path: str = "",
    state: str | None = None,
    status: str | None = None,
    comment: str | None = None,
) -> int:
    require_run(db, run_id)
    check_testname(testname)
    test_id = ensure_test(db, run_id, testname, item_path)
    test = require_test(db, test_id)
    apply_state_status(db, test, state, status, comment)
    return test_id


def test_set_state_status_by_id(
    db: Db,
    *,
    test_id: int,
    run_id: int | None = None,
    state: str | None = None,
    status: str | None = None,
    comment: str | None = None,
) -> None:
    apply_state_status(db, require_test(db, test_id, run_id), state, status, comment)


def get_test_id(db: Db, *, run_id: int, testname: str, item_path: str = "") -> int:
    t = db.t.tests.c
    test_id = db.conn.execute(
        select(t.id).where(t.run_id == run_id, t.testname == testname, t.item_path == item_path)
    ).scalar()
    if test_id is None:
        where = f"{testname}/{item_path}" if item_path else testname
        raise NotFound(f"no test {where!r} in run {run_id}")
    return test_id


def get_test_info_by_id(db: Db, *, test_id: int, run_id: int | None = None) -> dict:
    return lookup_test(db, test_id)


def _column(db: Db, name: str, what: str):
    column = db.t.tests.c.get(name)
    if column is None:
        raise Refused(f"unknown {what} {name!r}; the tests table has: {', '.join(db.t.tests.c.keys())}")
    return column


def state_status_filter(db: Db, states: list[str] | None, statuses: list[str] | None, not_in: bool, mode: str):
    """The states/statuses selection of D.10 (the dashboard OR-form parenthesised, SPEC 9.5)."""
    t = db.t.tests.c
    if states and statuses:
        if mode == "dashboard":
            if not_in:
                return or_(
                    and_(t.state == "COMPLETED", t.status.not_in(statuses)),
                    and_(t.state != "COMPLETED", t.state.not_in(states)),
                )
            return or_(
                and_(t.state == "COMPLETED", t.status.in_(statuses)),
                and_(t.state.not_in([word("COMPLETED"), DELETED]), t.state.in_(states)),
            )
        if not_in:
            return and_(t.state.not_in(states), t.status.not_in(statuses))
        return and_(t.state.in_(states), t.status.in_(statuses))
    if states:
        return t.state.not_in(states) if not_in else t.state.in_(states)
    if statuses:
        return t.status.not_in(statuses) if not_in else t.status.in_(statuses)
    return None


def match_filters(db: Db, match: list[str]) -> list:
    """``FIELD=REGEX`` selections (CCP4i's DbSelectRecord): the field must be a tests column."""
    conditions = []
    for spec in match:
        field, sep, pattern = spec.partition("=")
        if not sep or not field:
            raise Refused(f"--match {spec!r} must be FIELD=REGEX, e.g. testname=^unit")
        column = _column(db, field.strip(), "match field")
        try:
            compile_user(pattern)
        except RegexError as err:
            raise Refused(f"--match {field}: {err}") from None
        conditions.append(regexp(db.dialect, cast(column, Text), pattern))
    return conditions


def get_tests_for_run(
    db: Db,
    *,
    run_id: int | list[int] | None,
    testpatt: str | None = None,
    states: list[str] | None = None,
    statuses: list[str] | None = None,
    not_in: bool = False,
    mode: str = "normal",
    sort_by: str = "id",
    sort_order: str = "asc",
    limit: int | None = None,
    offset: int = 0,
    last_update: int | None = None,
    fields: list[str] | None = None,
    match: list[str] | None = None,
    include_deleted: bool = False,
) -> Records:
    """D.10 with SPEC 9.5/9.6: the OR-forms parenthesised, results in query order (no reversal).

    ``run_id`` may also be a list of run ids or None (every run), for the -mindata variants.
    """
    t = db.t.tests.c
    columns = [_column(db, f, "field") for f in fields] if fields else list(db.t.tests.c)
    query = select(*columns)
    if isinstance(run_id, list):
        query = query.where(t.run_id.in_(run_id))
    elif run_id is not None:
        query = query.where(t.run_id == run_id)
    if last_update is not None:
        query = query.where(t.last_update >= last_update)
    elif not include_deleted:
        query = query.where(t.state != DELETED)
    if testpatt:
        query = query.where(testpatt_filter(db, testpatt))
    selection = state_status_filter(db, states, statuses, not_in, mode)
    if selection is not None:
        query = query.where(selection)
    if match:
        query = query.where(*match_filters(db, match))
    descending = sort_order == "desc"

    def order(col):
        return col.desc() if descending else col.asc()

    if sort_by == "rundir":
        query = query.order_by(order(func.length(t.rundir)), t.id)
    elif sort_by == "testname":
        query = query.order_by(order(t.testname), t.item_path, t.id)
    elif sort_by == "statestatus":
        query = query.order_by(order(t.state), t.status, t.id)
    else:
        query = query.order_by(order(_column(db, sort_by, "sort field")), t.id)
    return db.table(page(query, limit, offset))


# -- plain writes (C.3, C.6, D.2) --------------------------------------------------------------------


def test_set_state_status(
    db: Db,
    *,
    test_id: int,
    run_id: int | None = None,
    state: str | None = None,
    status: str | None = None,
    comment: str | None = None,
) -> None:
    """C.3: set the given fields, no roll-up."""
    apply_state_status(db, require_test(db, test_id, run_id), state, status, comment, roll=False)


def set_tests_state_status(
    db: Db,
    *,
    run_id: int,
    testnames: list[str],
    curr_state: str | None = None,
    curr_status: str | None = None,
    new_state: str | None = None,
    new_status: str | None = None,
) -> list[int]:
    """C.3: for each name (LIKE), every matching row of the run → the new state/status; toplevel ids."""
    require_run(db, run_id)
    t = db.t.tests.c
    state = new_state or curr_state or "NOT_STARTED"
    status = new_status or curr_status or "UNKNOWN"  # the reference falls back to currstate here (a bug)
    toplevels: list[int] = []
    for name in testnames:
        match = [t.run_id == run_id, like(db.dialect, t.testname, name)]
        if curr_state is not None:
            match.append(t.state == curr_state)
        if curr_status is not None:
            match.append(t.status == curr_status)
        rows = db.conn.execute(select(t.id, t.testname, t.item_path).where(*match)).all()
        if rows:
            db.conn.execute(update(db.t.tests).where(t.id.in_([r.id for r in rows])).values(state=state, status=status))
        for row in rows:
            db.emit(
                run_id=run_id,
                test_id=row.id,
                testname=row.testname,
                item_path=row.item_path,
                state=state,
                status=status,
            )
        top = db.conn.execute(
            select(t.id).where(t.run_id == run_id, like(db.dialect, t.testname, name), t.item_path == "").order_by(t.id)
        ).scalars()
        toplevels.extend(i for i in top if i not in toplevels)
    return toplevels


def _items(db: Db, run_id: int, testname: str) -> list:
    t = db.t.tests.c
    return db.conn.execute(
        select(t.state, t.status).where(t.run_id == run_id, t.testname == testname, t.item_path != "")
    ).all()


def _toplevel(db: Db, run_id: int, testname: str) -> dict:
    t = db.t.tests.c
    row = db.conn.execute(
        select(db.t.tests).where(t.run_id == run_id, t.testname == testname, t.item_path == "")
    ).first()
    if row is None:
        raise Refused(f"run {run_id} has no toplevel test {testname!r}")
    return test_record(row)


def top_test_set_per_pf_counts(db: Db, *, run_id: int, testname: str) -> dict:
    """C.3 legacy roll-up of a toplevel from its items, limited to this run (SPEC 9.5)."""
    require_run(db, run_id)
    top = _toplevel(db, run_id, testname)
    lock_row(db, db.t.tests, top["id"])
    state, status = legacy_pf_rollup(
        [tuple(r) for r in _items(db, run_id, testname)], top["pass_count"] or 0, top["fail_count"] or 0
    )
    set_test_fields(db, top["id"], {"state": state, "status": status})
    db.emit(run_id=run_id, test_id=top["id"], testname=testname, item_path="", state=state, status=status)
    return {"test_id": top["id"], "state": state, "status": status}


def update_pass_fail_counts(db: Db, *, run_id: int, testname: str) -> dict:
    """C.3: the toplevel's pass/fail counts from its items in this run (SPEC 9.5)."""
    require_run(db, run_id)
    top = _toplevel(db, run_id, testname)
    lock_row(db, db.t.tests, top["id"])
    statuses = [status for _state, status in _items(db, run_id, testname)]
    counts = {"pass_count": sum(s in PASS_LIKE for s in statuses), "fail_count": sum(s in FAIL_LIKE for s in statuses)}
    set_test_fields(db, top["id"], counts)
    db.emit(run_id=run_id, test_id=top["id"], testname=testname, item_path="", **counts)
    return counts


def delete_test_records(db: Db, *, test_id: int, run_id: int | None = None) -> None:
    """C.6 soft delete: steps and data → status DELETED; the test → DELETED, n/a, comment ''."""
    from .steps import soft_delete_steps
    from .testdata import soft_delete_data

    test = require_test(db, test_id, run_id, deleting=True)
    soft_delete_steps(db, test_id)
    soft_delete_data(db, test_id)
    set_test_fields(db, test_id, {"state": "DELETED", "status": "n/a", "comment": ""})
    db.emit(
        run_id=test["run_id"],
        test_id=test_id,
        testname=test["testname"],
        item_path=test["item_path"],
        state="DELETED",
        status="n/a",
    )


def delete_old_deleted_test_records(db: Db, *, days: int = 30) -> int:
    """C.6: purge tests DELETED longer than ``days`` ago, with their steps, data, samples, outputs,
    items and open records (every run but the locked ones)."""
    if days < 0:
        raise Refused("--days must not be negative")
    t = db.t.tests
    ids = select(t.c.id).where(
        t.c.state == "DELETED", t.c.event_time < db.now - days * 86400, t.c.run_id.not_in(locked_run_ids(db))
    )
    doomed = list(db.conn.execute(ids).scalars())
    closed = 0
    for chunk in range(0, len(doomed), 500):
        part = doomed[chunk : chunk + 500]
        for table in (db.t.test_steps, db.t.test_data, db.t.test_rundat, db.t.test_outputs, db.t.test_items):
            db.conn.execute(delete(table).where(table.c.test_id.in_(part)))
        closed += db.conn.execute(delete(db.t.test_jobs).where(db.t.test_jobs.c.test_id.in_(part))).rowcount
        db.conn.execute(delete(t).where(t.c.id.in_(part)))
    if closed:
        from .arealock import bump_version

        bump_version(db)
    if doomed:
        db.emit(purged=len(doomed))
    return len(doomed)


def test_set_top_process_pid(db: Db, *, test_id: int, pid: int, run_id: int | None = None) -> None:
    test = require_test(db, test_id, run_id)
    set_test_fields(db, test_id, {"attemptnum": pid})
    db.emit(run_id=test["run_id"], test_id=test_id, testname=test["testname"], item_path=test["item_path"], pid=pid)


def test_set_archive_block_id(db: Db, *, test_id: int, block_id: int, run_id: int | None = None) -> None:
    """tests.archived := the block (0 = not archived); a block id that names no block is refused."""
    test = require_test(db, test_id, run_id)
    blocks = db.t.archive_blocks.c
    if block_id and db.conn.execute(select(blocks.id).where(blocks.id == block_id)).first() is None:
        raise Refused(
            f"no archive block with id {block_id}; register it with `dbtool archive-register-block-name` "
            "(0 = not archived)"
        )
    set_test_fields(db, test_id, {"archived": block_id})
    db.emit(
        run_id=test["run_id"],
        test_id=test_id,
        testname=test["testname"],
        item_path=test["item_path"],
        archived=block_id,
    )


def insert_test(db: Db, *, run_id: int, record: str) -> int:
    """Insert a complete test record (replication); an existing (testname, item_path) is refused."""
    require_run(db, run_id)
    tests = db.t.tests
    columns = [c for c in tests.c if c.name not in ("id", "run_id")]
    row = parse_record(record, columns, "the tests table", not_null=("testname", "item_path"))
    if "testname" not in row:
        raise Refused("--record needs a testname")
    check_testname(row["testname"])
    row["run_id"] = run_id
    row.setdefault("item_path", "")
    row.setdefault("event_time", db.now)
    t = tests.c
    existing = db.conn.execute(
        select(t.id).where(t.run_id == run_id, t.testname == row["testname"], t.item_path == row["item_path"])
    ).scalar()
    if existing is not None:
        raise Refused(f"run {run_id} already has test {row['testname']}/{row['item_path']} (id {existing})")
    test_id = db.conn.execute(insert(tests).values(row)).inserted_primary_key[0]
    db.emit(
        run_id=run_id,
        test_id=test_id,
        testname=row["testname"],
        item_path=row["item_path"],
        state=row.get("state"),
        status=row.get("status"),
    )
    return test_id


# -- reads (D.6) -------------------------------------------------------------------------------------------


def get_test_state_status_by_id(db: Db, *, test_id: int, run_id: int | None = None) -> dict:
    test = lookup_test(db, test_id)
    return {"state": test["state"], "status": test["status"]}


SHORT_FIELDS = ("id", "run_id", "testname", "state", "status", "item_path")
MIN_FIELDS = ("id", "run_id", "testname", "state", "status", "event_time", "item_path")


def get_testinfo_state_status(db: Db, *, test_id: int, run_id: int | None = None) -> dict:
    test = lookup_test(db, test_id)
    return {k: test[k] for k in SHORT_FIELDS}


def test_get_rundir_from_test_id(db: Db, *, test_id: int, run_id: int | None = None) -> str:
    return lookup_test(db, test_id)["rundir"]


def test_get_top_process_pid(db: Db, *, test_id: int, run_id: int | None = None) -> int:
    return lookup_test(db, test_id)["attemptnum"]


def test_get_logfile_info(db: Db, *, run_id: int, testname: str) -> dict:
    t = db.t.tests.c
    row = db.conn.execute(
        select(t.rundir, t.final_logf).where(t.run_id == run_id, t.testname == testname, t.item_path == "")
    ).first()
    if row is None:
        raise NotFound(f"run {run_id} has no test {testname!r}")
    return dict(row._mapping)


def test_get_records_for_index_file(db: Db, *, run_id: int, testname: str, include_deleted: bool = False) -> Records:
    t = db.t.tests.c
    query = select(t.id, t.item_path, t.state, t.status, t.run_duration, t.final_logf, t.comment).where(
        t.run_id == run_id, t.testname == testname, t.item_path != ""
    )
    if not include_deleted:
        query = query.where(t.state != DELETED)
    return db.table(query.order_by(t.item_path))


def test_toplevel_num_items(db: Db, *, run_id: int, testname: str) -> int:
    t = db.t.tests.c
    query = select(func.count()).where(
        t.run_id == run_id, t.testname == testname, t.item_path != "", t.state != DELETED
    )
    return db.conn.execute(query).scalar_one()


def _count_running(db: Db, *conditions) -> int:
    t = db.t.tests.c
    not_placeholder = or_(func.coalesce(t.uname, "") != "n/a", t.item_path != "")
    query = select(func.count()).where(t.state.in_(RUNNING_WORDS), not_placeholder, *conditions)
    return db.conn.execute(query).scalar_one()


def get_count_tests_running(db: Db, *, run_id: int | None = None) -> int:
    """C.10: every run (an intended cross-run scope, SPEC 9.5)."""
    return _count_running(db)


def get_count_tests_running_for_run_id(db: Db, *, run_id: int) -> int:
    return _count_running(db, db.t.tests.c.run_id == run_id)


def get_count_tests_running_for_testname(db: Db, *, run_id: int, testname: str) -> int:
    t = db.t.tests.c
    return _count_running(db, t.run_id == run_id, t.testname == testname)


def get_count_tests_running_in_jobgroup(db: Db, *, jobgroup: str, run_id: int | None = None) -> int:
    meta = db.t.test_meta.c
    names = select(meta.testname).where(meta.jobgroup == jobgroup).scalar_subquery()
    return _count_running(db, db.t.tests.c.testname.in_(names))


def get_not_completed_cnt(db: Db, *, run_id: int) -> int:
    t = db.t.tests.c
    query = select(func.count()).where(t.run_id == run_id, t.state.not_in([word("COMPLETED"), DELETED]))
    return db.conn.execute(query).scalar_one()


def get_tests_for_run_mindata(
    db: Db,
    *,
    run_id: int,
    testpatt: str | None = None,
    states: list[str] | None = None,
    statuses: list[str] | None = None,
    not_in: bool = False,
    include_deleted: bool = False,
) -> Records:
    return get_tests_for_run(
        db,
        run_id=run_id,
        testpatt=testpatt,
        states=states,
        statuses=statuses,
        not_in=not_in,
        fields=list(MIN_FIELDS),
        include_deleted=include_deleted,
    )


def get_tests_for_runs_mindata(
    db: Db,
    *,
    run_ids: list[str] | None = None,
    testpatt: str | None = None,
    states: list[str] | None = None,
    statuses: list[str] | None = None,
    not_in: bool = False,
    include_deleted: bool = False,
) -> Records:
    try:
        ids = [int(i) for i in run_ids] if run_ids else None
    except ValueError:
        ids = [-1]
    if ids and not all(0 <= i < 2**63 for i in ids):
        raise Refused(f"--run-ids must be a comma list of run ids, not {','.join(run_ids)!r}")
    return get_tests_for_run(
        db,
        run_id=ids,
        testpatt=testpatt,
        states=states,
        statuses=statuses,
        not_in=not_in,
        fields=list(MIN_FIELDS),
        include_deleted=include_deleted,
        sort_by="run_id",
    )


def get_tests_for_run_state_status(
    db: Db, *, run_id: int, testpatt: str | None = None, last_update: int | None = None, include_deleted: bool = False
) -> Records:
    t = db.t.tests.c
    query = select(*(t[f] for f in SHORT_FIELDS)).where(t.run_id == run_id)
    if testpatt:
        query = query.where(testpatt_filter(db, testpatt))
    if last_update is not None:
        query = query.where(t.last_update >= last_update)
    if not include_deleted:
        query = query.where(t.state != DELETED)
    return db.table(query.order_by(t.id))


def get_previous_test_run_record(db: Db, *, run_id: int, testname: str, item_path: str = "") -> dict:
    """The newest earlier run with the same target that has this test/item: its record."""
    from .runs import get_prev_run_ids

    t = db.t.tests.c
    for prev in get_prev_run_ids(db, run_id=run_id):
        if prev >= run_id:
            continue
        row = db.conn.execute(
            select(db.t.tests).where(
                t.run_id == prev, t.testname == testname, t.item_path == item_path, t.state != DELETED
            )
        ).first()
        if row is not None:
            return test_record(row)
    raise NotFound(f"no earlier run of the same target has test {testname}/{item_path}")


def get_matching_previous_test_run_records(db: Db, *, run_id: int, testname: str, item_path: str = "") -> list[dict]:
    """For other runs with the same key values: the youngest record of each matching test/item."""
    run = lookup_run(db, run_id)
    runs, t = db.t.runs.c, db.t.tests.c
    same_target = select(runs.id).where(runs.id != run_id, *(col == run[col.name] for col in db.t.key_columns))
    query = (
        select(db.t.tests)
        .where(
            t.run_id.in_(same_target.scalar_subquery()),
            like(db.dialect, t.testname, testname),
            like(db.dialect, t.item_path, item_path),
            t.state != DELETED,
        )
        .order_by(t.testname, t.item_path, t.event_time.desc(), t.id.desc())
    )
    youngest: dict[tuple[str, str], dict] = {}
    for row in db.conn.execute(query):
        youngest.setdefault((row.testname, row.item_path), test_record(row))
    return list(youngest.values())


def test_get_paths_matching_keynames_target_new(
    db: Db,
    *,
    run_id: int,
    testpatt: str = "%",
    statepatt: str = "%",
    statuspatt: str = "%",
    keynames: list[str] | None = None,
    target: str | None = None,
    runname: str | None = None,
    res: list[str] | None = None,
    include_deleted: bool = False,
) -> list[str]:
    t = db.t.tests.c
    query = select(t.rundir).where(
        t.run_id == run_id,
        testpatt_filter(db, testpatt),
        like(db.dialect, t.state, statepatt),
        like(db.dialect, t.status, statuspatt),
    )
    if not include_deleted:
        query = query.where(t.state != DELETED)
    paths = list(db.conn.execute(query.order_by(t.event_time.desc(), t.id.desc())).scalars())
    return paths + list(res or [])


def get_tests_by_ids(db: Db, *, test_ids: list[str], fields: list[str] | None = None) -> Records:
    """Several test records at once (CCP4i's DbReturnRecord), in the order asked (an id asked twice
    comes twice); not found (exit 1), naming them, when some ids are no test's."""
    ids = []
    for text in test_ids:
        try:
            ids.append(int(text))
        except ValueError:
            raise Refused(f"--test-ids: {text!r} is not a test id (a whole number)") from None
    t = db.t.tests.c
    names = list(dict.fromkeys(fields)) if fields else list(db.t.tests.c.keys())
    columns = [_column(db, name, "field") for name in names]
    found: dict[int, tuple] = {}
    wanted = list(dict.fromkeys(ids))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = db.conn.execute(select(t.id, *columns).where(t.id.in_(chunk))).all()
        found.update((row[0], tuple(row[1:])) for row in rows)
    missing = [i for i in wanted if i not in found]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        what = "no test with id" if len(missing) == 1 else "no tests with ids"
        raise NotFound(f"{what} {shown}; `dbtool get-tests-for-run --run-id N` lists a run's tests")
    return Records(tuple(names), [found[i] for i in ids])
