"""The server's event loop: uvloop's where it is installed, else asyncio's own.

uvloop (libuv under asyncio's API) accepts a connection, makes its transport and runs its
callbacks in C: a one-shot call (connect, handshake, one write, close) costs the server about a
quarter less CPU with it (benchmark 12). A server that may speak TLS (one listening off the
loopback, or with ``server.tls = "always"``) keeps asyncio's loop: uvloop's TLS ends failed and
tampered handshakes differently (an EOF to the client instead of the alert), and those paths are
what the TLS tests pin down. ``DBTOOL_EVENT_LOOP=asyncio`` in the server's environment picks
asyncio's loop for every server (how the tests cover both).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine


def loop_factory(tls: bool = False) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's new_event_loop, or None (asyncio's default) when it is missing or not wanted."""
    if tls or os.environ.get("DBTOOL_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine, tls: bool = False) -> object:
    """``asyncio.run(main)`` on the server's loop (asyncio's for a server that may speak TLS)."""
    with asyncio.Runner(loop_factory=loop_factory(tls)) as runner:
        return runner.run(main)


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """'uvloop' or 'asyncio', for the server's log and status."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
