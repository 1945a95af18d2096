"""Server and maintenance commands (reference D.1) and general-call's named statements (D.9)."""

from __future__ import annotations

import math
from collections.abc import Callable

from sqlalchemy import and_, case, exists, func, insert, literal, or_, select, update
from sqlalchemy.orm import aliased
from sqlalchemy.sql import ColumnElement

from .. import __version__
from ..db.context import Db
from ..db.engine import checkpoint, create_triggers, drop_triggers
from ..errors import Refused
from ..request import log
from ..rules.testdata import rollup_status
from .common import deleted_run_ids, emit_for_test, locked_run_ids, require_run, require_test


def login(
    db: Db, *, area_path: str | None = None, client_version: str | None = None, signature: str | None = None
) -> dict:
    """Area and version check: refused when the client expects another area or dbtool version."""
    import os

    root = str(db.setting("area", "root", ""))
    if area_path and root and os.path.realpath(area_path) != os.path.realpath(root):
        raise Refused(f"login failed: the client expects area {area_path}, this is {root}")
    if client_version and client_version != __version__:
        raise Refused(f"login failed: the client expects dbtool {client_version}, this is dbtool {__version__}")
    if signature:
        log("info", "login", f"client signature {signature}")
    return {"ok": True, "message": "successful login", "area": root, "version": __version__}


def dead(db: Db, **_params: object) -> None:
    """Handler of dead seed entries; they are refused before they get here (registry ``dead``)."""
    raise Refused(f"{db.ctx.cmd} is a dead Megatest entry and is not part of dbtool")


def sync_cachedb_to_db(db: Db, *, run_id: int | None = None) -> None:
    db.after_commit(checkpoint)


def create_all_triggers(db: Db) -> None:
    create_triggers(db.conn)
    db.emit(triggers="created")


def drop_all_triggers(db: Db) -> None:
    drop_triggers(db.conn)
    db.emit(triggers="dropped")


def update_tesdata_on_repilcate_db(db: Db, *, old_linktree: str, new_linktree: str) -> int:
    """Rewrite rundir/shortdir under the old path to the same place under the new one; returns the
    number of tests changed. A path prefix, not a string prefix: /old/links is /old/links itself and
    what is under /old/links/, never /old/linksX (compared exactly: no LIKE wildcards, case-sensitive)."""
    if not old_linktree:
        raise Refused("--old-linktree must not be empty")
    old, new = old_linktree.rstrip("/"), new_linktree.rstrip("/")  # '/' becomes '': every absolute path
    t = db.t.tests.c

    def under_old(column) -> ColumnElement:
        below = func.substr(column, 1, len(old) + 1) == old + "/"
        return or_(column == old, below) if old else below

    def moved(column) -> ColumnElement:
        rewritten = case((column == old, literal(new or "/")), else_=literal(new) + func.substr(column, len(old) + 1))
        return case((under_old(column), rewritten), else_=column)

    statement = (
        update(db.t.tests)
        .where(or_(under_old(t.rundir), under_old(t.shortdir)))
        .values(rundir=moved(t.rundir), shortdir=moved(t.shortdir))
    )
    changed = db.conn.execute(statement).rowcount
    if changed:
        db.emit(old_linktree=old_linktree, new_linktree=new_linktree, changed=changed)
    return changed


def get_latest_host_load(db: Db, *, hostname: str) -> dict:
    """The newest cpuload sample (≠ -1) of the tests that ran on the host (domain part ignored)."""
    short = hostname.split(".", 1)[0]
    t, r = db.t.tests.c, db.t.test_rundat.c
    on_host = or_(t.host == short, t.host.like(short + ".%"))
    query = (
        select(r.cpuload, r.update_time)
        .join_from(db.t.test_rundat, db.t.tests, t.id == r.test_id)
        .where(on_host, r.cpuload != -1)
        .order_by(r.update_time.desc(), r.id.desc())
        .limit(1)
    )
    row = db.conn.execute(query).first()
    return (
        {"cpuload": -1, "update_time": 0} if row is None else {"cpuload": row.cpuload, "update_time": row.update_time}
    )


