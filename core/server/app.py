"""The area's server: one process per area, holding ``server.lock`` for its whole life. An area
kept in PostgreSQL has one per host instead (a front-end: its record and locks in
``.dbtool/hosts/<host>/``), all over the one database; each hands its watchers the events every
front-end commits (``storage.EventTail``).

Lifecycle: take the server lock (or hand off to the live server), open the database, listen,
write ``server.json`` atomically (mode 0600) once the socket listens, serve, and on
``server stop`` / SIGTERM / idle timeout: stop listening, remove ``server.json``, finish the
queued writes, checkpoint the WAL, release the lock.

Every request runs in a ``RequestContext``; when it ends, one line goes to the request log and its
latency to the statistics. Writes go to the single writer (``writer.py``), reads to reader threads,
server commands (ping, status, stats, stop) are answered on the event loop at once.

A server that cannot start says why in one last line, ``dbtool: error: <reason>`` (a damaged or
unreadable database, an area it cannot write, a bad config.toml), and exits 4 (3 when it could
not listen or lock). The database files themselves are ``storage.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from .. import PROTOCOL, __version__, spool, tls
from ..area import HOSTS_DIR, SHARED_MARKER, Area, ensure_private_dir, load_config, mark_shared, remove_file
from ..commands import READ, SERVER, WRITE, Command, lookup
from ..db import postgres
from ..db.context import Db, client_label
from ..db.engine import (
    checkpoint,
    damaged,
    driver_message,
    filesystem_read_only,
    is_damage,
    is_database_error,
    is_storage_trouble,
)
from ..db.schema import schema_for
from ..errors import Busy, DbtoolError, Held, Internal, Refused, StorageError, Unavailable
from ..handlers import resolve
from ..link import START_FAILURE, describe, hostname, ping_info
from ..reqlog import LOG_LEVEL_KEPT, RequestLog
from ..request import RequestContext, run_with
from . import eventloop, resources, serverlog
from .events import EventHub
from .notifier import Notifier
from .session import Session, take_members, tune_listener
from .stats import Stats
from .storage import READERS, EventTail, PostgresStorage, Storage
from .writer import Writer

log = logging.getLogger("dbtool.server")

DEAD_CHECK_INTERVAL = 30.0  # default seconds between dead-job checks (tests.dead_check_interval)
LOCK_WAIT = 15.0  # seconds to wait for the server lock held by a server that is stopping
CHECK_WAIT = 60.0  # seconds a read that met a storage error waits for the writer's check
FLUSH_EVERY = 0.5  # seconds between request-log flushes
SWEEP_EVERY = 5.0  # seconds between sweeps for idle connections
SPOOL_EVERY = 1.0  # seconds between scans of the spool for reports to replay

LIMIT_DEFAULTS = {
    "max_connections": 512,  # connections that proved the key
    "max_pending": 64,  # connections still in their handshake; past it the oldest is dropped
    "handshake_timeout": 5.0,
    "max_queue": 10_000,
    "max_subscribers": 64,
    "watch_queue": 10_000,
    "watch_stall_timeout": 30.0,
    "connection_idle_timeout": 600.0,
    "dead_peer_timeout": 60.0,
    "log_max_bytes": 16 * 1024 * 1024,
}


class Server:
    def __init__(
        self,
        area: Area,
        *,
        bind: str | None = None,
        port: int | None = None,
        idle_timeout: float | None = None,
        advertise: str | None = None,
    ) -> None:
        self.area = area
        self.config = load_config(area)
        self.db_url = str(self.config["db"].get("url") or "")  # '' = the area's SQLite file
        self.pg = bool(self.db_url)
        server_cfg = self.config["server"]
        self.bind = bind or server_cfg.get("bind") or "127.0.0.1"
        self.advertise = advertise or server_cfg.get("advertise") or ""
        self.tls_mode = str(server_cfg.get("tls") or "auto").lower()
        self.tls_context = None  # made at start unless no connection could need it (see _secure_listener)
        self.tls_fingerprint = ""
        self.port = int(port if port is not None else server_cfg.get("port") or 0)
        self.idle_timeout = float(idle_timeout if idle_timeout is not None else server_cfg.get("idle_timeout", 300))
        self.share_group = bool(server_cfg.get("share_group", False))
        self.limits = {name: _limit(area, server_cfg, name, default) for name, default in LIMIT_DEFAULTS.items()}
        self.server_log: serverlog.ServerLog | None = None  # set by main(): the daemon's rotating log
        self.key = secrets.token_hex(16)
        self.instance = secrets.token_hex(6)
        self.started_at = time.time()
        self.last_activity = time.monotonic()
        self.listener_tuned = False  # its connections have their socket options from the listener
        self.sessions: set[Session] = set()  # every open connection
        self.pending: dict[Session, None] = {}  # those still in their handshake, oldest first
        self.stats = Stats()
        self.reads_pending = 0
        self.read_only = ""
        self._ids = itertools.count(1)
        self.hostname = hostname()
        self.own_client = {"user": "dbtool-server", "host": self.hostname, "pid": os.getpid()}

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the process exit code (0 also when handing off)."""
        from filelock import FileLock, Timeout

        self._check_servable()
        if self.pg:  # a front-end of this host: its record and lock in .dbtool/hosts/<host>/
            if not self.area.shared:  # (db.url set by hand): clients must look for front-ends from now on
                mark_shared(self.area.dir, self.share_group)
            os.makedirs(self.area.path(HOSTS_DIR), mode=0o750 if self.share_group else 0o700, exist_ok=True)
            ensure_private_dir(self.area.run_dir, self.share_group)
        elif self.area.shared:
            marker = self.area.path(SHARED_MARKER)
            raise Refused(
                f"{marker} says the area's data is on a database server, but config.toml has no db.url: "
                f"set it again (or remove {marker} if the area is back in its SQLite file)"
            )
        lock = FileLock(self.area.server_lock)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                lock.acquire(timeout=0.05)
                break
            except Timeout:
                live = ping_info(self.area)
                if live is not None:
                    print(describe(live), flush=True)
                    return 0
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"{self.area.server_lock} is held but no server answers; "
                        "if no dbtool server runs for this area, another process holds the lock"
                    ) from None
        try:
            remove_file(self.area.server_json)  # we hold the lock, so any record left is stale
            return eventloop.run(self._main(), tls=self._may_speak_tls())
        finally:
            lock.release()

    def _check_servable(self) -> None:
        """A server writes .dbtool/ (its lock, server.json, the WAL files): where it cannot, say so now."""
        where = self.area.dir
        if filesystem_read_only(where):
            why = "it is on a read-only filesystem"
        elif not os.access(where, os.W_OK | os.X_OK):
            why = f"{where} is not writable by this user"
        else:
            return
        raise StorageError(
            f"cannot start a server for {self.area.root}: {why}; reads work without one (they read the "
            "database directly), writes need the area where it is writable"
        )

    def _open_database(self) -> None:
        if self.pg:
            keys = list(self.config["area"].get("keys") or [])
            self.storage: Storage | PostgresStorage = PostgresStorage(self.area, self.config["db"], keys)
        else:
            self.storage = Storage(self.area, self.config["db"])
        self.storage.open()
        storage = self.storage
        self.read_only = storage.read_only
        self.journal_mode = storage.journal_mode
        self.write_engine, self.read_engine = storage.write_engine, storage.read_engine
        self.keys = storage.keys
        self.schema = schema_for(self.keys)
        self.hub = EventHub(storage.last_seq, self.limits["watch_queue"])

    def _limit_fds(self) -> None:
        """Raise the descriptor limit as far as allowed, and keep connections within it."""
        limit, before = resources.raise_fd_limit()
        configured = self.limits["max_connections"]
        connections, pending, self.accept_burst = resources.share_descriptors(
            limit, configured, self.limits["max_pending"]
        )
        self.limits["max_connections"], self.limits["max_pending"] = connections, pending
        log.info(
            "file descriptors: limit %s%s; max_connections %d (configured %d), max_pending %d, accept burst %d",
            limit,
            f" (raised from {before})" if limit != before else "",
            connections,
            configured,
            pending,
            self.accept_burst,
        )

    async def _main(self) -> int:
        self.loop = asyncio.get_running_loop()
        self.loop.set_exception_handler(resources.AcceptErrors())
        ensure_private_dir(self.area.dir, self.share_group)
        self._limit_fds()
        self._open_database()
        self.readers = ThreadPoolExecutor(READERS, thread_name_prefix="dbtool-reader")
        wal = self.journal_mode == "WAL"
        self.writer = Writer(
            self.write_engine,
            self.schema,
            self.config,
            self.loop,
            _ignore if self.pg else self._published,  # (PostgreSQL: the tail publishes every front-end's)
            self.hub.last_seq,
            on_loop=wal,
            storage=None if self.pg else self.storage,
            alone=lambda: len(self.sessions) <= 1,
        )
        self.writer.start()
        self.tail = None
        if self.pg:
            self.tail = EventTail(self.db_url, self.hub.last_seq, self._tail_delivered)
            self.tail.start()
        self.requests_log = RequestLog(self.area.logs_dir)
        self._stopping = asyncio.Event()
        self.notifier = Notifier(self, self.config.get("notify") or [], self.hub.last_seq)
        if not self.read_only:
            await self._ingest_spool()

        self._make_certificate()
        listener = await self.loop.create_server(lambda: Session(self), self.bind, self.port, backlog=self.accept_burst)
        self.port = listener.sockets[0].getsockname()[1]
        self.listener_tuned = tune_listener(listener.sockets, self.limits["dead_peer_timeout"])
        self.address = advertised_address(self.bind, self.advertise, self.hostname)
        self._write_server_json()
        remove_file(os.path.join(self.area.logs_dir, START_FAILURE))  # (an earlier start's)
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop, f"signal {signal.Signals(sig).name}")
        log.info(
            "dbtool %s serving %s on %s:%d, advertised as %s:%d (pid %d, %s)",
            __version__,
            self.area.root,
            self.bind,
            self.port,
            self.address,
            self.port,
            os.getpid(),
            eventloop.loop_name(self.loop),
        )
        if self.read_only:
            log.warning("read-only: %s; writes are refused", self.read_only)
        chores = [
            asyncio.create_task(c)
            for c in (self._idle_watch(), self._flush_log(), self._sweep(), self._dead_jobs(), self._spool_chore())
        ]
        self.notifier.start()

        await self._stopping.wait()
        for chore in chores:
            chore.cancel()
        listener.close()
        remove_file(self.area.server_json)
        await self.notifier.finish()  # (a command under way ends, and its cursor is stored, first)
        await self._drain()
        await listener.wait_closed()
        self._log_stats()
        self.requests_log.close()
        return 0

    def _may_speak_tls(self) -> bool:
        """False when it listens on the loopback only and the area does not ask for TLS there."""
        return self.tls_mode == "always" or not (tls.is_loopback(self.bind) or self.bind == "localhost")

    def _make_certificate(self) -> None:
        """The TLS certificate of this server's life (core/tls.py), if it may speak TLS."""
        if not self._may_speak_tls():
            return
        self.tls_context, self.tls_fingerprint = tls.server_context(self.area.dir, self.area.root)

    def needs_tls(self, local_address: str) -> bool:
        """Whether a connection that arrived on ``local_address`` must be TLS."""
        return tls.needs_tls(self.tls_mode, local_address)

    def request_stop(self, why: str = "request") -> None:
        if not self._stopping.is_set():
            log.info("stopping (%s)", why)
            self._stopping.set()

    def _tail_delivered(self, rows: list[dict]) -> None:
        """From the event tail's thread: events committed through any front-end, in seq order."""
        self.loop.call_soon_threadsafe(self._published, rows)

    def _published(self, rows: list[dict]) -> None:
        """Committed events (on the loop): to the watchers, and a nudge to the notifications."""
        self.hub.publish(rows)
        self.notifier.committed()

    async def _drain(self) -> None:
        """Finish queued writes and answer them, then close connections and checkpoint."""
        await self.writer.stop()  # every queued write committed and answered
        if self.tail is not None:
            await self.loop.run_in_executor(None, self.tail.stop)
            await asyncio.sleep(0)  # (what it delivered last reaches the watchers first)
        self.hub.close_all()  # watchers get an "end" line
        streams = [s.stream_task for s in self.sessions if s.stream_task is not None]
        if streams:
            await asyncio.wait(streams, timeout=5.0)
        deadline = time.monotonic() + 5.0
        while self.reads_pending and time.monotonic() < deadline:  # reads under way are answered too
            await asyncio.sleep(0.01)
        for session in list(self.sessions):
            _close(session)
        self.readers.shutdown(wait=True)
        clean = not self.read_only and not self.writer.refusal
        try:
            with self.write_engine.connect() as conn:
                clean = clean and not checkpoint(conn)["busy"]
        except Exception as err:  # a failed checkpoint loses nothing: the WAL is replayed on open
            log.warning("checkpoint at stop failed: %s", err)
            clean = False
        self.storage.dispose()
        if clean:  # the next start need not check the database (see Storage.needs_check)
            self.storage.record_clean_stop()

    async def _idle_watch(self) -> None:
        if self.idle_timeout <= 0:
            return
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout))
            idle = time.monotonic() - self.last_activity
            if idle >= self.idle_timeout and self.writer.depth == 0 and not self.hub.subscribers and self.notifier.idle:
                self.request_stop(f"idle for {idle:.0f} s")
                return

    _spool_lock: asyncio.Lock | None = None  # one replay at a time keeps the spool's order
    _spool_trouble = ""  # why the last replay stopped (told once, not at every scan)

    async def _ingest_spool(self, resume: bool = True) -> None:
        """Replay the job reports clients spooled (see core/spool.py): at start (``resume``: also what a
        crashed server had claimed), then as they appear, and before the dead-job check marks anything.

        Each goes through the writer with its idempotency key; one the database refuses is kept in
        rejected.jsonl. When the server is stopping or the storage fails, the files not replayed
        yet are given back, in order, for a later scan."""
        if self._spool_lock is None:
            self._spool_lock = asyncio.Lock()
        async with self._spool_lock:
            try:
                claimed = spool.claim(self.area, resume)
            except OSError as err:
                self._spool_told(f"cannot read the spool: {err}")
                return
            for i, path in enumerate(claimed):
                try:
                    held_up = await self._replay(path)
                except OSError as err:  # left claimed: the next start tries it again
                    self._spool_told(f"cannot read {path}: {err}")
                    continue
                if held_up:
                    self._spool_told(held_up)
                    for later in claimed[i:]:
                        spool.unclaim(later)
                    return
                remove_file(path)
            self._spool_trouble = ""

    def _spool_told(self, trouble: str) -> None:
        if trouble != self._spool_trouble:
            log.warning("spooled reports wait: %s", trouble)
        self._spool_trouble = trouble

    async def _replay(self, path: str) -> str:
        """Replay one spool file's reports; what holds them up ('' when done)."""
        reports = spool.read(path)
        for report in reports:
            cmd = lookup(report["cmd"])
            try:
                if cmd is None or cmd.kind != WRITE:
                    raise Refused(f"{report['cmd']!r} is not a write")
                params = cmd.bind_wire(report.get("params"))
                client = report.get("client") if isinstance(report.get("client"), dict) else {}
                ctx = RequestContext(self.request_id(), cmd.name, params, client)
                take_members(ctx, report)  # (the request's fields and tokens, as it would have sent them)
                ctx.note("info", "spool", f"spooled at {report.get('time')} by {self.client_label(client)}")
                result = await self.writer.submit(cmd, params, ctx, report.get("idem"))
                self.finished(ctx, {"ok": True, "result": result})
            except (Busy, StorageError, Held) as err:  # (Held: once the area lock is released)
                return f"{report.get('cmd')} not replayed yet: {err.message}"
            except DbtoolError as err:
                log.warning("spooled %s refused: %s", report.get("cmd"), err.message)
                spool.reject(self.area, report, err.message)
        log.info("ingested %d spooled report(s) from %s", len(reports), os.path.basename(path))
        return ""

    async def _spool_chore(self) -> None:
        """Replay spooled reports as they appear, not only at the next start: a listdir a second."""
        while True:
            await asyncio.sleep(SPOOL_EVERY)
            if not self.read_only and not self._stopping.is_set():
                await self._ingest_new_spool()

    async def _ingest_new_spool(self) -> None:
        """The files spooled since the last scan; a failure (a bug, a full disk) ends no chore."""
        try:
            await self._ingest_spool(resume=False)
        except Exception as err:  # what it had claimed waits for the next start
            self._spool_told(f"{type(err).__name__}: {err}")

    async def _dead_jobs(self) -> None:
        """Mark dead jobs COMPLETED/DEAD (C.8, SPEC 9.8) as they die, at least once per heartbeat period."""
        from ..handlers.deadjobs import dead_job_scan

        configured = float(self.config["tests"].get("dead_check_interval", DEAD_CHECK_INTERVAL))
        interval = configured
        while True:
            await asyncio.sleep(interval)
            if self.read_only or self._stopping.is_set():
                continue
            ctx = RequestContext(self.request_id(), "dead-job-scan", {}, self.own_client)
            ctx.internal = True
            try:
                scan = await self.loop.run_in_executor(self.readers, run_with, ctx, self._read_with, dead_job_scan, ctx)
            except Exception as err:  # (a storage error, say): this chore must go on
                log.warning("the dead-job scan failed: %s", driver_message(err))
                interval = max(interval, 10.0)
                continue
            shortest = scan["shortest_heartbeat"]
            interval = max(0.5, min(configured, shortest or configured))
            if scan["dead"]:
                await self._ingest_new_spool()  # a spooled exec-end may say the job is not dead
                ctx = RequestContext(self.request_id(), "mark-incomplete", {}, self.own_client)
                ctx.internal = True  # (the server's own: no area lock holds it back)
                cmd = lookup("mark-incomplete")
                params = cmd.bind_wire({})
                try:
                    marked = await self.writer.submit(cmd, params, ctx, None)
                    log.info("marked %d dead test(s): %s", len(marked), marked)
                    self.finished(ctx, {"ok": True})
                except DbtoolError as err:
                    log.warning("marking dead tests failed: %s", err.message)

    def _read_with(self, fn, ctx: RequestContext):
        with self.storage.reading() as conn:
            return fn(Db(conn, self.schema, ctx, self.config))

    async def _flush_log(self) -> None:
        """Flush the request log twice a second; nothing may end this chore but the server's stop."""
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                self.requests_log.flush()  # (never raises: a full disk keeps the lines in memory)
                if self.server_log is not None:
                    self.server_log.rotate_if_full()
            except Exception:
                log.exception("flushing the logs failed")

    async def _sweep(self) -> None:
        """Close connections that sent nothing for connection_idle_timeout seconds (watchers excepted)."""
        limit = self.limits["connection_idle_timeout"]
        while True:
            await asyncio.sleep(min(SWEEP_EVERY, limit))
            now = time.monotonic()
            for session in list(self.sessions):
                if not session.busy and now - session.last_active > limit:
                    _close(session)

    def _write_server_json(self) -> None:
        """server.json, atomically: a new file of a random name (never following a planted link),
        fsynced, then renamed into place (NFS-safe)."""
        import tempfile

        info = {
            "hostname": self.hostname,
            "address": self.address,
            "port": self.port,
            "pid": os.getpid(),
            "key": self.key,
            "version": __version__,
            "protocol": PROTOCOL,
            "instance": self.instance,
            "area": self.area.root,
            "started_at": self.started_at,
        }
        if self.tls_context is not None:
            info["tls"] = self.tls_mode
            info["tls_fingerprint"] = self.tls_fingerprint
        mode = 0o640 if self.share_group else 0o600
        fd, tmp = tempfile.mkstemp(prefix=".server.json.", suffix=".tmp", dir=self.area.run_dir)  # O_EXCL
        try:
            os.fchmod(fd, mode)
            os.write(fd, json.dumps(info, indent=2).encode())
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            remove_file(tmp)
            raise
        os.close(fd)
        os.replace(tmp, self.area.server_json)

    def _log_stats(self) -> None:
        summary = self.stats.summary()
        lines = [f"{'command':40s} {'count':>8s} {'errors':>6s} {'mean':>8s} {'p50':>8s} {'p95':>8s} {'max':>8s} (ms)"]
        for cmd, s in summary.items():
            lines.append(
                f"{cmd:40s} {s['count']:8d} {s['errors']:6d} {s['mean_ms']:8.2f} {s['p50_ms']:8.2f} "
                f"{s['p95_ms']:8.2f} {s['max_ms']:8.2f}"
            )
        lines.append(f"TOTAL: {self.stats.requests} requests since start")
        log.info("request statistics at stop:\n%s", "\n".join(lines))

    # -- connections and requests -------------------------------------------------------------------------
    def request_id(self) -> str:
        return f"{self.instance}-{next(self._ids)}"

    @staticmethod
    def client_label(client: dict) -> str:
        return client_label(client) if client else "?"

    def admit(self, session: Session) -> bool:
        """A new connection: False when the proven connections are at their limit. Past the
        handshake budget a connection still in its handshake is dropped for it: the oldest that has
        sent nothing yet (a real client sends its challenge as it connects), else the oldest."""
        if len(self.sessions) - len(self.pending) >= self.limits["max_connections"]:
            return False
        self.sessions.add(session)
        self.pending[session] = None
        if len(self.pending) > self.limits["max_pending"]:
            silent = (s for s in self.pending if s.challenge is None and s is not session)
            victim = next(silent, None) or next(iter(self.pending))
            victim.abort()
        return True

    def proven(self, session: Session) -> None:
        """A connection finished its handshake."""
        self.pending.pop(session, None)

    def forget(self, session: Session) -> None:
        """A connection closed (or is closing): its slot is free."""
        self.sessions.discard(session)
        self.pending.pop(session, None)

    def execute(self, cmd: Command, params: dict, ctx: RequestContext, idem: str | None) -> object:
        """Run one command where it belongs: on the loop (its result), or on a reader thread or
        through the writer (a future of its result). Busy and refusals are raised at once."""
        self.last_activity = time.monotonic()
        if cmd.dead:
            raise Refused(cmd.dead)
        if cmd.kind == SERVER:
            return getattr(self, f"cmd_{cmd.handler.replace('-', '_')}")(ctx, **params)
        if self._stopping.is_set():
            raise Busy("the server is stopping; retry", retry_after=0.1)
        limit = self.limits["max_queue"]
        if cmd.kind == READ:
            if self.reads_pending >= limit:
                raise Busy(f"{self.reads_pending} reads are waiting; retry", retry_after=_backoff(self.reads_pending))
            self.reads_pending += 1
            future = self.loop.run_in_executor(self.readers, run_with, ctx, self._read, cmd, params, ctx)
            future.add_done_callback(self._read_done)
            return future
        if self.read_only:
            raise Refused(f"this area's database is read-only ({self.read_only}); writes are refused")
        depth = self.writer.depth
        if depth >= limit:
            raise Busy(f"{depth} writes are queued; retry", retry_after=_backoff(depth))
        ctx.note("debug", "queued", f"behind {depth} queued write(s)")
        return self.writer.submit(cmd, params, ctx, idem)

    def _read_done(self, _future: asyncio.Future) -> None:
        self.reads_pending -= 1

    def _read(self, cmd: Command, params: dict, ctx: RequestContext):
        """A read on a reader thread (run_with has made ``ctx`` the current request there).

        A storage error (lost WAL files, a damaged page, an I/O error) has the writer check the
        database; when that found it sound (or recovered it) the read runs once more, else it is
        refused with the reason.
        """
        verdict = ""
        for attempt in (1, 2):
            try:
                return self._read_once(cmd, params, ctx)
            except Exception as err:
                if self.pg and is_database_error(err) and postgres.connection_lost(err):
                    raise postgres.busy(err, self.db_url) from None
                reason = _storage_reason(err)
                if not reason:
                    raise
            if attempt == 2:
                break
            ctx.note("warn", "storage", f"the read failed: {reason}")
            verdict = self._storage_check(reason)
            if verdict:  # not sound, and not recovered: no second try
                break
        if is_damage(reason):
            raise damaged(self.area.db_path, reason) from None
        raise StorageError(f"the database could not be read ({reason}){'; ' + verdict if verdict else ''}")

    def _read_once(self, cmd: Command, params: dict, ctx: RequestContext):
        with self.storage.reading() as conn:
            ctx.note("debug", "read", f"on {threading.current_thread().name}")
            return resolve(cmd.handler)(Db(conn, self.schema, ctx, self.config), **params)

    def _storage_check(self, reason: str) -> str:
        """From a reader thread: the writer's verdict on the storage after this error ('' = sound)."""
        future = asyncio.run_coroutine_threadsafe(self.writer.check(reason), self.loop)
        try:
            return future.result(CHECK_WAIT)
        except TimeoutError:
            return "the server is still checking its database; retry"

    def finished(self, ctx: RequestContext, response: dict) -> None:
        """Account for an answered request: statistics and one line of the request log."""
        ms = ctx.elapsed_ms()
        ok = bool(response.get("ok"))
        self.stats.record(ctx.cmd, ms, ok)
        label = ctx.client_label or self.client_label(ctx.client)
        keep_log = not ok or ctx.traced or ctx.max_level() >= LOG_LEVEL_KEPT
        changed = bool(ctx.fields) and ctx.fields != ctx.given  # a handler stored or dropped fields
        if not keep_log and not changed:  # the common line, without building a dict for json
            client = _json_text(label)
            fields = f',"fields":{ctx.given_json}' if ctx.given_json is not None else ""
            line = (
                f'{{"ts":{ctx.arrived_ns / 1e9:.6f},"id":"{ctx.id}","cmd":{_json_text(ctx.cmd)},'
                f'"client":{client},"ms":{ms:.3f},"ok":true,"loglen":{ctx.loglen()}{fields}}}'
            )
            self.requests_log.write_line(line)
            return
        entry = {
            "ts": round(ctx.arrived_ns / 1e9, 6),
            "id": ctx.id,
            "cmd": ctx.cmd,
            "client": label,
            "ms": round(ms, 3),
            "ok": ok,
            "loglen": ctx.loglen(),  # entries logged (Kno's REQ/LOGLEN); "log" keeps the last 200
        }
        if ctx.given is not None:
            entry["fields"] = ctx.given  # the fields the client sent
        if changed:
            entry["data"] = ctx.data()  # the fields as the request ended (Kno's REQ/DATA)
        if not ok:
            entry["error"] = response.get("error")
            entry["params"] = _brief(ctx.params)
        if ctx.log and keep_log:
            entry["log"] = ctx.log
        self.requests_log.write(entry)
        if not ok:  # so that `server log --request ID` finds it right after the error message
            self.requests_log.flush()

    async def replay(self, after: int, upto: int, run_id: int | None, limit: int) -> list[dict]:
        """Stored events with after < seq <= upto (and of one run), oldest first."""

        def query() -> list[dict]:
            events = self.schema.events
            q = select(events).where(events.c.seq > after, events.c.seq <= upto)
            if run_id is not None:
                q = q.where(events.c.run_id == run_id)
            with self.storage.reading() as conn:
                rows = [dict(r._mapping) for r in conn.execute(q.order_by(events.c.seq).limit(limit))]
            return rows

        return await self.loop.run_in_executor(self.readers, query)

    # -- server commands ----------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {
            "area": self.area.root,
            "hostname": self.hostname,
            "address": self.address,
            "port": self.port,
            "pid": os.getpid(),
            "instance": self.instance,
            "version": __version__,
            "protocol": PROTOCOL,
            "tls": ("every connection" if self.tls_mode == "always" else "off the loopback")
            if self.tls_context is not None
            else "none (loopback only)",
            "queue_depth": self.writer.depth,
            "database": self.storage.path,  # (a PostgreSQL URL without its password)
        }

    def cmd_ping(self, ctx: RequestContext) -> dict:
        return self._identity()

    def cmd_status(self, ctx: RequestContext) -> dict:
        return {
            **self._identity(),
            "uptime": round(time.time() - self.started_at, 3),
            "started_at": self.started_at,
            "requests": self.stats.requests,
            "connections": len(self.sessions) - len(self.pending),
            "handshaking": len(self.pending),
            "subscribers": len(self.hub.subscribers),
            "last_event_seq": self.hub.last_seq,
            "writes_committed": self.writer.committed,
            "commit_groups": self.writer.groups,
            "idle_timeout": self.idle_timeout,
            "read_only": bool(self.read_only),
            "writes_refused": self.writer.refusal or None,
            "threads": threading.active_count(),
        }

    def cmd_stats(self, ctx: RequestContext) -> dict:
        return {
            "uptime": round(time.time() - self.started_at, 3),
            "queue_depth": self.writer.depth,
            "reads_pending": self.reads_pending,
            "connections": len(self.sessions) - len(self.pending),
            "subscribers": len(self.hub.subscribers),
            "requests": self.stats.requests,
            "commands": self.stats.summary(),
        }

    def cmd_stop(self, ctx: RequestContext) -> dict:
        self.loop.call_soon(self.request_stop, f"server stop from {self.client_label(ctx.client)}")
        return {"stopping": True, "pid": os.getpid()}


