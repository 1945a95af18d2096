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

The files under the writer: in WAL mode a commit lives in the -wal file until a checkpoint moves
it into the database, so a -wal (or -shm) deleted under a live server would take acknowledged
writes with it. The writer notes their inodes when it opens them and looks again (two stats)
before and after each COMMIT. When they are gone or replaced, the group is rolled back (or, found
after the COMMIT, kept), the writer checkpoints its old WAL into the database — its connection still
holds the deleted file — and closes and reopens every connection of the server, so that SQLite
makes new files; then the group runs again and is acknowledged. A read that meets a storage error
asks for the same check (``check``), which also runs SQLite's quick_check: a damaged database,
or a recovery that failed, makes every write from then on a refusal that says why.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from ..commands import Command
from ..db import postgres
from ..db.context import EVENT_FIELDS, Db
from ..db.engine import (
    BUSY_TIMEOUT_MS,
    damaged,
    driver_message,
    is_damage,
    is_storage_trouble,
    quick_check,
    wal_file_ids,
)
from ..db.fast import Statements
from ..db.schema import Schema
from ..errors import Busy, DbtoolError, Internal, Refused, StorageError
from ..handlers import resolve
from ..handlers.completion import settle_runs
from ..protocol import plain
from ..request import RequestContext, activate
from .guard import AreaGuard, changes_state
from .storage import CLOSE_WAIT

if TYPE_CHECKING:
    from .storage import Storage

EVENTS_LOCK = 0x64627400  # PostgreSQL advisory lock ("dbt\0") held by the transaction appending events

log = logging.getLogger("dbtool.server")

EVENT_COLUMNS = ("seq", *EVENT_FIELDS)  # an events row as the writer stores it
IDEM_COLUMNS = ("idem", "response", "created")

IDEMPOTENCY_TTL = 24 * 3600  # seconds a write's idempotency key is remembered
LOCK_WAIT = 10.0  # seconds to wait for a write lock held by another process
RECOVERIES = 2  # recoveries from lost WAL files tried for one group before it is refused
CONFLICT_RETRIES = 8  # PostgreSQL: runs of a group that met a deadlock or serialization failure
QUICK_CHECK_EVERY = 60.0  # seconds between quick_checks prompted by errors (while they find nothing)


class Job:
    __slots__ = (
        "after",
        "cmd",
        "ctx",
        "duplicate",
        "error",
        "events",
        "future",
        "idem",
        "params",
        "result",
        "settled",
    )

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
        self.settled = False  # committed, or answered with its error: it never runs again

    def reset(self) -> None:
        self.error, self.result, self.events, self.after, self.duplicate = None, None, [], None, False
        self.settled = False


def storage_error(err: Exception) -> StorageError:
    """A database error that is not the request's fault (disk full, read-only file, I/O)."""
    reason = driver_message(err)
    text = reason.lower()
    if "full" in text:
        hint = "free space on the area's filesystem (or raise db.max_size_mb if it is set) and retry"
    elif "readonly" in text or "read-only" in text:
        hint = "the database file or its directory is read-only"
    elif "locked" in text:
        hint = "another process kept the database locked; retry"
    else:
        hint = "see .dbtool/logs/server.log"
    return StorageError(f"the database did not accept the write ({reason}); nothing of it was changed; {hint}")


