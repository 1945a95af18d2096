"""The area's server: one process per area, holding ``server.lock`` for its whole life.

Lifecycle: take the server lock (or hand off to the live server), open the database, listen,
write ``server.json`` atomically (mode 0600) once the socket listens, serve, and on
``server stop`` / SIGTERM / idle timeout: stop listening, remove ``server.json``, finish the
queued writes, checkpoint the WAL, release the lock.
"""

from __future__ import annotations

import asyncio
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

from .. import PROTOCOL, __version__
from ..area import Area, load_config, remove_file
from ..client import describe, ping_info
from ..commands import LOCAL, READ, SERVER, lookup
from ..db.context import Db
from ..db.engine import READ as READ_ROLE
from ..db.engine import WRITE as WRITE_ROLE
from ..db.engine import checkpoint, journal_mode_for, read_keys, sqlite_engine
from ..db.schema import schema_for
from ..errors import BadRequest, DbtoolError, Internal, Refused
from ..handlers import resolve
from ..protocol import MAX_LINE, decode, encode, error, ok, verify
from ..request import RequestContext, activate
from .writer import Writer

log = logging.getLogger("dbtool.server")

HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection has to authenticate
LOCK_WAIT = 15.0  # seconds to wait for the server lock held by a server that is stopping
READERS = 4


