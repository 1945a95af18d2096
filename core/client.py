"""The client: find the area's server, authenticate, send, and route per SPEC 3.

* A live server (``server.json`` + a successful connect) gets every request.
* A read with no live server runs the same handler in-process on a read-only connection
  (``dbtool.core.direct``) and never starts a server.
* A write with no live server starts one under ``.dbtool/start.lock``: many racing clients
  start exactly one; a stale ``server.json`` is detected through ``server.lock``.
* ``busy`` answers are retried with jittered exponential back-off until the timeout.
* A write carries an idempotency key, so resending it after a lost connection is safe.

Only the standard library is imported here on the happy path (filelock only when
a server must be started, SQLAlchemy only in the direct fallback).
"""

from __future__ import annotations

import _socket  # the C module: ``socket`` costs ~9 ms per process to import (enum classes)
import os
import sys
import time

from . import PROTOCOL, __version__, wirejson
from .area import Area, remove_file
from .commands import READ, SERVER, WRITE, Command
from .errors import Busy, DbtoolError, Internal, Unavailable, VersionMismatch, from_wire
from .protocol import MAX_LINE, encode, sign, unpack_records

DEFAULT_TIMEOUT = 60.0
CONNECT_TIMEOUT = 5.0
START_POLL = 0.02


class Unreachable(Exception):
    """Nothing answered at the address in server.json (or the connection broke)."""


class Reply:
    __slots__ = ("log", "request_id", "result")

    def __init__(self, result: object, log: list | None = None, request_id: str | None = None) -> None:
        self.result = result
        self.log = log or []
        self.request_id = request_id


def read_server_info(area: Area) -> dict | None:
    """The contents of server.json, or None when there is none (it is written atomically)."""
    try:
        with open(area.server_json, "rb") as f:
            info = wirejson.loads(f.read())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "port" in info and "key" in info else None


def describe(info: dict) -> str:
    return f"dbtool server for {info.get('area')} at {info.get('host')}:{info.get('port')} (pid {info.get('pid')})"


def _user() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
    return user


def client_identity() -> dict:
    return {"host": _socket.gethostname(), "pid": os.getpid(), "user": _user(), "argv0": os.path.basename(sys.argv[0])}


class Connection:
    """An authenticated connection to a server; requests are answered in order."""

    def __init__(self, info: dict, timeout: float = CONNECT_TIMEOUT) -> None:
        self.info = info
        self.sock = _connect(info["host"], info["port"], timeout)
        self._buf = bytearray()
        self._ids = 0
        hello = self._read_line()
        if not isinstance(hello, dict) or hello.get("hello") != "dbtool":
            self.close()
            raise Unreachable(f"{info['host']}:{info['port']} is not a dbtool server")
        if hello.get("protocol") != PROTOCOL:
            self.close()
            raise VersionMismatch(
                f"the server speaks protocol {hello.get('protocol')} (dbtool {hello.get('version')}), this client "
                f"protocol {PROTOCOL} (dbtool {__version__}); run `dbtool server restart` to replace the server"
            )
        self.instance = hello.get("instance")
        self._auth: bytes | None = encode(
            {"auth": sign(info["key"], hello["nonce"]), "protocol": PROTOCOL, "client": client_identity()}
        )

    def _next_line(self) -> bytes:
        """The next line from the server (b"" when it closed the connection); OSError on failure."""
        buf = self._buf
        scanned = 0
        while True:
            end = buf.find(b"\n", scanned)
            if end >= 0:
                line = bytes(buf[: end + 1])
                del buf[: end + 1]
                return line
            if len(buf) > MAX_LINE:
                raise Unreachable("the server sent an over-long line")
            scanned = len(buf)
            chunk = self.sock.recv(262144)
            if not chunk:
                return b""
            buf += chunk

    def _read_line(self) -> object:
        try:
            line = self._next_line()
        except OSError as err:
            raise Unreachable(f"connection lost: {err}") from None
        if not line:
            raise Unreachable("the server closed the connection")
        try:
            return wirejson.loads(line)
        except ValueError:
            raise Unreachable("the server sent a malformed line") from None

    def request(
        self, cmd: str, params: dict, *, trace: bool = False, idem: str | None = None, timeout: float | None = None
    ) -> dict:
        """Send one request and return the raw response object."""
        self._ids += 1
        msg: dict = {"id": self._ids, "cmd": cmd, "params": params, "pack": True}
        if trace:
            msg["trace"] = True
        if idem:
            msg["idem"] = idem
        data = encode(msg)
        if self._auth is not None:  # the auth line rides with the first request: one round trip
            data, self._auth = self._auth + data, None
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise Unreachable(f"connection lost: {err}") from None
        response = self._read_line()
        if not isinstance(response, dict):
            raise Unreachable("the server sent a malformed response")
        return response

    def events(self):
        """After a ``watch-stream`` request: the streamed lines, until the server closes the stream."""
        self.sock.settimeout(None)
        while True:
            try:
                line = self._next_line()
            except (OSError, Unreachable):
                return
            if not line:
                return
            try:
                event = wirejson.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event

    def call(self, cmd: str, params: dict | None = None, **kw: object) -> object:
        """Send a request and return its result, raising the server's error."""
        return unwrap(self.request(cmd, params or {}, **kw)).result

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _connect(host: str, port: int, timeout: float) -> _socket.socket:
    """A TCP connection with TCP_NODELAY, trying each address of ``host`` in turn.

    On ``_socket`` rather than ``socket`` (whose import costs more than the whole request);
    the host goes to getaddrinfo as bytes, since a str loads the IDNA codec on every call.
    """
    name = host.encode("ascii") if host.isascii() else host.encode("idna")
    try:
        addresses = _socket.getaddrinfo(name, port, _socket.AF_UNSPEC, _socket.SOCK_STREAM)
    except OSError as err:
        raise Unreachable(f"cannot resolve {host}: {err}") from None
    failure: OSError | None = None
    for family, kind, proto, _canon, address in addresses:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except OSError as err:
            sock.close()
            failure = err
    raise Unreachable(str(failure or f"no address for {host}"))


