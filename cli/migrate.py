"""``dbtool migrate --to URL``: move an SQLite area into an empty PostgreSQL database.

The area's server is stopped, and its locks are held for the whole copy, so that no server starts
meanwhile (a client that wants one waits). Every table is copied with its ids (COPY, in one
PostgreSQL transaction, so a failure leaves the target empty), the sequences are moved past the
ids copied, the tables analysed, and each table's row count is compared in both before the
commit. Only then does config.toml get ``db.url`` (and ``.dbtool/shared`` and ``hosts/``, where
each host's front-end keeps its record).
The SQLite file is left as it was: a backup, until the user removes it.
"""

from __future__ import annotations

import os
import sys
import time

from dbtool.core import __version__
from dbtool.core.area import Area, check_db_url, find_area, load_config, mark_shared, set_setting
from dbtool.core.errors import Refused, Unavailable

from .binder import GlobalOptions, default_timeout
from .output import emit, render

CHUNK = 10_000  # rows read from SQLite at a time


def migrate(opts: GlobalOptions, *, to: str) -> int:
    area = find_area(opts.area)
    config = load_config(area)
    if os.environ.get("DBTOOL_DB_URL"):
        raise Refused("unset $DBTOOL_DB_URL first: migrate copies the area's SQLite file, named by config.toml")
    if config["db"].get("url"):
        raise Refused(f"{area.root} is kept in PostgreSQL already (db.url in {area.config_path}); nothing to migrate")
    check_db_url(to, "--to")
    if not os.path.exists(area.db_path):
        raise Refused(f"{area.db_path} does not exist; there is nothing to migrate")
    started = time.monotonic()
    from .progress import phases

    steps = phases("migrate", "stopping the area's server")
    try:
        locks = _stop_and_hold(area, default_timeout(opts))
        try:
            counts = _copy(area, list(config["area"].get("keys") or []), to, steps.phase)
            steps.phase("switching config.toml to PostgreSQL")
            set_setting(area, "db", "url", to)
            mark_shared(area.dir, bool(config["server"].get("share_group")))
        finally:
            for lock in locks:
                lock.release()
    finally:
        steps.done()
    elapsed = time.monotonic() - started
    rows = sum(c["sqlite"] for c in counts)
    if opts.output == "table":
        emit(render(counts, "table"))
        from dbtool.core.db.engine import redact_url

        emit(
            f"migrated {rows} rows of {len(counts)} tables to {redact_url(to)} in {elapsed:.1f} s "
            f"({rows / max(elapsed, 1e-9):.0f} rows/s); config.toml now names it, and {area.db_path} is left "
            "as it was (remove it once you are satisfied)\n"
        )
    else:
        emit(render({"tables": counts, "rows": rows, "seconds": round(elapsed, 3)}, opts.output))
    return 0


def _stop_and_hold(area: Area, timeout: float) -> list:
    """Stop the area's server and hold its start and server locks, so that none starts during the copy."""
    from dbtool.core.client import call
    from dbtool.core.commands import COMMANDS
    from dbtool.core.link import _take, server_lock_free

    deadline = time.monotonic() + timeout
    try:
        call(area, COMMANDS["server-stop"], {}, timeout=timeout)
    except Unavailable as err:
        if "no server is running" not in err.message:
            raise
    start = _take(area, area.start_lock, timeout)
    if start is None:
        raise Unavailable(f"timed out waiting for {area.start_lock} (a client is starting the server)")
    while True:
        held = _take(area, area.server_lock, 0.1) if server_lock_free(area) else None
        if held is not None:
            return [held, start]
        if time.monotonic() > deadline:
            start.release()
            raise Unavailable(f"the area's server is still stopping after {timeout:g} s; retry")
        time.sleep(0.05)


def _copy(area: Area, keys: list[str], url: str, phase=lambda text: None) -> list[dict]:
    """Every table of the SQLite file into the empty database at ``url``: its counts, per table."""
    import sqlite3

    from dbtool.core.db import postgres
    from dbtool.core.db.engine import ADMIN, create_schema, postgres_engine, redact_url, sqlite_engine
    from sqlalchemy.exc import DBAPIError

    with sqlite_engine(area.db_path, ADMIN).connect() as conn, conn.begin():  # (tables added since: as a server)
        create_schema(conn, keys, __version__)
    source = sqlite3.connect(f"file:{area.db_path}?mode=ro", uri=True)
    try:
        engine = postgres_engine(url, ADMIN)
    except ImportError:
        raise Refused("PostgreSQL needs the driver psycopg: pip install 'dbtool[postgres]'") from None
    counts = []
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            with raw.transaction():
                if postgres.area_keys(conn, url):
                    where = redact_url(url)
                    raise Refused(f"the database {where} holds a dbtool area already; migrate needs an empty one")
                schema = create_schema(conn, keys, __version__)
                names = [t.name for t in schema.all_tables()]
                raw.execute(f"TRUNCATE {', '.join(names)} RESTART IDENTITY")  # (what create_schema put there)
                tables = schema.all_tables()
                for number, table in enumerate(tables, 1):
                    phase(f"copying table {number}/{len(tables)}: {table.name}")
                    counts.append(_copy_table(source, raw, table))
                phase("analysing and comparing the counts")
                raw.execute(f"ANALYZE {', '.join(names)}")  # the planner's statistics, for the first reads
                wrong = [c for c in counts if c["sqlite"] != c["postgresql"]]
                if wrong:
                    found = (f"{c['table']} {c['sqlite']} rows in SQLite, {c['postgresql']} copied" for c in wrong)
                    raise Refused("the copy does not match, nothing was changed: " + ", ".join(found))
    except DBAPIError as err:
        raise postgres.failure(err, url, "cannot migrate to") from None
    except Exception as err:
        import psycopg

        if isinstance(err, psycopg.Error):
            if postgres.connection_lost(err) or postgres.sqlstate(err) in postgres.REFUSING:
                raise postgres.failure(err, url, "cannot migrate to") from None
            raise Refused(f"PostgreSQL refused the copy, nothing was changed: {postgres.reason(err, url)}") from None
        raise
    finally:
        source.close()
        engine.dispose()
    return counts


def _copy_table(source, raw, table) -> dict:
    """One table by COPY, ids kept; its serial sequence moved past them. Its counts in both."""
    present = {row[1] for row in source.execute(f'PRAGMA table_info("{table.name}")')}
    columns = [c.name for c in table.columns if c.name in present]
    listed = ", ".join(f'"{c}"' for c in columns)
    copied = 0
    with raw.cursor() as cur:
        with cur.copy(f"COPY {table.name} ({listed}) FROM STDIN") as copy:
            rows = source.execute(f'SELECT {listed} FROM "{table.name}"')
            while True:
                chunk = rows.fetchmany(CHUNK)
                if not chunk:
                    break
                for row in chunk:
                    copy.write_row(row)
                copied += len(chunk)
        column = table.autoincrement_column  # (a serial id: the next one must follow those copied)
        if column is not None:
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', '{column.name}'), "
                f"coalesce(max({column.name}), 1), max({column.name}) IS NOT NULL) FROM {table.name}"
            )
        in_pg = cur.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]
    in_sqlite = source.execute(f'SELECT count(*) FROM "{table.name}"').fetchone()[0]
    if copied != in_sqlite:
        print(f"dbtool: warning: {table.name} changed while it was copied", file=sys.stderr)
    return {"table": table.name, "sqlite": in_sqlite, "postgresql": in_pg}
