"""The server's own log, ``logs/server.log``, rotated by size.

A daemon server's stdout and stderr *are* ``logs/server.log``: the client that starts it points
them there, so that whatever the process prints (a traceback that bypasses logging included)
lands in the log. Rotation therefore renames the file (server.log → .1 → .2 → .3, the oldest
dropped) and points file descriptors 1 and 2 at a fresh server.log. In the foreground the log
goes to the terminal and is never rotated.
"""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(process)d %(levelname)s %(message)s"
KEEP = 3  # rotated generations kept
MAX_BYTES = 16 * 1024 * 1024  # until the area's server.log_max_bytes is known


class ServerLog(logging.Handler):
    """Log records straight to file descriptor 2; rotate the file behind it once it is full."""

    def __init__(self, path: str | None, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        super().__init__()
        self.path = path  # None: fd 2 is not the area's server.log, so it is never rotated
        self.max_bytes = max_bytes
        self.keep = keep
        self.lost = 0  # records the disk did not take
        self.setFormatter(logging.Formatter(FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        try:
            os.write(2, text.encode("utf-8", "backslashreplace"))
        except OSError:  # a full disk: the record is lost, the server goes on
            self.lost += 1
        self._rotate_if_full()

    def rotate_if_full(self) -> None:
        """Rotate when the file has grown past its size (also from what was printed around logging)."""
        self.acquire()
        try:
            self._rotate_if_full()
        finally:
            self.release()

    def _rotate_if_full(self) -> None:
        if self.path is None:
            return
        try:
            if os.fstat(2).st_size < self.max_bytes:
                return
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            for n in range(self.keep, 0, -1):
                newer = self.path if n == 1 else f"{self.path}.{n - 1}"
                if os.path.exists(newer):
                    os.replace(newer, f"{self.path}.{n}")
            fresh = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError:  # (tried again at the next record)
            return
        try:
            os.dup2(fresh, 1)
            os.dup2(fresh, 2)
        finally:
            os.close(fresh)


def install(log_path: str) -> ServerLog:
    """Send the server's logging through a ServerLog; it rotates only when fd 2 is ``log_path``."""
    handler = ServerLog(log_path if _is_stderr(log_path) else None)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    handler.rotate_if_full()
    return handler


def _is_stderr(path: str) -> bool:
    try:
        mine, theirs = os.fstat(2), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
