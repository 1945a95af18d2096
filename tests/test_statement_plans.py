"""The statements of the hot write paths are compiled once, not on every execution (SQLite).

SQLite's planner may look at a value bound to a parameter to choose a plan (whether a partial
index's condition holds, a LIKE prefix); it then marks the statement to be compiled again whenever
that parameter is bound anew, on every execution, whatever the value. Python's ``sqlite3`` binds
every parameter on every execution, so such a statement is parsed and planned each time: that was
a quarter of the server's CPU for a one-shot status write. ``sqlite3_stmt_status`` counts the
re-preparations; Python's module does not expose it, so the statements a write ran (recorded from
SQLAlchemy) are prepared here through the C API, executed twice with their parameters, and counted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sqlite3

import pytest
from conftest import put
from sqlalchemy import event

SQLITE_ROW, SQLITE_DONE, SQLITE_TRANSIENT = 100, 101, ctypes.c_void_p(-1)
SQLITE_STMTSTATUS_REPREPARE = 5


def libsqlite3() -> ctypes.CDLL:
    """The SQLite library Python's ``sqlite3`` module runs on (as mapped into this process)."""
    assert sqlite3.sqlite_version  # (the module, and so its library, is loaded)
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libsqlite3" in line and "/" in line}
    path = min(paths) if paths else ctypes.util.find_library("sqlite3")
    assert path, "the SQLite library is not found"
    lib = ctypes.CDLL(path)
    lib.sqlite3_open_v2.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_char_p]
    lib.sqlite3_prepare_v2.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_void_p,
    ]
    lib.sqlite3_bind_int64.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64]
    lib.sqlite3_bind_double.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_double]
    lib.sqlite3_bind_text.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    lib.sqlite3_bind_null.argtypes = [ctypes.c_void_p, ctypes.c_int]
    for name in ("sqlite3_step", "sqlite3_reset", "sqlite3_finalize"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.sqlite3_stmt_status.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.sqlite3_exec.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.sqlite3_close_v2.argtypes = [ctypes.c_void_p]
    lib.sqlite3_errmsg.argtypes = [ctypes.c_void_p]
    lib.sqlite3_errmsg.restype = ctypes.c_char_p
    return lib


def recompilations(lib: ctypes.CDLL, path: str, statements: list[tuple[str, tuple]]) -> dict[str, int]:
    """Each statement prepared once and run twice with its parameters (in a transaction rolled
    back): how many times SQLite compiled it again."""
    db = ctypes.c_void_p()
    assert lib.sqlite3_open_v2(path.encode(), ctypes.byref(db), 0x2, None) == 0  # SQLITE_OPEN_READWRITE
    counts = {}
    try:
        lib.sqlite3_exec(db, b"BEGIN", None, None, None)
        for sql, params in statements:
            stmt = ctypes.c_void_p()
            assert lib.sqlite3_prepare_v2(db, sql.encode(), -1, ctypes.byref(stmt), None) == 0, lib.sqlite3_errmsg(db)
            try:
                for _ in range(2):
                    for i, value in enumerate(params, 1):
                        if value is None:
                            lib.sqlite3_bind_null(stmt, i)
                        elif isinstance(value, int):
                            lib.sqlite3_bind_int64(stmt, i, value)
                        elif isinstance(value, float):
                            lib.sqlite3_bind_double(stmt, i, value)
                        else:
                            lib.sqlite3_bind_text(stmt, i, str(value).encode(), -1, SQLITE_TRANSIENT)
                    while (rc := lib.sqlite3_step(stmt)) == SQLITE_ROW:
                        pass
                    assert rc == SQLITE_DONE, (sql, lib.sqlite3_errmsg(db))
                    lib.sqlite3_reset(stmt)
                counts[sql] = lib.sqlite3_stmt_status(stmt, SQLITE_STMTSTATUS_REPREPARE, 0)
            finally:
                lib.sqlite3_finalize(stmt)
        lib.sqlite3_exec(db, b"ROLLBACK", None, None, None)
    finally:
        lib.sqlite3_close_v2(db)
    return counts


class Recording:
    """A driver cursor that notes each statement it runs (the writer's prepared statements, db/fast.py)."""

    def __init__(self, cursor, seen: list) -> None:
        self._cursor, self._seen = cursor, seen

    def execute(self, sql, params=()):
        self._seen.append((sql, tuple(params)))
        return self._cursor.execute(sql, params)

    def executemany(self, sql, rows):
        rows = list(rows)
        self._seen += [(sql, tuple(row)) for row in rows[:2]]
        return self._cursor.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._cursor, name)


def recorded(hdb, monkeypatch, write) -> list[tuple[str, tuple]]:
    """The statements (with their parameters) the handler ``write()`` runs, through SQLAlchemy or
    through the driver cursor of the prepared statements."""
    from dbtool.core.db import fast

    seen: list[tuple[str, tuple]] = []

    def keep(_conn, _cursor, statement, parameters, _context, executemany):
        if not executemany and statement.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE")):
            seen.append((statement, tuple(parameters)))

    plain_init = fast.Statements.__init__

    def recording_init(self, conn):
        plain_init(self, conn)
        self.cursor = Recording(self.cursor, seen)

    event.listen(hdb.engine, "before_cursor_execute", keep)
    monkeypatch.setattr(fast.Statements, "__init__", recording_init)
    try:
        write()
    finally:
        event.remove(hdb.engine, "before_cursor_execute", keep)
        monkeypatch.setattr(fast.Statements, "__init__", plain_init)
    return [(sql, params) for sql, params in seen if not isinstance(params, dict)]


@pytest.mark.parametrize("hdb", ["sqlite"], indirect=True)
def test_the_statements_of_a_status_write_are_compiled_once(hdb, tmp_path, monkeypatch):
    run_id = hdb("register-run", target="v1/linux", runname="r")
    test_id = hdb("register-test", run_id=run_id, testname="unit")
    put(hdb, run_id, "unit", "py311", "RUNNING", "n/a")
    statements = recorded(hdb, monkeypatch, lambda: put(hdb, run_id, "unit", "py311", "COMPLETED", "PASS"))
    statements += recorded(
        hdb, monkeypatch, lambda: hdb("test-set-state-status-by-id", test_id=test_id, state="RUNNING", status="n/a")
    )
    statements += recorded(hdb, monkeypatch, lambda: hdb("get-count-tests-running"))
    statements += recorded(hdb, monkeypatch, lambda: hdb("get-count-tests-running-for-run-id", run_id=run_id))
    assert len(statements) > 10, statements
    counts = recompilations(libsqlite3(), str(tmp_path / "handlers.db"), statements)
    again = {sql: n for sql, n in counts.items() if n}
    assert not again, f"compiled again on every execution: {again}"
