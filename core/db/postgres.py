"""An area kept in PostgreSQL: what its database must hold, and what its errors mean for a user.

Several area directories (two farms' filesystems, say) may share one database, each with the same
keys; a database that holds another area's keys, or another application's tables, is refused. The
first server (or ``init``) to find the database empty creates the schema in it, under an advisory
lock, so that front-ends starting together do not race.

Errors: a database that cannot be reached (down, wrong host or port, restarting) is ``Unavailable``
(exit 3: retry later); one that refuses us (wrong password, no such database or user) or holds
something else is ``Refused`` (exit 4: correct the URL). Every message names the URL without its
password, in one line.
"""

from __future__ import annotations

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Connection

from ..errors import Busy, DbtoolError, Refused, Unavailable
from .engine import create_schema, driver_message, read_keys, redact_url

SCHEMA_LOCK = 0x64627401  # advisory lock held while a transaction checks or creates the schema
DEAD_JOBS_LOCK = 0x64627402  # advisory lock of the dead-job scan: one front-end at a time
NOTIFY_LOCK = 0x64627403  # advisory lock (a session's) of the front-end that runs the [[notify]] commands
# advisory lock of the area's state (the area lock, tests open for a job): every group of writes holds it
# shared from its start, a group that changes that state exclusively (see server/guard.py)
AREA_STATE_LOCK = 0x64627404
EVENTS_CHANNEL = "dbtool_events"  # NOTIFY channel: a transaction that appended events committed

# SQLSTATEs of a database that turns us away: the URL (user, password, database) must change
REFUSING = ("28000", "28P01", "3D000", "42501")
# SQLSTATE classes and codes of a server that is restarting, shutting down or cannot be reached
GONE = ("08", "57P01", "57P02", "57P03", "53300")
# a deadlock or serialization failure: the transaction is retried
RETRYABLE = ("40001", "40P01")


def is_postgres_url(url: str) -> bool:
    return url.partition("://")[0].startswith(("postgresql", "postgres"))


def sqlstate(err: BaseException) -> str:
    return str(getattr(getattr(err, "orig", err), "sqlstate", "") or "")


def reason(err: BaseException, url: str = "") -> str:
    """The driver's message in one line (psycopg's spans several), never with the password."""
    text = " ".join(driver_message(err).split())
    password = _password(url)
    if password:
        text = text.replace(password, "***")
    return text[:400]


def _password(url: str) -> str:
    userinfo = url.partition("://")[2].rpartition("@")[0]
    return userinfo.partition(":")[2] if ":" in userinfo else ""


def retryable(err: BaseException) -> bool:
    """A deadlock or serialization failure: the same transaction again will do."""
    return sqlstate(err) in RETRYABLE


def connection_lost(err: BaseException) -> bool:
    """The database went away (restarting, shut down, the network): not the request's fault."""
    code = sqlstate(err)
    if code in REFUSING:
        return False
    if code.startswith(GONE[0]) or code in GONE[1:]:
        return True
    orig = getattr(err, "orig", err)
    dbapi = type(orig).__module__.split(".")[0]
    if dbapi != "psycopg":
        return False
    import psycopg

    if isinstance(orig, psycopg.OperationalError) and not isinstance(orig, psycopg.errors.TransactionRollback):
        return not code  # (a connection failure carries no SQLSTATE)
    return isinstance(orig, psycopg.InterfaceError)


def failure(err: BaseException, url: str, doing: str = "cannot use") -> DbtoolError:
    """A connection error as the user should read it (see the module's docstring)."""
    where = redact_url(url)
    text = reason(err, url)
    code = sqlstate(err)
    refused = any(words in text.lower() for words in ("authentication failed", "does not exist", "no password"))
    if code in REFUSING or refused:
        return Refused(f"{doing} the database {where}: {text}; check the URL's user, password and database name")
    return Unavailable(
        f"cannot reach PostgreSQL at {where}: {text}; check that it runs and that the URL's host and port are right"
    )


def busy(err: BaseException, url: str) -> Busy:
    """What a front-end answers while its database is away: retry (the client does, until --timeout)."""
    return Busy(f"PostgreSQL at {redact_url(url)} is unavailable ({reason(err, url)}); retry", retry_after=0.5)


def area_keys(conn: Connection, url: str) -> list[str]:
    """The keys of the area the database holds; [] when it holds nothing. Refused when it holds
    another application's tables."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return []
    if {"keys", "metadat", "runs", "tests"} <= tables:
        from .schema import table

        metadat = table("metadat")
        made_by = conn.execute(select(func.count()).where(metadat.c.var == "DBTOOL_SCHEMA")).scalar()
        if made_by:
            return read_keys(conn)
    listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise Refused(
        f"the database {redact_url(url)} holds tables of another application ({listed}); "
        "give dbtool an empty database (or schema) of its own"
    )


def prepare(conn: Connection, url: str, keys: list[str], version: str, *, create: bool = True) -> list[str]:
    """Check the database for an area with ``keys`` (none given: any keys), creating the schema
    when it is empty, or the tables added since when it was made by an older dbtool. Returns the
    area's keys. Runs in ``conn``'s transaction, under the schema lock."""
    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
    found = area_keys(conn, url)
    if found and keys and found != keys:
        raise Refused(
            f"the database {redact_url(url)} holds a dbtool area with keys {','.join(found)}, not "
            f"{','.join(keys)}; use another database (areas share one only when their keys are the same)"
        )
    if not found and not keys:
        raise Refused(f"the database {redact_url(url)} holds no dbtool area; create one with `dbtool init --db-url`")
    if create:
        create_schema(conn, found or keys, version)
    return found or keys
