"""The link to an area's server: its record, a connection both ends prove, ping, start (SPEC 3, 4, 7).

* ``read_server_info`` reads ``.dbtool/server.json`` only when it can be trusted: a regular file
  (never followed through a symlink), not writable by group or others, owned by the area's owner
  (the owner of the area directory) or by the caller, inside a ``.dbtool/`` that is owned the same
  way. Anything else is refused, since whoever writes that file chooses where writes go.
* ``Connection`` proves the key in both directions before any request leaves: the client sends a
  challenge as soon as it connects, the server answers with an HMAC over both nonces, and only
  then does the client send its own proof with the request. A listener that does not hold the
  area's key (a process that took a dead server's port, another area's server) gets a random
  challenge and nothing else; the client treats it like a dead server (``Stale``).
* Off the loopback (or with ``server.tls = "always"``) the connection is TLS 1.3 from its first
  byte, and the server's certificate must be the one the record pins (``core/tls.py``) before
  anything else is sent.
* ``start_server`` starts one server under ``.dbtool/start.lock`` (many racing clients start
  exactly one) after checking that the record is really dead (``server.lock`` is free).

Standard library only (filelock only when a lock is needed): this is on every client call's path.
"""

from __future__ import annotations

import _socket  # the C module: ``socket`` costs ~9 ms per process to import (enum classes)
import os
import sys
import time

from . import PROTOCOL, __version__, wirejson
from .area import Area, remove_file
from .errors import DbtoolError, Refused, Unavailable, VersionMismatch, from_wire
from .protocol import MAX_HANDSHAKE_LINE, auth_line, challenge_line, encode, new_nonce, proof_ok

CONNECT_TIMEOUT = 5.0
START_POLL = 0.02


class Unreachable(Exception):
    """Nothing usable answered at the address in server.json (or the connection broke)."""


class Stale(Unreachable):
    """Something answered, but it is not this area's server: it could not prove the area's key,
    or it is another server instance than the record names. The record is as good as dead."""


# -- the server record -------------------------------------------------------------------------------


def read_server_info(area: Area) -> dict | None:
    """The contents of server.json, or None when there is none (or it is damaged: written
    atomically, a damaged file is not a server's). Refused when it cannot be trusted (see above)."""
    try:
        fd = os.open(area.server_json, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == 40:  # ELOOP: a symlink
            raise Refused(f"refusing {area.server_json}: it is a symbolic link; remove it") from None
        return None
    try:
        _check_trusted(area, os.fstat(fd), area.server_json, "file")
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    try:
        info = wirejson.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("port"), int) or not isinstance(info.get("key"), str):
        return None
    return info


def _check_trusted(area: Area, st: os.stat_result, path: str, what: str) -> None:
    """Refuse a server record (or its directory) that someone other than the area's owner or the
    caller could have written."""
    import stat

    if what == "file" and not stat.S_ISREG(st.st_mode):
        raise Refused(f"refusing {path}: it is not a regular file; remove it")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and what == "file":
        raise Refused(f"refusing {path}: it is writable by others (mode {stat.S_IMODE(st.st_mode):o}); remove it")
    owner = _area_owner(area)
    if st.st_uid not in (owner, os.getuid()):
        raise Refused(
            f"refusing {path}: it belongs to {_user_name(st.st_uid)}, not to the area's owner "
            f"({_user_name(owner)}) or you; if that is expected, ask its owner to run the server"
        )
    if what == "file":
        folder = os.path.dirname(path)  # .dbtool/, or a shared area's .dbtool/hosts/<host>/
        try:
            dir_st = os.lstat(folder)
        except OSError:
            return
        if not stat.S_ISDIR(dir_st.st_mode):
            raise Refused(f"refusing {folder}: it is not a directory")
        _check_trusted(area, dir_st, folder, "directory")


def _area_owner(area: Area) -> int:
    try:
        return os.stat(area.root).st_uid
    except OSError:
        return os.getuid()


