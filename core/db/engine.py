"""Engines and connections: the server's writer and readers, and the direct read-only fallback.

SQLite connections are put in driver autocommit mode and the transaction is begun explicitly
(``BEGIN IMMEDIATE`` for the writer), which is what makes SAVEPOINTs behave (SQLAlchemy's
documented recipe for pysqlite).
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import Text, cast, create_engine, event, func, insert, inspect, literal, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool, QueuePool

from ..errors import Refused
from ..rules.regex import search as regex_search
from .dialect import drop_trigger_ddl, trigger_ddl
from .schema import RUN_LIFECYCLE_COLUMNS, SCHEMA_VERSION, TRIGGER_TABLES, Schema, schema_for

WRITE, READ, DIRECT, ADMIN = "write", "read", "direct", "admin"
# Megatest's MEGATEST_VERSION var is "<version>-<first 4 chars of its fossil hash>" (reference A.10).
# dbtool has no fossil hash: its 4 characters say the area was made by dbtool.
MEGATEST_VERSION_SUFFIX = "dbtl"
BUSY_TIMEOUT_MS = 10_000
NETWORK_FILESYSTEMS = frozenset(
    [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "afs",
        "fuse.sshfs",
        "9p",
        "lustre",
        "gpfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "beegfs",
    ]
)


def filesystem_type(path: str, mounts: str = "/proc/mounts") -> str:
    """The filesystem type holding ``path`` (from the mount table; '' when unknown)."""
    path = os.path.realpath(path)
    best, fstype = "", ""
    try:
        with open(mounts, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                if (path == mount or path.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, fstype = mount, parts[2]
    except OSError:
        return ""
    return fstype


def journal_mode_for(path: str, configured: str = "auto", mounts: str = "/proc/mounts") -> str:
    """WAL on local disks; a rollback journal where WAL cannot be shared between hosts (SPEC 6)."""
    mode = (configured or "auto").upper()
    if mode != "AUTO":
        if mode not in ("WAL", "DELETE", "TRUNCATE", "PERSIST"):
            raise Refused(f"db.journal_mode {configured!r} is not one of auto, wal, delete, truncate, persist")
        return mode
    return "DELETE" if filesystem_type(os.path.dirname(path), mounts) in NETWORK_FILESYSTEMS else "WAL"


def sqlite_engine(
    path: str,
    role: str,
    *,
    synchronous: str = "FULL",
    journal_mode: str = "WAL",
    pool_size: int = 4,
    max_size_mb: float = 0,
    read_only: bool = False,
) -> Engine:
    """An engine on an SQLite file for one role: write, read, direct (read-only file) or admin."""
    synchronous = synchronous.upper()
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise Refused(f"db.synchronous {synchronous!r} is not one of FULL, NORMAL, OFF, EXTRA")
    if read_only:  # a read-only area: the writer's connection cannot change anything either
        role = DIRECT if role == WRITE else role
    if role == DIRECT:
        url = f"sqlite+pysqlite:///file:{path}?mode=ro&uri=true"
    else:
        url = f"sqlite+pysqlite:///{path}"
    pool: dict[str, Any] = (
        {"poolclass": NullPool}
        if role == ADMIN
        else {"poolclass": QueuePool, "pool_size": pool_size, "max_overflow": pool_size}
    )
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000, "cached_statements": 256},
        **pool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see "begin" below)
        dbapi_conn.create_function("REGEXP", 2, regex_search, deterministic=True)
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if role in (WRITE, ADMIN):
            cur.execute(f"PRAGMA journal_mode = {journal_mode}")
            cur.execute(f"PRAGMA synchronous = {synchronous}")
            if max_size_mb > 0:  # db.max_size_mb: writes past it fail as "database or disk is full"
                page_size = cur.execute("PRAGMA page_size").fetchone()[0]
                cur.execute(f"PRAGMA max_page_count = {max(1, int(max_size_mb * 1024 * 1024 // page_size))}")
        else:
            cur.execute("PRAGMA query_only = 1")
        cur.execute("PRAGMA cache_size = -16000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.connection.driver_connection.in_transaction:
            return  # the server's writer began the transaction itself; SQLAlchemy joins it
        conn.exec_driver_sql("BEGIN IMMEDIATE" if role in (WRITE, ADMIN) else "BEGIN")

    return engine


def read_keys(conn: Connection) -> list[str]:
    """The area's keys, in order, from the database."""
    from .schema import table

    keys = table("keys")
    rows = conn.execute(select(keys.c.fieldname).order_by(keys.c.id)).all()
    return [r[0] for r in rows]


