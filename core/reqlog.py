"""The request log: one JSON line per request in ``.dbtool/logs/requests.jsonl`` (SPEC 5).

The server writes it (``RequestLog``: buffered, flushed every half second and at stop, rotated by
size); ``dbtool server log`` reads it without a server (``read_entries``, ``follow``). Standard
library only: the reading side is on the client path.
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


class RequestLog:
    """Appends request lines; rotation renames requests.jsonl → .1 → .2 ... and drops the oldest."""

    def __init__(self, logs_dir: str, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = os.path.join(logs_dir, FILE)
        self.max_bytes = max_bytes
        self.keep = keep
        os.makedirs(logs_dir, mode=0o700, exist_ok=True)
        self.file = open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1 << 16)  # noqa: SIM115 - kept open
        self.size = self.file.tell()

    def write(self, entry: dict) -> None:
        self.write_line(json.dumps(entry, separators=(",", ":"), ensure_ascii=False, default=str))

    def write_line(self, line: str) -> None:
        """Append one entry already serialised as a JSON object (no newline)."""
        self.file.write(line + "\n")
        self.size += len(line) + 1
        if self.size > self.max_bytes:
            self.rotate()

    def flush(self) -> None:
        self.file.flush()

    def rotate(self) -> None:
        self.file.close()
        for n in range(self.keep, 0, -1):
            older = f"{self.path}.{n}"
            newer = self.path if n == 1 else f"{self.path}.{n - 1}"
            if os.path.exists(newer):
                os.replace(newer, older)
        self.file = open(self.path, "a", encoding="utf-8", errors="backslashreplace", buffering=1 << 16)  # noqa: SIM115
        self.size = 0

    def close(self) -> None:
        self.file.close()


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


def matcher(request: str | None, cmds: set[str] | None, since: float | None) -> Callable[[dict], bool]:
    """Entries of one request id, of one command (any of its spellings), after a time."""

    def keep(entry: dict) -> bool:
        if request is not None and entry.get("id") != request:
            return False
        if cmds is not None and entry.get("cmd") not in cmds:
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