def _user_name(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def describe(info: dict) -> str:
    return f"dbtool server for {info.get('area')} at {address(info)}:{info.get('port')} (pid {info.get('pid')})"


def address(info: dict) -> str:
    """Where a client connects: the advertised address (older records: their "host")."""
    return str(info.get("address") or info.get("host") or "127.0.0.1")


def hostname() -> str:
    """The host name dbtool uses for itself ($DBTOOL_HOSTNAME, else the system's)."""
    return os.environ.get("DBTOOL_HOSTNAME") or _socket.gethostname()


def _user() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME")
    if not user:
        import pwd

        try:
            user = pwd.getpwuid(os.getuid()).pw_name
        except KeyError:  # a uid with no passwd entry (containers, batch systems)
            user = f"uid{os.getuid()}"
    return user


def client_identity() -> dict:
    return {"host": hostname(), "pid": os.getpid(), "user": _user(), "argv0": os.path.basename(sys.argv[0])}


# -- a connection ------------------------------------------------------------------------------------


class Connection:
    """A connection to an area's server on which both ends proved the key; requests in order."""

    def __init__(self, info: dict, timeout: float = CONNECT_TIMEOUT) -> None:
        self.info = info
        self.where = f"{address(info)}:{info.get('port')}"
        self.sock = _secure(_connect(address(info), info["port"], timeout), info, self.where)
        self._buf = bytearray()
        self._ids = 0
        self._limit = MAX_HANDSHAKE_LINE  # until the server proved itself: no long lines from it
        challenge = new_nonce()
        try:
            try:
                self.sock.sendall(challenge_line(challenge))
            except OSError as err:
                raise Unreachable(f"connection lost: {err}") from None
            hello = self._read_line()
            self._check_hello(hello)
            answer = self._read_line()
            proof = answer.get("proof") if isinstance(answer, dict) else None
            if not proof_ok(info["key"], "server", hello["nonce"], challenge, proof):
                raise Stale(f"{self.where} is not this area's server (it cannot prove the area's key)")
        except BaseException:
            self.close()
            raise
        self._limit = 0
        self.instance = hello.get("instance")
        self._auth: bytes | None = auth_line(info["key"], hello["nonce"], challenge, client_identity())

    def _check_hello(self, hello: object) -> None:
        if isinstance(hello, dict) and hello.get("ok") is False and isinstance(hello.get("error"), dict):
            raise from_wire(hello["error"])  # e.g. busy: the server is at its connection limit
        if not isinstance(hello, dict) or hello.get("hello") != "dbtool":
            raise Stale(f"{self.where} is not a dbtool server")
        if hello.get("protocol") != PROTOCOL:
            raise VersionMismatch(
                f"the server speaks protocol {hello.get('protocol')} (dbtool {hello.get('version')}), this client "
                f"protocol {PROTOCOL} (dbtool {__version__}); run `dbtool server restart` to replace the server"
            )
        expected = self.info.get("instance")
        if expected and hello.get("instance") != expected:
            raise Stale(f"{self.where} is another server (instance {hello.get('instance')}, not {expected})")
        if not isinstance(hello.get("nonce"), str):
            raise Stale(f"{self.where} sent a malformed hello")

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
            if self._limit and len(buf) > self._limit:
                raise Stale(f"{self.where} sent an over-long handshake line")
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
        self,
        cmd: str,
        params: dict,
        *,
        trace: bool = False,
        idem: str | None = None,
        timeout: float | None = None,
        extra: dict | None = None,
    ) -> dict:
        """Send one request and return the raw response object. ``extra``: more members of the
        request (its fields, the area lock's and a job's token)."""
        self._ids += 1
        msg: dict = {"id": self._ids, "cmd": cmd, "params": params, "pack": True}
        if trace:
            msg["trace"] = True
        if idem:
            msg["idem"] = idem
        if extra:
            msg.update(extra)
        data = encode(msg)
        if self._auth is not None:  # the client's proof rides with its first request
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
        from .protocol import unwrap

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
    for family, kind, proto, _canon, where in addresses:
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(where)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except OSError as err:
            sock.close()
            failure = err
    raise Unreachable(str(failure or f"no address for {host}"))