def create_schema(conn: Connection, keys: list[str], version: str) -> Schema:
    """Create every table, index and trigger of an area with these keys, and bring the tables of
    an area made by an older dbtool up to this schema (idempotent)."""
    schema = schema_for(keys)
    for table in schema.all_tables():
        table.create(conn, checkfirst=True)
    _migrate_run_lifecycle(conn, schema)
    create_triggers(conn)
    existing = read_keys(conn)
    if not existing:
        conn.execute(insert(schema.keys_t), [{"fieldname": k, "fieldtype": "TEXT"} for k in keys])
    metadat = schema.metadat
    versions = (
        ("DBTOOL_VERSION", version),
        ("DBTOOL_SCHEMA", str(SCHEMA_VERSION)),
        ("MEGATEST_VERSION", f"{version}-{MEGATEST_VERSION_SUFFIX}"),
    )
    for var, val in versions:
        found = conn.execute(select(metadat.c.id).where(metadat.c.var == var)).first()
        if found is None:
            conn.execute(insert(metadat).values(var=var, val=val))
    # the schema var says what the tables are now, whichever dbtool made them
    conn.execute(update(metadat).where(metadat.c.var == "DBTOOL_SCHEMA").values(val=str(SCHEMA_VERSION)))
    return schema


def _migrate_run_lifecycle(conn: Connection, schema: Schema) -> None:
    """Schema 1 → 2: add runs.locked_by/locked_at/deleted_at, and move what schema 1 kept in
    ``state`` into them. A run whose state is 'locked' gets the user and time of its last lock in
    the access log ('' and now when there is none) and state 'unlocked' (what Megatest's unlock
    writes; the state before the lock was lost). A run whose state is 'deleted' gets deleted_at."""
    present = {c["name"] for c in inspect(conn).get_columns("runs")}
    missing = [(name, type_) for name, type_ in RUN_LIFECYCLE_COLUMNS if name not in present]
    if not missing:
        return
    for name, type_ in missing:  # names and types from the schema, never from input
        conn.exec_driver_sql(f"ALTER TABLE runs ADD COLUMN {name} {type_().compile(conn.dialect)}")
    runs, log = schema.runs, schema.access_log
    now = int(time.time())
    last_lock = (
        select(log.c.user, log.c.accessed)
        .where(log.c.args == literal("locked ") + cast(runs.c.id, Text))
        .order_by(log.c.id.desc())
        .limit(1)
    )
    conn.execute(
        update(runs)
        .where(runs.c.state == "locked")
        .values(
            locked_by=func.coalesce(last_lock.with_only_columns(log.c.user).scalar_subquery(), ""),
            locked_at=func.coalesce(last_lock.with_only_columns(log.c.accessed).scalar_subquery(), now),
            state="unlocked",
        )
    )
    conn.execute(
        update(runs).where(runs.c.state == "deleted").values(deleted_at=func.coalesce(runs.c.last_update, now))
    )


def create_triggers(conn: Connection) -> None:
    for table in TRIGGER_TABLES:
        for ddl in trigger_ddl(conn.dialect.name, table):
            conn.exec_driver_sql(ddl)


def drop_triggers(conn: Connection) -> None:
    for table in TRIGGER_TABLES:
        conn.exec_driver_sql(drop_trigger_ddl(conn.dialect.name, table))


def checkpoint(conn: Connection) -> dict:
    """Move the WAL into the database file and truncate it (graceful stop, sync-cachedb-to-db).

    Runs on the driver connection, outside any transaction (SQLite cannot checkpoint inside one);
    returns SQLite's counts: busy (1 when a reader kept it from finishing), log and checkpointed pages.
    """
    if conn.dialect.name != "sqlite":
        return {"busy": 0, "log": 0, "checkpointed": 0}
    busy, log, done = conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return {"busy": busy, "log": log, "checkpointed": done}
