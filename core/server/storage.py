"""The server's database: an SQLite file (``Storage``) or a PostgreSQL database (``PostgresStorage``,
with ``EventTail``, which reads the events every front-end appends).

The SQLite files: opening them (with the checks that keep a damaged or unwritable
database from being served), the readers' connections, and what the writer needs to recover.

Opening: the file's header is checked (a read and a stat), then, unless the file is exactly as a
clean stop of dbtool left it, SQLite's ``PRAGMA quick_check`` (about a second per million tests
with a warm cache: too slow for every start, see ``needs_check``). A damaged file is refused:
the server does not start, and says so in one line.

Reads run under a gate: many at a time, but none while the writer closes every connection to
the file to recover from its -wal/-shm files being deleted (``Writer``), because SQLite shares
one -shm mapping between all the connections of a process, and only a process with no
connection left open gets fresh files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from .. import __version__
from ..area import Area, remove_file
from ..db.engine import (
    READ,
    WRITE,
    create_schema,
    damaged,
    driver_message,
    filesystem_read_only,
    header_problem,
    is_damage,
    journal_mode_for,
    postgres_engine,
    quick_check,
    read_keys,
    redact_url,
    sqlite_engine,
)
from ..db.schema import table
from ..errors import Refused, StorageError

log = logging.getLogger("dbtool.server")

READERS = 4
CLEAN_STOP = "clean-stop.json"  # the database file's identity as a clean stop left it
CLOSE_WAIT = 30.0  # seconds the writer waits for reads under way before it closes the connections


class Gate:
    """Any number of readers at once, or one closer alone: the closer waits for the readers under
    way and keeps new ones waiting until it is done."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._closing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._closing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self, timeout: float) -> Iterator[None]:
        with self._cond:
            self._closing = True
            if not self._cond.wait_for(lambda: self._readers == 0, timeout):
                self._closing = False
                self._cond.notify_all()
                raise TimeoutError(f"reads were still running after {timeout:g} s")
        try:
            yield
        finally:
            with self._cond:
                self._closing = False
                self._cond.notify_all()