def _secure(sock: _socket.socket, info: dict, where: str):
    """The connection as it must be used: TLS, checked against the record's pinned certificate,
    when the peer is not on the loopback (or the area asks for TLS everywhere); else as it is."""
    from . import tls

    try:
        if not tls.needs_tls(str(info.get("tls") or "auto"), sock.getpeername()[0]):
            return sock
        expected = info.get("tls_fingerprint")
        if not isinstance(expected, str):
            raise Stale(f"the record of {where} pins no TLS certificate, which a connection off the loopback needs")
        return tls.wrap(sock, expected, where)
    except BaseException as err:
        sock.close()  # (a no-op once TLS took it over: then the TLS socket was closed)
        if isinstance(err, tls.MismatchError):
            raise Stale(str(err)) from None
        if isinstance(err, OSError):  # (ssl.SSLError too)
            raise Unreachable(f"TLS with {where} failed: {err}") from None
        raise


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


# -- locks: is the server alive, start one --------------------------------------------------------------


def _take(area: Area, path: str, timeout: float):
    """One of the area's lock files, taken (filelock); None when another process holds it past
    ``timeout``. A lock file that cannot be made means the area is read-only for this caller."""
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return None
    except OSError as err:
        raise _lock_error(area, path, err) from None
    return lock


def server_lock_free(area: Area) -> bool:
    """True when no process holds server.lock, i.e. no server is alive for this area."""
    lock = _take(area, area.server_lock, 0)
    if lock is None:
        return False
    lock.release()
    return True


def _why_unwritable(path: str) -> str:
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "is on a read-only filesystem"
    except OSError:
        pass
    return "is not writable by you"


def _lock_error(area: Area, path: str, err: OSError) -> Refused:
    """A lock file dbtool cannot create: the area is read-only for this caller (exit 4, with why)."""
    reason = err.strerror or str(err)
    return Refused(
        f"cannot write to {area.dir} ({os.path.basename(path)}: {reason}): the area is read-only for you, so "
        "reads work and writes cannot"
    )


def forget_stale(area: Area, info: dict) -> bool:
    """Remove a server record whose server is gone (its lock is free), unless a new server has
    replaced it meanwhile; under start.lock, so it never removes a record a starting server wrote."""
    lock = _take(area, area.start_lock, 2.0)
    if lock is None:
        return False
    try:
        current = read_server_info(area)
        if current is None or current.get("instance") != info.get("instance") or not server_lock_free(area):
            return False
        remove_file(area.server_json)
        return True
    finally:
        lock.release()


def start_server(area: Area, deadline: float, options: dict | None = None) -> dict:
    """Make sure a server runs for the area (starting one if needed) and return its server.json.

    Serialised by start.lock, so racing clients start exactly one server.
    """
    if not os.access(area.dir, os.W_OK):
        raise Refused(f"cannot start a server: {area.dir} {_why_unwritable(area.dir)}; reads work, writes cannot")
    if area.shared:  # this host's front-end keeps its record and locks in a folder of its own
        os.makedirs(area.run_dir, mode=0o700, exist_ok=True)
    lock = _take(area, area.start_lock, max(0.0, deadline - time.monotonic()))
    if lock is None:
        raise Unavailable(f"timed out waiting for {area.start_lock} (another client is starting the server)")
    try:
        return _start_locked(area, deadline, options or {})
    finally:
        lock.release()


BACKGROUND_START_TIMEOUT = 60.0  # how long a background start waits for its server to come up


