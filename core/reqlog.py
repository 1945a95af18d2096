"""The request log: one JSON line per request in ``.dbtool/logs/requests.jsonl`` (SPEC 5).

The server writes it (``RequestLog``: buffered, flushed every half second and at stop, rotated by
size, never raising into a request's answer); ``dbtool server log`` reads it without a server
(``read_entries``, ``follow``). Standard library only: the reading side is on the client path.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

FILE = "requests.jsonl"
MAX_BYTES = 16 * 1024 * 1024  # a file is rotated when it grows past this
KEEP = 3  # rotated generations kept: requests.jsonl.1 ... .3
LOG_LEVEL_KEPT = 30  # request log entries of this level (warn) or above are always written
FLUSH_AT = 1 << 16  # bytes buffered before a write goes to the file without waiting for the next flush
MAX_PENDING = 8 * 1024 * 1024  # bytes of lines kept in memory while the file cannot be written
WARN_EVERY = 60.0  # seconds between warnings about a request log that cannot be written


class RequestLog:
    """Appends request lines; rotation renames requests.jsonl → .1 → .2 ... and drops the oldest.

    Lines are buffered here and written by ``flush`` (every half second, at a failed request, at
    stop). Neither ``write`` nor ``flush`` ever raises: the log must not stand between a request
    and its answer. While the file cannot be written (a full disk, a read-only remount), lines are
    kept in memory up to ``max_pending_bytes`` and counted beyond it; the next flush that succeeds
    writes them, and says in the server log how many were dropped meanwhile.
    """

    def __init__(
        self, logs_dir: str, max_bytes: int = MAX_BYTES, keep: int = KEEP, max_pending_bytes: int = MAX_PENDING
    ) -> None:
        self.path = os.path.join(logs_dir, FILE)
        self.max_bytes = max_bytes
        self.keep = keep
        self.max_pending_bytes = max_pending_bytes
        os.makedirs(logs_dir, mode=0o700, exist_ok=True)
        self.fd: int | None = None
        self.size = 0
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.carry = b""  # the rest of a write the disk took only in part
        self.dropped = 0  # lines dropped while the file could not be written
        self.failure = ""  # why the last flush failed ('' while all is well)
        self._warned = 0.0
        try:
            self._open()
        except OSError as err:  # (tried again at each flush)
            self._failed(err)

    def write(self, entry: dict) -> None:
        self.write_line(json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=str))

    def write_line(self, line: str) -> None:
        """Append one entry already serialised as a JSON object (no newline)."""
        if self.pending_bytes + len(self.carry) > self.max_pending_bytes:
            self.dropped += 1
            return
        self.pending.append(line)
        self.pending_bytes += len(line) + 1
        if not self.failure and (self.pending_bytes >= FLUSH_AT or self.size + self.pending_bytes > self.max_bytes):
            self.flush()

    def flush(self) -> bool:
        """Write the buffered lines (rotating when the file is full); True when all are written."""
        if not self.pending and not self.carry:
            return True
        data = self.carry + "".join(f"{line}\n" for line in self.pending).encode("utf-8", "backslashreplace")
        self.pending.clear()
        self.pending_bytes = 0
        try:
            if self.fd is None:
                self._open()
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
                self.size += written
        except OSError as err:
            self.carry = data
            self._failed(err)
            return False
        self.carry = b""
        if self.failure:
            self._recovered()
        if self.size > self.max_bytes:
            self.rotate()
        return True

    def rotate(self) -> None:
        try:
            for n in range(self.keep, 0, -1):
                older = f"{self.path}.{n}"
                newer = self.path if n == 1 else f"{self.path}.{n - 1}"
                if os.path.exists(newer):
                    os.replace(newer, older)
        except OSError as err:  # the old file is kept and written on
            self._failed(err)
            return
        self._close_fd()
        try:
            self._open()
        except OSError as err:
            self._failed(err)

    def close(self) -> None:
        self.flush()
        self._close_fd()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = os.fstat(self.fd).st_size

    def _close_fd(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None

    def _failed(self, err: OSError) -> None:
        """Say so in the server log: at the first failure, then at most once a minute."""
        first = not self.failure
        self.failure = str(err)
        now = time.monotonic()
        if first or now - self._warned >= WARN_EVERY:
            self._warned = now
            _server_log().warning(
                "cannot write the request log %s: %s; keeping up to %d KiB of lines in memory until it can "
                "(%d line(s) dropped so far)",
                self.path,
                err,
                self.max_pending_bytes // 1024,
                self.dropped,
            )

    def _recovered(self) -> None:
        _server_log().warning(
            "the request log %s is written again (it failed with: %s); %d line(s) were dropped meanwhile",
            self.path,
            self.failure,
            self.dropped,
        )
        self.failure = ""
        self.dropped = 0


def _server_log():
    import logging  # only the server writes the request log; its readers do without logging

    return logging.getLogger("dbtool.server")


def log_files(logs_dir: str, keep: int = KEEP) -> list[str]:
    """The request log files, oldest first."""
    path = os.path.join(logs_dir, FILE)
    files = [f"{path}.{n}" for n in range(keep, 0, -1)] + [path]
    return [f for f in files if os.path.exists(f)]


def parse_since(text: str, now: float | None = None) -> float:
    """A time filter: Unix seconds, an ISO date/time, or an age such as 30s, 10m, 2h, 1d."""
    now = time.time() if now is None else now
    text = text.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return now - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    import datetime

    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give Unix seconds, an ISO time, or an age like 10m") from None


def matcher(
    request: str | None, cmds: set[str] | None, since: float | None, fields: list[tuple[str, str | None]] | None = None
) -> Callable[[dict], bool]:
    """Entries of one request id, of one command (any of its spellings), after a time, that carried
    every one of ``fields`` (name, value; a value of None: any value)."""
    from .rules.fields import matches

    def keep(entry: dict) -> bool:
        if request is not None and entry.get("id") != request:
            return False
        if cmds is not None and entry.get("cmd") not in cmds:
            return False
        if fields and not matches(fields, entry.get("fields")):
            return False
        return since is None or entry.get("ts", 0) >= since

    return keep


def _lines(path: str) -> Iterator[dict]:
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                yield json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash


def read_entries(logs_dir: str, keep: Callable[[dict], bool]) -> Iterator[dict]:
    for path in log_files(logs_dir):
        yield from (entry for entry in _lines(path) if keep(entry))


def follow(logs_dir: str, keep: Callable[[dict], bool], poll: float = 0.2, stop: Callable[[], bool] | None = None):
    """Yield new entries as they are written (like tail -f), across rotations, until ``stop()``."""
    path = os.path.join(logs_dir, FILE)
    handle = None
    inode = None
    buffer = ""
    while stop is None or not stop():
        if handle is None:
            try:
                handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                inode = os.fstat(handle.fileno()).st_ino
                handle.seek(0, os.SEEK_END)
            except FileNotFoundError:
                time.sleep(poll)
                continue
        chunk = handle.read()
        if chunk:
            buffer += chunk
            *complete, buffer = buffer.split("\n")
            for line in complete:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if keep(entry):
                    yield entry
            continue
        try:
            rotated = os.stat(path).st_ino != inode
        except FileNotFoundError:
            rotated = True
        if rotated:
            handle.close()
            handle = None
            try:  # the new file started from scratch: read it from its beginning
                handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                inode = os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                handle = None
            continue
        time.sleep(poll)