WILDCARDS = ("", "0.0.0.0", "::")


def advertised_address(bind: str, configured: str, name: str) -> str:
    """What server.json tells clients to connect to: ``server.advertise`` when set; for a wildcard
    bind, an address of this host others can reach (never 0.0.0.0); else the bound address."""
    if configured:
        return configured
    if bind not in WILDCARDS:
        return bind
    return host_address(name)


def host_address(name: str) -> str:
    """This host's address: what its name resolves to, if not loopback; else the first address of
    an interface that is up and not loopback; else 127.0.0.1."""
    try:
        for *_rest, where in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM):
            if not where[0].startswith("127."):
                return where[0]
    except OSError:
        pass
    for found in _interface_addresses():
        if not found.startswith("127."):
            return found
    return "127.0.0.1"


def _interface_addresses() -> list[str]:
    """IPv4 addresses of the host's interfaces (Linux: SIOCGIFADDR per interface)."""
    import fcntl
    import struct

    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _index, ifname in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), 0x8915, struct.pack("256s", ifname[:15].encode()))
            except OSError:
                continue  # no IPv4 address (or down)
            found.append(socket.inet_ntoa(packed[20:24]))
    return found


def _json_text(text: str) -> str:
    """A string as JSON, cached (command names and client labels repeat endlessly)."""
    found = _JSON_TEXT.get(text)
    if found is None:
        if len(_JSON_TEXT) > 10_000:
            _JSON_TEXT.clear()
        found = _JSON_TEXT[text] = json.dumps(text, ensure_ascii=False)
    return found


