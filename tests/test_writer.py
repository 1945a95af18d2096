"""The writer's group commit, in-process on a real SQLite file: each request of a group is atomic.

A group runs without per-request savepoints on SQLite; these tests pin what that must not change:
a request that fails after writing leaves nothing behind and does not sink the others, a request
refused before writing costs the group nothing, and every request gets its own answer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import pytest
from conftest import PG_URL, require_pg
from dbtool.core import handlers
from dbtool.core.commands import WRITE, Command, Param, lookup
from dbtool.core.db.context import Db
from dbtool.core.db.engine import ADMIN, create_schema, postgres_engine, sqlite_engine
from dbtool.core.db.engine import WRITE as WRITE_ROLE
from dbtool.core.db.schema import schema_for
from dbtool.core.errors import Refused
from dbtool.core.request import RequestContext
from dbtool.core.server.writer import Writer
from sqlalchemy import text

KEYS = ["RELEASE", "PLATFORM"]


def write_then_refuse(db: Db, *, var: str) -> None:
    """Sets a variable, then refuses: its write must not survive."""
    handlers.resolve("vars.set_var")(db, var=var, value="partial")
    raise Refused(f"refused after writing {var}")


def write_then_crash(db: Db, *, var: str) -> None:
    handlers.resolve("vars.set_var")(db, var=var, value="partial")
    raise RuntimeError("a bug after the first write")


def change_nothing_then_refuse(db: Db, *, var: str) -> None:
    """An UPDATE that matches no row writes nothing: the group need not start over."""
    db.conn.execute(text("update metadat set val = 'x' where var = :var"), {"var": f"no such {var}"})
    raise Refused(f"nothing to do for {var}")


def set_a_then_b(db: Db, *, var: str) -> None:
    """One request that writes two rows, a then b (as a roll-up writes a test, then its toplevel)."""
    for name in ("a", "b"):
        handlers.resolve("vars.set_var")(db, var=name, value=var)


FAKES = {f.__name__: f for f in (write_then_refuse, write_then_crash, change_nothing_then_refuse, set_a_then_b)}


def fake(name: str) -> Command:
    handlers._cache[f"fake.{name}"] = FAKES[name]
    return Command(name.replace("_", "-"), WRITE, f"fake.{name}", "a test double", (Param("var"),), hidden=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def writer_area(request, tmp_path: Path):
    """The writer's engine on a fresh area: an SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        path = str(tmp_path / "writer.db")
        admin, make = sqlite_engine(path, ADMIN), lambda: sqlite_engine(path, WRITE_ROLE)
    else:
        require_pg()
        schema = f"w_{os.getpid()}_{os.urandom(4).hex()}"
        admin = postgres_engine(PG_URL, ADMIN)
        with admin.connect() as conn, conn.begin():
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        admin.dispose()
        admin = postgres_engine(PG_URL, ADMIN, search_path=schema)
        make = lambda: postgres_engine(PG_URL, WRITE_ROLE, pool_size=1, search_path=schema)  # noqa: E731
    with admin.connect() as conn, conn.begin():
        create_schema(conn, KEYS, "test")
    engine = make()
    engine.test_schema = schema if request.param == "postgresql" else None  # (for a second writer)
    yield engine
    engine.dispose()
    if request.param == "postgresql":
        with admin.connect() as conn, conn.begin():
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()


def run_group(engine, requests: list[tuple[Command, dict]], keys: str = "idem") -> tuple[list[object], Writer]:
    """Queue every request before the writer runs (so they form one group); their outcomes."""

    async def main() -> tuple[list[object], Writer]:
        loop = asyncio.get_running_loop()
        published: list[dict] = []
        writer = Writer(engine, schema_for(KEYS), {}, loop, published.extend, 0)
        futures = []
        for i, (cmd, params) in enumerate(requests):
            ctx = RequestContext(f"r{i}", cmd.name, params, {"user": "u", "host": "h", "pid": 1}, "u@h:1")
            futures.append(writer.submit(cmd, cmd.bind_wire(params), ctx, f"{keys}-{i}"))
        writer.start()
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        await writer.stop()
        writer.published = published
        return outcomes, writer

    return asyncio.run(main())


