"""Prepared statements: SQLAlchemy builds and compiles them once, the driver runs them.

Executing a Core statement through SQLAlchemy costs about 100 µs on a slow CPU, most of it
building the statement and its execution context; the same SQL through the DBAPI cursor costs a
few µs. The hot paths of the writer (a job wrapper's status update is a handful of statements)
use this module: each statement is still a SQLAlchemy construct, compiled for the connection's
dialect (so it runs on PostgreSQL too), but compiled once per process and executed directly.

Statements here must not need SQLAlchemy's type processing of results (plain integers, text and
reals) and must not use expanding IN lists; ``execute_tuples`` applies the types' bind processing.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import itemgetter
from typing import Any

from sqlalchemy import Float, Integer, String
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from ..protocol import Records

# Column types whose values the driver returns as they are stored (no result processing).
PLAIN_TYPES = (Integer, String, Float)

_COMPILED: dict[tuple[str, object], tuple[str, tuple[str, ...] | None, dict]] = {}
_COLUMNS: dict[tuple[str, object], tuple[str, ...]] = {}
_PROCESSORS: dict[tuple[str, object], list[Callable[[Any], Any] | None]] = {}


def _compile(dialect: Any, key: object, build: Callable[[], Any]) -> tuple[str, tuple[str, ...] | None, dict]:
    found = _COMPILED.get((dialect.name, key))
    if found is None:
        compiled = build().compile(dialect=dialect)
        order = tuple(compiled.positiontup) if dialect.positional else None
        found = _COMPILED[(dialect.name, key)] = (compiled.string, order, dict(compiled.params))
    return found


def _bind_processors(dialect: Any, statement: Any, names: tuple[str, ...]) -> list[Callable[[Any], Any] | None]:
    """Per parameter, the function SQLAlchemy would apply to its value for this dialect (or None).

    A TypeDecorator always has one; a type that says its binds pass unchanged on this dialect
    (``binds_unchanged(dialect)``, e.g. NumberOrText on SQLite) gets None.
    """
    binds = statement.compile(dialect=dialect).binds
    processors: list[Callable[[Any], Any] | None] = []
    for name in names:
        type_ = binds[name].type
        unchanged = getattr(type_, "binds_unchanged", None)
        processors.append(
            None if unchanged and unchanged(dialect) else type_.dialect_impl(dialect).bind_processor(dialect)
        )
    return processors


class Statements:
    """Run prepared statements on the driver connection under a SQLAlchemy connection."""

    __slots__ = ("conn", "cursor", "dialect")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect
        self.cursor = conn.connection.driver_connection.cursor()

    def records(self, query: Any) -> list[dict]:
        """The rows of a SELECT as dicts (column label -> value), as ``dict(row._mapping)`` gives."""
        return self.table(query).to_list()

    def table(self, query: Any) -> Records:
        """The rows of a SELECT as Records: the column labels and the driver's row tuples.

        A one-off query (its filters vary per request): compiled here, run by the driver. That
        skips SQLAlchemy's per-row objects, which cost more than the query itself for a few
        thousand rows. A query with a column that needs type processing (a TypeDecorator, an
        untyped expression) goes through SQLAlchemy.
        """
        columns = query.selected_columns
        if not all(isinstance(c.type, PLAIN_TYPES) and not isinstance(c.type, TypeDecorator) for c in columns):
            result = self.conn.execute(query)
            return Records(tuple(result.keys()), [tuple(row) for row in result])
        dialect = self.dialect
        compiled = query.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        params = compiled.params
        cursor = self.cursor
        if dialect.positional:
            cursor.execute(compiled.string, tuple(map(params.__getitem__, compiled.positiontup)))
        else:
            cursor.execute(compiled.string, params)
        return Records(tuple(columns.keys()), cursor.fetchall())

    def execute(self, key: object, build: Callable[[], Any], params: dict | None = None) -> Any:
        """Run the statement ``build()`` (compiled once per ``key``) with these bound values."""
        sql, order, defaults = _compile(self.dialect, key, build)
        cursor = self.cursor
        if order is None:
            cursor.execute(sql, {**defaults, **params} if params else defaults)
            return cursor
        try:  # usually every parameter is given
            values = tuple(map(params.__getitem__, order)) if params else tuple(map(defaults.__getitem__, order))
        except KeyError:
            merged = {**defaults, **params}
            values = tuple(map(merged.__getitem__, order))
        cursor.execute(sql, values)
        return cursor

    def execute_tuples(self, key: object, build: Callable[[], Any], names: tuple[str, ...], rows: list[tuple]) -> int:
        """Run the statement once per row, each row the values of its parameters ``names`` in that
        order; returns the rows it changed. For many rows (a bulk load): no dict per row, and the
        type processing of the parameters (e.g. NumberOrText on PostgreSQL) only where a type has one.
        """
        sql, order, _ = _compile(self.dialect, key, build)
        processors = _PROCESSORS.get((self.dialect.name, key))
        if processors is None:
            processors = _PROCESSORS[(self.dialect.name, key)] = _bind_processors(self.dialect, build(), names)
        converting = [(i, p) for i, p in enumerate(processors) if p is not None]
        if converting:
            rows = [list(row) for row in rows]
            for row in rows:
                for i, process in converting:
                    row[i] = process(row[i])
        if order is None:
            params: list = [dict(zip(names, row, strict=True)) for row in rows]
        elif order == names:
            params = rows
        else:
            pick = itemgetter(*(names.index(name) for name in order))
            params = list(map(pick, rows)) if len(order) > 1 else [(pick(row),) for row in rows]
        cursor = self.cursor
        cursor.executemany(sql, params)
        return cursor.rowcount

    def one(self, key: object, build: Callable[[], Any], params: dict | None = None) -> dict | None:
        cursor = self.execute(key, build, params)
        row = cursor.fetchone()
        if row is None:
            return None
        names = _COLUMNS.get((self.dialect.name, key))
        if names is None:
            names = _COLUMNS[(self.dialect.name, key)] = tuple(d[0] for d in cursor.description)
        return dict(zip(names, row, strict=True))

    def scalar(self, key: object, build: Callable[[], Any], params: dict | None = None) -> Any:
        row = self.execute(key, build, params).fetchone()
        return None if row is None else row[0]

    def rows(self, key: object, build: Callable[[], Any], params: dict | None = None) -> list[tuple]:
        return self.execute(key, build, params).fetchall()

    def rowcount(self, key: object, build: Callable[[], Any], params: dict | None = None) -> int:
        return self.execute(key, build, params).rowcount
