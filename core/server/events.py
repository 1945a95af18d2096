"""Live change events for ``watch`` subscribers (SPEC 4), fanned out after each commit.

The writer thread hands the committed events to ``EventHub.publish`` on the event loop. Each
subscriber has a bounded queue; publishing never waits: a subscriber that falls behind (a slow
or stalled watcher) gets its queue replaced by one ``resync`` marker naming the last event it
received, its stream ends there, and it re-subscribes from that point (``--since``). So writers
are never delayed and a watcher never silently misses an event.

Gap-free hand-over from replay to live: a subscriber is registered (and starts queueing) at the
hub's ``last_seq``; the replay reads events up to exactly that seq from the database.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from ..rules.patterns import matches_testpatt

QUEUE_LIMIT = 10_000  # events queued per subscriber before it must resync


def wire_event(row: dict) -> dict:
    """An events-table row as the line a watcher receives."""
    event = {
        "event": row.get("cmd"),
        "seq": row.get("seq"),
        "time_ns": row.get("time_ns"),
        "run_id": row.get("run_id"),
        "test_id": row.get("test_id"),
        "testname": row.get("testname"),
        "item_path": row.get("item_path"),
        "state": row.get("state"),
        "status": row.get("status"),
        "client": row.get("client"),
    }
    data = row.get("data")
    if data:
        event["data"] = json.loads(data) if isinstance(data, str) else data
    fields = row.get("fields")
    if fields:  # the fields of the request that made it (--field)
        event["fields"] = json.loads(fields) if isinstance(fields, str) else fields
    return event


class Subscriber:
    __slots__ = ("closed", "delivered", "limit", "queue", "resync", "run_id", "testpatt", "wake")

    def __init__(self, run_id: int | None, testpatt: str | None, start_seq: int, limit: int = QUEUE_LIMIT) -> None:
        self.run_id = run_id
        self.testpatt = testpatt
        self.delivered = start_seq  # the last seq this subscriber has received (or replays up to)
        self.limit = limit
        self.queue: deque[dict] = deque()
        self.resync: int | None = None
        self.closed = False
        self.wake = asyncio.Event()

    def wants(self, event: dict) -> bool:
        if self.run_id is not None and event.get("run_id") != self.run_id:
            return False
        if self.testpatt:
            testname = event.get("testname")
            return testname is not None and matches_testpatt(self.testpatt, testname, event.get("item_path") or "")
        return True

    def push(self, event: dict) -> None:
        if self.resync is not None:
            return
        if len(self.queue) >= self.limit:
            self.queue.clear()
            self.resync = self.delivered
        else:
            self.queue.append(event)
        self.wake.set()

    def sent(self, event: dict) -> None:
        self.delivered = max(self.delivered, event.get("seq") or 0)


class EventHub:
    def __init__(self, last_seq: int, queue_limit: int = QUEUE_LIMIT) -> None:
        self.last_seq = last_seq
        self.queue_limit = queue_limit
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, run_id: int | None, testpatt: str | None) -> Subscriber:
        sub = Subscriber(run_id, testpatt, self.last_seq, self.queue_limit)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.closed = True
        self.subscribers.discard(sub)

    def publish(self, rows: list[dict]) -> None:
        """Committed events, in seq order (called on the event loop)."""
        if rows:
            self.last_seq = max(self.last_seq, rows[-1]["seq"])
        if not self.subscribers:
            return
        events = [wire_event(r) for r in rows]
        for sub in self.subscribers:
            for event in events:
                if sub.wants(event):
                    sub.push(event)

    def close_all(self) -> None:
        for sub in list(self.subscribers):
            sub.closed = True
            sub.wake.set()
        self.subscribers.clear()