def variables(engine) -> dict[str, str]:
    with engine.connect() as conn:
        query = "select var, val from metadat where var not like 'DBTOOL_%' and var != 'MEGATEST_VERSION'"
        return dict(conn.execute(text(query)).all())


@pytest.mark.parametrize("failing", ["write_then_refuse", "write_then_crash"])
def test_a_request_failing_after_writing_leaves_nothing_and_spares_the_group(writer_area, caplog, failing):
    set_var = lookup("set-var")
    requests = [
        (set_var, {"var": "a", "value": "1"}),
        (fake(failing), {"var": "b"}),
        (set_var, {"var": "c", "value": "3"}),
    ]
    with caplog.at_level(logging.INFO, logger="dbtool.server"):
        (first, bad, last), writer = run_group(writer_area, requests)
    assert first is None and last is None
    assert isinstance(bad, Refused) if failing == "write_then_refuse" else bad.code == "internal"
    assert variables(writer_area) == {"a": "1", "c": "3"}  # b's write is gone, a's and c's stand
    assert [e["cmd"] for e in writer.published] == ["set-var", "set-var"]  # no event of the failed one
    if writer.counted:  # SQLite: no savepoint per request, so the group runs again request by request
        assert "running its group's 3 request(s) alone" in caplog.text
    else:  # PostgreSQL: the failed request's savepoint is rolled back, the group stands
        assert "alone" not in caplog.text and writer.groups == 1
    with writer_area.connect() as conn:  # only the requests that succeeded keep their idempotency key
        assert sorted(r[0] for r in conn.exec_driver_sql("select idem from idempotency")) == ["idem-0", "idem-2"]


def test_a_request_refused_before_writing_does_not_restart_the_group(writer_area, caplog):
    set_var = lookup("set-var")
    by_id = lookup("test-set-state-status-by-id")
    requests = [
        (set_var, {"var": "a", "value": "1"}),
        (by_id, {"test_id": 999, "state": "RUNNING"}),  # no such test: refused before any write
        (fake("change_nothing_then_refuse"), {"var": "b"}),
        (set_var, {"var": "c", "value": "3"}),
    ]
    with caplog.at_level(logging.INFO, logger="dbtool.server"):
        (first, unknown, nothing, last), writer = run_group(writer_area, requests)
    assert first is None and last is None
    assert isinstance(unknown, Refused) and "no test with id 999" in unknown.message
    assert isinstance(nothing, Refused)
    assert variables(writer_area) == {"a": "1", "c": "3"}
    assert "alone" not in caplog.text
    assert (writer.groups, writer.committed) == (1, 2)  # one transaction, two requests in it


@pytest.mark.parametrize("writer_area", ["postgresql"], indirect=True)  # (SQLite: one server per file)
def test_two_writers_on_one_postgresql_database_append_events_in_turn(writer_area):
    """Front-ends on several hosts write to one PostgreSQL database: their events are numbered by
    the database's last one under a lock held to the commit, so none collide and none is missing."""
    other = postgres_engine(PG_URL, WRITE_ROLE, pool_size=1, search_path=writer_area.test_schema)
    set_var = lookup("set-var")

    async def main() -> list[object]:
        loop = asyncio.get_running_loop()
        writers = [Writer(e, schema_for(KEYS), {}, loop, lambda _events: None, 0) for e in (writer_area, other)]
        futures = []
        for w in writers:
            w.start()
        for i in range(200):
            w = writers[i % 2]
            ctx = RequestContext(f"r{i}", "set-var", {}, {"user": "u", "host": f"h{i % 2}", "pid": 1}, "u@h:1")
            futures.append(w.submit(set_var, set_var.bind_wire({"var": f"v{i}", "value": str(i)}), ctx, f"k{i}"))
            if i % 7 == 0:
                await asyncio.sleep(0)  # groups of different sizes on both
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        for w in writers:
            await w.stop()
        return outcomes

    try:
        outcomes = asyncio.run(main())
    finally:
        other.dispose()
    failed = [o for o in outcomes if o is not None]
    assert not failed, failed[:3]
    with writer_area.connect() as conn:
        seqs = [r[0] for r in conn.execute(text("select seq from events order by seq"))]
    assert seqs == list(range(1, 201)), f"{len(seqs)} events, first gaps: {sorted(set(range(1, 201)) - set(seqs))[:5]}"


