"""The direct read-only fallback: run a read's handler in this process when no server runs (SPEC 3.2).

The database is opened read-only (``mode=ro``), so this path can never change it, and in WAL
mode it never blocks a server that starts meanwhile. On a read-only filesystem, where SQLite
cannot create the -shm file that needs, an area that was stopped cleanly is read as an immutable
file (``db.engine.direct_engine``). Whatever the storage does wrong (a damaged file, an I/O error)
is a refusal with SQLite's reason (exit 4), never an internal error.
"""

from __future__ import annotations

import os

from .area import Area, load_config
from .commands import Command
from .errors import DbtoolError, Internal, Outdated, Refused, StorageError
from .link import client_identity
from .protocol import Reply
from .request import RequestContext, activate


def run_read(area: Area, cmd: Command, params: dict, fields: dict | None = None) -> Reply:
    from sqlalchemy.exc import DBAPIError

    from .db.context import Db
    from .db.engine import direct_engine, read_keys
    from .db.schema import schema_for
    from .handlers import resolve

    config = load_config(area)
    url = config["db"].get("url") or ""
    if not url and not os.path.exists(area.db_path):
        raise Refused(f"{area.db_path} does not exist; re-create the area with `dbtool init`")
    params = cmd.bind_wire(params)
    ctx = RequestContext(f"direct-{os.getpid()}", cmd.name, params, client_identity())
    ctx.give(fields)  # (checked by the client: the handler sees them as a server's handler would)
    if url:
        return _run_postgres(area, cmd, params, ctx, config, url)
    ctx.note("debug", "direct", f"read {area.db_path} read-only (no server running)")
    try:
        engine = direct_engine(area.db_path)
    except DBAPIError as err:
        raise _storage(area, err) from None
    try:
        with activate(ctx), engine.connect() as conn, conn.begin():
            _check_schema(conn, area)
            schema = schema_for(read_keys(conn))
            result = resolve(cmd.handler)(Db(conn, schema, ctx, config), **params)
    except DbtoolError as err:
        err.extra.setdefault("log", ctx.log)  # --trace shows where the answer came from
        raise
    except (DBAPIError, engine.dialect.dbapi.Error) as err:
        raise _storage(area, err) from None
    except Exception as err:
        raise Internal(f"internal error in {cmd.name} (direct read): {type(err).__name__}: {err}") from err
    finally:
        engine.dispose()
    return Reply(result, ctx.log, ctx.id)  # Records as they are, like a server's packed answer


def _run_postgres(area: Area, cmd: Command, params: dict, ctx: RequestContext, config: dict, url: str) -> Reply:
    """The same read on the area's PostgreSQL database, in a read-only transaction."""
    from sqlalchemy.exc import DBAPIError

    from .db import postgres
    from .db.context import Db
    from .db.engine import DIRECT, postgres_engine, redact_url
    from .db.schema import schema_for
    from .handlers import resolve

    ctx.note("debug", "direct", f"read {redact_url(url)} read-only (no server running)")
    try:
        engine = postgres_engine(url, DIRECT)
    except ImportError:
        raise Refused("the area is in PostgreSQL: that needs psycopg (pip install 'dbtool[postgres]')") from None
    try:
        with activate(ctx), engine.connect() as conn, conn.begin():
            keys = postgres.area_keys(conn, url)
            if not keys:
                raise Refused(f"the database {redact_url(url)} holds no dbtool area yet; a write creates it")
            _check_schema(conn, area)
            result = resolve(cmd.handler)(Db(conn, schema_for(keys), ctx, config), **params)
    except DbtoolError as err:
        err.extra.setdefault("log", ctx.log)
        raise
    except DBAPIError as err:
        if postgres.connection_lost(err) or postgres.sqlstate(err) in postgres.REFUSING:
            raise postgres.failure(err, url, "cannot read") from None
        raise StorageError(f"cannot read {redact_url(url)}: {postgres.reason(err, url)}") from None
    except Exception as err:
        raise Internal(f"internal error in {cmd.name} (direct read): {type(err).__name__}: {err}") from err
    finally:
        engine.dispose()
    return Reply(result, ctx.log, ctx.id)


def _check_schema(conn, area: Area) -> None:
    """An area an older dbtool made has an older schema, which only a server upgrades (a direct
    read cannot write): say so, and the router starts one."""
    from sqlalchemy import select

    from .db.schema import SCHEMA_VERSION, table

    metadat = table("metadat")
    found = conn.execute(select(metadat.c.val).where(metadat.c.var == "DBTOOL_SCHEMA")).scalar()
    try:
        version = int(found)
    except (TypeError, ValueError):
        version = 0
    if version < SCHEMA_VERSION:
        raise Outdated(
            f"{area.db_path} has schema {version}, this dbtool needs {SCHEMA_VERSION}: a write, or `dbtool server "
            "start`, upgrades it (the area's owner must run it once)"
        )


def _storage(area: Area, err: Exception) -> StorageError:
    from .db.engine import damaged, driver_message, is_damage

    reason = driver_message(err)
    if is_damage(reason):
        return damaged(area.db_path, reason)
    return StorageError(f"cannot read {area.db_path}: {reason}")