class Server:
    def __init__(
        self,
        area: Area,
        *,
        bind: str | None = None,
        port: int | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        self.area = area
        self.config = load_config(area)
        server_cfg = self.config["server"]
        self.bind = bind or server_cfg.get("bind") or "127.0.0.1"
        self.port = int(port if port is not None else server_cfg.get("port") or 0)
        self.idle_timeout = float(idle_timeout if idle_timeout is not None else server_cfg.get("idle_timeout", 300))
        self.share_group = bool(server_cfg.get("share_group", False))
        self.key = secrets.token_hex(16)
        self.instance = secrets.token_hex(6)
        self.started_at = time.time()
        self.requests = 0
        self.connections = 0
        self.last_activity = time.monotonic()
        self._ids = itertools.count(1)
        self._lock = None
        self._handlers: set[asyncio.Task] = set()
        self._busy: set[asyncio.Task] = set()  # connections between reading a request and answering it

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the process exit code (0 also when handing off)."""
        from filelock import FileLock, Timeout

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
                    print(
                        f"dbtool: error: {self.area.server_lock} is held but no server answers; "
                        "if no dbtool server runs for this area, another process holds the lock",
                        file=sys.stderr,
                    )
                    return 3
        try:
            self._lock = lock
            remove_file(self.area.server_json)  # we hold the lock, so any record left is stale
            return asyncio.run(self._main())
        finally:
            lock.release()

    async def _main(self) -> int:
        self.loop = asyncio.get_running_loop()
        db_cfg = self.config["db"]
        self.write_engine = sqlite_engine(
            self.area.db_path,
            WRITE_ROLE,
            synchronous=str(db_cfg.get("synchronous", "FULL")),
            journal_mode=journal_mode_for(self.area.db_path, str(db_cfg.get("journal_mode", "auto"))),
            pool_size=1,
        )
        with self.write_engine.connect() as conn:
            self.keys = read_keys(conn)
        if not self.keys:
            raise SystemExit(f"dbtool: error: {self.area.db_path} has no keys; re-create the area with `dbtool init`")
        self.schema = schema_for(self.keys)
        self.read_engine = sqlite_engine(self.area.db_path, READ_ROLE, pool_size=READERS)
        self.readers = ThreadPoolExecutor(READERS, thread_name_prefix="dbtool-reader")
        self.writer = Writer(self.write_engine, self.schema, self.config, self.loop, self._published)
        self.writer.start()
        self._stopping = asyncio.Event()

        listener = await asyncio.start_server(self._connection, self.bind, self.port, limit=MAX_LINE + 1)
        host, port = listener.sockets[0].getsockname()[:2]
        self.host, self.port = host, port
        self._write_server_json()
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.loop.add_signal_handler(sig, self.request_stop, f"signal {signal.Signals(sig).name}")
        log.info("dbtool %s serving %s on %s:%d (pid %d)", __version__, self.area.root, host, port, os.getpid())
        idle = asyncio.create_task(self._idle_watch())

        await self._stopping.wait()
        idle.cancel()
        listener.close()
        remove_file(self.area.server_json)
        await self._drain()
        await listener.wait_closed()
        log.info("stopped after %d requests", self.requests)
        return 0

    def request_stop(self, why: str = "request") -> None:
        if not self._stopping.is_set():
            log.info("stopping (%s)", why)
            self._stopping.set()

    async def _drain(self) -> None:
        """Finish queued writes and answer them, then close connections and checkpoint."""
        self.writer.stop()
        await self.loop.run_in_executor(None, self.writer.thread.join)
        for task in self._handlers - self._busy:  # idle connections: nothing left to answer
            task.cancel()
        if self._busy:
            await asyncio.wait(self._busy, timeout=5.0)
        for task in list(self._handlers):
            task.cancel()
        self.readers.shutdown(wait=True)
        try:
            with self.write_engine.connect() as conn:
                checkpoint(conn)
        except Exception as err:  # a failed checkpoint loses nothing: the WAL is replayed on open
            log.warning("checkpoint at stop failed: %s", err)
        self.read_engine.dispose()
        self.write_engine.dispose()

    async def _idle_watch(self) -> None:
        if self.idle_timeout <= 0:
            return
        while True:
            await asyncio.sleep(min(1.0, self.idle_timeout))
            idle = time.monotonic() - self.last_activity
            if idle >= self.idle_timeout and self.writer.depth == 0:
                self.request_stop(f"idle for {idle:.0f} s")
                return

    def _write_server_json(self) -> None:
        info = {
            "host": self.host,
            "port": self.port,
            "pid": os.getpid(),
            "key": self.key,
            "version": __version__,
            "protocol": PROTOCOL,
            "instance": self.instance,
            "area": self.area.root,
            "started_at": self.started_at,
        }
        mode = 0o640 if self.share_group else 0o600
        tmp = self.area.path(f".server.json.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)
            os.write(fd, json.dumps(info, indent=2).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.area.server_json)

    def _published(self, events: list[dict]) -> None:
        """Called by the writer thread after a commit with the committed events."""

    # -- connections ------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._handlers.add(task)
        self.connections += 1
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client = await self._handshake(reader, writer)
            if client is not None:
                await self._serve(reader, writer, client)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self.connections -= 1
            self._handlers.discard(task)
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict | None:
        nonce = secrets.token_hex(16)
        hello = {
            "hello": "dbtool",
            "protocol": PROTOCOL,
            "version": __version__,
            "instance": self.instance,
            "nonce": nonce,
        }
        writer.write(encode(hello))
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT)
        except ValueError:
            await self._reply(writer, error(None, "-", "bad_request", "handshake line too long"))
            return None
        if not line:
            return None
        try:
            msg = decode(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or "auth" not in msg:
            await self._reply(writer, error(None, "-", "unauthorized", "the first line must be the auth message"))
            return None
        if msg.get("protocol") != PROTOCOL:
            await self._reply(
                writer,
                error(
                    None,
                    "-",
                    "version_mismatch",
                    f"this server speaks protocol {PROTOCOL} (dbtool {__version__}), the client "
                    f"{msg.get('protocol')!r}; run `dbtool server restart` or use a matching dbtool",
                ),
            )
            return None
        if not verify(self.key, nonce, msg.get("auth")):
            await self._reply(
                writer,
                error(None, "-", "unauthorized", "wrong key: the client's proof does not match this server's key"),
            )
            return None
        client = msg.get("client")
        return {k: v for k, v in client.items() if isinstance(v, (str, int))} if isinstance(client, dict) else {}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: dict) -> None:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than MAX_LINE: answer, then drop the connection
                rid = self._request_id()
                await self._reply(writer, error(None, rid, "bad_request", f"request line longer than {MAX_LINE} bytes"))
                return
            if not line:
                return
            if not line.strip():
                continue
            task = asyncio.current_task()
            self._busy.add(task)
            try:
                response = await self._dispatch(line, client)
                await self._reply(writer, response)
            finally:
                self._busy.discard(task)

    async def _reply(self, writer: asyncio.StreamWriter, response: dict) -> None:
        try:
            data = encode(response)
        except (TypeError, ValueError) as err:
            log.error("response of request %s is not JSON: %s", response.get("request_id"), err)
            data = encode(
                error(
                    response.get("id"), response.get("request_id", "-"), "internal", f"result not serialisable: {err}"
                )
            )
        writer.write(data)
        await writer.drain()

    def _request_id(self) -> str:
        return f"{self.instance}-{next(self._ids)}"

    async def _dispatch(self, line: bytes, client: dict) -> dict:
        self.last_activity = time.monotonic()
        self.requests += 1
        rid = self._request_id()
        try:
            msg = decode(line)
        except ValueError as err:
            return error(None, rid, "bad_request", f"malformed JSON request: {err}")
        if not isinstance(msg, dict):
            return error(None, rid, "bad_request", "a request must be a JSON object")
        req_id = msg.get("id")
        name = msg.get("cmd")
        cmd = lookup(name) if isinstance(name, str) else None
        if cmd is not None and cmd.kind == LOCAL:  # kill-server, start-server: their server command
            cmd = lookup(cmd.wire) if cmd.wire else None
        if cmd is None:
            return error(req_id, rid, "bad_request", f"unknown command {name!r}; `dbtool --help` lists the commands")
        idem = msg.get("idem")
        if idem is not None and not (isinstance(idem, str) and 0 < len(idem) <= 128):
            return error(req_id, rid, "bad_request", "idem must be a string of 1-128 characters")
        try:
            params = cmd.bind_wire(msg.get("params"))
        except BadRequest as err:
            return error(req_id, rid, err.code, err.message)
        if cmd.dead:
            return error(req_id, rid, "refused", cmd.dead)
        if self._stopping.is_set() and cmd.kind != SERVER:
            return error(req_id, rid, "busy", "the server is stopping; retry", retry_after=0.1)
        ctx = RequestContext(rid, cmd.api, params, client)
        try:
            if cmd.kind == SERVER:
                result = getattr(self, f"cmd_{cmd.handler}")(ctx)
            elif cmd.kind == READ:
                result = await self.loop.run_in_executor(self.readers, self._read, cmd, params, ctx)
            else:
                result = await self.writer.submit(cmd, params, ctx, idem)
            response = ok(req_id, rid, result)
        except DbtoolError as err:
            response = error(req_id, rid, err.code, err.message, **err.extra)
        except Exception as err:  # a bug: keep serving, tell the client where to look
            log.exception("request %s (%s) failed", rid, cmd.name)
            ctx.note("error", "exception", f"{type(err).__name__}: {err}")
            failure = Internal(f"internal error in {cmd.name} (request {rid}); see .dbtool/logs/server.log")
            response = error(req_id, rid, failure.code, failure.message)
        if msg.get("trace") is True:
            response["log"] = ctx.log
        return response

    def _read(self, cmd, params: dict, ctx: RequestContext):
        with activate(ctx), self.read_engine.connect() as conn, conn.begin():
            return resolve(cmd.handler)(Db(conn, self.schema, ctx, self.config), **params)

    # -- server commands ----------------------------------------------------------------------------
    def _identity(self) -> dict:
        return {
            "area": self.area.root,
            "host": self.host,
            "port": self.port,
            "pid": os.getpid(),
            "instance": self.instance,
            "version": __version__,
            "protocol": PROTOCOL,
            "queue_depth": self.writer.depth,
        }

    def cmd_ping(self, ctx: RequestContext) -> dict:
        return self._identity()

    def cmd_status(self, ctx: RequestContext) -> dict:
        return {
            **self._identity(),
            "uptime": round(time.time() - self.started_at, 3),
            "started_at": self.started_at,
            "requests": self.requests,
            "connections": self.connections,
            "writes_committed": self.writer.committed,
            "commit_groups": self.writer.groups,
            "idle_timeout": self.idle_timeout,
            "threads": threading.active_count(),
        }

    def cmd_stop(self, ctx: RequestContext) -> dict:
        who = ctx.client.get("user", "?"), ctx.client.get("host", "?"), ctx.client.get("pid", "?")
        self.loop.call_soon(self.request_stop, "server stop from {}@{} pid {}".format(*who))
        return {"stopping": True, "pid": os.getpid()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m dbtool.core.server", description="Run a dbtool area's server.")
    parser.add_argument("--area", required=True)
    parser.add_argument("--bind")
    parser.add_argument("--port", type=int)
    parser.add_argument("--idle-timeout", type=float)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(message)s", stream=sys.stderr
    )
    area = Area(args.area)
    if not area.exists():
        print(f"dbtool: error: {area.root} is not a dbtool area", file=sys.stderr)
        return 4
    try:
        return Server(area, bind=args.bind, port=args.port, idle_timeout=args.idle_timeout).run()
    except Refused as err:
        print(f"dbtool: error: {err.message}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"dbtool: error: cannot start the server: {err}", file=sys.stderr)
        return 3
