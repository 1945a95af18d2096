"""Process registration (reference A.14, C.17)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select, update

from ..db.context import Db
from ..errors import Refused
from ..protocol import Records

LIVE_STATUSES = ("starting", "running")


def register_process(
    db: Db,
    *,
    host: str,
    pid: int,
    port: int | None = None,
    starttime: int | None = None,
    status: str = "starting",
    purpose: str = "",
    dbname: str = "",
    version: str = "",
) -> int:
    """Insert a process; a (host, pid) registered before is replaced (pids are reused)."""
    p = db.t.processes
    db.conn.execute(delete(p).where(p.c.host == host, p.c.pid == pid))
    row = {
        "host": host,
        "pid": pid,
        "port": port,
        "starttime": starttime if starttime is not None else db.now,
        "status": status,
        "purpose": purpose,
        "dbname": dbname,
        "mtversion": version,
    }
    process_id = db.conn.execute(insert(p).values(row)).inserted_primary_key[0]
    db.emit(host=host, pid=pid, status=status, purpose=purpose)
    return process_id


def _update(db: Db, host: str, pid: int, values: dict) -> None:
    p = db.t.processes
    if not db.conn.execute(update(p).where(p.c.host == host, p.c.pid == pid).values(values)).rowcount:
        raise Refused(f"no process {pid} registered on {host}; register it with `dbtool register-process`")
    db.emit(host=host, pid=pid, status=values.get("status"))


def set_process_status(db: Db, *, host: str, pid: int, status: str) -> None:
    _update(db, host, pid, {"status": status})


def set_process_done(db: Db, *, host: str, pid: int, reason: str = "") -> None:
    _update(db, host, pid, {"status": "done", "endtime": db.now, "reason": reason})


def get_process_options(db: Db, *, purpose: str, dbname: str = "") -> Records:
    p = db.t.processes.c
    query = select(p.host, p.port, p.pid, p.starttime, p.endtime, p.status, p.mtversion.label("version")).where(
        p.purpose == purpose, p.dbname == dbname, p.status.in_(LIVE_STATUSES)
    )
    return db.table(query.order_by(p.starttime, p.id))
