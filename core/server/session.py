"""One client connection: handshake, the request loop, and ``watch`` streams (SPEC 4).

Every line gets an answer or a clear error; only an oversized line, a failed handshake or a
limit closes the connection. Nothing a client sends can raise out of here into the server.

Before it has proven the key a connection is held on a short leash: handshake lines of at most
a few KiB, a deadline (``server.handshake_timeout``), and a budget of its own
(``server.max_pending``: past it the oldest unproven connection is dropped), so peers without
the key cannot use up memory or the connection slots of real clients. TCP keepalive and a user
timeout (``server.dead_peer_timeout``) give back the slots of peers whose host vanished, and a
watcher that does not read for ``server.watch_stall_timeout`` is dropped (it resubscribes from
its last event by itself).

A connection is an ``asyncio.Protocol``: lines are split in ``data_received``, a request is
answered from its future's callback — no task switch on the path of an ordinary request. The
requests of one connection run one at a time, in order; lines that arrive meanwhile wait.
A ``watch`` turns the connection into a stream, served by a task of its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from os import urandom
from typing import TYPE_CHECKING

from .. import PROTOCOL, __version__
from ..commands import LOCAL, SERVER, lookup
from ..errors import BadRequest, DbtoolError, Internal
from ..protocol import (
    MAX_HANDSHAKE_LINE,
    MAX_LINE,
    decode,
    encode,
    error,
    is_nonce,
    ok,
    pack_records,
    plain_response,
    proof_ok,
    prove,
)
from ..request import RequestContext
from ..rules.fields import check_wire as check_fields
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

REPLAY_BATCH = 1000  # events read from the database per replay query
HELLO_HOLD = 0.002  # seconds the hello waits for the client's challenge, to leave with the proof in one write
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
        self.challenge: str | None = None  # the client's nonce, once it sent it
        self.authenticated = False
        self.busy = False  # a request is being answered (or the connection streams events)
        self.closed = False
        self.last_active = time.monotonic()
        self.writable = asyncio.Event()  # cleared while the client does not read (flow control)
        self.writable.set()
        self.handshake_timer: asyncio.TimerHandle | None = None
        self.hello: bytes | None = None  # the hello, while it waits to go out with the next line
        self.stream_task: asyncio.Task | None = None
        self.reading = True
        self.eof = False
        self.tls_pending = False  # its TLS handshake runs: nothing is read or written in the clear
        self.tls_task: asyncio.Task | None = None

    # -- asyncio.Protocol -------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        server = self.server
        sock = transport.get_extra_info("socket")
        if sock is not None and not server.listener_tuned:  # (else it has the listener's options)
            tune_socket(sock, server.limits["dead_peer_timeout"])
        transport.set_write_buffer_limits(high=HIGH_WATER)
        secure = server.tls_context is not None and sock is not None and server.needs_tls(sock.getsockname()[0])
        if not server.admit(self):
            if secure:  # (a busy answer would have to go through a TLS handshake first)
                return self.abort()
            limit = server.limits["max_connections"]
            self.send(error(None, "-", "busy", f"the server has {limit} connections already; retry", retry_after=0.5))
            self.close()
            return
        timeout = server.limits["handshake_timeout"]
        self.handshake_timer = server.loop.call_later(min(HELLO_HOLD, timeout), self._hello_held, timeout)
        if secure:
            transport.pause_reading()  # (start_tls takes the connection over from here)
            self.tls_pending = True
            self.tls_task = server.loop.create_task(self._start_tls(transport))
            return
        self._greet()

    def _greet(self) -> None:
        """The hello, held back for a moment: a real client sends its challenge as it connects, so
        the hello usually leaves in one write with the proof that answers it (one send, one packet
        and one wake-up of the client less per connection). A client that waits for the hello
        before it speaks gets it when the hold ends (``_hello_held``). Nothing goes out before it:
        whatever is sent first (the proof, a refusal) carries it."""
        self.nonce = urandom(16).hex()  # (secrets.token_hex, without its two Python calls)
        hello = {"hello": "dbtool", "protocol": PROTOCOL, "version": __version__, "instance": self.server.instance}
        self.hello = _encode({**hello, "nonce": self.nonce})

    def _hello_held(self, timeout: float) -> None:
        """The hold is over (the first part of the handshake deadline): send the hello if it is
        still waiting, and wait out the rest of the deadline."""
        if self.hello is not None and not (self.closed or self.tls_pending):
            data, self.hello = self.hello, None
            self.transport.write(data)
        if not self.authenticated and not self.closed:
            rest = timeout - min(HELLO_HOLD, timeout)
            self.handshake_timer = self.server.loop.call_later(rest, self._handshake_timeout)

    async def _start_tls(self, raw: asyncio.BaseTransport) -> None:
        """TLS from the first byte on a connection off the loopback; then the handshake as usual."""
        server = self.server
        try:
            timeout = server.limits["handshake_timeout"]
            secured = await server.loop.start_tls(
                raw, self, server.tls_context, server_side=True, ssl_handshake_timeout=timeout
            )
        except (TimeoutError, OSError, ConnectionError, EOFError) as err:  # (ssl.SSLError is an OSError)
            log.debug("TLS handshake failed: %s", err)
            self.closed = True
            server.forget(self)
            if self.handshake_timer is not None:
                self.handshake_timer.cancel()
            raw.abort()
            return
        self.tls_pending = False
        if secured is None or self.closed:
            if secured is not None:
                secured.abort()
            return
        self.transport = secured
        self._greet()
        if self.buffer:  # what the client sent as soon as TLS was up (its challenge takes the hello along)
            self._handshake_lines()
            if self.authenticated:
                self.data_received(b"")
        elif self.hello is not None:  # (the hold is long over: the TLS handshake took longer)
            data, self.hello = self.hello, None
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if self.closed:  # closing: input is dropped (see close)
            return
        if self.tls_pending:  # TLS is up, but start_tls has not handed the connection back yet
            self.buffer += data
            return
        if self.stream_task is not None:  # a watcher that sends anything ends its stream
            return self.stop_stream()
        self.last_active = time.monotonic()
        buffer = self.buffer
        buffer += data
        if not self.authenticated:
            self._handshake_lines()
            if not self.authenticated:
                return
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
        if self.tls_task is not None and self.tls_pending:
            self.tls_task.cancel()
        self.writable.set()
        if self.handshake_timer is not None:
            self.handshake_timer.cancel()
        if self.stream_task is not None:
            self.stream_task.cancel()
        self.server.forget(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    # -- output ---------------------------------------------------------------------------------------
    def send(self, message: dict) -> None:
        if self.closed or self.tls_pending:
            return
        try:
            data = _encode(message)
        except (TypeError, ValueError) as err:
            log.error("response of request %s is not JSON: %s", message.get("request_id"), err)
            text = f"unserialisable result: {err}"
            data = encode(error(message.get("id"), message.get("request_id", "-"), "internal", text))
        if self.hello is not None:  # the held hello goes first, in the same write
            data, self.hello = self.hello + data, None
        self.transport.write(data)

    def close(self) -> None:
        """Close after what was written is sent. Unread input would make the kernel reset the
        connection (and the client lose our last answer), so the write side is shut first and the
        client's remaining input read and dropped until it closes (or for at most two seconds)."""
        if self.closed:
            return
        if self.tls_pending:
            return self.abort()
        self.closed = True
        self.server.forget(self)  # its slot is free now, though the last bytes are still on their way
        transport = self.transport
        if self.eof or not transport.can_write_eof():  # (a client that sent its EOF has nothing left unread)
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the peer is gone already (ENOTCONN): nothing left to deliver
            transport.abort()
            return
        self.server.loop.call_later(2.0, transport.close)

    def _oversized(self) -> None:
        rid = self.server.request_id() if self.authenticated else "-"
        self.send(error(None, rid, "bad_request", f"request line longer than {MAX_LINE} bytes"))
        self.buffer.clear()
        self.close()

    def abort(self) -> None:
        """Drop the connection at once, unsent data included (a peer that does not read)."""
        self.closed = True
        self.server.forget(self)
        self.transport.abort()

    def _handshake_timeout(self) -> None:
        if not self.authenticated:
            timeout = self.server.limits["handshake_timeout"]
            self.send(error(None, "-", "unauthorized", f"no handshake within {timeout:g} s"))
            self.close()

    # -- requests -----------------------------------------------------------------------------------------
    def _next(self) -> None:
        """Handle waiting lines, one request at a time."""
        while self.lines and not self.busy and not self.closed:
            line = self.lines.popleft()
            if line.strip():
                self._request(line)
        if not self.reading and len(self.lines) < 16 and not self.closed:
            self.transport.resume_reading()
            self.reading = True
        if self.eof and not self.busy and not self.lines:
            self.close()

    def _handshake_lines(self) -> None:
        """Handle the handshake lines waiting in the buffer (a few hundred bytes each)."""
        buffer = self.buffer
        while not self.authenticated and not self.closed:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > MAX_HANDSHAKE_LINE:
                    self._refuse_handshake("unauthorized", f"a handshake line is at most {MAX_HANDSHAKE_LINE} bytes")
                return
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if len(line) > MAX_HANDSHAKE_LINE:
                return self._refuse_handshake("unauthorized", f"a handshake line is at most {MAX_HANDSHAKE_LINE} bytes")
            if line.strip():
                self._handshake(line)

    def _handshake(self, line: bytes) -> None:
        """The client's challenge (answered with the server's proof), then the client's proof."""
        try:
            msg = decode(line)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            return self._refuse_handshake("unauthorized", "the first lines must be the handshake")
        if msg.get("protocol") != PROTOCOL:
            text = (
                f"this server speaks protocol {PROTOCOL} (dbtool {__version__}), the client protocol "
                f"{msg.get('protocol')!r}; run `dbtool server restart` or use a matching dbtool"
            )
            return self._refuse_handshake("version_mismatch", text)
        key = self.server.key
        if self.challenge is None:
            if not is_nonce(msg.get("challenge")):
                return self._refuse_handshake("unauthorized", "the first line must be the client's challenge")
            self.challenge = msg["challenge"]
            self.send({"proof": prove(key, "server", self.nonce, self.challenge)})
            return None
        if not proof_ok(key, "client", self.nonce, self.challenge, msg.get("auth")):
            return self._refuse_handshake(
                "unauthorized", "wrong key: the client's proof does not match this server's key"
            )
        client = msg.get("client")
        if isinstance(client, dict):
            self.client = {k: v for k, v in client.items() if isinstance(k, str) and isinstance(v, (str, int))}
        self.label = self.server.client_label(self.client)
        self.authenticated = True
        self.handshake_timer.cancel()
        self.server.proven(self)
        return None

    def _refuse_handshake(self, code: str, message: str) -> None:
        self.send(error(None, "-", code, message))
        self.buffer.clear()
        self.close()

    def _request(self, line: bytes) -> None:
        server = self.server
        rid = server.request_id()
        try:
            msg = decode(line)
        except ValueError as err:
            return self._refuse(None, rid, {}, BadRequest(f"malformed JSON request: {err}"))
        if not isinstance(msg, dict):
            return self._refuse(None, rid, {}, BadRequest("a request must be a JSON object"))
        req_id = msg.get("id")
        if not isinstance(req_id, (str, int, type(None))) or isinstance(req_id, bool):
            req_id = None
        try:
            cmd, params, idem = parse_request(msg)
        except DbtoolError as err:
            return self._refuse(req_id, rid, msg, err)
        ctx = RequestContext(rid, cmd.name, params, self.client, self.label)
        if "fields" in msg or "lock_token" in msg or "job_token" in msg:
            try:
                take_members(ctx, msg)
            except DbtoolError as err:
                return self._refuse(req_id, rid, msg, err)
        ctx.note("debug", "received", f"{cmd.name} from {self.label}")
        trace = ctx.traced = msg.get("trace") is True
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

    def _refuse(self, req_id: object, rid: str, msg: dict, err: DbtoolError) -> None:
        """Answer a request refused before it could run, and log it like any other request."""
        name = msg.get("cmd")
        cmd = lookup(name) if isinstance(name, str) else None
        label = cmd.name if cmd is not None else "(invalid request)"
        params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
        ctx = RequestContext(rid, label, params, self.client, self.label)
        ctx.note("info", "refused", err.message)
        self._answer(req_id, ctx, False, error(req_id, rid, err.code, err.message, **err.extra))

    def _bug(self, cmd, ctx: RequestContext, err: BaseException) -> dict:
        log.error("request %s (%s) failed", ctx.id, cmd.name, exc_info=err)
        ctx.note("error", "exception", f"{type(err).__name__}: {err}")
        failure = Internal(f"internal error in {cmd.name} (request {ctx.id}); see .dbtool/logs/server.log")
        return error(None, ctx.id, failure.code, failure.message)

    def _answer(self, req_id: object, ctx: RequestContext, trace: bool, response: dict, pack: bool = False) -> None:
        response["id"] = req_id
        try:  # the bookkeeping (request log, statistics) never keeps an answer from its client
            self.server.finished(ctx, response)
        except Exception:
            log.exception("could not account for request %s", ctx.id)
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

    async def _emit(self, event: dict, sub: Subscriber | None = None) -> bool:
        """Send one line of the stream (a live event counts as delivered once written), then wait
        while the watcher does not read; False when it stalled too long and was dropped."""
        self.send(event)
        if sub is not None:
            sub.sent(event)
        if self.writable.is_set():
            return True
        stall = self.server.limits["watch_stall_timeout"]
        try:
            await asyncio.wait_for(self.writable.wait(), stall)
        except TimeoutError:
            log.info("dropped watcher %s: it read nothing for %g s", self.label, stall)
            self.abort()
            return False
        return not self.closed

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
                    if sub.wants(event) and not await self._emit(event):
                        return
                after = rows[-1]["seq"]
            if not await self._emit({"event": "live", "seq": upto}):  # the replay is complete
                return
            while not self.closed:
                while sub.queue:
                    if not await self._emit(sub.queue.popleft(), sub):
                        return
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