@pytest.mark.parametrize("writer_area", ["postgresql"], indirect=True)
def test_a_deadlock_with_another_front_end_is_retried_inside_the_writer(writer_area, caplog):
    """The writer's one request locks a then waits for b, which another session holds while it waits for
    a: PostgreSQL breaks the deadlock by failing the writer's transaction (the other session waits
    longer before it checks), and the writer runs the group again: its clients never see it."""
    import threading

    import psycopg

    set_var = lookup("set-var")
    run_group(writer_area, [(set_var, {"var": "a", "value": "0"}), (set_var, {"var": "b", "value": "0"})])
    other = psycopg.connect(PG_URL, options=f"-csearch_path={writer_area.test_schema}")
    other.execute("SET deadlock_timeout = '30s'")
    other.execute("UPDATE metadat SET val = 'other' WHERE var = 'b'")

    def cross() -> None:
        time.sleep(0.4)  # the writer waits for b by now
        other.execute("UPDATE metadat SET val = 'other' WHERE var = 'a'")  # the cycle: the writer holds a
        other.commit()

    crossing = threading.Thread(target=cross)
    crossing.start()
    try:
        with caplog.at_level(logging.INFO, logger="dbtool.server"):
            outcomes, _writer = run_group(writer_area, [(fake("set_a_then_b"), {"var": "mine"})], keys="crossed")
    finally:
        crossing.join(30)
        other.close()
    assert outcomes == [None]  # one request, alone in its group: only running it again can save it
    assert "deadlock detected" in caplog.text and "running it again" in caplog.text
    assert {k: v for k, v in variables(writer_area).items() if k in "ab"} == {"a": "mine", "b": "mine"}


def test_a_group_in_the_io_thread_waits_out_a_lock_after_a_group_on_the_loop(tmp_path):
    """A group on the loop sets busy_timeout 0 (it waits for a lock itself, without blocking the loop)
    and leaves it so; a group in the I/O thread (here a bulk request) must wait for another process's
    lock in SQLite again, not fail at once with "database is locked"."""
    import sqlite3

    path = str(tmp_path / "writer.db")
    admin = sqlite_engine(path, ADMIN)
    with admin.connect() as conn, conn.begin():
        create_schema(conn, KEYS, "test")
    admin.dispose()
    engine = sqlite_engine(path, WRITE_ROLE)
    handlers._cache["fake.set_a_then_b"] = set_a_then_b
    on_loop = Command("fake-plain", WRITE, "fake.set_a_then_b", "a test double", (Param("var"),), hidden=True)
    bulk = Command("fake-bulk", WRITE, "fake.set_a_then_b", "a test double", (Param("var"),), hidden=True, bulk=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        writer = Writer(engine, schema_for(KEYS), {}, loop, lambda _events: None, 0, alone=lambda: True)
        writer._last_prune = time.time()  # (the hourly prune in the I/O thread would set it back meanwhile)
        writer.start()

        def submit(cmd: Command, value: str) -> asyncio.Future:
            ctx = RequestContext(f"r-{value}", cmd.name, {"var": value}, {"user": "u"}, "u@h:1")
            return writer.submit(cmd, cmd.bind_wire({"var": value}), ctx, f"idem-{value}")

        await submit(on_loop, "first")  # committed on the loop (alone): busy_timeout is 0 now
        other = sqlite3.connect(path, isolation_level=None)  # another process's write lock, for 0.3 s
        other.execute("BEGIN IMMEDIATE")
        loop.call_later(0.3, other.execute, "COMMIT")
        try:
            await submit(bulk, "second")  # in the I/O thread: waits for the lock, then writes
        finally:
            other.close()
        await writer.stop()

    try:
        asyncio.run(main())
        assert variables(engine) == {"a": "second", "b": "second"}
    finally:
        engine.dispose()