def unwrap(response: dict) -> Reply:
    if response.get("ok"):
        try:
            result = unpack_records(response)
        except ValueError as err:
            raise Internal(f"the server sent a malformed response: {err}") from None
        return Reply(result, response.get("log"), response.get("request_id"))
    err = response.get("error") if isinstance(response.get("error"), dict) else {"message": str(response)}
    exc = from_wire(err)
    exc.extra["request_id"] = response.get("request_id")
    exc.extra["log"] = response.get("log") or []
    raise exc


def ping_info(area: Area, timeout: float = 2.0) -> dict | None:
    """server.json of a server that answers ping now, else None."""
    info = read_server_info(area)
    if info is None:
        return None
    try:
        with Connection(info, timeout) as conn:
            conn.call("ping", timeout=timeout)
    except (Unreachable, DbtoolError, OSError):
        return None
    return info


def server_lock_free(area: Area) -> bool:
    """True when no process holds server.lock, i.e. no server is alive for this area."""
    from filelock import FileLock, Timeout

    lock = FileLock(area.server_lock)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    lock.release()
    return True


def start_server(area: Area, deadline: float, options: dict | None = None) -> dict:
    """Make sure a server runs for the area (starting one if needed) and return its server.json.

    Serialised by start.lock, so racing clients start exactly one server.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(area.start_lock)
    try:
        lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
    except Timeout:
        raise Unavailable(f"timed out waiting for {area.start_lock} (another client is starting the server)") from None
    try:
        info = ping_info(area)
        if info is not None:
            return info
        while read_server_info(area) is not None and not server_lock_free(area):
            # A server holds the lock but does not answer: it is starting or stopping.
            if time.monotonic() > deadline:
                raise Unavailable(f"the server in {area.server_json} holds its lock but does not answer")
            time.sleep(0.05)
            info = ping_info(area)
            if info is not None:
                return info
        remove_file(area.server_json)  # stale: its server is dead
        return _spawn(area, deadline, options or {})
    finally:
        lock.release()


def _spawn(area: Area, deadline: float, options: dict) -> dict:
    """Start a detached server (double fork: it is nobody's child, so it never lingers as a zombie)."""
    os.makedirs(area.logs_dir, mode=0o700, exist_ok=True)
    argv = [sys.executable, "-m", "dbtool.core.server", "--area", area.root]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    log_path = os.path.join(area.logs_dir, "server.log")
    pid = _daemon(argv, area.root, log_path)
    while True:
        live = ping_info(area)
        if live is not None:
            return live
        if not _alive(pid) and read_server_info(area) is None:
            raise Unavailable(f"the server failed to start: {_last_line(log_path)} (see {log_path})")
        if time.monotonic() > deadline:
            raise Unavailable(f"the server did not come up in time; see {log_path}")
        time.sleep(START_POLL)


def _daemon(argv: list[str], cwd: str, log_path: str) -> int:
    """Run argv as a daemon (new session, stdin /dev/null, output to log_path); return its pid."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        try:
            os.close(read_end)
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            os.write(write_end, str(os.getpid()).encode())
            os.close(write_end)
            os.chdir(cwd)
            out = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            os.closerange(3, 65536)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end, "rb") as f:
        data = f.read()
    if not data:
        raise Unavailable("could not start the server process")
    return int(data)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _last_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else f"see {path}"


def new_idem() -> str:
    return os.urandom(12).hex()


def call(
    area: Area,
    cmd: Command,
    params: dict,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    trace: bool = False,
    idem: str | None = None,
) -> Reply:
    """Route one command (SPEC 3) and return its reply; raises a DbtoolError on failure.

    A write carries an idempotency key (``idem``, or a new one), the same on every retry.
    """
    deadline = time.monotonic() + timeout
    if cmd.kind == WRITE and idem is None:
        idem = new_idem()
    backoff = 0.05
    while True:
        info = read_server_info(area)
        if info is not None:
            try:
                with Connection(info, min(CONNECT_TIMEOUT, max(0.1, deadline - time.monotonic()))) as conn:
                    response = conn.request(
                        cmd.api, params, trace=trace, idem=idem, timeout=max(0.1, deadline - time.monotonic())
                    )
                return unwrap(response)
            except Busy as err:
                if time.monotonic() >= deadline:
                    raise Busy(f"the server stayed busy for {timeout:g} s: {err.message}") from None
                import random  # (only when backing off: the happy path does without it)

                wait = float(err.extra.get("retry_after") or backoff)
                time.sleep(min(max(0.0, deadline - time.monotonic()), wait * random.uniform(0.5, 1.5)))
                backoff = min(backoff * 2, 2.0)
                continue
            except Unreachable as err:
                if time.monotonic() >= deadline:
                    raise Unavailable(f"no answer from the server at {info['host']}:{info['port']}: {err}") from None
                if cmd.kind == READ:
                    return _direct(area, cmd, params, trace)
                if cmd.kind == SERVER and server_lock_free(area):
                    raise Unavailable(f"no server is running for {area.root}") from None
                # A write (or a server command while a server holds the lock): retry, then start.
                time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
                backoff = min(backoff * 2, 1.0)
                if cmd.kind == WRITE and server_lock_free(area):
                    start_server(area, deadline)
                continue
        if cmd.kind == SERVER:
            raise Unavailable(f"no server is running for {area.root}")
        if cmd.kind == READ:
            return _direct(area, cmd, params, trace)
        start_server(area, deadline)


def _direct(area: Area, cmd: Command, params: dict, trace: bool) -> Reply:
    from .direct import run_read

    return run_read(area, cmd, params)


def watch(area: Area, run_id: int | None, testpatt: str | None, since: int | None, timeout: float, follow: bool = True):
    """Yield change events: a replay after ``since`` (when given), then live ones, with no gap.

    Starts the server when none runs. A ``resync`` (this watcher fell behind) or a lost server is
    handled by subscribing again from the last event received, so nothing is missed or repeated;
    the iteration ends when the server stops gracefully, or (``follow=False``) after the replay.
    """
    last = since
    while True:
        deadline = time.monotonic() + timeout
        info = ping_info(area) or start_server(area, deadline)
        params = {"run_id": run_id, "testpatt": testpatt, "since": last}
        try:
            with Connection(info, CONNECT_TIMEOUT) as conn:
                reply = unwrap(conn.request("watch-stream", {k: v for k, v in params.items() if v is not None}))
                if last is None:
                    last = reply.result["live_from"]
                for event in conn.events():
                    kind = event.get("event")
                    if kind == "end" or (kind == "live" and not follow):
                        return
                    if kind == "live":
                        continue
                    if kind == "resync":
                        last = event.get("from_seq", last)
                        break
                    last = event.get("seq", last)
                    yield event
        except Unreachable:
            pass  # the server went away: subscribe again (starting a new one) from the last event