# -- general-call (D.9) -------------------------------------------------------------------------------------

Statement = Callable[..., object]


def _set_test(db: Db, test_id: int, values: dict) -> None:
    test = require_test(db, test_id)
    db.conn.execute(update(db.t.tests).where(db.t.tests.c.id == test_id).values(values))
    emit_for_test(db, test, state=values.get("state", test["state"]), status=values.get("status", test["status"]))


def _register_test(db: Db, run_id: int, testname: str, item_path: str) -> None:
    from .tests import register_test

    register_test(db, run_id=run_id, testname=testname, item_path=item_path)


def _update_test_rundat(
    db: Db, test_id: int, update_time: int, cpuload: float, diskfree: int, diskusage: int, run_duration: int
) -> None:
    require_test(db, test_id)
    row = {
        "test_id": test_id,
        "update_time": update_time,
        "cpuload": cpuload,
        "diskfree": diskfree,
        "diskusage": diskusage,
        "run_duration": run_duration,
    }
    db.conn.execute(insert(db.t.test_rundat).values(row))
    db.emit(test_id=test_id, cpuload=cpuload, run_duration=run_duration)


def _rows_of_test(db: Db, run_id: int, testname: str):
    """The rows of a test in a run, excluding the toplevel of an itemized test."""
    t = db.t.tests.c
    items = aliased(db.t.tests)
    has_items = exists().where(items.c.run_id == t.run_id, items.c.testname == t.testname, items.c.item_path != "")
    return and_(t.run_id == run_id, t.testname == testname, ~and_(t.item_path == "", has_items))


def _update_rows(db: Db, condition, values: dict) -> None:
    t = db.t.tests.c
    ids = list(db.conn.execute(select(t.id).where(condition)).scalars())
    if ids:
        db.conn.execute(update(db.t.tests).where(t.id.in_(ids)).values(values))
    for test_id in ids:
        db.emit(test_id=test_id, state=values.get("state"), status=values.get("status"))


def _update_test_state(db: Db, newstate: str, oldstate: str, run_id: int, testname: str) -> None:
    require_run(db, run_id)
    _update_rows(db, and_(_rows_of_test(db, run_id, testname), db.t.tests.c.state == oldstate), {"state": newstate})


def _update_test_status(db: Db, newstatus: str, status_patt: str, run_id: int, testname: str) -> None:
    from ..db.dialect import like

    require_run(db, run_id)
    condition = and_(_rows_of_test(db, run_id, testname), like(db.dialect, db.t.tests.c.status, status_patt))
    _update_rows(db, condition, {"status": newstatus})


def _delete_tests_in_state(db: Db, state: str) -> None:
    """Every run's tests in that state (C.6), but those of locked and deleted runs."""
    t = db.t.tests.c
    left_alone = and_(t.run_id.not_in(locked_run_ids(db)), t.run_id.not_in(deleted_run_ids(db)))
    _update_rows(db, and_(t.state == state, left_alone), {"state": "DELETED"})


def _toplevel_values(db: Db, run_id: int, testname: str, values: dict) -> None:
    require_run(db, run_id)
    t = db.t.tests.c
    condition = and_(t.run_id == run_id, t.testname == testname, t.item_path == "")
    _update_rows(db, condition, values)


def _rundir_shortdir(db: Db, rundir: str, shortdir: str, testname: str, item_path: str, run_id: int) -> None:
    require_run(db, run_id)
    t = db.t.tests.c
    condition = and_(t.run_id == run_id, t.testname == testname, t.item_path == item_path)
    _update_rows(db, condition, {"rundir": rundir, "shortdir": shortdir})


def _pass_fail_counts(db: Db, testname: str, run_id: int) -> None:
    from .tests import update_pass_fail_counts

    update_pass_fail_counts(db, run_id=run_id, testname=testname)