def start_in_background(area: Area) -> bool:
    """Start the area's server without waiting for it (SPEC 3.2: after a read answered directly).

    ``start.lock`` is taken here, without waiting (someone holding it is starting a server already),
    and handed to a detached process (double fork: the flock belongs to the open file, which the
    child inherits; this process only closes its own descriptor), which starts the server as
    ``start_server`` does and lets go of the lock once it answers. So racing readers start exactly
    one server, and whoever takes start.lock next sees it. Returns whether a start was handed off.
    """
    import fcntl

    if area.shared:
        try:
            os.makedirs(area.run_dir, mode=0o700, exist_ok=True)
        except OSError:
            return False
    try:
        fd = os.open(area.start_lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: another client is starting (or checking) the server
        os.close(fd)
        return False
    try:
        child = os.fork()
    except OSError:
        os.close(fd)  # (the only descriptor of the lock: closing it releases the lock)
        return False
    if child == 0:  # pragma: no cover - runs in the forked child
        code = 1
        try:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for std in (0, 1, 2):
                    os.dup2(null, std)
                try:
                    _start_locked(area, time.monotonic() + BACKGROUND_START_TIMEOUT, {}, background=True)
                    code = 0
                except BaseException:
                    code = 1
            else:
                code = 0
        finally:
            os._exit(code)  # (the grandchild's exit closes the lock's last descriptor: released)
    os.close(fd)  # the lock stays held through the child's descriptor
    os.waitpid(child, 0)
    return True


def _start_locked(area: Area, deadline: float, options: dict, background: bool = False) -> dict | None:
    """The part of ``start_server`` run under start.lock. ``background``: give up at once (None) when
    a server holds server.lock (it is alive, starting or stopping: nothing for a reader to do)."""
    info = ping_info(area)
    if info is not None:
        return info
    if background:
        if not server_lock_free(area):
            return None
        remove_file(area.server_json)
        return _spawn(area, deadline, options)
    while read_server_info(area) is not None and not server_lock_free(area):
        # A server holds the lock but does not answer: it is starting, stopping, or unreachable.
        if time.monotonic() > deadline:
            record = read_server_info(area) or {}
            raise Unavailable(
                f"the server at {address(record)}:{record.get('port')} is alive (it holds {area.server_lock}) "
                "but does not answer from this host; retry later"
            )
        time.sleep(0.05)
        info = ping_info(area)
        if info is not None:
            return info
    if not server_lock_free(area):  # no record, but a server holds the lock: starting, or stopping
        info = _wait_for_server(area, deadline, None, None)
        if info is not None:
            return info
    remove_file(area.server_json)  # stale: its server is dead
    return _spawn(area, deadline, options)


def _spawn(area: Area, deadline: float, options: dict) -> dict:
    """Start a detached server (double fork: it is nobody's child, so it never lingers as a zombie)."""
    os.makedirs(area.logs_dir, mode=0o700, exist_ok=True)
    argv = [sys.executable, "-m", "dbtool.core.server", "--area", area.root]
    for name, value in options.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    log_path = os.path.join(area.logs_dir, "server.log")
    pid = _daemon(argv, area.root, log_path)
    return _wait_for_server(area, deadline, pid, log_path)


def _wait_for_server(area: Area, deadline: float, pid: int | None, log_path: str | None) -> dict | None:
    """The record of the server that comes up. For the server we started (``pid``): an error when
    it dies first. For one that holds the lock without a record (``pid`` None): None when it lets
    go of the lock without serving (it was stopping, not starting), so the caller starts one."""
    while True:
        live = ping_info(area)
        if live is not None:
            return live
        if pid is not None and not _alive(pid) and read_server_info(area) is None:
            raise start_failure(area, pid, log_path)
        if pid is None and server_lock_free(area):
            return None
        if time.monotonic() > deadline:
            raise Unavailable(f"the server did not come up in time; see {log_path or area.logs_dir}")
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


START_FAILURE = "start-failure.json"  # logs/: the error of a server that could not start, with its pid


def start_failure(area: Area, pid: int, log_path: str) -> DbtoolError:
    """Why the server we started is gone: the error it left in logs/start-failure.json (its own
    class and exit code: a damaged database is a refusal, not "no server"), else its log's last
    error line."""
    try:
        with open(os.path.join(area.logs_dir, START_FAILURE), "rb") as f:
            record = wirejson.loads(f.read())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("pid") == pid and isinstance(record.get("message"), str):
        return from_wire(record)
    return Unavailable(f"the server failed to start: {failure_reason(log_path)} (see {log_path})")


ERROR_PREFIX = "dbtool: error: "


def failure_reason(path: str | None) -> str:
    """Why a server failed to start: the last ``dbtool: error:`` line of its log (the server ends a
    failed start with one), else the log's last line."""
    if path is None:
        return "no log"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line[len(ERROR_PREFIX) :]
    return lines[-1] if lines else f"see {path}"
