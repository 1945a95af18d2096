"""Jobs that report their own progress (``dbtool exec``): begin, heartbeat, end, steps (SPEC 2.2, 9.8).

A job names its test by (run, testname, item path) rather than by id, so that a report the client
had to spool is a complete request on its own when the next server ingests it.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from ..db.context import Db
from ..db.dialect import upsert
from ..errors import Refused
from .arealock import close_test, open_test
from .common import check_testname, require_run, require_test, set_test_fields, test_record
from .outputs import add_output
from .runs import set_state_status_and_roll_up_run
from .tests import apply_state_status, ensure_test

REVIVED = "heartbeat resumed after the test was marked dead"


def _job_test(db: Db, run_id: int, testname: str, item_path: str, create: bool) -> dict:
    require_run(db, run_id)
    check_testname(testname)
    if create:
        if item_path:
            ensure_test(db, run_id, testname, "")
        return require_test(db, ensure_test(db, run_id, testname, item_path))
    t = db.t.tests.c
    row = db.conn.execute(
        select(db.t.tests).where(t.run_id == run_id, t.testname == testname, t.item_path == item_path)
    ).first()
    if row is None:
        where = f"{testname}/{item_path}" if item_path else testname
        raise Refused(f"run {run_id} has no test {where!r}; a job reports exec-begin first")
    if db.open_tests:  # (a heartbeat of a job whose test another job has opened since)
        db.guard_test(row.id)
    return test_record(row)


def exec_begin(
    db: Db,
    *,
    run_id: int,
    testname: str,
    item_path: str = "",
    host: str,
    uname: str = "",
    rundir: str = "",
    pid: int,
    heartbeat: float = 30.0,
    log: str = "",
    exclusive: bool = False,
) -> int:
    """The test (created when missing) → RUNNING on this host; liveness and process registered.
    ``exclusive``: the test is open for this job (its token, in the request) until it ends or is
    found dead; a test open for another job refuses it, as it refuses every write without its token."""
    if heartbeat <= 0:
        raise Refused("the heartbeat period must be a positive number of seconds")
    if exclusive and not db.ctx.job_token:
        raise Refused("exec-begin --exclusive needs the job's token in the request (job_token)")
    test = _job_test(db, run_id, testname, item_path, create=True)
    fields = {"host": host, "uname": uname or host, "attemptnum": pid, "event_time": db.now, "run_duration": 0}
    if rundir:
        fields.update(rundir=rundir, shortdir=rundir)
    if log:
        fields["final_logf"] = log
    set_test_fields(db, test["id"], fields)
    apply_state_status(db, {**test, **fields}, "RUNNING", "n/a", "")
    hb = {"test_id": test["id"], "host": host, "pid": pid, "period": heartbeat, "started": db.now, "last_beat": db.now}
    db.conn.execute(
        upsert(db.dialect, db.t.heartbeats, hb, ("test_id",), ("host", "pid", "period", "started", "last_beat"))
    )
    p = db.t.processes
    db.conn.execute(delete(p).where(p.c.host == host, p.c.pid == pid))
    db.conn.execute(
        insert(p).values(
            host=host, pid=pid, starttime=db.now, status="running", purpose="exec", dbname=f"test {test['id']}"
        )
    )
    if log:
        add_output(db, test, log, "log")
    if exclusive:
        open_test(db, test["id"], host, pid)
    set_state_status_and_roll_up_run(db, run_id=run_id)
    return test["id"]


def exec_heartbeat(
    db: Db,
    *,
    run_id: int,
    testname: str,
    item_path: str = "",
    pid: int | None = None,
    heartbeat: float = 30.0,
    cpuload: float = -1.0,
    diskfree: int = -1,
    run_duration: int = 0,
) -> None:
    """Liveness: last beat now, progress (run_duration), a test_rundat sample, the command's pid."""
    test = _job_test(db, run_id, testname, item_path, create=False)
    fields: dict = {"run_duration": run_duration, "cpuload": cpuload, "diskfree": diskfree}
    if pid is not None:
        fields["attemptnum"] = pid
    set_test_fields(db, test["id"], fields)
    hb = db.t.heartbeats
    if not db.conn.execute(update(hb).where(hb.c.test_id == test["id"]).values(last_beat=db.now)).rowcount:
        row = {"test_id": test["id"], "host": test["host"], "pid": pid, "period": heartbeat, "last_beat": db.now}
        db.conn.execute(insert(hb).values(started=db.now, **row))
    sample = {
        "test_id": test["id"],
        "update_time": db.now,
        "cpuload": cpuload,
        "diskfree": diskfree,
        "run_duration": run_duration,
    }
    db.conn.execute(insert(db.t.test_rundat).values(sample))
    if (test["state"], test["status"]) == ("COMPLETED", "DEAD"):  # it was alive after all
        apply_state_status(db, test, "RUNNING", "n/a", REVIVED)
        set_state_status_and_roll_up_run(db, run_id=run_id)
    else:
        db.emit(
            run_id=run_id,
            test_id=test["id"],
            testname=testname,
            item_path=item_path,
            state=test["state"],
            status=test["status"],
            run_duration=run_duration,
        )


def exec_end(
    db: Db,
    *,
    run_id: int,
    testname: str,
    item_path: str = "",
    exit_code: int,
    signal: str | None = None,
    run_duration: int = 0,
    error: str | None = None,
) -> dict:
    """COMPLETED PASS (exit 0) or FAIL (with ``error`` as the comment when the command could not run),
    or KILLED by a signal; rolled up into the toplevel and the run."""
    test = _job_test(db, run_id, testname, item_path, create=True)
    if signal:
        state, status, comment = "KILLED", "KILLED", f"killed by {signal}"
    elif error:
        state, status, comment = "COMPLETED", "FAIL", error
    elif exit_code == 0:
        state, status, comment = "COMPLETED", "PASS", ""
    else:
        state, status, comment = "COMPLETED", "FAIL", f"exit code {exit_code}"
    set_test_fields(db, test["id"], {"run_duration": run_duration})
    apply_state_status(db, test, state, status, comment)
    db.conn.execute(delete(db.t.heartbeats).where(db.t.heartbeats.c.test_id == test["id"]))
    p = db.t.processes.c
    db.conn.execute(
        update(db.t.processes)
        .where(p.purpose == "exec", p.dbname == f"test {test['id']}", p.status == "running")
        .values(status="done", endtime=db.now, reason=comment or "exit code 0")
    )
    close_test(db, test["id"])  # (when this job had it open)
    set_state_status_and_roll_up_run(db, run_id=run_id)
    return {"test_id": test["id"], "state": state, "status": status}


def exec_step(
    db: Db,
    *,
    run_id: int,
    testname: str,
    item_path: str = "",
    stepname: str,
    state: str,
    status: str = "-",
    logfile: str = "",
) -> None:
    from .steps import teststep_set_status

    test = _job_test(db, run_id, testname, item_path, create=True)
    teststep_set_status(db, test_id=test["id"], stepname=stepname, state=state, status=status, logfile=logfile)
