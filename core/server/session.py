"""One client connection: handshake, the request loop, and ``watch`` streams (SPEC 4).

Every line gets an answer or a clear error; only an oversized line, a failed handshake or a
limit closes the connection. Nothing a client sends can raise out of here into the server.

A connection is an ``asyncio.Protocol``: lines are split in ``data_received``, a request is
answered from its future's callback — no task switch on the path of an ordinary request. The
requests of one connection run one at a time, in order; lines that arrive meanwhile wait.
A ``watch`` turns the connection into a stream, served by a task of its own.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import PROTOCOL, __version__
from ..commands import LOCAL, SERVER, lookup
from ..errors import BadRequest, DbtoolError, Internal
from ..protocol import MAX_LINE, decode, encode, error, ok, pack_records, plain_response, verify
from ..request import RequestContext
from .events import Subscriber, wire_event

if TYPE_CHECKING:
    from .app import Server


def server_encoder() -> Callable[[dict], bytes]:
    """The protocol's ``encode`` for the server: orjson's when it is installed — a tenth of the time for a few
    thousand rows — else ``encode`` itself. Its import (~30 ms) is paid once by the server, never by
    a client. A message orjson cannot encode (an int beyond 64 bits) goes through ``encode``.
    Floats may be spelled differently (``1e16`` for ``1e+16``); they read back as the same number.
    """
    try:
        import orjson
    except ImportError:
        return encode
    dumps, newline = orjson.dumps, orjson.OPT_APPEND_NEWLINE

    def encode_line(message: dict) -> bytes:
        try:
            return dumps(message, option=newline)
        except TypeError:  # orjson.JSONEncodeError
            return encode(message)

    return encode_line


_encode = server_encoder()
log = logging.getLogger("dbtool.server")

HANDSHAKE_TIMEOUT = 10.0  # seconds a new connection has to authenticate
REPLAY_BATCH = 1000  # events read from the database per replay query
HIGH_WATER = 256 * 1024  # bytes buffered for a client before we wait for it to read


class Session(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.lines: deque[bytes] = deque()
        self.client: dict = {}
        self.label = "?"
        self.nonce = ""
        self.authenticated = False
        self.busy = False  # a request is being answered (or the connection streams events)
        self.closed = False
        self.last_active = time.monotonic()
        self.writable = asyncio.Event()  # cleared while the client does not read (flow control)
        self.writable.set()
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.stream_task: asyncio.Task | None = None
        self.reading = True
        self.eof = False

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=HIGH_WATER)
        server = self.server
        server.sessions.add(self)
        limit = server.limits["max_connections"]
        if len(server.sessions) > limit:
            self.send(error(None, "-", "busy", f"the server has {limit} connections already; retry", retry_after=0.5))
            self.close()
            return
        self.nonce = secrets.token_hex(16)
        hello = {"hello": "dbtool", "protocol": PROTOCOL, "version": __version__, "instance": server.instance}
        self.send({**hello, "nonce": self.nonce})
        self.handshake_timer = server.loop.call_later(HANDSHAKE_TIMEOUT, self._handshake_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed:  # closing: input is dropped (see close)
            return
        if self.stream_task is not None:  # a watcher that sends anything ends its stream
            return self.stop_stream()
        self.last_active = time.monotonic()
        buffer = self.buffer
        buffer += data
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                break
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if len(line) > MAX_LINE:
                return self._oversized()
            self.lines.append(line)
        if len(buffer) > MAX_LINE:
            return self._oversized()
        if len(self.lines) > 64 and self.reading:  # a client far ahead of its answers: wait for it
            self.transport.pause_reading()
            self.reading = False
        self._next()

    def eof_received(self) -> bool:
        if self.closed:
            return False  # we were closing anyway: done
        self.eof = True
        if self.stream_task is not None:  # a watcher that stops sending has gone: end its stream
            self.stop_stream()
            return True
        if self.buffer.strip():  # a last line without its newline is still a request
            self.lines.append(bytes(self.buffer))
            self.buffer.clear()
        self._next()  # closes once the waiting lines are answered
        return True  # half-closed: answer what was asked first

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        if self.stream_task is not None:
            self.stream_task.cancel()
        self.server.sessions.discard(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- output ---------------------------------------------------------------------------------------
    def send(self, message: dict) -> None:
        if self.closed:
            return
        try:
            data = _encode(message)
        except (TypeError, ValueError) as err:
            log.error("response of request %s is not JSON: %s", message.get("request_id"), err)
            text = f"unserialisable result: {err}"
            data = encode(error(message.get("id"), message.get("request_id", "-"), "internal", text))
        self.transport.write(data)

    def close(self) -> None:
        """Close after what was written is sent. Unread input would make the kernel reset the
        connection (and the client lose our last answer), so the write side is shut first and the
        client's remaining input read and dropped until it closes (or for at most two seconds)."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        if transport.can_write_eof():
            transport.write_eof()
            self.server.loop.call_later(2.0, transport.close)
        else:
            transport.close()

    def _oversized(self) -> None:
        rid = self.server.request_id() if self.authenticated else "-"
        self.send(error(None, rid, "bad_request", f"request line longer than {MAX_LINE} bytes"))
        self.buffer.clear()
        self.close()

    def _handshake_timeout(self) -> None:
        if not self.authenticated:
            self.send(error(None, "-", "unauthorized", f"no handshake within {HANDSHAKE_TIMEOUT:g} s"))
            self.close()

    # -- requests -----------------------------------------------------------------------------------------
    def _next(self) -> None:
        """Handle waiting lines, one request at a time."""
        while self.lines and not self.busy and not self.closed:
            line = self.lines.popleft()
            if not self.authenticated:
                self._handshake(line)
            elif line.strip():
                self._request(line)
        if not self.reading and len(self.lines) < 16 and not self.closed:
            self.transport.resume_reading()
            self.reading = True
        if self.eof and not self.busy and not self.lines:
            self.close()

    def _handshake(self, line: bytes) -> None:
        self.handshake_timer.cancel()
        try:
            msg = decode(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or "auth" not in msg:
            self.send(error(None, "-", "unauthorized", "the first line must be the auth message"))
            return self.close()
        if msg.get("protocol") != PROTOCOL:
            text = (
                f"this server speaks protocol {PROTOCOL} (dbtool {__version__}), the client protocol "
                f"{msg.get('protocol')!r}; run `dbtool server restart` or use a matching dbtool"
            )
            self.send(error(None, "-", "version_mismatch", text))
            return self.close()
        if not verify(self.server.key, self.nonce, msg.get("auth")):
            self.send(
                error(None, "-", "unauthorized", "wrong key: the client's proof does not match this server's key")
            )
            return self.close()
        client = msg.get("client")
        if isinstance(client, dict):
            self.client = {k: v for k, v in client.items() if isinstance(k, str) and isinstance(v, (str, int))}
        self.label = self.server.client_label(self.client)
        self.authenticated = True

    def _request(self, line: bytes) -> None:
        server = self.server
        rid = server.request_id()
        try:
            msg = decode(line)
        except ValueError as err:
            return self.send(error(None, rid, "bad_request", f"malformed JSON request: {err}"))
        if not isinstance(msg, dict):
            return self.send(error(None, rid, "bad_request", "a request must be a JSON object"))
        req_id = msg.get("id")
        if not isinstance(req_id, (str, int, type(None))) or isinstance(req_id, bool):
            req_id = None
        try:
            cmd, params, idem = parse_request(msg)
        except BadRequest as err:
            return self.send(error(req_id, rid, err.code, err.message))
        ctx = RequestContext(rid, cmd.name, params, self.client, self.label)
        ctx.note("debug", "received", f"{cmd.name} from {self.label}")
        trace = msg.get("trace") is True
        pack = msg.get("pack") is True
        if cmd.handler == "watch" and cmd.kind == SERVER:
            return self._start_watch(req_id, ctx, params)
        try:
            outcome = server.execute(cmd, params, ctx, idem)
        except DbtoolError as err:
            return self._answer(req_id, ctx, trace, error(req_id, rid, err.code, err.message, **err.extra))
        except Exception as err:
            return self._answer(req_id, ctx, trace, self._bug(cmd, ctx, err))
        if not isinstance(outcome, asyncio.Future):
            return self._answer(req_id, ctx, trace, ok(req_id, rid, outcome), pack)
        self.busy = True
        outcome.add_done_callback(lambda future: self._done(future, cmd, req_id, ctx, trace, pack))

    def _done(self, future: asyncio.Future, cmd, req_id: object, ctx: RequestContext, trace: bool, pack: bool) -> None:
        self.busy = False
        if future.cancelled():
            response = error(req_id, ctx.id, "internal", "the request was cancelled (the server is stopping)")
        elif (err := future.exception()) is None:
            response = ok(req_id, ctx.id, future.result())
        elif isinstance(err, DbtoolError):
            response = error(req_id, ctx.id, err.code, err.message, **err.extra)
        else:
            response = self._bug(cmd, ctx, err)
        self._answer(req_id, ctx, trace, response, pack)
        self._next()

    def _bug(self, cmd, ctx: RequestContext, err: BaseException) -> dict:
        log.error("request %s (%s) failed", ctx.id, cmd.name, exc_info=err)
        ctx.note("error", "exception", f"{type(err).__name__}: {err}")
        failure = Internal(f"internal error in {cmd.name} (request {ctx.id}); see .dbtool/logs/server.log")
        return error(None, ctx.id, failure.code, failure.message)

    def _answer(self, req_id: object, ctx: RequestContext, trace: bool, response: dict, pack: bool = False) -> None:
        response["id"] = req_id
        self.server.finished(ctx, response)
        if trace:
            response["log"] = ctx.log
        self.send(pack_records(response) if pack else plain_response(response))

    # -- watch ----------------------------------------------------------------------------------------------
    def _start_watch(self, req_id: object, ctx: RequestContext, params: dict) -> None:
        server = self.server
        limit = server.limits["max_subscribers"]
        if len(server.hub.subscribers) >= limit:
            text = f"the server has {limit} watchers already (server.max_subscribers)"
            return self._answer(req_id, ctx, False, error(req_id, ctx.id, "refused", text))
        sub = server.hub.subscribe(params.get("run_id"), params.get("testpatt"))
        since = sub.delivered if params.get("since") is None else params["since"]  # no --since: live only
        self._answer(
            req_id, ctx, False, ok(req_id, ctx.id, {"watching": True, "since": since, "live_from": sub.delivered})
        )
        self.busy = True  # from now on the connection is a stream: the idle sweep leaves it alone
        self.lines.clear()
        self.stream_task = server.loop.create_task(self._stream(sub, since))
        self.stream_task.add_done_callback(lambda _task: self._stream_ended(sub))
        if self.eof:  # the watch was the last (unterminated) line of a half-closed connection
            self.stop_stream()

    def _stream_ended(self, sub: Subscriber) -> None:
        """However a stream ends (even cancelled before it began): unsubscribe, then close."""
        self.server.hub.unsubscribe(sub)
        self.busy = False
        self.close()

    async def _emit(self, event: dict) -> None:
        self.send(event)
        if not self.writable.is_set():
            await self.writable.wait()

    async def _stream(self, sub: Subscriber, since: int) -> None:
        """Replay the events after ``since`` up to the subscription point, then the live ones.

        Anything the watcher sends now (or its going away) ends the stream.
        """
        server = self.server
        try:
            upto = sub.delivered
            after = since
            while after < upto and not self.closed:
                rows = await server.replay(after, upto, sub.run_id, REPLAY_BATCH)
                if not rows:
                    break
                for row in rows:
                    event = wire_event(row)
                    if sub.wants(event):
                        await self._emit(event)
                after = rows[-1]["seq"]
            await self._emit({"event": "live", "seq": upto})  # the replay is complete
            while not self.closed:
                while sub.queue:
                    event = sub.queue.popleft()
                    await self._emit(event)
                    sub.sent(event)
                if sub.resync is not None:
                    await self._emit({"event": "resync", "from_seq": sub.resync})
                    break
                if sub.closed:
                    await self._emit({"event": "end", "reason": "the server is stopping"})
                    break
                sub.wake.clear()
                await sub.wake.wait()
        except asyncio.CancelledError:
            pass  # the watcher went away or sent something; _stream_ended closes

    def stop_stream(self) -> None:
        """The watcher sent something or went away: end its stream."""
        if self.stream_task is not None:
            self.stream_task.cancel()


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
    for flag in ("trace", "pack"):
        if flag in msg and not isinstance(msg[flag], bool):
            raise BadRequest(f"{flag} must be true or false")
    return cmd, cmd.bind_wire(msg.get("params")), idem