class FilesLost(Exception):
    """The -wal or -shm file under the writer was deleted or replaced (before a COMMIT)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class RecoveryFailed(Exception):
    """The writer could not recover from lost WAL files."""


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
        storage: Storage | None = None,
        alone: Callable[[], bool] = lambda: False,
    ) -> None:
        self.engine = engine
        self.storage = storage  # the server's database files: their checks and recovery (None: no checks)
        self.dbapi = engine.dialect.dbapi
        self.schema = schema
        self.config = config
        self.loop = loop
        self.on_commit = on_commit
        self.max_batch = max_batch
        self.sqlite = engine.dialect.name == "sqlite"
        # False: every group runs in the I/O thread (no WAL: writes may wait; PostgreSQL: over the network)
        self.on_loop = on_loop and self.sqlite
        # True when no other client is connected: a group on the loop then commits there too (its
        # fsync holds up nobody), sparing the two thread switches a hand-off to the I/O thread costs
        self.alone = alone
        self._busy_ms = BUSY_TIMEOUT_MS  # the connection's busy_timeout (the loop's groups use 0)
        # SQLite counts the rows each statement changed: a group can do without savepoints (see above)
        self.counted = self.sqlite
        self.begin_sql = "BEGIN IMMEDIATE" if self.sqlite else "BEGIN"
        self.last_seq = last_seq  # the writer numbers the change events itself (see _append_point)
        self.queue: deque[Job] = deque()
        self.active = 0  # jobs of the group being committed right now
        self.stopping = False
        self.groups = 0
        self.committed = 0
        self.wake = asyncio.Event()
        self.io = ThreadPoolExecutor(1, thread_name_prefix="dbtool-writer")
        self.task: asyncio.Task | None = None
        self._last_prune = 0.0
        self.refusal = ""  # when set, why every write is refused (a damaged database, a failed recovery)
        self.files: tuple | None = None  # (device, inode) of the -wal and -shm files, when watched
        self.unsafe = ""  # a COMMIT went to WAL files found lost right after it: recover before answering
        self.checks: list[tuple[str, asyncio.Future]] = []
        self._quick_checked = -QUICK_CHECK_EVERY
        self.guard = AreaGuard()  # the area lock and the open tests, as of the last look (see guard.py)

    # -- the event-loop side --------------------------------------------------------------------------
    def start(self) -> None:
        self._connect()
        if self.sqlite:  # (PostgreSQL: every group reads it, see guard.py)
            self._reload_guard()
        self.task = self.loop.create_task(self._run())

    def _connect(self) -> None:
        self.conn = self.engine.connect()
        self.raw = self.conn.connection.driver_connection
        self._busy_ms = BUSY_TIMEOUT_MS  # (as the engine opens every connection)
        if not self.sqlite:  # transactions are begun and ended by the writer's own statements, as on SQLite
            self.raw.autocommit = True
        storage = self.storage
        if storage is not None and storage.journal_mode == "WAL":
            self.raw.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the WAL files are open now
            ids = wal_file_ids(storage.path)
            self.files = ids if None not in ids else None

    def submit(self, cmd: Command, params: dict, ctx: RequestContext, idem: str | None) -> asyncio.Future:
        if self.stopping:
            raise Busy("the server is stopping; retry", retry_after=0.1)
        if self.refusal:
            raise StorageError(self.refusal)
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

    async def check(self, why: str) -> str:
        """After a read met a storage error (``why``): recover lost WAL files, or find the database
        damaged (and refuse writes from now on). '' when the storage is sound (again), else why not."""
        if self.task is None or self.task.done():  # stopped: nothing will check
            return ""
        future = self.loop.create_future()
        self.checks.append((why, future))
        self.wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            if self.checks:
                await self._run_checks()
                continue
            if not self.queue:
                if self.stopping:
                    return
                self.wake.clear()
                await self.wake.wait()
                continue
            batch = self._take()
            if self.sqlite and self.guard.version is None and not self._guard_ready(batch):
                continue  # (what the writer knows of the area lock is lost: no write runs blind)
            self.active = len(batch)
            try:
                await self._commit_group(batch)
                await self._finish(batch)
            except Exception:  # a bug here must not stop the writer: fail the group, keep going
                log.exception("writer failed on a group of %d", len(batch))
                for job in batch:
                    if job.error is None and not job.settled:  # (a committed write is answered as such)
                        job.error = Internal("internal error in the writer; see .dbtool/logs/server.log")
            finally:
                self.active = 0
                if self.sqlite and _alters_state(batch[0]):  # before any later group runs
                    self._reload_guard()
                _settle(batch)
            if time.time() - self._last_prune > 3600:
                await self.loop.run_in_executor(self.io, self._prune)

    async def _commit_group(self, batch: list[Job]) -> None:
        """Run and commit a group; when its WAL files were lost, recover and run what is left again."""
        todo = batch
        for _ in range(RECOVERIES + 1):
            try:
                if self.on_loop and not todo[0].cmd.bulk:
                    await self._group_on_loop(todo)
                else:
                    await self.loop.run_in_executor(self.io, self._group_in_thread, todo)
                break
            except FilesLost as lost:
                failure = await self.loop.run_in_executor(self.io, self._recover, lost.what)
                todo = [job for job in todo if not job.settled]
                for job in todo:
                    job.reset()
                    if failure:
                        job.error = StorageError(failure)
                if failure or not todo:
                    break
        else:
            for job in todo:
                job.error = StorageError(f"the database's WAL files keep disappearing; {len(todo)} write(s) refused")
        if self.unsafe:  # committed to files deleted meanwhile: only a checkpoint makes it durable
            failure = await self.loop.run_in_executor(self.io, self._recover, self.unsafe)
            if failure:
                for job in batch:
                    if job.error is None:
                        job.error = StorageError(f"{failure} (this write was committed, but may be lost)")

    async def _run_checks(self) -> None:
        checks, self.checks = self.checks, []
        try:
            verdict = await self.loop.run_in_executor(self.io, self._check, checks[0][0])
        except Exception:
            log.exception("checking the database failed")
            verdict = ""
        for _why, future in checks:
            if not future.done():
                future.set_result(verdict)

    def _take(self) -> list[Job]:
        """The next group: ordinary requests together; a bulk request alone, and one that may change
        the area lock or the open tests (guard.py), so that the requests after it see the change."""
        if _alone(self.queue[0]):
            return [self.queue.popleft()]
        batch = []
        while self.queue and len(batch) < self.max_batch and not _alone(self.queue[0]):
            batch.append(self.queue.popleft())
        return batch

    def _guard_ready(self, batch: list[Job]) -> bool:
        """SQLite: read the area's state again when the last reading failed; when it fails again,
        the group is refused (a write must not pass a lock the writer could not see)."""
        self._reload_guard()
        if self.guard.version is not None:
            return True
        for job in batch:
            job.error = StorageError("cannot read the area's lock from the database; nothing was written; retry")
        _settle(batch)
        return False

    def _reload_guard(self) -> None:
        """SQLite: the area's state, at start and after a group that may have changed it (committed
        or not). A read-only area an older dbtool made has no such tables (and takes no writes)."""
        try:
            self.guard.load(self.raw.execute)
        except self.dbapi.Error as err:  # (the storage failed: the next such group tries again)
            log.warning("could not read the area lock and open tests: %s", err)

    async def _group_on_loop(self, batch: list[Job]) -> None:
        try:
            await self._begin()
        except self.dbapi.Error as err:  # e.g. another process kept the database locked too long
            for job in batch:
                job.error = storage_error(err)
                job.settled = True
            return
        try:
            statements = self._run_jobs(batch, savepoints=not self.counted)
            last_seq = self._flush(statements, batch)
        except Exception as err:
            self._abort()
            await self._retry_alone(batch, err)
            return
        try:
            if self.alone():
                self._commit()
            else:
                await self.loop.run_in_executor(self.io, self._commit)
        except FilesLost:
            await self.loop.run_in_executor(self.io, self._abort)
            raise
        except Exception as err:
            await self.loop.run_in_executor(self.io, self._abort)
            await self._retry_alone(batch, err)
            return
        self.last_seq = last_seq
        for job in batch:
            job.settled = True

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
        """BEGIN IMMEDIATE without blocking the loop: a lock held by another process is waited out here
        (busy_timeout 0 on the loop; the I/O thread's work sets it back, see ``_busy_timeout``)."""
        deadline = time.monotonic() + LOCK_WAIT
        delay = 0.002
        self._busy_timeout(0)
        while True:
            try:
                self.raw.execute("BEGIN IMMEDIATE")
                return
            except self.dbapi.OperationalError as err:
                if not ("locked" in str(err) or "busy" in str(err)) or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _busy_timeout(self, ms: int) -> None:
        """SQLite: how long a statement waits for another process's lock (set only when it changes:
        a group on the loop waits in ``_begin`` instead, work in the I/O thread waits in SQLite)."""
        if self._busy_ms != ms:
            self.raw.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_ms = ms

    # -- runs on the loop or in the I/O thread -----------------------------------------------------------
    def _group_in_thread(self, batch: list[Job], attempt: int = 0) -> None:
        """A whole group (begin, requests, commit) in the I/O thread; a failed group is retried alone.
        On PostgreSQL a deadlock or serialization failure with another front-end runs the group
        again (a few times, after a short random pause): a client never sees one."""
        try:
            self._ensure_connected()
            if self.sqlite:
                self._busy_timeout(BUSY_TIMEOUT_MS)
                self.raw.execute(self.begin_sql)
            else:  # the area's state read under its lock, as the group's first statements
                self.guard.begin_postgres(self.raw, exclusive=_alters_state(batch[0]))
            statements = self._run_jobs(batch, check_duplicates=len(batch) == 1)
            last_seq = self._flush(statements, batch)
            self._commit()
            self.last_seq = last_seq
            for job in batch:
                job.settled = True
        except FilesLost:
            self._abort()
            raise
        except Exception as err:
            self._abort()
            cause = err.cause if isinstance(err, GroupFailed) else err
            if not self.sqlite and postgres.retryable(cause) and attempt < CONFLICT_RETRIES:
                log.info("group of %d write(s) met a %s; running it again", len(batch), postgres.reason(cause))
                for job in batch:
                    job.reset()
                time.sleep(random.uniform(0.001, 0.02) * (attempt + 1))
                self._group_in_thread(batch, attempt + 1)
                return
            log.warning("group of %d write(s) failed to commit: %s", len(batch), _said(cause))
            if len(batch) == 1:
                batch[0].reset()
                batch[0].error = self._storage_failed(cause)
                batch[0].settled = True
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
        if not self.sqlite and any(job.events for job in done):
            seq = self._append_point(statements)
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
        if rows and not self.sqlite:  # wakes every front-end's event tail when this commits
            statements.cursor.execute(f"NOTIFY {postgres.EVENTS_CHANNEL}")
        return seq

    def _append_point(self, statements: Statements) -> int:
        """PostgreSQL, where other servers may write to the same database: the group takes the
        events lock (held until its commit) and numbers its events after the last one stored. So
        events are appended one transaction at a time, in commit order, without gaps."""
        statements.cursor.execute("SELECT pg_advisory_xact_lock(%s)", (EVENTS_LOCK,))
        statements.cursor.execute("SELECT coalesce(max(seq), 0) FROM events")
        return int(statements.cursor.fetchone()[0])

    def _commit(self) -> None:
        lost = self._files_lost()
        if lost:
            raise FilesLost(lost)
        self.raw.execute("COMMIT")
        self.conn.commit()  # SQLAlchemy's own bookkeeping of the transaction (no statement)
        if self.files is not None and not self.unsafe:
            self.unsafe = self._files_lost()

    # -- the files under the writer ---------------------------------------------------------------------
    def _files_lost(self) -> str:
        """'' while the -wal and -shm files are the ones the writer opened, else what happened."""
        if self.files is None:
            return ""
        now = wal_file_ids(self.storage.path)
        if now == self.files:
            return ""
        name = os.path.basename(self.storage.path)
        pairs = zip(("-wal", "-shm"), self.files, now, strict=True)
        lost = [f"{name}{suffix}" for suffix, was, found in pairs if was != found]
        return f"{' and '.join(lost)} {'were' if len(lost) > 1 else 'was'} deleted or replaced under the server"

    def _recover(self, what: str) -> str:
        """Checkpoint the old WAL (still open here) into the database, then close every connection
        and open the writer's again, on new files. '' when done, else why writes are refused now."""
        storage = self.storage
        log.warning("%s: moving every committed write into %s and reopening the database", what, storage.path)
        try:
            self._busy_timeout(BUSY_TIMEOUT_MS)
            with storage.gate.exclusive(CLOSE_WAIT):  # no read runs while the connections close
                busy, _log, _done = self.raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy:
                    raise RecoveryFailed("the checkpoint could not finish")
                self.conn.close()
                self.engine.dispose()
                storage.read_engine.dispose()
                self._connect()
        except (RecoveryFailed, TimeoutError, DBAPIError, self.dbapi.Error, OSError) as err:
            self.refusal = (
                f"writes are refused: {what}, and the server could not recover ({driver_message(err)}); "
                "stop it with `dbtool server stop` (not kill -9: its last checkpoint saves what only it "
                "still holds), then retry"
            )
            log.error("%s", self.refusal)
            return self.refusal
        self.unsafe = ""
        log.warning("recovered: every committed write is in %s, and new -wal and -shm files are in use", storage.path)
        return ""

    def _check(self, why: str) -> str:
        """The check a storage error prompts (see ``check``); runs in the I/O thread."""
        if self.refusal:
            return self.refusal
        lost = self._files_lost()
        if lost:
            return self._recover(lost)
        now = time.monotonic()
        if self.storage is None or now - self._quick_checked < QUICK_CHECK_EVERY:
            return ""
        self._quick_checked = now
        log.warning("%s: checking the database (quick_check)", why)
        try:
            problem = quick_check(self.storage.path)
        except self.dbapi.Error as err:
            log.warning("could not check the database: %s", err)
            return ""
        if not problem:
            log.info("quick_check found nothing wrong with %s", self.storage.path)
            return ""
        self.refusal = damaged(self.storage.path, problem).message
        log.error("%s; every write is refused from now on", self.refusal)
        return self.refusal

    def _storage_failed(self, cause: Exception) -> DbtoolError:
        """The answer to a write the storage failed; a damaged file or an I/O error is checked first.
        PostgreSQL gone (restarting, unreachable): busy, which the client retries until --timeout."""
        if not self.sqlite and (postgres.connection_lost(cause) or self.raw.closed):
            return postgres.busy(cause, self.engine.url.render_as_string(hide_password=False))
        reason = driver_message(cause).lower()
        if self.storage is not None and (is_damage(reason) or "disk i/o" in reason):
            refusal = self._check(reason)
            if refusal:
                return StorageError(refusal)
        return storage_error(cause)

    def _abort(self) -> None:
        try:
            if self._in_transaction():
                self.raw.execute("ROLLBACK")
        except self.dbapi.Error as err:
            if self.sqlite:
                raise
            log.warning("lost the connection to the database (%s); a new one is made for the next group", err)
        finally:
            try:
                self.conn.rollback()
            except Exception:  # (a connection PostgreSQL dropped, or one closed already)
                if self.sqlite:
                    raise

    def _in_transaction(self) -> bool:
        if self.sqlite:
            return self.raw.in_transaction
        return self.raw.info.transaction_status != 0  # psycopg's pq.TransactionStatus.IDLE

    def _ensure_connected(self) -> None:
        """PostgreSQL: a connection the server closed (a restart, a failover) is replaced before a group."""
        if self.sqlite or not self.raw.closed:
            return
        try:
            self.conn.close()
        except Exception:
            pass
        self._connect()  # (fails while the database is away: the old, closed one stays, and is tried again)

    def _run_job(self, statements: Statements, job: Job, check_duplicate: bool, savepoint: bool) -> None:
        if check_duplicate and job.idem is not None:
            t = self.schema.idempotency
            build = lambda: select(t.c.response).where(t.c.idem == bindparam("idem"))  # noqa: E731
            stored = statements.scalar("idem_get", build, {"idem": job.idem})
            if stored is not None:  # a write resent after a lost answer: it was applied already
                job.result, job.duplicate = json.loads(stored), True
                job.ctx.note("info", "idempotent", f"write {job.idem} was already applied; returning its result")
                return
        guard = self.guard
        if guard.lock is not None:
            refusal = guard.refusal(job.cmd.name, job.ctx)
            if refusal is not None:  # (nothing written yet: simply answered)
                job.error = refusal
                return
        cursor = statements.cursor
        if savepoint:
            cursor.execute("SAVEPOINT request")
        else:
            changes = self.raw.total_changes
        db = Db(self.conn, self.schema, job.ctx, self.config, defer_events=True, fast=statements)
        if guard.open_tests:
            db.open_tests = guard.open_tests
        try:
            with activate(job.ctx):
                result = resolve(job.cmd.handler)(db, **job.params)
                settle_runs(db)
        except Exception as err:
            if savepoint:
                self._roll_back(cursor, err)
            elif not self._in_transaction() or _spoils_group(err, self.dbapi):
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
            if self.sqlite:
                self._busy_timeout(BUSY_TIMEOUT_MS)
            with self.conn.begin():
                self.conn.execute(delete(t).where(t.c.created < int(now) - IDEMPOTENCY_TTL))
        except DBAPIError as err:
            log.warning("could not prune old idempotency keys: %s", err)


def _said(err: BaseException) -> str:
    """A database error in one log line: the driver's words, without SQLAlchemy's SQL and link."""
    return " ".join(driver_message(err).split())[:500]


def _json(result: object) -> str:
    """A result as stored with its idempotency key (most writes answer null)."""
    return "null" if result is None else json.dumps(result)


def _alters_state(job: Job) -> bool:
    return changes_state(job.cmd.name, job.ctx)


def _alone(job: Job) -> bool:
    """A request that runs in a group of its own: a bulk one, or one that may change the area's state."""
    return job.cmd.bulk or changes_state(job.cmd.name, job.ctx)


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
    """A failure of the storage (not of the request): the group's transaction cannot stand. On
    PostgreSQL also a lost connection, a deadlock or a serialization failure (OperationalError)."""
    if not _is_database_error(err, dbapi) or _is_integrity_error(err, dbapi):
        return False
    if dbapi.__name__ != "sqlite3" and isinstance(getattr(err, "orig", err), dbapi.OperationalError):
        return True
    return _is_storage_error(err)


def _is_database_error(err: Exception, dbapi) -> bool:
    """An error of the database (raised through SQLAlchemy or straight from the driver)."""
    return isinstance(err, (DBAPIError, dbapi.Error))


def _is_integrity_error(err: Exception, dbapi) -> bool:
    return isinstance(err, (IntegrityError, dbapi.IntegrityError))


def _is_storage_error(err: Exception) -> bool:
    """The file or the disk failed (full, read-only, damaged, I/O), or another process held the lock."""
    text = driver_message(err)
    return is_storage_trouble(text) or "database is locked" in text.lower()


def _internal(job: Job, err: Exception) -> Internal:
    log.exception("request %s (%s) failed: %s", job.ctx.id, job.cmd.name, err)
    job.ctx.note("error", "exception", f"{type(err).__name__}: {err}")
    return Internal(
        f"internal error in {job.cmd.name} (request {job.ctx.id}): {type(err).__name__}; see .dbtool/logs/server.log"
    )
