"""The area lock (CCP4i's project locks and ``-grablock``) and tests open for one job (DbRegisterJob).

Both live in the database (``area_state``, ``test_jobs``), so they survive a server's restart and
hold across PostgreSQL front-ends. Every change of either raises ``area_state.version``; the
server's writer keeps what it needs of them (server/guard.py) and refuses, before a handler runs,
each write that lacks the lock's token while the area is locked. A write to a test open for a job
is refused by ``Db.guard_test`` unless it carries that job's token (``$DBTOOL_JOB_TOKEN``).

Tokens are random (128 bits), given to their holder once, and stored as their SHA-256.
"""

from __future__ import annotations

import secrets
import time

from sqlalchemy import delete, select, update

from ..db.context import Db
from ..db.dialect import upsert
from ..errors import Held, NotFound, Refused
from ..request import token_hash


def _when(seconds: object) -> str:
    if not isinstance(seconds, int):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def lock_text(lock: dict) -> str:
    """Who holds the area lock, where, since when and why, in words."""
    pid = f" (pid {lock['pid']})" if lock.get("pid") is not None else ""
    reason = f" (reason: {lock['reason']})" if lock.get("reason") else ""
    who = f"{lock.get('holder') or '?'} on {lock.get('host') or '?'}{pid}"
    return f"the area is locked by {who} since {_when(lock.get('since'))}{reason}"


def locked_refusal(lock: dict) -> Held:
    """The refusal of a write without the lock's token."""
    return Held(
        f"{lock_text(lock)}; a write needs the lock's token in $DBTOOL_LOCK_TOKEN (the holder releases it with "
        "`dbtool unlock-area`; `dbtool unlock-area --force` breaks it, reads work meanwhile)"
    )


def open_refusal(job: dict, test_id: int) -> Held:
    """The refusal of a write to a test open for another job."""
    name = job.get("testname") or "?"
    where = f"{name}/{job['item_path']}" if job.get("item_path") else name
    return Held(
        f"test {test_id} ({where}) is open for the job of {job.get('holder') or '?'} on {job.get('host') or '?'} "
        f"(pid {job.get('pid')}, exec --exclusive since {_when(job.get('opened'))}): only that job and its "
        "commands ($DBTOOL_JOB_TOKEN) write to it until it ends or is found dead"
    )


def lock_record(row: object) -> dict | None:
    """The area lock of an area_state row (None when the area is not locked)."""
    if row is None or row.lock_token is None:
        return None
    return {
        "holder": row.lock_holder,
        "host": row.lock_host,
        "pid": row.lock_pid,
        "since": row.locked_at,
        "reason": row.lock_reason or "",
    }


def _state(db: Db):
    s = db.t.area_state
    row = db.conn.execute(select(s).where(s.c.id == 1)).first()
    if row is None:
        raise Refused("this area has no area_state row (made by an older dbtool?); restart its server to upgrade it")
    return row


def bump_version(db: Db) -> None:
    """Every change of the lock or of an open test: servers reload what they keep of them."""
    s = db.t.area_state
    db.conn.execute(update(s).where(s.c.id == 1).values(version=s.c.version + 1))


def lock_area(db: Db, *, reason: str | None = None, grab: bool = False) -> dict:
    """Take the area lock (or, with ``grab``, take it over); returns its new token. The holder asking
    again (its token in the request) keeps its token, with the new reason if one is given."""
    row = _state(db)
    held = lock_record(row)
    mine = token_hash(db.ctx.lock_token)
    s = db.t.area_state
    if held is not None and mine == row.lock_token:
        if reason is not None:
            db.conn.execute(update(s).where(s.c.id == 1).values(lock_reason=reason))
            held["reason"] = reason
        return {"token": db.ctx.lock_token, **held, "renewed": True, "grabbed_from": None}
    if held is not None and not grab:
        raise Held(f"{lock_text(held)}; `dbtool lock-area --grab` takes it over")
    token = secrets.token_hex(16)
    client = db.ctx.client
    lock = {
        "holder": str(client.get("user") or "?"),
        "host": str(client.get("host") or "?"),
        "pid": client.get("pid") if isinstance(client.get("pid"), int) else None,
        "since": db.now,
        "reason": reason or "",
    }
    db.conn.execute(
        update(s)
        .where(s.c.id == 1)
        .values(
            lock_token=token_hash(token),
            lock_holder=lock["holder"],
            lock_host=lock["host"],
            lock_pid=lock["pid"],
            lock_reason=lock["reason"],
            locked_at=lock["since"],
            version=s.c.version + 1,
        )
    )
    db.emit(cmd="lock-area", holder=lock["holder"], host=lock["host"], reason=lock["reason"], grabbed=held is not None)
    return {"token": token, **lock, "renewed": False, "grabbed_from": held}


def unlock_area(db: Db, *, force: bool = False) -> dict:
    """Release the area lock: with its token (in the request), or with ``force``. An area that is
    not locked stays so ({"unlocked": false})."""
    row = _state(db)
    held = lock_record(row)
    if held is None:
        return {"unlocked": False, "was": None}
    if not force and token_hash(db.ctx.lock_token) != row.lock_token:
        given = "a token that is not its own" if db.ctx.lock_token else "no token ($DBTOOL_LOCK_TOKEN is not set)"
        raise Held(f"{lock_text(held)}, and this request has {given}; `dbtool unlock-area --force` breaks the lock")
    s = db.t.area_state
    db.conn.execute(
        update(s)
        .where(s.c.id == 1)
        .values(
            lock_token=None,
            lock_holder=None,
            lock_host=None,
            lock_pid=None,
            lock_reason=None,
            locked_at=None,
            version=s.c.version + 1,
        )
    )
    db.emit(cmd="unlock-area", holder=held["holder"], host=held["host"], forced=force)
    return {"unlocked": True, "was": held}


def get_area_lock(db: Db) -> dict:
    """The area lock: {holder, host, pid, since, reason}; not found (exit 1) when the area is not locked."""
    s = db.t.area_state
    held = lock_record(db.conn.execute(select(s).where(s.c.id == 1)).first())
    if held is None:
        raise NotFound("the area is not locked")
    return held


# -- tests open for one job ------------------------------------------------------------------------


def open_test(db: Db, test_id: int, host: str, pid: int) -> None:
    """Open a test for the job whose token the request carries (exec-begin --exclusive)."""
    client = db.ctx.client
    row = {
        "test_id": test_id,
        "token": token_hash(db.ctx.job_token),
        "holder": str(client.get("user") or "?"),
        "host": host,
        "pid": pid,
        "opened": db.now,
    }
    columns = ("token", "holder", "host", "pid", "opened")
    db.conn.execute(upsert(db.dialect, db.t.test_jobs, row, ("test_id",), columns))
    bump_version(db)


def close_test(db: Db, test_id: int) -> None:
    """The job that opened a test ended (its token in the request): the test is open to all again."""
    if not db.ctx.job_token:
        return
    j = db.t.test_jobs.c
    closed = db.conn.execute(
        delete(db.t.test_jobs).where(j.test_id == test_id, j.token == token_hash(db.ctx.job_token))
    ).rowcount
    if closed:
        bump_version(db)


def close_dead(db: Db, test_ids: list[int]) -> None:
    """Tests found dead (mark-incomplete): whatever job had them open is gone."""
    if not test_ids:
        return
    j = db.t.test_jobs.c
    closed = 0
    for start in range(0, len(test_ids), 500):
        chunk = test_ids[start : start + 500]
        closed += db.conn.execute(delete(db.t.test_jobs).where(j.test_id.in_(chunk))).rowcount
    if closed:
        bump_version(db)