_JSON_TEXT: dict[str, str] = {}


def _backoff(depth: int) -> float:
    """A retry delay that grows with the backlog (seconds)."""
    return round(min(2.0, 0.05 + depth / 20_000), 3)


def _brief(params: dict, limit: int = 200) -> dict:
    """Parameters for the request log, long values cut short."""
    out = {}
    for key, value in params.items():
        text = value if isinstance(value, str) else json.dumps(value)
        out[key] = value if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
    return out


def _close(session: Session) -> None:
    """Close a connection from a chore or at stop: a peer that vanished must not end either."""
    try:
        session.close()
    except OSError as err:  # e.g. ENOTCONN from shutdown() when the peer is gone already
        log.info("closing a connection: %s", err)
        if session.transport is not None:
            session.transport.abort()


def _storage_reason(err: BaseException) -> str:
    """The driver's message of an error of the storage under a read ('' for any other error)."""
    if not is_database_error(err):
        return ""
    reason = driver_message(err)
    return reason if is_storage_trouble(reason) else ""


def _limit(area: Area, server_cfg: dict, name: str, default: object) -> object:
    """A server limit from config.toml, of its default's type; Refused naming it when it is not."""
    value = server_cfg.get(name, default)
    try:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        converted = type(default)(value)
        if converted < 0 or converted != converted:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise Refused(f"{area.config_path}: server.{name} = {value!r} is not a number of the right kind") from None
    return converted


