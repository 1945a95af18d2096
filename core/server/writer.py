"""The single writer: group commit, each request atomic, acknowledged only after COMMIT.

Requests queue here. The writer takes everything queued (up to ``max_batch``), runs the requests
one after another in one transaction, commits, and only then answers them. A request that fails
changes nothing: if it had written nothing yet (a refused write: unknown test, bad value) it is
simply answered with its error; if it had (a rare conflict or a bug), the group's transaction is
rolled back and each of its requests is run again alone, so one bad request cannot sink the
others. Run alone (and on PostgreSQL, where a failed statement spoils the transaction), each
request has a SAVEPOINT of its own that its failure rolls back. If the transaction itself cannot
commit (disk full, read-only file), no request of the group is acknowledged, and each is retried
alone.

On SQLite the group path needs no savepoints: whether a request wrote anything is the
connection's change counter (``total_changes``: rows inserted, updated or deleted, trigger rows
included; a failed statement is undone by SQLite and counts none). That saves two of the four
statements of a status update.

Where the work runs: a group of ordinary requests runs its SQL on the event loop — a few tens of
microseconds each, with no hand-over between threads — and only the COMMIT (the fsync) goes to the
writer's I/O thread, so the loop keeps serving while the disk works. Bulk commands, whose work
grows with the data (``Command.bulk``), and databases without WAL run whole in that thread, so a
ping never waits behind them. The transaction is begun without waiting for a lock held by another
process (the loop retries instead of blocking).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..commands import Command
from ..db.context import EVENT_FIELDS, Db
from ..db.engine import BUSY_TIMEOUT_MS
from ..db.fast import Statements
from ..db.schema import Schema
from ..errors import Busy, DbtoolError, Internal, Refused
from ..handlers import resolve
from ..protocol import plain
from ..request import RequestContext, activate

log = logging.getLogger("dbtool.server")

EVENT_COLUMNS = ("seq", *EVENT_FIELDS)  # an events row as the writer stores it
IDEM_COLUMNS = ("idem", "response", "created")

IDEMPOTENCY_TTL = 24 * 3600  # seconds a write's idempotency key is remembered
LOCK_WAIT = 10.0  # seconds to wait for a write lock held by another process


class Job:
    __slots__ = ("after", "cmd", "ctx", "duplicate", "error", "events", "future", "idem", "params", "result")

    def __init__(self, cmd: Command, params: dict, ctx: RequestContext, idem: str | None, future: asyncio.Future):
        self.cmd = cmd
        self.params = params
        self.ctx = ctx
        self.idem = idem
        self.future = future
        self.result: object = None
        self.error: DbtoolError | None = None
        self.events: list[dict] = []
        self.after: Db | None = None  # the request's Db when it has after-commit actions
        self.duplicate = False  # its idempotency key was stored before: the stored result stands

    def reset(self) -> None:
        self.error, self.result, self.events, self.after, self.duplicate = None, None, [], None, False


def storage_error(err: Exception) -> Refused:
    """A database error that is not the request's fault (disk full, read-only file, I/O)."""
    reason = getattr(err, "orig", err)
    return Refused(f"the database did not accept the write ({reason}); nothing of this request was changed")


