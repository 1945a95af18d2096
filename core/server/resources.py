"""File descriptors: the server's limit, the share of it connections may take, and what to say
when it runs out anyway."""

from __future__ import annotations

import asyncio
import logging
import resource
import time

log = logging.getLogger("dbtool.server")

FD_RESERVE = 64  # descriptors kept for the database (two per connection), logs, spool files, pipes
FD_RESERVE_SMALL = 40  # the same under a small limit: what a server with every reader busy holds
REPORT_EVERY = 60.0  # seconds between reports of failed accepts


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (the limit now, the limit before)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target, soft
        except (ValueError, OSError):
            pass
    return soft, soft


ACCEPT_BURST = 100  # connections asyncio accepts in one go (it is also the listen backlog)


def share_descriptors(fd_limit: int, connections: int, pending: int) -> tuple[int, int, int]:
    """(max_connections, max_pending, accept burst) that fit in ``fd_limit`` descriptors beside
    what the server itself needs: a burst of accepts holds descriptors before the connections
    over a limit are dropped, so it has its share too."""
    if fd_limit == resource.RLIM_INFINITY:
        return connections, pending, ACCEPT_BURST
    reserve = FD_RESERVE if fd_limit >= 2 * FD_RESERVE else FD_RESERVE_SMALL
    room = max(3, fd_limit - reserve)
    burst = max(2, min(ACCEPT_BURST, room // 4))
    room -= burst
    pending = max(1, min(pending, room // 4))
    return max(1, min(connections, room - pending)), pending, burst


class AcceptErrors:
    """The loop's exception handler. When accept() fails for want of descriptors, asyncio reports
    it with a traceback, up to 100 times per loop tick, and tries again a second later: one line a
    minute, with a count, says as much. Everything else goes to asyncio's own handler."""

    def __init__(self, every: float = REPORT_EVERY) -> None:
        self.every = every
        self.count = 0
        self.reported: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        if not str(context.get("message", "")).startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        self.count += 1
        now = time.monotonic()
        if self.reported is None or now - self.reported >= self.every:
            log.warning(
                "cannot accept connections: %s (%d time(s) since the last report); retrying every second "
                "(raise `ulimit -n` or lower server.max_connections)",
                context.get("exception"),
                self.count,
            )
            self.count, self.reported = 0, now
