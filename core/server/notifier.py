"""The ``[[notify]]`` commands of config.toml, run by the server after the commits that call for them.

A chore on the event loop, woken by every commit (and looking once a second besides). For each
entry it reads the events after the entry's cursor, and for each event the entry asks for runs
its command — ``sh -c COMMAND`` in the area's root, the event as one JSON line on stdin,
``DBTOOL_EVENT`` and ``DBTOOL_RUN_ID`` (and ``DBTOOL_AREA``, ``DBTOOL_EVENT_SEQ``, and
``DBTOOL_FIELD_<NAME>`` for each field of the request that made the event) in its
environment — in a thread of its own, so that no write ever waits for it; then it stores the
cursor (through the writer, in the database) before it goes on. So each event reaches each entry
once, in order, across stops and restarts; only a server killed between a command's exit and the
commit of its cursor runs that command again at its next start.

A command that fails (non-zero exit, killed past its ``timeout``, not startable) is logged and run
again after 1, 2, 4 ... 300 s (the entry's later events wait behind it), up to ``attempts`` runs;
then the event is given up, logged as such. An entry seen for the first time starts at the events
of this server's life. On PostgreSQL one front-end delivers, the one that holds the advisory lock
``NOTIFY_LOCK`` on a connection of its own; when it goes away another takes over from the cursors.

``regression``: a leaf test (an item, or a toplevel without items) whose status becomes FAIL while
the same test in the baseline — the most recent earlier complete run of the same target (by event
time, then id) — is PASS; judged when the event is delivered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy import select

from ..commands import WRITE, Command, Param
from ..db.context import Db
from ..request import RequestContext
from ..rules.notify import KINDS, REGRESSION, backoff, kinds_of, wanted
from .events import wire_event

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger("dbtool.server")

POLL = 1.0  # seconds between looks when no commit woke the chore
BATCH = 500  # events read at a time
STDERR_KEPT = 2000  # characters of a failing command's stderr kept for the log
SET_CURSOR = Command(
    "notify-cursor",
    WRITE,
    "notify.set_notify_cursor",
    "Store a [[notify]] entry's cursor (the server's own write; not a client command).",
    (Param("name", "str", required=True), Param("seq", "int", required=True)),
)
PRIORITY = (*KINDS,)  # one notification per event and entry: the first kind of these it asks for


class Notifier:
    def __init__(self, server: Server, entries: list[dict], start_seq: int) -> None:
        self.server = server
        self.entries = entries
        self.start_seq = start_seq  # where an entry seen for the first time begins
        self.wake = asyncio.Event()
        self.stopping = False
        self.failures: dict[str, tuple[int, int, float]] = {}  # name -> (seq, runs failed, next try)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dbtool-notify")
        self.lock_conn = None  # PostgreSQL: the connection holding NOTIFY_LOCK
        self.task: asyncio.Task | None = None
        self.working = False  # a pass is under way

    def start(self) -> None:
        if self.entries:
            self.task = asyncio.get_running_loop().create_task(self._run())
            log.info("notifications: %d [[notify]] entr%s", len(self.entries), "y" if len(self.entries) == 1 else "ies")

    @property
    def idle(self) -> bool:
        """Nothing under way and no command waiting for a retry (the server may stop when idle)."""
        return not self.working and not self.failures

    def committed(self) -> None:
        """New events were committed (called on the loop)."""
        self.wake.set()

    async def finish(self) -> None:
        """At the server's stop: let a running command end and its cursor be stored, then stop."""
        self.stopping = True
        self.wake.set()
        if self.task is not None:
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        await asyncio.get_running_loop().run_in_executor(self.pool, self._release)
        self.pool.shutdown(wait=False)

    async def _run(self) -> None:
        while not self.stopping:
            try:
                await asyncio.wait_for(self.wake.wait(), POLL)
            except TimeoutError:
                pass
            self.wake.clear()
            if self.stopping:
                return
            self.working = True
            try:
                await self._pass()
            except Exception as err:  # (the database away, a bug): this chore goes on
                log.warning("notifications wait: %s: %s", type(err).__name__, err)
                await asyncio.sleep(POLL)
            finally:
                self.working = False

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _pass(self) -> None:
        server = self.server
        if server.read_only:
            return
        if server.pg and not await self._in_thread(self._hold_lock):
            return  # another front-end delivers
        cursors = await self._in_thread(self._cursors)
        for entry in self.entries:
            if self.stopping:
                return
            name = entry["name"]
            if name not in cursors:
                await self._save(name, self.start_seq)
                cursors[name] = self.start_seq
            await self._deliver(entry, cursors[name])

    async def _deliver(self, entry: dict, cursor: int) -> None:
        name = entry["name"]
        failed = self.failures.get(name)
        if failed is not None and time.monotonic() < failed[2]:
            return
        stored = cursor
        try:
            while not self.stopping and cursor < self.server.hub.last_seq:
                rows = await self._in_thread(self._events_after, cursor)
                if not rows:
                    break
                for row in rows:
                    if self.stopping:
                        return
                    note = await self._in_thread(self._notification, entry, row)
                    if note is not None:
                        if not await self._attempt(entry, row, note):
                            return
                        await self._save(name, row["seq"])
                        stored = row["seq"]
                    cursor = row["seq"]
                if len(rows) < BATCH:
                    break
        finally:
            if cursor != stored:  # events it did not ask for: passed over, in one write
                await self._save(name, cursor)

    async def _attempt(self, entry: dict, row: dict, note: dict) -> bool:
        """Run the entry's command for one notification; False when it must wait for a retry."""
        name = entry["name"]
        ok, why = await self._in_thread(self._run_command, entry, note)
        if ok:
            if self.failures.pop(name, None) is not None:
                log.info("notify %s: event %d delivered after retries", name, row["seq"])
            return True
        seq, runs, _ = self.failures.get(name, (row["seq"], 0, 0.0))
        runs = runs + 1 if seq == row["seq"] else 1
        if runs >= entry["attempts"]:
            self.failures.pop(name, None)
            what = (name, row["seq"], note["event"], runs, why)
            log.error("notify %s: gave up on event %d (%s) after %d run(s): %s", *what)
            return True
        delay = backoff(runs)
        self.failures[name] = (row["seq"], runs, time.monotonic() + delay)
        what = (name, row["seq"], note["event"], why, delay)
        log.warning("notify %s: event %d (%s) failed (%s); retrying in %g s", *what)
        asyncio.get_running_loop().call_later(delay, self.wake.set)
        return False

    async def _save(self, name: str, seq: int) -> None:
        ctx = RequestContext(self.server.request_id(), SET_CURSOR.name, {}, self.server.own_client)
        ctx.internal = True  # (the server's own bookkeeping: no area lock holds it back)
        await self.server.writer.submit(SET_CURSOR, {"name": name, "seq": seq}, ctx, None)

    # -- in the notifier's thread ---------------------------------------------------------------------

    def _db(self, conn) -> Db:
        ctx = RequestContext(self.server.request_id(), "notify", {}, self.server.own_client)
        return Db(conn, self.server.schema, ctx, self.server.config)

    def _cursors(self) -> dict[str, int]:
        from ..handlers.notify import notify_cursors

        with self.server.storage.reading() as conn:
            return notify_cursors(self._db(conn))

    def _events_after(self, seq: int) -> list[dict]:
        events = self.server.schema.events
        query = select(events).where(events.c.seq > seq).order_by(events.c.seq).limit(BATCH)
        with self.server.storage.reading() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _notification(self, entry: dict, row: dict) -> dict | None:
        """What the entry is told of this event (None: nothing)."""
        kinds = kinds_of(row)
        for kind in PRIORITY:
            if kind not in kinds or not wanted(entry, row, kind):
                continue
            note = {"event": kind, "cmd": row.get("cmd"), **_without_event(wire_event(row))}
            if kind == REGRESSION:
                baseline = self._regression(row)
                if baseline is None:
                    continue
                note["baseline_run_id"], note["baseline_status"] = baseline
            return note
        return None

    def _regression(self, row: dict) -> tuple[int, str] | None:
        from ..handlers.completion import baseline_status, is_leaf

        run_id, testname, item_path = row.get("run_id"), row.get("testname"), row.get("item_path") or ""
        if run_id is None or testname is None:
            return None
        with self.server.storage.reading() as conn:
            db = self._db(conn)
            if not is_leaf(db, run_id, testname, item_path):
                return None
            found = baseline_status(db, run_id, testname, item_path)
        return found if found is not None and found[1] == "PASS" else None

    def _run_command(self, entry: dict, note: dict) -> tuple[bool, str]:
        """Run the command for one notification: (whether it succeeded, why not)."""
        env = {
            **os.environ,
            "DBTOOL_EVENT": note["event"],
            "DBTOOL_RUN_ID": "" if note.get("run_id") is None else str(note["run_id"]),
            "DBTOOL_EVENT_SEQ": str(note.get("seq")),
            "DBTOOL_AREA": self.server.area.root,
        }
        fields = note.get("fields")
        if isinstance(fields, dict):  # the fields of the request that made the event, one variable each
            env.update({f"DBTOOL_FIELD_{name}": str(value) for name, value in fields.items()})
        line = (json.dumps(note, ensure_ascii=False) + "\n").encode()
        with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as stdin:
            stdin.write(line)
            stdin.seek(0)
            try:
                proc = subprocess.Popen(
                    ["sh", "-c", entry["command"]],
                    cwd=self.server.area.root,
                    env=env,
                    stdin=stdin,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,  # its own process group: a timeout ends all of it
                )
            except OSError as exc:
                return False, f"cannot run sh: {exc}"
            try:
                code = proc.wait(timeout=entry["timeout"])
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return False, f"still running after {entry['timeout']:g} s (killed)"
            if code == 0:
                return True, ""
            err.seek(0)
            tail = err.read()[-STDERR_KEPT:].decode("utf-8", "replace").strip().splitlines()
            said = f": {tail[-1]}" if tail else ""
            return False, f"exit code {code}{said}" if code > 0 else f"killed by signal {-code}{said}"

    def _hold_lock(self) -> bool:
        """PostgreSQL: whether this front-end holds NOTIFY_LOCK (taking it when it is free)."""
        import psycopg

        from ..db import postgres

        conn = self.lock_conn
        if conn is not None:
            try:
                conn.execute("SELECT 1")
                return True
            except psycopg.Error:
                self._release()
        conninfo = "postgresql://" + self.server.db_url.partition("://")[2]
        try:
            conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
            got = conn.execute(f"SELECT pg_try_advisory_lock({postgres.NOTIFY_LOCK})").fetchone()[0]
        except psycopg.Error as err:
            log.warning("notifications wait: %s", postgres.reason(err, self.server.db_url))
            return False
        if not got:
            conn.close()
            return False
        self.lock_conn = conn
        log.info("notifications: this front-end delivers them")
        return True

    def _release(self) -> None:
        conn, self.lock_conn = self.lock_conn, None
        if conn is not None:
            try:
                conn.close()  # (the lock goes with the session)
            except Exception:
                pass


def _without_event(event: dict) -> dict:
    return {k: v for k, v in event.items() if k != "event"}


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()