def _ignore(_events: list[dict]) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    """The daemon's entry point. When the server cannot start (or dies), its last line is
    ``dbtool: error: <reason>``, and ``logs/start-failure.json`` says the same for a client
    (see ``START_FAILURE``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dbtool.core.server", description="Run a dbtool area's server.")
    parser.add_argument("--area", required=True)
    parser.add_argument("--bind")
    parser.add_argument("--port", type=int)
    parser.add_argument("--idle-timeout", type=float)
    parser.add_argument("--advertise")
    args = parser.parse_args(argv)
    area = Area(args.area)
    handler = serverlog.install(os.path.join(area.logs_dir, "server.log"))
    if not area.exists():
        return _failed(area, Refused(f"{area.root} is not a dbtool area"))
    try:
        server = Server(area, bind=args.bind, port=args.port, idle_timeout=args.idle_timeout, advertise=args.advertise)
        handler.max_bytes = server.limits["log_max_bytes"]
        server.server_log = handler
        return server.run()
    except DbtoolError as err:
        return _failed(area, err)
    except OSError as err:
        return _failed(area, Unavailable(f"cannot start the server: {err}"))
    except Exception as err:
        if is_database_error(err):
            where = area.db_path if not os.environ.get("DBTOOL_DB_URL") else "named by $DBTOOL_DB_URL"
            return _failed(area, StorageError(f"cannot open the database {where}: {driver_message(err)}"))
        log.exception("the server failed")
        return _failed(area, Internal(f"internal error: the server failed: {type(err).__name__}: {err}; see its log"))


def _failed(area: Area, err: DbtoolError) -> int:
    """Say why the server cannot go on: one last line on stderr (server.log for a daemon) and,
    for the client that started it, the error as the protocol sends it (``errors.from_wire``
    rebuilds it, exit code included) with this process's pid."""
    print(f"dbtool: error: {err.message}", file=sys.stderr, flush=True)
    record = {"pid": os.getpid(), "time": time.time(), **err.to_wire()}
    path = os.path.join(area.logs_dir, START_FAILURE)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.replace(tmp, path)
    except OSError:  # (a read-only or full filesystem: the line above is all there is)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return err.exit_code
