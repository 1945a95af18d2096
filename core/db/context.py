"""What a handler gets: ``Db`` — the connection, the area's tables, the request, and event emission."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import bindparam, insert
from sqlalchemy.engine import Connection

from ..protocol import Records
from ..request import RequestContext
from .fast import Statements
from .schema import Schema

EVENT_FIELDS = (
    "time_ns",
    "cmd",
    "run_id",
    "test_id",
    "testname",
    "item_path",
    "state",
    "status",
    "client",
    "data",
    "fields",
)


class Db:
    """The handler's view of the database for one request.

    ``conn`` is inside a transaction (the writer's savepoint, or a read transaction);
    ``t`` holds the area's tables; ``now`` is the request's clock in whole seconds;
    ``emit`` appends a change event in the same transaction; ``after_commit`` defers an action
    until the transaction has committed. ``open_tests`` (set by the server's writer) are the tests
    open for one job: ``guard_test`` refuses a write to one of them without that job's token.
    """

    __slots__ = (
        "after",
        "config",
        "conn",
        "ctx",
        "defer_events",
        "dialect",
        "events",
        "fast",
        "now",
        "open_tests",
        "t",
        "touched",
        "touched_tests",
    )

    def __init__(
        self,
        conn: Connection,
        schema: Schema,
        ctx: RequestContext,
        config: dict | None = None,
        defer_events: bool = False,
        fast: Statements | None = None,
    ) -> None:
        self.conn = conn
        self.t = schema
        self.ctx = ctx
        self.now = ctx.now
        self.dialect = conn.dialect.name
        self.config = config or {}
        self.events: list[dict] = []
        # The server's writer stores the events of a whole group at once, numbering them itself.
        self.defer_events = defer_events
        self.fast = fast or Statements(conn)  # the writer shares one cursor among a group's requests
        self.after: list[Callable[[Connection], object]] = []
        # The runs (and, when an event named no run, the tests) whose tests this request changed:
        # handlers/completion.settle_runs decides afterwards whether each is complete.
        self.touched: set[int] = set()
        self.touched_tests: set[int] = set()
        self.open_tests: dict[int, dict] | None = None  # test id -> the job it is open for (None: no check)

    @property
    def keys(self) -> list[str]:
        return self.t.keys

    def records(self, query: object) -> list[dict]:
        """The rows of a SELECT as dicts (label -> value), fetched straight from the driver."""
        return self.fast.records(query)

    def table(self, query: object) -> Records:
        """The rows of a SELECT as Records, for a handler that returns them as they are (the
        server sends them without a dict per row); a handler that works on rows uses ``records``."""
        return self.fast.table(query)

    def after_commit(self, action: Callable[[Connection], object]) -> None:
        """Run ``action(conn)`` once this request's transaction has committed, outside it
        (for what SQLite cannot do inside a transaction, such as a WAL checkpoint)."""
        self.after.append(action)

    def run_after_commit(self) -> None:
        for action in self.after:
            action(self.conn)
        self.after.clear()

    def setting(self, section: str, name: str, default: object = None) -> object:
        return self.config.get(section, {}).get(name, default)

    def emit(
        self,
        *,
        run_id: int | None = None,
        test_id: int | None = None,
        testname: str | None = None,
        item_path: str | None = None,
        state: str | None = None,
        status: str | None = None,
        cmd: str | None = None,
        **data: object,
    ) -> None:
        """Append a change event, committed in the same transaction as the change itself; it
        carries the fields of the request. A change of a test open for another job is refused."""
        if test_id is not None:
            if self.open_tests:
                self.guard_test(test_id)
            if run_id is not None:
                self.touched.add(run_id)
            else:
                self.touched_tests.add(test_id)
        ctx = self.ctx
        client = ctx.client
        row = {
            "time_ns": ctx.arrived_ns,
            "cmd": cmd or ctx.cmd,
            "run_id": run_id,
            "test_id": test_id,
            "testname": testname,
            "item_path": item_path,
            "state": state,
            "status": status,
            "client": (ctx.client_label or client_label(client)) if client else None,
            "data": json.dumps(data, separators=(",", ":")) if data else None,
            "fields": ctx.given_json,
        }
        if not self.defer_events:
            events = self.t.events
            build = lambda: insert(events).values({k: bindparam(k) for k in EVENT_FIELDS}).returning(events.c.seq)  # noqa: E731
            row["seq"] = self.fast.scalar("emit", build, row)
        self.events.append(row)

    def guard_test(self, test_id: int) -> None:
        """Refuse (Held, exit 4) a write to a test open for a job, unless it carries that job's token."""
        open_tests = self.open_tests
        job = open_tests.get(test_id) if open_tests else None
        if job is None or self.ctx.internal:
            return
        from ..request import token_hash

        if self.ctx.job_token is None or token_hash(self.ctx.job_token) != job["token"]:
            from ..handlers.arealock import open_refusal

            raise open_refusal(job, test_id)


def client_label(client: dict) -> str:
    """``user@host:pid`` of a client's identity, as logs and events name it."""
    return f"{client.get('user', '?')}@{client.get('host', '?')}:{client.get('pid', '?')}"