class GroupFailed(Exception):
    """The group's transaction is lost: a storage error, or SQLite rolled it back by itself."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class RunAlone(GroupFailed):
    """A request failed after writing, in a group run without savepoints: roll the group back and
    run each request alone (the failing one then fails in its own savepoint)."""


class Writer:
    def __init__(
        self,
        engine: Engine,
        schema: Schema,
        config: dict,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[list[dict]], None],
        last_seq: int,
        max_batch: int = 256,
        on_loop: bool = True,
    ) -> None:
        self.engine = engine
        self.dbapi = engine.dialect.dbapi
        self.schema = schema
        self.config = config
        self.loop = loop
        self.on_commit = on_commit
        self.max_batch = max_batch
        self.on_loop = on_loop  # False: every group runs in the I/O thread (no WAL: writes may wait)
        # SQLite counts the rows each statement changed: a group can do without savepoints (see above)
        self.counted = engine.dialect.name == "sqlite"
        self.last_seq = last_seq  # the single writer numbers the change events itself
        self.queue: deque[Job] = deque()
        self.active = 0  # jobs of the group being committed right now
        self.stopping = False
        self.groups = 0
        self.committed = 0
        self.wake = asyncio.Event()
        self.io = ThreadPoolExecutor(1, thread_name_prefix="dbtool-writer")
        self.task: asyncio.Task | None = None
        self._last_prune = 0.0

    # -- the event-loop side --------------------------------------------------------------------------
    def start(self) -> None:
        self.conn = self.engine.connect()
        self.raw = self.conn.connection.driver_connection
        self.task = self.loop.create_task(self._run())

    def submit(self, cmd: Command, params: dict, ctx: RequestContext, idem: str | None) -> asyncio.Future:
        if self.stopping:
            raise Busy("the server is stopping; retry", retry_after=0.1)
        future = self.loop.create_future()
        self.queue.append(Job(cmd, params, ctx, idem, future))
        self.wake.set()
        return future

    @property
    def depth(self) -> int:
        """Writes not yet acknowledged: queued, plus the group being committed."""
        return len(self.queue) + self.active

    async def stop(self) -> None:
        """Finish every queued write, then close the connection."""
        self.stopping = True
        self.wake.set()
        if self.task is not None:
            await self.task
        await self.loop.run_in_executor(self.io, self.conn.close)
        self.io.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            if not self.queue:
                if self.stopping:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            batch = self._take()
            self.active = len(batch)
            try:
                if self.on_loop and not batch[0].cmd.bulk:
                    await self._group_on_loop(batch)
                else:
                    await self.loop.run_in_executor(self.io, self._group_in_thread, batch)
                await self._finish(batch)
            except Exception:  # a bug here must not stop the writer: fail the group, keep going
                log.exception("writer failed on a group of %d", len(batch))
                for job in batch:
                    if job.error is None and job.result is None:
                        job.error = Internal("internal error in the writer; see .dbtool/logs/server.log")
            finally:
                self.active = 0
                _settle(batch)
            if time.time() - self._last_prune > 3600:
                await self.loop.run_in_executor(self.io, self._prune)

    def _take(self) -> list[Job]:
        """The next group: ordinary requests together; a bulk request alone."""
        if self.queue[0].cmd.bulk:
            return [self.queue.popleft()]
        batch = []
        while self.queue and len(batch) < self.max_batch and not self.queue[0].cmd.bulk:
            batch.append(self.queue.popleft())
        return batch

    async def _group_on_loop(self, batch: list[Job]) -> None:
        try:
            await self._begin()
        except self.dbapi.Error as err:  # e.g. another process kept the database locked too long
            for job in batch:
                job.error = storage_error(err)
            return
        try:
            statements = self._run_jobs(batch, savepoints=not self.counted)
            last_seq = self._flush(statements, batch)
        except Exception as err:
            self._abort()
            await self._retry_alone(batch, err)
            return
        try:
            await self.loop.run_in_executor(self.io, self._commit)
        except Exception as err:
            await self.loop.run_in_executor(self.io, self._abort)
            await self._retry_alone(batch, err)
            return
        self.last_seq = last_seq

    async def _retry_alone(self, batch: list[Job], err: Exception) -> None:
        """Each request of a failed group again, alone (checked for a duplicate, see ``_run_job``)."""
        cause = err.cause if isinstance(err, GroupFailed) else err
        if isinstance(err, RunAlone):
            log.info("a request failed after writing (%s); running its group's %d request(s) alone", cause, len(batch))
        else:
            log.warning("group of %d write(s) failed to commit: %s; retrying each alone", len(batch), cause)
        for job in batch:
            job.reset()
            await self.loop.run_in_executor(self.io, self._group_in_thread, [job])

    async def _begin(self) -> None:
        """BEGIN IMMEDIATE without blocking the loop: a lock held by another process is waited out here."""
        deadline = time.monotonic() + LOCK_WAIT
        delay = 0.002
        self.raw.execute("PRAGMA busy_timeout = 0")
        try:
            while True:
                try:
                    self.raw.execute("BEGIN IMMEDIATE")
                    return
                except self.dbapi.OperationalError as err:
                    if not ("locked" in str(err) or "busy" in str(err)) or time.monotonic() > deadline:
                        raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
        finally:
            self.raw.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    # -- runs on the loop or in the I/O thread -----------------------------------------------------------
    def _group_in_thread(self, batch: list[Job]) -> None:
        """A whole group (begin, requests, commit) in the I/O thread; a failed group is retried alone."""
        try:
            self.raw.execute("BEGIN IMMEDIATE")
            statements = self._run_jobs(batch, check_duplicates=len(batch) == 1)
            last_seq = self._flush(statements, batch)
            self._commit()
            self.last_seq = last_seq
        except Exception as err:
            self._abort()
            cause = err.cause if isinstance(err, GroupFailed) else err
            log.warning("group of %d write(s) failed to commit: %s", len(batch), cause)
            if len(batch) == 1:
                batch[0].reset()
                batch[0].error = storage_error(cause)
                return
            for job in batch:
                job.reset()
                self._group_in_thread([job])

    def _run_jobs(self, batch: list[Job], check_duplicates: bool = False, savepoints: bool = True) -> Statements:
        statements = Statements(self.conn)
        for job in batch:
            self._run_job(statements, job, check_duplicates, savepoints)
        return statements

    def _flush(self, statements: Statements, batch: list[Job]) -> int:
        """Store the group's events (numbered here) and idempotency keys; returns the last event seq.

        A key stored before makes this fail: the group is then retried request by request, and a
        request alone is checked for a duplicate before it runs (see ``_run_job``).
        """
        done = [job for job in batch if job.error is None and not job.duplicate]
        seq = self.last_seq
        rows = []
        for job in done:
            for event in job.events:
                seq += 1
                event["seq"] = seq
                rows.append(event)
        if rows:
            events = self.schema.events
            build = lambda: insert(events).values({k: bindparam(k) for k in EVENT_COLUMNS})  # noqa: E731
            statements.execute_tuples(
                "events", build, EVENT_COLUMNS, [tuple(map(row.get, EVENT_COLUMNS)) for row in rows]
            )
        keys = [(job.idem, _json(job.result), job.ctx.now) for job in done if job.idem is not None]
        if keys:
            t = self.schema.idempotency
            build = lambda: insert(t).values({k: bindparam(k) for k in IDEM_COLUMNS})  # noqa: E731
            statements.execute_tuples("idem_put", build, IDEM_COLUMNS, keys)
        return seq

    def _commit(self) -> None:
        self.raw.execute("COMMIT")
        self.conn.commit()  # SQLAlchemy's own bookkeeping of the transaction (no statement)

    def _abort(self) -> None:
        try:
            if self.raw.in_transaction:
                self.raw.execute("ROLLBACK")
        finally:
            self.conn.rollback()

    def _run_job(self, statements: Statements, job: Job, check_duplicate: bool, savepoint: bool) -> None:
        if check_duplicate and job.idem is not None:
            t = self.schema.idempotency
            build = lambda: select(t.c.response).where(t.c.idem == bindparam("idem"))  # noqa: E731
            stored = statements.scalar("idem_get", build, {"idem": job.idem})
            if stored is not None:  # a write resent after a lost answer: it was applied already
                job.result, job.duplicate = json.loads(stored), True
                job.ctx.note("info", "idempotent", f"write {job.idem} was already applied; returning its result")
                return
        cursor = statements.cursor
        if savepoint:
            cursor.execute("SAVEPOINT request")
        else:
            changes = self.raw.total_changes
        db = Db(self.conn, self.schema, job.ctx, self.config, defer_events=True, fast=statements)
        try:
            with activate(job.ctx):
                result = resolve(job.cmd.handler)(db, **job.params)
        except Exception as err:
            if savepoint:
                self._roll_back(cursor, err)
            elif not self.raw.in_transaction or _spoils_group(err, self.dbapi):
                raise GroupFailed(err) from err
            elif self.raw.total_changes != changes:
                raise RunAlone(err) from err  # it wrote before failing: only a savepoint can undo that
            job.error = _job_error(job, err, self.dbapi)
        else:
            if savepoint:
                cursor.execute("RELEASE SAVEPOINT request")
            job.result = plain(result)  # JSON-ready: it is also stored with the idempotency key
            job.events = db.events
            job.after = db if db.after else None

    def _roll_back(self, cursor, err: Exception) -> None:
        """Undo one failed request. When that is impossible, or the storage failed, the whole group
        fails (and each of its requests is then retried alone)."""
        try:
            cursor.execute("ROLLBACK TO SAVEPOINT request")
            cursor.execute("RELEASE SAVEPOINT request")
        except self.dbapi.Error as lost:  # e.g. "no such savepoint": SQLite rolled back everything
            raise GroupFailed(err) from lost
        if _spoils_group(err, self.dbapi):
            raise GroupFailed(err)

    async def _finish(self, batch: list[Job]) -> None:
        """After a commit: count, publish the events, run deferred actions (in the I/O thread)."""
        done = [job for job in batch if job.error is None]
        self.groups += 1
        self.committed += len(done)
        events = [e for job in done for e in job.events]
        if events:
            self.on_commit(events)
        deferred = [job for job in done if job.after is not None]
        if deferred:
            await self.loop.run_in_executor(self.io, self._after_commit, deferred)

    def _after_commit(self, jobs: list[Job]) -> None:
        """Committed requests' deferred actions; their failure is reported, the commit stands."""
        for job in jobs:
            try:
                with activate(job.ctx):
                    job.after.run_after_commit()
            except Exception as err:
                log.warning("after-commit action of request %s failed: %s", job.ctx.id, err)
                job.ctx.note("warn", "after_commit", f"{type(err).__name__}: {err}")

    def _prune(self) -> None:
        now = time.time()
        self._last_prune = now
        t = self.schema.idempotency
        try:
            with self.conn.begin():
                self.conn.execute(delete(t).where(t.c.created < int(now) - IDEMPOTENCY_TTL))
        except DBAPIError as err:
            log.warning("could not prune old idempotency keys: %s", err)