def tune_listener(sockets, dead_peer_timeout: float) -> bool:
    """Give the listening sockets the options of ``tune_socket``; True where every connection
    accepted from them has them already (Linux copies them), so none needs its own syscalls."""
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            tune_socket(sock, dead_peer_timeout)
    return sys.platform.startswith("linux")


def tune_socket(sock, dead_peer_timeout: float) -> None:
    """TCP_NODELAY, and keepalive plus a user timeout so that a peer whose host vanished (a
    reboot, a cut link) is noticed after about ``dead_peer_timeout`` seconds, idle or not."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if dead_peer_timeout <= 0:
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", max(1, int(dead_peer_timeout / 2))),
        ("TCP_KEEPINTVL", max(1, int(dead_peer_timeout / 6))),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", int(dead_peer_timeout * 1000)),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                pass


MAX_TOKEN = 128  # characters of a lock's or a job's token


def take_members(ctx: RequestContext, msg: dict) -> None:
    """The request's fields and tokens into its context; BadRequest when one is malformed."""
    fields = msg.get("fields")
    if fields is not None:
        checked, problem = check_fields(fields)
        if problem:
            raise BadRequest(f"{problem} (request fields)")
        ctx.give(checked)
    for member in ("lock_token", "job_token"):
        token = msg.get(member)
        if token is None:
            continue
        if not (isinstance(token, str) and 0 < len(token) <= MAX_TOKEN):
            raise BadRequest(f"{member} must be a string of 1-{MAX_TOKEN} characters")
        setattr(ctx, member, token)


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
