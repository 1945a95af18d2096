"""The tasks queue (reference C.13)."""

from __future__ import annotations

from sqlalchemy import insert, select, update

from ..db.context import Db
from ..db.dialect import like
from ..errors import NotFound
from ..protocol import Records

TASK_FIELDS = ("id", "action", "owner", "state", "target", "name", "testpatt", "keylock", "params")


def tasks_add(
    db: Db,
    *,
    action: str,
    owner: str | None = None,
    target: str = "",
    runname: str = "",
    testpatt: str = "",
    params: str = "",
) -> int:
    row = {
        "action": action,
        "owner": owner or db.ctx.client.get("user") or "",
        "state": "new",
        "target": target,
        "name": runname,
        "testpatt": testpatt,
        "params": params or "",
        "creation_time": db.now,
        "execution_time": 0,
    }
    task_id = db.conn.execute(insert(db.t.tasks_queue).values(row)).inserted_primary_key[0]
    db.emit(task_id=task_id, action=action, state="new")
    return task_id


def tasks_set_state_given_param_key(db: Db, *, param_key: str, state: str) -> int:
    """Any state text, as Megatest's (the launcher's usual ones are listed in the help, B.6)."""
    q = db.t.tasks_queue
    changed = db.conn.execute(
        update(q).where(like(db.dialect, q.c.params, param_key)).values(state=state, execution_time=db.now)
    ).rowcount
    if changed:
        db.emit(param_key=param_key, state=state, tasks=changed)
    return changed


def tasks_get_last(db: Db, *, target: str, runname: str) -> dict:
    q = db.t.tasks_queue
    row = db.conn.execute(
        select(q).where(q.c.target == target, q.c.name == runname).order_by(q.c.creation_time.desc(), q.c.id.desc())
    ).first()
    if row is None:
        raise NotFound(f"no task for target {target!r} and run {runname!r}")
    return dict(row._mapping)


def find_task_queue_records(
    db: Db, *, target: str, runname: str, testpatt: str = "%", statepatt: str = "%", actionpatt: str = "%"
) -> Records:
    q = db.t.tasks_queue.c
    query = select(*(q[f] for f in TASK_FIELDS), q.creation_time, q.execution_time).where(
        q.target == target,
        q.name == runname,
        like(db.dialect, q.state, statepatt),
        like(db.dialect, q.action, actionpatt),
        like(db.dialect, q.testpatt, testpatt),
    )
    return db.table(query.order_by(q.id))