def _per_pf_counts(db: Db, testname: str, run_id: int) -> None:
    from .tests import top_test_set_per_pf_counts

    top_test_set_per_pf_counts(db, run_id=run_id, testname=testname)


def _data_rollup(db: Db, test_id: int) -> None:
    """D.9 test_data-pf-rollup is C.4 step 3 alone: the status from the counts stored on the test
    (not recounted from its data, and left as they are)."""
    test = require_test(db, test_id)
    status = rollup_status(test["status"], test["pass_count"] or 0, test["fail_count"] or 0)
    if status != test["status"]:
        _set_test(db, test_id, {"status": status})


def _delete_steps(db: Db, test_id: int) -> None:
    from .steps import soft_delete_steps

    require_test(db, test_id, deleting=True)
    soft_delete_steps(db, test_id)


def _delete_data(db: Db, test_id: int) -> None:
    from .testdata import soft_delete_data

    require_test(db, test_id, deleting=True)
    soft_delete_data(db, test_id)


# name → (accepted argument layouts, function). A name given twice in a layout must get equal values
# (Megatest passes some arguments several times); "run_id" in a layout may come from --run-id instead.
STATEMENTS: dict[str, tuple[tuple[tuple[str, ...], ...], Statement]] = {
    "register-test": ((("run_id", "testname", "item_path"), ("run_id", "testname")), _register_test),
    "update-run-duration": (
        (("seconds", "test_id"),),
        lambda db, seconds, test_id: _set_test(db, test_id, {"run_duration": seconds}),
    ),
    "set-test-state": ((("state", "test_id"),), lambda db, state, test_id: _set_test(db, test_id, {"state": state})),
    "set-test-status": (
        (("status", "test_id"),),
        lambda db, status, test_id: _set_test(db, test_id, {"status": status}),
    ),
    "state-status": (
        (("state", "status", "test_id"),),
        lambda db, state, status, test_id: _set_test(db, test_id, {"state": state, "status": status}),
    ),
    "state-status-msg": (
        (("state", "status", "comment", "test_id"),),
        lambda db, state, status, comment, test_id: _set_test(
            db, test_id, {"state": state, "status": status, "comment": comment}
        ),
    ),
    "set-test-comment": (
        (("comment", "test_id"),),
        lambda db, comment, test_id: _set_test(db, test_id, {"comment": comment}),
    ),
    "set-test-start-time": ((("test_id",),), lambda db, test_id: _set_test(db, test_id, {"event_time": db.now})),
    "pass-fail-counts": (
        (("pass_count", "fail_count", "test_id"),),
        lambda db, pass_count, fail_count, test_id: _set_test(
            db, test_id, {"pass_count": pass_count, "fail_count": fail_count}
        ),
    ),
    "test_data-pf-rollup": ((("test_id",) * 4, ("test_id",)), _data_rollup),
    "test-set-log": (
        (("final_logf", "test_id"),),
        lambda db, final_logf, test_id: _set_test(db, test_id, {"final_logf": final_logf}),
    ),
    "test-set-rundir-shortdir": ((("rundir", "shortdir", "testname", "item_path", "run_id"),), _rundir_shortdir),
    "delete-tests-in-state": ((("state",),), _delete_tests_in_state),
    "tests:test-set-toplog": (
        (("final_logf", "run_id", "testname"),),
        lambda db, final_logf, run_id, testname: _toplevel_values(db, run_id, testname, {"final_logf": final_logf}),
    ),
    "update-cpuload-diskfree": (
        (("cpuload", "diskfree", "test_id"),),
        lambda db, cpuload, diskfree, test_id: _set_test(db, test_id, {"cpuload": cpuload, "diskfree": diskfree}),
    ),
    "update-uname-host": (
        (("uname", "host", "test_id"),),
        lambda db, uname, host, test_id: _set_test(db, test_id, {"uname": uname, "host": host}),
    ),
    "update-test-rundat": (
        (("test_id", "update_time", "cpuload", "diskfree", "diskusage", "run_duration"),),
        _update_test_rundat,
    ),
    "update-test-state": (
        (("newstate", "oldstate", "run_id", "testname", "testname"), ("newstate", "oldstate", "run_id", "testname")),
        _update_test_state,
    ),
    "update-test-status": (
        (
            ("newstatus", "status_patt", "run_id", "testname", "testname"),
            ("newstatus", "status_patt", "run_id", "testname"),
        ),
        _update_test_status,
    ),
    "update-pass-fail-counts": (
        (("testname", "testname", "testname", "run_id"), ("testname", "run_id")),
        _pass_fail_counts,
    ),
    "top-test-set-running": (
        (("testname", "run_id"),),
        lambda db, testname, run_id: _toplevel_values(db, run_id, testname, {"state": "RUNNING"}),
    ),
    "top-test-set-per-pf-counts": ((("testname",) * 17, ("testname",)), _per_pf_counts),
    "delete-test-step-records": ((("test_id",),), _delete_steps),
    "delete-test-data-records": ((("test_id",),), _delete_data),
}

