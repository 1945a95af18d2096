"""Engines and connections: the server's writer and readers, and the direct read-only fallback.

SQLite connections are put in driver autocommit mode and the transaction is begun explicitly
(``BEGIN IMMEDIATE`` for the writer), which is what makes SAVEPOINTs behave (SQLAlchemy's
documented recipe for pysqlite).

Also here: what a database error says about the storage (``driver_message``, ``is_damage``,
``is_storage_trouble``), the cheap and the thorough checks of a database file (``header_problem``,
``quick_check``), and the identity of its WAL files (``wal_file_ids``).
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any
from urllib.parse import quote

from sqlalchemy import Text, cast, create_engine, event, func, insert, inspect, literal, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool, QueuePool

from ..errors import Refused, StorageError
from ..rules.regex import search as regex_search
from .dialect import drop_trigger_ddl, trigger_ddl
from .schema import (
    RUN_COMPLETION_COLUMNS,
    RUN_LIFECYCLE_COLUMNS,
    SCHEMA_VERSION,
    TRIGGER_TABLES,
    UNFINISHED_SQL,
    Schema,
    schema_for,
)

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
    immutable: bool = False,
) -> Engine:
    """An engine on an SQLite file for one role: write, read, direct (read-only file) or admin.

    ``immutable`` (direct only) reads a file that nothing can change, without -shm or locks: for a
    read-only filesystem, where SQLite could not create the -shm file (see ``direct_engine``).
    """
    synchronous = synchronous.upper()
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise Refused(f"db.synchronous {synchronous!r} is not one of FULL, NORMAL, OFF, EXTRA")
    if read_only:  # a read-only area: the writer's connection cannot change anything either
        role = DIRECT if role == WRITE else role
    target = "file:" + quote(path)  # a URI, so that no character of the path can be taken for syntax
    if role == DIRECT:
        target += "?mode=ro&immutable=1" if immutable else "?mode=ro"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(
            target, uri=True, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000, cached_statements=256
        )

    pool: dict[str, Any] = (
        {"poolclass": NullPool}
        if role == ADMIN
        else {"poolclass": QueuePool, "pool_size": pool_size, "max_overflow": pool_size}
    )
    engine = create_engine("sqlite+pysqlite://", creator=connect, **pool)

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


def postgres_url(url: str) -> str:
    """A PostgreSQL URL as SQLAlchemy takes it, on psycopg 3 (``postgresql://`` or
    ``postgres://`` from the user; a driver named already is kept)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise Refused(f"{redact_url(url)} is not a database URL (postgresql://USER@HOST:PORT/DBNAME)")
    if scheme in ("postgresql", "postgres"):
        scheme = "postgresql+psycopg"
    if not scheme.startswith("postgresql"):
        raise Refused(f"{redact_url(url)}: dbtool stores an area in SQLite or PostgreSQL (postgresql://...)")
    return f"{scheme}://{rest}"


def redact_url(url: str) -> str:
    """A database URL fit for a message: its password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":***"
    return f"{scheme}{sep}{userinfo}{at}{host}"


def postgres_engine(url: str, role: str, *, pool_size: int = 4, search_path: str | None = None) -> Engine:
    """An engine on a PostgreSQL database for one role (write, read, direct or admin). Reads run in
    read-only transactions; ``search_path`` puts the area's tables in a schema of their own."""
    from sqlalchemy.engine import make_url

    options = []
    given = make_url(postgres_url(url)).query.get("options")  # the URL's own (say, -csearch_path=...)
    if given:
        options.extend([given] if isinstance(given, str) else given)
    if role in (READ, DIRECT):
        options.append("-c default_transaction_read_only=on")
    if search_path:
        options.append(f"-c search_path={search_path}")
    connect_args: dict[str, Any] = {"connect_timeout": 10, "application_name": f"dbtool-{role}"}
    if options:
        connect_args["options"] = " ".join(options)
    # Every user of a pooled connection ends its transaction itself (the writer its own COMMIT or
    # ROLLBACK, a read its ``conn.begin()`` block), so the pool does not roll back on return: on a
    # connection PostgreSQL dropped (a restart) that rollback could only fail, with a traceback.
    pool: dict[str, Any] = (
        {"poolclass": NullPool}
        if role in (ADMIN, DIRECT)
        else {
            "poolclass": QueuePool,
            "pool_size": pool_size,
            "max_overflow": pool_size,
            "pool_pre_ping": True,
            "pool_reset_on_return": None,
        }
    )
    return create_engine(postgres_url(url), connect_args=connect_args, **pool)


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
    if not _create_all_at_once(conn, schema):
        for table in schema.all_tables():
            table.create(conn, checkfirst=True)
            for index in table.indexes:  # an older area's tables lack the indexes added since
                index.create(conn, checkfirst=True)
        _migrate_run_lifecycle(conn, schema)
        _migrate_run_completion(conn, schema)
        _migrate_unfinished_condition(conn, schema)
        _migrate_area_state(conn, schema)
        create_triggers(conn)
    _ensure_area_state(conn, schema)
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


def _create_all_at_once(conn: Connection, schema: Schema) -> bool:
    """PostgreSQL, a schema with no tables yet (init --db-url, migrate --to): every table, index
    and trigger in one batch of statements — one round trip instead of about 150 (a check, then a
    statement, per table and index), a fifth of the time. Whether it did; anything else takes the
    step-by-step path, which also upgrades the tables of an older dbtool."""
    if conn.dialect.name != "postgresql" or inspect(conn).get_table_names():
        return False
    from sqlalchemy.schema import CreateIndex, CreateTable

    statements: list[str] = []
    for table in schema.all_tables():
        statements.append(str(CreateTable(table).compile(dialect=conn.dialect)))
        statements.extend(str(CreateIndex(index).compile(dialect=conn.dialect)) for index in table.indexes)
    for table in TRIGGER_TABLES:
        statements.extend(trigger_ddl(conn.dialect.name, table))
    # on the driver's connection, in this transaction: psycopg sends a text without parameters
    # as one simple query, which may hold many statements
    conn.connection.driver_connection.execute(";\n".join(statements))
    return True


def _migrate_run_lifecycle(conn: Connection, schema: Schema) -> None:
    """Schema 1 → 2: add runs.locked_by/locked_at/deleted_at, and move what schema 1 kept in
    ``state`` into them. A run whose state is 'locked' gets the user and time of its last lock in
    the access log ('' and now when there is none) and state 'unlocked' (what Megatest's unlock
    writes; the state before the lock was lost). A run whose state is 'deleted' gets deleted_at."""
    if not _add_run_columns(conn, RUN_LIFECYCLE_COLUMNS):
        return
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


def _add_run_columns(conn: Connection, columns, table: str = "runs") -> bool:
    """Add to runs (or ``table``) those of ``columns`` (name, type) it lacks; whether any was missing."""
    present = {c["name"] for c in inspect(conn).get_columns(table)}
    missing = [(name, type_) for name, type_ in columns if name not in present]
    for name, type_ in missing:  # names and types from the schema, never from input
        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {type_.compile(conn.dialect)}")
    return bool(missing)


def _migrate_run_completion(conn: Connection, schema: Schema) -> None:
    """Schema 2 → 3: the index of unfinished tests (an existing tests table lacks it), and
    runs.completed_at, set for the runs already complete (silently: no event for the past)."""
    for index in schema.tests.indexes:
        if index.name == "tests_unfinished":
            index.create(conn, checkfirst=True)
    if not _add_run_columns(conn, RUN_COMPLETION_COLUMNS):
        return
    conn.exec_driver_sql(
        "UPDATE runs SET completed_at = last_update WHERE deleted_at IS NULL"
        " AND EXISTS (SELECT 1 FROM tests WHERE tests.run_id = runs.id AND state != 'DELETED')"
        f" AND NOT EXISTS (SELECT 1 FROM tests WHERE tests.run_id = runs.id AND {UNFINISHED_SQL})"
    )


def _migrate_unfinished_condition(conn: Connection, schema: Schema) -> None:
    """Schema 3 → 4: the index of unfinished tests made again with its condition as a chain of <>
    (schema 3 wrote NOT IN, which SQLite made a temporary table for on every row written)."""
    metadat = schema.metadat
    stored = conn.execute(select(metadat.c.val).where(metadat.c.var == "DBTOOL_SCHEMA")).scalar()
    try:
        if stored is None or int(stored) >= 4:  # a new area, or one made with this condition
            return
    except ValueError:  # not a version dbtool wrote: make the index as this one would
        pass
    for index in schema.tests.indexes:
        if index.name == "tests_unfinished":
            index.drop(conn, checkfirst=True)
            index.create(conn)


def _migrate_area_state(conn: Connection, schema: Schema) -> None:
    """Schema 4 → 5: events.fields (the new tables are made above; the state row below)."""
    _add_run_columns(conn, (("fields", Text()),), "events")


def _ensure_area_state(conn: Connection, schema: Schema) -> None:
    """The area's one state row (not locked, version 0), which every area has from schema 5 on."""
    state = schema.area_state
    if conn.execute(select(state.c.id).where(state.c.id == 1)).first() is None:
        conn.execute(insert(state).values(id=1, version=0))


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


# -- what an error says about the storage; checks of a database file ------------------------------------

DAMAGE = ("malformed", "not a database", "corrupt")
TROUBLE = (*DAMAGE, "disk i/o", "unable to open", "disk is full", "readonly", "read-only", "no such file")


def driver_message(err: BaseException) -> str:
    """The database driver's own message (SQLAlchemy's wrapper adds SQL and a link, never a reason)."""
    orig = getattr(err, "orig", None)
    return str(orig if orig is not None else err)


def is_database_error(err: BaseException) -> bool:
    return isinstance(err, (DBAPIError, sqlite3.Error))


def is_damage(message: str) -> bool:
    """SQLite's words for a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB)."""
    text = message.lower()
    return any(word in text for word in DAMAGE)


def is_storage_trouble(message: str) -> bool:
    """An error of the file or the disk under it, not of a statement."""
    text = message.lower()
    return any(word in text for word in TROUBLE)


def damaged(path: str, reason: str) -> StorageError:
    return StorageError(
        f"the database {path} is damaged: {reason}; restore it from a backup (sqlite3 .recover can salvage rows)"
    )


def header_problem(path: str) -> str:
    """What is wrong with the file's 100-byte header and size, or '' (cheap: one read and a stat)."""
    try:
        with open(path, "rb") as f:
            header = f.read(100)
            size = os.fstat(f.fileno()).st_size
    except OSError as err:
        return f"cannot read it: {err.strerror or err}"
    if len(header) < 100:
        return f"it is {size} bytes long, shorter than an SQLite header"
    if header[:16] != b"SQLite format 3\x00":
        return "file is not a database (its header is not SQLite's)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        return f"file is not a database (page size {page_size} in its header)"
    pages = int.from_bytes(header[28:32], "big")
    pages_valid = header[92:96] == header[24:28]  # the page count is only kept up to date since SQLite 3.7
    if pages_valid and pages and size < pages * page_size:
        return f"it is truncated: {size} bytes, where its header says {pages} pages of {page_size} bytes"
    return ""


def quick_check(path: str, max_errors: int = 3) -> str:
    """SQLite's ``PRAGMA quick_check`` of the file on a connection of its own (so that no page
    cache hides what is on disk); '' when it passes, else SQLite's first findings."""
    con = sqlite3.connect("file:" + quote(path) + "?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        rows = [row[0] for row in con.execute(f"PRAGMA quick_check({max_errors})")]
    except sqlite3.DatabaseError as err:  # SQLite gave up on the file: that is the finding
        if not is_damage(str(err)):
            raise
        return str(err)
    finally:
        con.close()
    if rows == ["ok"]:
        return ""
    found = (str(r).replace("*** in database main ***", "").strip() for r in rows)
    return "; ".join(" ".join(line.split()) for line in found if line)[:400]


def wal_file_ids(path: str) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(device, inode) of the database's -wal and -shm files (None for one that does not exist)."""
    ids = []
    for suffix in ("-wal", "-shm"):
        try:
            st = os.stat(path + suffix)
        except FileNotFoundError:
            ids.append(None)
        else:
            ids.append((st.st_dev, st.st_ino))
    return ids[0], ids[1]


def filesystem_read_only(path: str) -> bool:
    """True when ``path`` lies on a filesystem mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def direct_engine(path: str) -> Engine:
    """The direct fallback's engine: ``mode=ro``; where SQLite cannot make the -shm file it needs
    for that (a read-only filesystem or directory), ``immutable=1`` — safe only while no -wal file
    holds writes that are not in the database yet, so such an area is refused instead."""
    engine = sqlite_engine(path, DIRECT, pool_size=1)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").all()
        return engine
    except DBAPIError as err:
        engine.dispose()
        message = driver_message(err)
        folder = os.path.dirname(path)
        if "unable to open" not in message.lower() or os.access(folder, os.W_OK):
            raise
    wal = path + "-wal"
    try:
        pending = os.path.getsize(wal)
    except OSError:
        pending = 0
    if pending:
        where = "a read-only filesystem" if filesystem_read_only(folder) else "a directory this user cannot write"
        raise StorageError(
            f"cannot read {path} on {where}: the area was not stopped cleanly, and {wal} holds "
            f"{pending} bytes of writes not yet in the database; read it where it is writable (`dbtool server "
            "stop` there moves them in), or copy the area to a writable place"
        )
    return sqlite_engine(path, DIRECT, pool_size=1, immutable=True)
