"""The single writer: group commit with a SAVEPOINT per request, acknowledged only after COMMIT.

Requests queue here from the event loop. The writer thread takes everything queued (up to
``max_batch``), runs each request inside its own savepoint of one transaction, commits, and only
then resolves the requests' futures. A request that fails rolls back its savepoint and nothing
else; if the transaction itself cannot commit (disk full, read-only file), no request of the
group is acknowledged, and each is retried alone so that one bad request cannot sink the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..commands import Command
from ..db.context import Db
from ..db.schema import Schema
from ..errors import Busy, DbtoolError, Internal, Refused
from ..handlers import resolve
from ..request import RequestContext, activate

log = logging.getLogger("dbtool.server")

IDEMPOTENCY_TTL = 24 * 3600  # seconds a write's idempotency key is remembered


class Job:
    __slots__ = ("after", "cmd", "ctx", "error", "events", "future", "idem", "params", "result")

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


def _settle(job: Job) -> None:
    if job.future.done():  # the connection went away and cancelled it
        return
    if job.error is not None:
        job.future.set_exception(job.error)
    else:
        job.future.set_result(job.result)


def storage_error(err: Exception) -> Refused:
    """A database error that is not the request's fault (disk full, read-only file, I/O)."""
    reason = getattr(err, "orig", err)
    return Refused(f"the database did not accept the write ({reason}); nothing of this request was changed")


class Writer:
    def __init__(
        self,
        engine: Engine,
        schema: Schema,
        config: dict,
        loop: asyncio.AbstractEventLoop,
        on_commit: Callable[[list[dict]], None],
        max_batch: int = 256,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.config = config
        self.loop = loop
        self.on_commit = on_commit
        self.max_batch = max_batch
        self.queue: deque[Job] = deque()
        self.active = 0  # jobs of the group being committed right now
        self.cond = threading.Condition()
        self.stopping = False
        self.groups = 0
        self.committed = 0
        self.thread = threading.Thread(target=self._run, name="dbtool-writer", daemon=True)
        self._last_prune = 0.0

    # -- event-loop side ------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def submit(self, cmd: Command, params: dict, ctx: RequestContext, idem: str | None) -> asyncio.Future:
        future = self.loop.create_future()
        with self.cond:
            if self.stopping:
                raise Busy("the server is stopping; retry", retry_after=0.1)
            self.queue.append(Job(cmd, params, ctx, idem, future))
            self.cond.notify()
        return future

    @property
    def depth(self) -> int:
        """Writes not yet acknowledged: queued, plus the group being committed."""
        return len(self.queue) + self.active

    def stop(self) -> None:
        """Finish every queued write, then let the thread end (join with ``thread.join``)."""
        with self.cond:
            self.stopping = True
            self.cond.notify()

    # -- writer thread --------------------------------------------------------------------------
    def _run(self) -> None:
        with self.engine.connect() as conn:
            while True:
                with self.cond:
                    while not self.queue and not self.stopping:
                        self.cond.wait()
                    if not self.queue:
                        break
                    n = min(len(self.queue), self.max_batch)
                    batch = [self.queue.popleft() for _ in range(n)]
                    self.active = n
                self._commit(conn, batch)
                self.active = 0
                self._maybe_prune(conn)

    def _commit(self, conn: Connection, batch: list[Job]) -> None:
        try:
            with conn.begin():
                for job in batch:
                    self._run_job(conn, job)
        except Exception as err:  # the group could not commit: acknowledge nothing of it
            cause = err.cause if isinstance(err, GroupFailed) else err
            log.warning("group of %d write(s) failed to commit: %s", len(batch), cause)
            if len(batch) > 1:
                for job in batch:
                    job.error, job.result, job.events, job.after = None, None, [], None
                    self._commit(conn, [job])
                return
            batch[0].error = storage_error(cause)
            batch[0].events = []
        else:
            self.groups += 1
            self.committed += sum(1 for job in batch if job.error is None)
            events = [e for job in batch if job.error is None for e in job.events]
            if events:
                self.on_commit(events)
            for job in batch:
                if job.after is not None and job.error is None:
                    self._after_commit(job)
        for job in batch:
            self.loop.call_soon_threadsafe(_settle, job)

    def _run_job(self, conn: Connection, job: Job) -> None:
        t = self.schema.idempotency
        if job.idem is not None:
            done = conn.execute(select(t.c.response).where(t.c.idem == job.idem)).scalar()
            if done is not None:
                job.result = json.loads(done)
                job.ctx.note("info", "idempotent", f"write {job.idem} was already applied; returning its result")
                return
        savepoint = conn.begin_nested()
        db = Db(conn, self.schema, job.ctx, self.config)
        try:
            with activate(job.ctx):
                result = resolve(job.cmd.handler)(db, **job.params)
            if job.idem is not None:
                conn.execute(insert(t).values(idem=job.idem, response=json.dumps(result), created=job.ctx.now))
        except Exception as err:
            _roll_back(savepoint, err)
            job.error = _job_error(job, err)
        else:
            savepoint.commit()
            job.result = result
            job.events = db.events
            job.after = db if db.after else None

    def _after_commit(self, job: Job) -> None:
        """A committed request's deferred actions; their failure is reported, the commit stands."""
        try:
            with activate(job.ctx):
                job.after.run_after_commit()
        except Exception as err:
            log.warning("after-commit action of request %s failed: %s", job.ctx.id, err)
            job.ctx.note("warn", "after_commit", f"{type(err).__name__}: {err}")

    def _maybe_prune(self, conn: Connection) -> None:
        now = time.time()
        if now - self._last_prune < 3600:
            return
        self._last_prune = now
        t = self.schema.idempotency
        try:
            with conn.begin():
                conn.execute(delete(t).where(t.c.created < int(now) - IDEMPOTENCY_TTL))
        except DBAPIError as err:
            log.warning("could not prune old idempotency keys: %s", err)


class GroupFailed(Exception):
    """The group's transaction is lost: a storage error, or SQLite rolled it back by itself."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _roll_back(savepoint, err: Exception) -> None:
    """Undo one failed request. When that is impossible, or the storage failed, the whole group fails
    (and each of its requests is then retried alone)."""
    try:
        savepoint.rollback()
    except DBAPIError as lost:  # e.g. "no such savepoint": SQLite rolled back everything (disk full)
        raise GroupFailed(err) from lost
    if isinstance(err, DBAPIError) and not isinstance(err, IntegrityError) and _is_storage_error(err):
        raise GroupFailed(err)


def _job_error(job: Job, err: Exception) -> DbtoolError:
    if isinstance(err, DbtoolError):
        return err
    if isinstance(err, IntegrityError):
        return Refused(f"{job.cmd.name}: conflicts with an existing record ({err.orig})")
    return _internal(job, err)


def _is_storage_error(err: DBAPIError) -> bool:
    text = str(getattr(err, "orig", err)).lower()
    return any(s in text for s in ("disk is full", "disk i/o", "readonly", "read-only", "database is locked"))


def _internal(job: Job, err: Exception) -> Internal:
    log.exception("request %s (%s) failed: %s", job.ctx.id, job.cmd.name, err)
    job.ctx.note("error", "exception", f"{type(err).__name__}: {err}")
    return Internal(
        f"internal error in {job.cmd.name} (request {job.ctx.id}): {type(err).__name__}; see .dbtool/logs/server.log"
    )
