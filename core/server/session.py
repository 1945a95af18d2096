"""One client connection: handshake, the request loop, and ``watch`` streams (SPEC 4).

Every line gets an answer or a clear error; only an oversized line, a failed handshake or a
limit closes the connection. Nothing a client sends can raise out of here into the server.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from typing import TYPE_CHECKING

from .. import PROTOCOL, __version__
from ..commands import LOCAL, SERVER, lookup
from ..errors import BadRequest, DbtoolError, Internal
from ..protocol import MAX_LINE, decode, encode, error, ok, verify
from ..request import RequestContext
from .events import wire_event

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger("dbtool.server")

HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection has to authenticate
REPLAY_BATCH = 1000  # events read from the database per replay query


class Session:
    __slots__ = ("busy", "client", "last_active", "reader", "server", "task", "writer")

    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.client: dict = {}
        self.busy = False  # between reading a request and writing its answer (or streaming)
        self.last_active = time.monotonic()
        self.task = asyncio.current_task()

    async def run(self) -> None:
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        limit = self.server.limits["max_connections"]
        if len(self.server.sessions) > limit:
            await self.reply(
                error(None, "-", "busy", f"the server has {limit} connections already; retry", retry_after=0.5)
            )
            return
        if await self.handshake():
            await self.serve()

    async def handshake(self) -> bool:
        nonce = secrets.token_hex(16)
        server = self.server
        hello = {
            "hello": "dbtool",
            "protocol": PROTOCOL,
            "version": __version__,
            "instance": server.instance,
            "nonce": nonce,
        }
        await self.reply(hello)
        try:
            line = await asyncio.wait_for(self.reader.readline(), HANDSHAKE_TIMEOUT)
        except TimeoutError:
            await self.reply(error(None, "-", "unauthorized", f"no handshake within {HANDSHAKE_TIMEOUT:g} s"))
            return False
        except ValueError:
            await self.reply(error(None, "-", "bad_request", "handshake line too long"))
            return False
        if not line:
            return False
        try:
            msg = decode(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or "auth" not in msg:
            await self.reply(error(None, "-", "unauthorized", "the first line must be the auth message"))
            return False
        if msg.get("protocol") != PROTOCOL:
            text = (
                f"this server speaks protocol {PROTOCOL} (dbtool {__version__}), the client protocol "
                f"{msg.get('protocol')!r}; run `dbtool server restart` or use a matching dbtool"
            )
            await self.reply(error(None, "-", "version_mismatch", text))
            return False
        if not verify(server.key, nonce, msg.get("auth")):
            await self.reply(
                error(None, "-", "unauthorized", "wrong key: the client's proof does not match this server's key")
            )
            return False
        client = msg.get("client")
        if isinstance(client, dict):
            self.client = {k: v for k, v in client.items() if isinstance(k, str) and isinstance(v, (str, int))}
        return True

    async def serve(self) -> None:
        while True:
            try:
                line = await self.reader.readline()
            except ValueError:  # longer than MAX_LINE: answer, then drop the connection
                rid = self.server.request_id()
                await self.reply(error(None, rid, "bad_request", f"request line longer than {MAX_LINE} bytes"))
                return
            if not line:
                return
            self.last_active = time.monotonic()
            if not line.strip():
                continue
            self.busy = True
            try:
                stream = await self.request(line)
                if stream is not None:  # a watcher stays "busy": the idle sweep and stop leave it alone
                    await self.stream(*stream)
                    return
            finally:
                self.busy = False

    async def reply(self, response: dict) -> None:
        try:
            data = encode(response)
        except (TypeError, ValueError) as err:
            log.error("response of request %s is not JSON: %s", response.get("request_id"), err)
            data = encode(
                error(response.get("id"), response.get("request_id", "-"), "internal", f"unserialisable result: {err}")
            )
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, line: bytes) -> tuple | None:
        """Answer one request line; returns the stream to run when it was a ``watch``."""
        server = self.server
        rid = server.request_id()
        try:
            msg = decode(line)
        except ValueError as err:
            await self.reply(error(None, rid, "bad_request", f"malformed JSON request: {err}"))
            return None
        if not isinstance(msg, dict):
            await self.reply(error(None, rid, "bad_request", "a request must be a JSON object"))
            return None
        req_id = msg.get("id")
        if not isinstance(req_id, (str, int, type(None))) or isinstance(req_id, bool):
            req_id = None
        try:
            cmd, params, idem = parse_request(msg)
        except BadRequest as err:
            await self.reply(error(req_id, rid, err.code, err.message))
            return None
        ctx = RequestContext(rid, cmd.api, params, self.client)
        ctx.note("debug", "received", f"{cmd.api} from {server.client_label(self.client)}")
        trace = msg.get("trace") is True
        if cmd.handler == "watch" and cmd.kind == SERVER:
            return await self.start_watch(req_id, ctx, params)
        try:
            response = ok(req_id, rid, await server.execute(cmd, params, ctx, idem))
        except DbtoolError as err:
            response = error(req_id, rid, err.code, err.message, **err.extra)
        except Exception as err:  # a bug: keep serving, tell the client where to look
            log.exception("request %s (%s) failed", rid, cmd.name)
            ctx.note("error", "exception", f"{type(err).__name__}: {err}")
            failure = Internal(f"internal error in {cmd.name} (request {rid}); see .dbtool/logs/server.log")
            response = error(req_id, rid, failure.code, failure.message)
        server.finished(ctx, response)
        if trace:
            response["log"] = ctx.log
        await self.reply(response)
        return None

    # -- watch -------------------------------------------------------------------------------------------

    async def start_watch(self, req_id: object, ctx: RequestContext, params: dict) -> tuple | None:
        server = self.server
        limit = server.limits["max_subscribers"]
        if len(server.hub.subscribers) >= limit:
            response = error(
                req_id, ctx.id, "refused", f"the server has {limit} watchers already (server.max_subscribers)"
            )
            server.finished(ctx, response)
            await self.reply(response)
            return None
        sub = server.hub.subscribe(params.get("run_id"), params.get("testpatt"))
        since = sub.delivered if params.get("since") is None else params["since"]  # no --since: live only
        response = ok(req_id, ctx.id, {"watching": True, "since": since, "live_from": sub.delivered})
        server.finished(ctx, response)
        await self.reply(response)
        return sub, since

    async def stream(self, sub, since: int) -> None:
        """Replay the events after ``since`` up to the subscription point, then the live ones."""
        server = self.server
        hangup = asyncio.ensure_future(self.reader.read(1))  # completes when the watcher goes away
        try:
            upto = sub.delivered
            after = since
            while after < upto:
                rows = await server.replay(after, upto, sub.run_id, REPLAY_BATCH)
                if not rows:
                    break
                for row in rows:
                    event = wire_event(row)
                    if sub.wants(event):
                        await self.reply(event)
                after = rows[-1]["seq"]
            await self.reply({"event": "live", "seq": upto})  # the replay is complete
            while True:
                while sub.queue:
                    event = sub.queue.popleft()
                    await self.reply(event)
                    sub.sent(event)
                if sub.resync is not None:
                    await self.reply({"event": "resync", "from_seq": sub.resync})
                    return
                if sub.closed:
                    await self.reply({"event": "end", "reason": "the server is stopping"})
                    return
                sub.wake.clear()
                woken = asyncio.ensure_future(sub.wake.wait())
                await asyncio.wait((woken, hangup), return_when=asyncio.FIRST_COMPLETED)
                if hangup.done():
                    woken.cancel()
                    return
        finally:
            hangup.cancel()
            server.hub.unsubscribe(sub)


def parse_request(msg: dict) -> tuple:
    """(command, bound parameters, idempotency key) of a request message; BadRequest when malformed."""
    name = msg.get("cmd")
    cmd = lookup(name) if isinstance(name, str) else None
    if cmd is not None and cmd.kind == LOCAL:  # kill-server, start-server: their server command
        cmd = lookup(cmd.wire) if cmd.wire else None
    if cmd is None:
        raise BadRequest(f"unknown command {name!r}; `dbtool --help` lists the commands")
    idem = msg.get("idem")
    if idem is not None and not (isinstance(idem, str) and 0 < len(idem) <= 128):
        raise BadRequest("idem must be a string of 1-128 characters")
    if "trace" in msg and not isinstance(msg["trace"], bool):
        raise BadRequest("trace must be true or false")
    return cmd, cmd.bind_wire(msg.get("params")), idem
