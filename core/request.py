"""Request contexts with request-scoped logs (the Kno request model, SPEC 5).

Every request runs with a ``RequestContext`` in the ``current`` context variable: its id,
command, parameters, client identity and arrival time, a table of fields that handlers may
read and change, and a bounded log of entries. ``run_with`` carries the context into a worker
thread; ``activate`` nests, restoring the outer context on exit.

The fields start as the ones the client sent (``--field NAME=VALUE``), kept as their text;
``val`` reads one parsed as Kno's REQ/VAL does (rules/fields.py). The client's own fields are also
kept apart (``given``): the request log and the change events record what the request carried.
A request may also carry the area lock's token and a job's token (``lock_token``, ``job_token``);
``internal`` marks the server's own bookkeeping writes, which neither lock holds back.
"""

from __future__ import annotations

import contextvars
import time

LEVELS = {"debug": 10, "info": 20, "notice": 25, "warn": 30, "error": 40}
MAX_LOG_ENTRIES = 200

current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("dbtool_request", default=None)


class RequestContext:
    __slots__ = (
        "arrived_ns",
        "client",
        "client_label",
        "cmd",
        "dropped",
        "fields",
        "given",
        "given_json",
        "id",
        "internal",
        "job_token",
        "lock_token",
        "log",
        "now",
        "params",
        "top_level",
        "traced",
    )

    def __init__(
        self, request_id: str, cmd: str, params: dict, client: dict | None = None, client_label: str = ""
    ) -> None:
        self.id = request_id
        self.cmd = cmd
        self.params = params
        self.client = client or {}
        self.client_label = client_label  # user@host:pid, for logs (made once per connection)
        self.arrived_ns = time.time_ns()
        # One clock reading per request: every "now" a handler writes is the same second.
        self.now = self.arrived_ns // 1_000_000_000
        self.fields: dict = {}
        self.given: dict | None = None  # the fields the client sent (see ``give``)
        self.given_json: str | None = None  # ... as JSON text, for the change events
        self.lock_token: str | None = None  # the area lock's token the client sent
        self.job_token: str | None = None  # the token of the exclusive job the client belongs to
        self.internal = False  # the server's own bookkeeping (notification cursors, dead-job marking)
        self.traced = False  # the client asked for the log (--trace): the request log keeps it too
        self.log: list[dict] = []
        self.dropped = 0
        self.top_level = 0  # the most severe level of the entries in ``log``

    def give(self, fields: dict | None) -> None:
        """The fields the client sent (already checked): the start of ``fields``, and kept as sent."""
        if fields:
            import json

            self.given = dict(fields)
            self.given_json = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
            self.fields.update(fields)

    # -- fields (get / store / add / drop / data) ------------------------------------------
    def get(self, name: str, default: object = None) -> object:
        return self.fields.get(name, default)

    def val(self, name: str, default: object = None) -> object:
        """A field read parsed (Kno's REQ/VAL): text that spells a number is the number, a quoted
        string the text inside its quotes (see rules/fields.parse_argstring)."""
        if name not in self.fields:
            return default
        from .rules.fields import parse_argstring

        return parse_argstring(self.fields[name])

    def store(self, name: str, value: object) -> None:
        self.fields[name] = value

    def add(self, name: str, value: object) -> None:
        """Add a value to a multi-valued field (created on first use)."""
        self.fields.setdefault(name, []).append(value)

    def drop(self, name: str) -> None:
        self.fields.pop(name, None)

    def data(self) -> dict:
        return dict(self.fields)

    # -- the request-scoped log ---------------------------------------------------------------
    def note(self, level: str, condition: str, message: str, context: object = None) -> None:
        """Append a log entry; the oldest entries are dropped past MAX_LOG_ENTRIES."""
        ns = time.time_ns()
        entry = {
            "level": level,
            "condition": condition,
            "context": context,
            "message": message,
            "tick": ns // 1_000_000_000,
            "nsecs": ns % 1_000_000_000,
        }
        self.log.append(entry)
        severity = LEVELS.get(level, 0)
        if severity > self.top_level:
            self.top_level = severity
        if len(self.log) > MAX_LOG_ENTRIES:
            oldest = self.log.pop(0)
            self.dropped += 1
            if LEVELS.get(oldest["level"], 0) == self.top_level:  # it may have been the most severe
                self.top_level = max(LEVELS.get(e["level"], 0) for e in self.log)

    def loglen(self) -> int:
        """How many entries the request logged (Kno's REQ/LOGLEN), those dropped past the bound too."""
        return len(self.log) + self.dropped

    def max_level(self) -> int:
        """The most severe level among the entries kept."""
        return self.top_level

    def elapsed_ms(self) -> float:
        return (time.time_ns() - self.arrived_ns) / 1e6


class activate:
    """``with activate(ctx):`` makes ctx the current request and restores the outer one after."""

    __slots__ = ("ctx", "token")

    def __init__(self, ctx: RequestContext) -> None:
        self.ctx = ctx

    def __enter__(self) -> RequestContext:
        self.token = current.set(self.ctx)
        return self.ctx

    def __exit__(self, *exc: object) -> None:
        current.reset(self.token)


def run_with(ctx: RequestContext, fn, *args, **kwargs):
    """Call ``fn`` with ``ctx`` current, e.g. as the function a worker thread runs."""
    with activate(ctx):
        return fn(*args, **kwargs)


def live() -> bool:
    """Whether a request is active here (Kno's REQ/LIVE?)."""
    return current.get() is not None


def token_hash(token: str | None) -> str | None:
    """How a lock's or job's token is stored and compared: its SHA-256 in hex (None for none)."""
    if not token:
        return None
    from hashlib import sha256

    return sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def log(level: str, condition: str, message: str, context: object = None) -> None:
    """Log into the current request, if there is one (handlers call this)."""
    ctx = current.get()
    if ctx is not None:
        ctx.note(level, condition, message, context)
