"""Everything that differs between SQLite and PostgreSQL, in one place.

Handlers never write dialect-specific SQL themselves; they call these helpers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, literal
from sqlalchemy.exc import CompileError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import ColumnElement
from sqlalchemy.sql.functions import FunctionElement


class epoch_now(FunctionElement):
    """The current Unix time in whole seconds, as SQL (used for column defaults and triggers)."""

    type = Integer()
    inherit_cache = True
    name = "epoch_now"


@compiles(epoch_now, "sqlite")
def _epoch_now_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(strftime('%s','now') AS INTEGER)"


@compiles(epoch_now, "postgresql")
def _epoch_now_pg(element: Any, compiler: Any, **kw: Any) -> str:
    return "CAST(EXTRACT(EPOCH FROM now()) AS INTEGER)"


@compiles(epoch_now)
def _epoch_now_other(element: Any, compiler: Any, **kw: Any) -> str:
    raise CompileError(f"dbtool supports SQLite and PostgreSQL, not {compiler.dialect.name}")


def like(dialect: str, column: ColumnElement, pattern: str) -> ColumnElement:
    """Case-insensitive LIKE, as Megatest's SQLite LIKE behaves (ASCII case folding)."""
    if dialect == "sqlite":
        return column.like(pattern)
    return column.ilike(pattern)


def glob(dialect: str, column: ColumnElement, pattern: str) -> ColumnElement:
    """Case-sensitive glob: ``*`` any run, ``?`` one character, ``[...]`` a class (SQLite GLOB)."""
    if dialect == "sqlite":
        return column.op("GLOB")(literal(pattern))
    from ..rules.patterns import glob_to_regex

    return column.op("~")(literal(glob_to_regex(pattern)))


def regexp(dialect: str, column: ColumnElement, pattern: str) -> ColumnElement:
    """Regular-expression match (Python ``re`` syntax on SQLite, POSIX on PostgreSQL)."""
    if dialect == "sqlite":
        return column.op("REGEXP")(literal(pattern))
    return column.op("~")(literal(pattern))


def trigger_ddl(dialect: str, table: str) -> list[str]:
    """Statements creating the trigger that refreshes ``last_update`` on every UPDATE of a row."""
    name = f"update_{table}_trigger"
    if dialect == "sqlite":
        return [
            f"CREATE TRIGGER IF NOT EXISTS {name} AFTER UPDATE ON {table} FOR EACH ROW "
            f"BEGIN UPDATE {table} SET last_update = CAST(strftime('%s','now') AS INTEGER) "
            f"WHERE id = NEW.id; END"
        ]
    return [
        "CREATE OR REPLACE FUNCTION dbtool_touch_last_update() RETURNS trigger AS $$ "
        "BEGIN NEW.last_update := CAST(EXTRACT(EPOCH FROM now()) AS INTEGER); RETURN NEW; END $$ "
        "LANGUAGE plpgsql",
        f"DROP TRIGGER IF EXISTS {name} ON {table}",
        f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION dbtool_touch_last_update()",
    ]


def drop_trigger_ddl(dialect: str, table: str) -> str:
    name = f"update_{table}_trigger"
    if dialect == "sqlite":
        return f"DROP TRIGGER IF EXISTS {name}"
    return f"DROP TRIGGER IF EXISTS {name} ON {table}"


def insert_ignore(dialect: str, table: Any, values: dict, conflict: tuple[str, ...]) -> Any:
    """INSERT that does nothing when a row with the same ``conflict`` columns exists."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    statement = dialect_insert(table).values(values).on_conflict_do_nothing(index_elements=list(conflict))
    if dialect != "sqlite":  # psycopg's row count of such an INSERT is unknown (-1): a returned row tells
        from sqlalchemy import literal_column

        statement = statement.returning(literal_column("1"))
    return statement


def inserted(result: Any) -> bool:
    """Whether an ``insert_ignore`` inserted its row: the row it returned (PostgreSQL), else its
    row count (SQLite)."""
    if result.returns_rows:
        return result.first() is not None
    return result.rowcount > 0


def upsert(dialect: str, table: Any, values: dict, conflict: tuple[str, ...], update: tuple[str, ...]) -> Any:
    """INSERT, or UPDATE the ``update`` columns of the row with the same ``conflict`` columns."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    stmt = dialect_insert(table).values(values)
    return stmt.on_conflict_do_update(
        index_elements=list(conflict), set_={name: stmt.excluded[name] for name in update}
    )


def lock_row(db: Any, table: Any, row_id: int) -> None:
    """PostgreSQL: lock one row for this transaction before what is read next depends on it, as a
    roll-up does (its toplevel, then its run: every writer takes them in that order, test, toplevel,
    run, so that concurrent front-ends wait for each other instead of deadlocking). SQLite has one
    writer at a time: nothing to do."""
    if db.dialect == "sqlite":
        return
    from sqlalchemy import bindparam, select

    db.fast.rows(
        ("lock_row", table.name),
        lambda: select(table.c.id).where(table.c.id == bindparam("id")).with_for_update(),
        {"id": row_id},
    )


def one_at_a_time(db: Any, lock: int) -> None:
    """PostgreSQL: wait for, then hold until commit, the advisory lock ``lock`` (a chore that must
    not run on two front-ends at once). SQLite: nothing (its writer is alone)."""
    if db.dialect != "sqlite":
        db.fast.rows(("advisory", lock), lambda: select_lock(lock), {})


def select_lock(lock: int) -> Any:
    from sqlalchemy import func, literal, select

    return select(func.pg_advisory_xact_lock(literal(lock)))
