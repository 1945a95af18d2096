"""B13 (patterns): pattern lists and --match options are bounded, and past the bound a query is
refused with one line (exit 4), with or without a server, never an SQLite 'Expression tree is too
large' (exit 5 through a server)."""

from __future__ import annotations

import pytest
from dbtool.core.errors import Refused
from dbtool.core.rules.patterns import MAX_ELEMENTS, field_patterns, parse_testpatt

HUGE = ",".join(["a%"] * 5000)
LIMIT_TEXT = f"a pattern list may have at most {MAX_ELEMENTS} comma-separated elements, not 5000"


def test_the_parsers_refuse_long_lists_and_take_the_limit():
    for parse in (parse_testpatt, field_patterns):
        with pytest.raises(Refused, match=LIMIT_TEXT):
            parse(HUGE)
        assert len(parse(",".join(["a%"] * MAX_ELEMENTS))) == MAX_ELEMENTS


def one_line_refusal(r, what: str) -> None:
    assert r.code == 4, r
    assert r.err.startswith("dbtool: error: ") and r.err.count("\n") == 1, r.err
    assert what in r.err, r.err


QUERIES = [
    ("get-tests-for-run", "--run-id", "1", "--testpatt", HUGE),
    ("get-runs", "--runname", HUGE),
    ("get-runs", "--target", HUGE),
    ("get-tests-for-run-mindata", "--run-id", "1", "--testpatt", HUGE),
]


def test_huge_pattern_lists_are_refused_with_and_without_server(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")  # the server is up
    for query in QUERIES:
        one_line_refusal(area.run(*query), LIMIT_TEXT)
    area.ok("server", "stop")
    assert area.wait_no_server()
    for query in QUERIES:
        one_line_refusal(area.run(*query), LIMIT_TEXT)
    assert area.server_pids() == []
    # at the limit the query runs
    at_limit = ",".join(f"t{i}" for i in range(MAX_ELEMENTS))
    assert area.ok("get-tests-for-run", "--run-id", "1", "--testpatt", at_limit, "--json").json == []


def test_the_number_of_match_options_is_bounded(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("register-test", "--run-id", "1", "--testname", "unit")
    sixteen = [w for _ in range(16) for w in ("--match", "testname=^u")]
    assert area.ok("get-tests-for-run", "--run-id", "1", *sixteen, "--json").json[0]["testname"] == "unit"
    r = area.run("get-tests-for-run", "--run-id", "1", *sixteen, "--match", "testname=t$")
    one_line_refusal(r, "--match can be given at most 16 times, not 17")
    assert "up to 16 times" in " ".join(area.ok("get-tests-for-run", "--help").out.split())
