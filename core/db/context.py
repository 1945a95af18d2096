"""What a handler gets: ``Db`` — the connection, the area's tables, the request, and event emission."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from ..request import RequestContext
from .schema import Schema


class Db:
    """The handler's view of the database for one request.

    ``conn`` is inside a transaction (the writer's savepoint, or a read transaction);
    ``t`` holds the area's tables; ``now`` is the request's clock in whole seconds;
    ``emit`` appends a change event in the same transaction; ``after_commit`` defers an action
    until the transaction has committed.
    """

    __slots__ = ("after", "config", "conn", "ctx", "dialect", "events", "now", "t")

    def __init__(self, conn: Connection, schema: Schema, ctx: RequestContext, config: dict | None = None) -> None:
        self.conn = conn
        self.t = schema
        self.ctx = ctx
        self.now = ctx.now
        self.dialect = conn.dialect.name
        self.config = config or {}
        self.events: list[dict] = []
        self.after: list[Callable[[Connection], object]] = []

    @property
    def keys(self) -> list[str]:
        return self.t.keys

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
    ) -> int:
        """Append a change event (committed with the change itself) and return its sequence number."""
        client = self.ctx.client
        row = {
            "time_ns": self.ctx.arrived_ns,
            "cmd": cmd or self.ctx.cmd,
            "run_id": run_id,
            "test_id": test_id,
            "testname": testname,
            "item_path": item_path,
            "state": state,
            "status": status,
            "client": f"{client.get('user', '?')}@{client.get('host', '?')}:{client.get('pid', '?')}"
            if client
            else None,
            "data": json.dumps(data, separators=(",", ":")) if data else None,
        }
        seq = self.conn.execute(insert(self.t.events).values(row)).inserted_primary_key[0]
        row["seq"] = seq
        if data:
            row["data"] = data
        self.events.append(row)
        return seq