def file_identity(path: str) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return {
        "dev": st.st_dev,
        "ino": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


class Engines:
    """What both kinds of storage share: a write engine, a read engine, and the gate of the reads."""

    gate: Gate
    read_engine = None
    write_engine = None

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read connection in a transaction (under the gate)."""
        with self.gate.shared(), self.read_engine.connect() as conn, conn.begin():
            yield conn

    def dispose(self) -> None:
        for engine in (self.read_engine, self.write_engine):
            if engine is not None:
                engine.dispose()


class Storage(Engines):
    """The area's database as the server uses it: one write engine, one read engine, their gate."""

    def __init__(self, area: Area, db_cfg: dict) -> None:
        self.area = area
        self.path = area.db_path
        self.db_cfg = db_cfg
        self.gate = Gate()
        self.read_only = ""  # why writes are refused from the start ('' when they are not)

    # -- opening ------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Check the file and open the engines; StorageError (or Refused) when it cannot be served."""
        path, db_cfg = self.path, self.db_cfg
        self.read_only = self._read_only_reason()
        self.journal_mode = journal_mode_for(path, str(db_cfg.get("journal_mode", "auto")))
        if not os.path.exists(path):
            raise Refused(f"{path} does not exist; re-create the area with `dbtool init`")
        problem = header_problem(path)
        if problem:
            raise damaged(path, problem)
        clean = self._take_clean_stop()
        try:
            if not self.read_only and self.needs_check(clean):  # before anything writes to it
                self._quick_check()
            self.write_engine = sqlite_engine(
                path,
                WRITE,
                synchronous=str(db_cfg.get("synchronous", "FULL")),
                journal_mode=self.journal_mode,
                pool_size=1,
                max_size_mb=float(db_cfg.get("max_size_mb") or 0),
                read_only=bool(self.read_only),
            )
            self.read_engine = sqlite_engine(path, READ, pool_size=READERS)
            with self.write_engine.connect() as conn, conn.begin():
                self.keys = read_keys(conn)
                if not self.keys:
                    raise Refused(f"{path} has no keys; re-create the area with `dbtool init`")
                if not self.read_only:  # an area made by an older dbtool gets the tables added since
                    create_schema(conn, self.keys, __version__)
                self.last_seq = conn.execute(select(func.max(table("events").c.seq))).scalar() or 0
        except (DBAPIError, sqlite3.Error) as err:
            self.dispose()
            raise self.failure(err, "cannot open the database") from None
        except BaseException:
            self.dispose()
            raise

    def _read_only_reason(self) -> str:
        if self.db_cfg.get("read_only"):
            return "db.read_only is set in config.toml"
        if filesystem_read_only(self.area.dir):
            return f"{self.path} is on a read-only filesystem"
        if not os.access(self.path, os.W_OK):
            return f"{self.path} is not writable by this user"
        return ""

    def needs_check(self, clean: dict | None) -> bool:
        """Whether to run ``quick_check`` now (``db.check_on_start``: auto, always, never).

        auto: unless the file is the very file a clean stop of dbtool left, unchanged since (same
        inode, size, modification and change times: anything that writes it, even with its
        mtime put back, changes its ctime). So a restart after ``server stop`` costs nothing,
        while the first start after a crash, a restore, a copy or any outside write checks it.
        """
        mode = str(self.db_cfg.get("check_on_start", "auto")).lower()
        if mode in ("always", "never"):
            return mode == "always"
        return clean is None or clean != file_identity(self.path)

    def _quick_check(self) -> None:
        started = time.monotonic()
        problem = quick_check(self.path)
        log.info("quick_check of %s: %s in %.2f s", self.path, problem or "ok", time.monotonic() - started)
        if problem:
            raise damaged(self.path, problem)

    def _take_clean_stop(self) -> dict | None:
        """The identity a clean stop recorded (removed now: from here on the file may change)."""
        record = self.area.path(CLEAN_STOP)
        try:
            with open(record, encoding="utf-8") as f:
                found = json.load(f)
        except (OSError, ValueError):
            found = None
        if not self.read_only:
            remove_file(record)
        return found if isinstance(found, dict) else None

    def record_clean_stop(self) -> None:
        """After a clean stop (every connection closed): the file as it is now needs no check next time."""
        identity = file_identity(self.path)
        if identity is None:
            return
        tmp = self.area.path(f".{CLEAN_STOP}.{os.getpid()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(identity, f)
            os.replace(tmp, self.area.path(CLEAN_STOP))
        except OSError as err:  # the next start checks the database: slower, nothing worse
            log.warning("could not record the clean stop: %s", err)
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def failure(self, err: BaseException, doing: str) -> StorageError:
        """A database error as the user should read it: the driver's reason, and what to do."""
        reason = driver_message(err)
        if is_damage(reason):
            return damaged(self.path, reason)
        return StorageError(f"{doing} {self.path}: {reason}")


class PostgresStorage(Engines):
    """An area's database on PostgreSQL as one front-end uses it: its engines, and the check that
    the database holds this area (``db.postgres.prepare``). Nothing of a file applies: no header,
    no quick_check, no WAL; a stop leaves nothing to record."""

    backend = "postgresql"
    journal_mode = ""

    def __init__(self, area: Area, db_cfg: dict, keys: list[str]) -> None:
        self.area = area
        self.url = str(db_cfg["url"])
        self.path = redact_url(self.url)  # how messages name the database
        self.db_cfg = db_cfg
        self.config_keys = keys
        self.gate = Gate()
        self.read_only = "db.read_only is set in config.toml" if db_cfg.get("read_only") else ""

    def open(self) -> None:
        from ..db import postgres

        try:
            self.write_engine = postgres_engine(self.url, WRITE, pool_size=1)
            self.read_engine = postgres_engine(self.url, READ, pool_size=READERS)
            with self.write_engine.connect() as conn, conn.begin():
                self.keys = postgres.prepare(conn, self.url, self.config_keys, __version__, create=not self.read_only)
                self.last_seq = conn.execute(select(func.max(table("events").c.seq))).scalar() or 0
        except DBAPIError as err:
            self.dispose()
            raise postgres.failure(err, self.url, "cannot open") from None
        except BaseException:
            self.dispose()
            raise

    def failure(self, err: BaseException, doing: str) -> StorageError:
        from ..db import postgres

        return StorageError(f"{doing} {self.path}: {postgres.reason(err, self.url)}")

    def record_clean_stop(self) -> None:
        pass


class EventTail:
    """PostgreSQL: the events every front-end appends, handed to this server's watchers in seq order.

    A thread of its own LISTENs on ``dbtool_events`` (a writer NOTIFYs in the transaction that
    appends events, so the note arrives when that commits) and reads the events after the last one
    it handed on; it also looks once a second, so a lost note or a reconnect loses nothing.
    Events are numbered in commit order under a lock (``Writer._append_point``), so reading them
    by seq is gap-free."""

    POLL = 1.0  # seconds between looks when no note came
    BATCH = 5000

    def __init__(self, url: str, last_seq: int, deliver) -> None:
        self.url = url
        self.last_seq = last_seq
        self.deliver = deliver  # called in this thread with each batch of rows (dicts), in seq order
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="dbtool-events", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5.0)

    def _run(self) -> None:
        import psycopg

        from ..db import postgres

        conninfo = "postgresql://" + self.url.partition("://")[2]  # (libpq's own form of the URL)
        delay = 0.2
        while not self.stopping.is_set():
            try:
                with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {postgres.EVENTS_CHANNEL}")
                    delay = 0.2
                    while not self.stopping.is_set():
                        self._catch_up(conn)
                        for _note in conn.notifies(timeout=self.POLL, stop_after=1):
                            pass
            except psycopg.Error as err:
                if self.stopping.is_set():
                    return
                log.warning("the event tail lost PostgreSQL (%s); reconnecting", postgres.reason(err, self.url))
                self.stopping.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # a bug: log it, keep the tail alive
                log.exception("the event tail failed")
                self.stopping.wait(1.0)

    def _catch_up(self, conn) -> None:
        while True:
            cur = conn.execute(
                "SELECT seq, time_ns, cmd, run_id, test_id, testname, item_path, state, status, client, data "
                "FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
                (self.last_seq, self.BATCH),
            )
            names = [c.name for c in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
            if not rows:
                return
            self.last_seq = rows[-1]["seq"]
            self.deliver(rows)
            if len(rows) < self.BATCH:
                return