# The numeric arguments of the statements: name → (type, least value). Counts, durations and times
# are never negative; -1 means "unknown" for disk space and load (the columns' defaults).
_NUMBERS: dict[str, tuple[type, int | None]] = {
    "run_id": (int, None),
    "test_id": (int, None),
    "seconds": (int, 0),
    "pass_count": (int, 0),
    "fail_count": (int, 0),
    "run_duration": (int, 0),
    "update_time": (int, 0),
    "diskfree": (int, -1),
    "diskusage": (int, -1),
    "cpuload": (float, -1),
}


def _convert(stmt: str, name: str, text: str) -> object:
    """A statement's argument as its column takes it (text unless it is one of _NUMBERS)."""
    if name not in _NUMBERS:
        return text
    kind, least = _NUMBERS[name]
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise Refused(f"general-call {stmt}: {name} must be {expected}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise Refused(f"general-call {stmt}: {name} must be a finite number, not {text!r}")
    if kind is int and not -(2**63) <= value < 2**63:
        raise Refused(f"general-call {stmt}: {name} is out of range (64-bit integers only)")
    if least is not None and value < least:
        raise Refused(f"general-call {stmt}: {name} must be at least {least}, not {text}")
    return value


def general_call(db: Db, *, stmt: str, args: list[str] | None = None, run_id: int | None = None) -> bool:
    """Run a named statement of D.9 (only those: SPEC 7) with its positional arguments."""
    if stmt not in STATEMENTS:
        raise Refused(f"general-call has no statement {stmt!r}; known: {', '.join(sorted(STATEMENTS))}")
    layouts, fn = STATEMENTS[stmt]
    args = list(args or [])
    for layout in layouts:
        names = list(layout)
        if len(args) == len(names) - 1 and "run_id" in names and run_id is not None:
            names.remove("run_id")
            values = {"run_id": run_id}
        elif len(args) == len(names):
            values = {}
        else:
            continue
        for name, text in zip(names, args, strict=True):
            value = _convert(stmt, name, text)
            if name in values and values[name] != value:
                raise Refused(f"general-call {stmt}: {name} is given twice with different values")
            values[name] = value
        if "run_id" in fn.__code__.co_varnames[: fn.__code__.co_argcount] and "run_id" not in values:
            if run_id is None:
                raise Refused(f"general-call {stmt} needs --run-id")
            values["run_id"] = run_id
        elif run_id is not None and "test_id" in values and "run_id" not in values:
            require_test(db, values["test_id"], run_id)  # a --run-id given with a test id must be its run
        fn(db, **values)
        return True
    expected = " or ".join(" ".join(n.upper() for n in layout) for layout in layouts)
    raise Refused(f"general-call {stmt} takes {expected}; got {len(args)} argument(s)")