def _json(result: object) -> str:
    """A result as stored with its idempotency key (most writes answer null)."""
    return "null" if result is None else json.dumps(result)


def _settle(batch: list[Job]) -> None:
    """Answer the requests of a finished group."""
    for job in batch:
        if job.future.done():  # the connection went away and cancelled it
            continue
        if job.error is not None:
            job.future.set_exception(job.error)
        else:
            job.future.set_result(job.result)


def _job_error(job: Job, err: Exception, dbapi) -> DbtoolError:
    if isinstance(err, DbtoolError):
        return err
    if _is_integrity_error(err, dbapi):
        return Refused(f"{job.cmd.name}: conflicts with an existing record ({getattr(err, 'orig', err)})")
    return _internal(job, err)


def _spoils_group(err: Exception, dbapi) -> bool:
    """A failure of the storage (not of the request): the group's transaction cannot stand."""
    return _is_database_error(err, dbapi) and not _is_integrity_error(err, dbapi) and _is_storage_error(err)


def _is_database_error(err: Exception, dbapi) -> bool:
    """An error of the database (raised through SQLAlchemy or straight from the driver)."""
    return isinstance(err, (DBAPIError, dbapi.Error))


def _is_integrity_error(err: Exception, dbapi) -> bool:
    return isinstance(err, (IntegrityError, dbapi.IntegrityError))


def _is_storage_error(err: Exception) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return any(s in text for s in ("disk is full", "disk i/o", "readonly", "read-only", "database is locked"))


def _internal(job: Job, err: Exception) -> Internal:
    log.exception("request %s (%s) failed: %s", job.ctx.id, job.cmd.name, err)
    job.ctx.note("error", "exception", f"{type(err).__name__}: {err}")
    return Internal(
        f"internal error in {job.cmd.name} (request {job.ctx.id}): {type(err).__name__}; see .dbtool/logs/server.log"
    )
