"""The route of a command (SPEC 3): to the area's server, or a read straight from the database.

* A live server gets every request (``link.Connection``: both ends prove the key first).
* A read with no live server runs the same handler in-process on a read-only connection
  (``dbtool.core.direct``); a read never waits for a server.
* A write with no live server starts one (``link.start_server``, under ``.dbtool/start.lock``).
* A record whose server is gone, or that names something that is not this area's server
  (``link.Stale``), is recovered when ``server.lock`` is free; while a server holds the lock but
  cannot be reached, clients back off and retry until the timeout (it is never replaced).
* A connection that fails makes the client read ``server.json`` again before it concludes
  anything (on NFS a client may see an old copy for seconds): a new record is simply used.
* ``busy`` answers are retried with jittered exponential back-off until the timeout.
* A write carries an idempotency key, so resending it after a lost connection is safe.

Only the standard library is imported here on the happy path (filelock only when a lock must be
checked, SQLAlchemy only in the direct fallback).
"""

from __future__ import annotations

import os
import time

from .area import Area
from .commands import READ, SERVER, WRITE, Command
from .errors import Busy, Outdated, Unavailable
from .link import (
    CONNECT_TIMEOUT,
    Connection,
    Unreachable,
    address,
    forget_stale,
    ping_info,
    read_server_info,
    server_lock_free,
    start_server,
)
from .protocol import Reply, unwrap

DEFAULT_TIMEOUT = 60.0
READ_HELLO_TIMEOUT = 2.0  # a live server says hello at once; a read waits no longer before reading directly


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
    extra: dict | None = None,
) -> Reply:
    """Route one command (SPEC 3) and return its reply; raises a DbtoolError on failure.

    A write carries an idempotency key (``idem``, or a new one), the same on every retry, and the
    tokens of ``$DBTOOL_LOCK_TOKEN`` and ``$DBTOOL_JOB_TOKEN`` unless ``extra`` gives its own.
    ``extra``: more members of the request — ``fields`` (the request's fields), ``lock_token``,
    ``job_token``.
    """
    deadline = time.monotonic() + timeout
    if cmd.kind == WRITE:
        if idem is None:
            idem = new_idem()
        extra = with_tokens(extra)
    backoff = 0.05
    while True:
        info = read_server_info(area)
        if info is None:
            if cmd.kind == SERVER:
                raise Unavailable(f"no server is running for {area.root}")
            if cmd.kind == READ:
                try:
                    return _direct(area, cmd, params, extra, start=True)
                except Outdated:  # made by an older dbtool: a server upgrades it, then serves the read
                    if not os.access(area.dir, os.W_OK):
                        raise
            start_server(area, deadline)
            continue
        patience = READ_HELLO_TIMEOUT if cmd.kind == READ else CONNECT_TIMEOUT
        try:
            with Connection(info, min(patience, max(0.1, deadline - time.monotonic()))) as conn:
                response = conn.request(
                    cmd.api, params, trace=trace, idem=idem, timeout=max(0.1, deadline - time.monotonic()), extra=extra
                )
            return unwrap(response)
        except Busy as err:
            if time.monotonic() >= deadline:
                raise Busy(f"the server stayed busy for {timeout:g} s: {err.message}") from None
            import random  # (only when backing off: the happy path does without it)

            wait = float(err.extra.get("retry_after") or backoff)
            time.sleep(min(max(0.0, deadline - time.monotonic()), wait * random.uniform(0.5, 1.5)))
            backoff = min(backoff * 2, 2.0)
        except Unreachable as err:
            if _replaced(area, info) and time.monotonic() < deadline:  # a new record (NFS shows it late): use it
                continue
            if cmd.kind == READ:
                return _direct(area, cmd, params, extra, start=True)
            if server_lock_free(area):  # its server is gone: the record is stale
                forget_stale(area, info)
                if cmd.kind == SERVER:
                    raise Unavailable(f"no server is running for {area.root}") from None
                start_server(area, deadline)
                continue
            if time.monotonic() >= deadline:
                raise Unavailable(
                    f"the server at {address(info)}:{info['port']} is alive but unreachable from this host ({err})"
                ) from None
            time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, 1.0)


def _replaced(area: Area, tried: dict) -> bool:
    """Whether server.json now names another server than the one that failed us. Read again
    before concluding anything: an NFS client may have shown an old copy of the file for seconds
    (attribute caching), and a server may have been replaced while we tried the old one."""
    fresh = read_server_info(area)
    return fresh is not None and fresh.get("instance") != tried.get("instance")


TOKEN_VARS = (("lock_token", "DBTOOL_LOCK_TOKEN"), ("job_token", "DBTOOL_JOB_TOKEN"))


def with_tokens(extra: dict | None) -> dict | None:
    """A write's request members with the area lock's and the job's token from the environment
    (``$DBTOOL_LOCK_TOKEN``, ``$DBTOOL_JOB_TOKEN``) where ``extra`` has none of its own."""
    for member, var in TOKEN_VARS:
        token = os.environ.get(var)
        if token and (extra is None or member not in extra):
            extra = {**(extra or {}), member: token}
    return extra


def _direct(area: Area, cmd: Command, params: dict, extra: dict | None = None, start: bool = False) -> Reply:
    """The read answered in this process; with ``start``, a server is then started in the
    background where SPEC 3.2 wants one (``start_on_read``) — also after an answer that is an
    error of the read itself (not found), never after a storage or schema refusal."""
    from .direct import run_read
    from .errors import NotFound

    try:
        reply = run_read(area, cmd, params, (extra or {}).get("fields"))
    except NotFound:
        if start:
            start_behind(area)
        raise
    if start:
        start_behind(area)
    return reply


def start_behind(area: Area) -> bool:
    """Start the area's server in the background, without waiting for it, when the area's config
    allows it (``server.start_on_read``, default true) and this caller may write to the area (its
    run folder and its database file): an area the caller cannot write to never gets a server from
    a read. Returns whether a start was handed off."""
    from .area import load_config
    from .errors import DbtoolError

    try:
        config = load_config(area)
    except DbtoolError:
        return False
    if not config["server"].get("start_on_read", True) or config["db"].get("read_only"):
        return False
    folder = area.run_dir if os.path.isdir(area.run_dir) else area.dir
    if not os.access(folder, os.W_OK) or not os.access(area.dir, os.W_OK):
        return False
    if not config["db"].get("url") and not os.access(area.db_path, os.W_OK):
        return False
    from .link import start_in_background

    return start_in_background(area)


def watch(area: Area, run_id: int | None, testpatt: str | None, since: int | None, timeout: float, follow: bool = True):
    """Yield change events: a replay after ``since`` (when given), then live ones, with no gap.

    Starts the server when none runs. A ``resync`` (this watcher fell behind) or a lost connection
    is handled by subscribing again from the last event received, so nothing is missed or repeated;
    with ``follow=False`` the iteration ends after the replay. When the server stops, ``Unavailable``
    is raised with the last event's seq (``last_seq``), so a caller can tell it from its own end.
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
                    if kind == "end":
                        raise Unavailable(
                            f"the server stopped ({event.get('reason') or 'it ended the stream'}); "
                            f"resume with `dbtool watch --since {last}`",
                            last_seq=last,
                        )
                    if kind == "live":
                        if not follow:
                            return
                        continue
                    if kind == "resync":
                        last = event.get("from_seq", last)
                        break
                    last = event.get("seq", last)
                    yield event
        except Unreachable:
            pass  # the server went away: subscribe again (starting a new one) from the last event
