"""User-supplied regular expressions run in linear time everywhere (audit B2): --match in the SQL
REGEXP function, watch filters, item maps. (How fast ping answers during a heavy match is a
benchmark: benchmarks/bench_match.py.)"""

from __future__ import annotations

import sqlite3

import pytest
from dbtool.core.rules.patterns import matches_testpatt
from dbtool.core.rules.prereqs import parse_map_line
from dbtool.core.rules.regex import RegexError, compile_user, search

EVIL = "(a+)+$"  # exponential on "aaa...ab" for a backtracking engine
VICTIM = "a" * 40 + "b"  # 2^40 steps for Python's re: hours


def test_a_catastrophic_pattern_is_linear():
    assert search(EVIL, VICTIM) is False
    assert search(EVIL, "a" * 40) is True
    assert matches_testpatt(EVIL.replace("$", "") + "b", VICTIM)  # in-memory test patterns too
    line = parse_map_line("(a+)+$ x")
    assert line.regex.sub(line.replacement, VICTIM, count=1) == VICTIM


def test_patterns_re2_cannot_run_are_refused_with_the_reason():
    with pytest.raises(RegexError, match="lookarounds and backreferences"):
        compile_user("(?=a)b")
    with pytest.raises(RegexError, match="longer than 256"):
        compile_user("a" * 300)
    assert compile_user("(?i)ABC").search("xabc")


def test_match_over_the_cli_with_a_catastrophic_pattern_answers(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("register-test", "--run-id", "1", "--testname", VICTIM)
    area.ok("register-test", "--run-id", "1", "--testname", "a" * 40)
    for where in ("server", "direct"):
        r = area.ok(
            "get-tests-for-run", "--run-id", "1", "--match", f"testname={EVIL}", "--fields", "testname", "--json"
        )
        assert [t["testname"] for t in r.json] == ["a" * 40], where
        area.ok("server", "stop")
    area.ok("set-var", "x", "1")
    assert area.ok("ping").code == 0
    refused = area.run("get-tests-for-run", "--run-id", "1", "--match", "testname=(a)\\1")
    assert refused.code == 4 and "backreferences" in refused.err and refused.err.count("\n") == 1


def test_the_regexp_function_is_re2_on_every_connection(hdb):
    hdb("register-run", target="v1/linux", runname="r")
    if hdb.backend == "postgresql":  # PostgreSQL's own engine (not a backtracker) finishes too
        assert hdb.sql("select ? ~ ?", VICTIM, EVIL) == [(False,)]
        return
    with hdb.engine.connect() as conn:
        raw = conn.connection.driver_connection
        assert raw.execute("select ? regexp ?", (VICTIM, EVIL)).fetchone() == (0,)
        with pytest.raises(sqlite3.OperationalError):  # a pattern that is not one never matches silently
            raw.execute("select 'x' regexp '(?=x)'").fetchone()
