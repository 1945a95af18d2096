"""Pure rules: C.15 patterns, C.3 legacy roll-up, C.8 dead-job detection, SPEC 9.7 numbers."""

from __future__ import annotations

import re

import pytest
from dbtool.core.rules.deadjobs import classify, why_dead
from dbtool.core.rules.numbers import number_out_of_range, numeric_or_text, parse_number
from dbtool.core.rules.patterns import (
    GLOB,
    LIKE,
    field_patterns,
    glob_to_regex,
    like_to_regex,
    matches_testpatt,
    parse_testpatt,
)
from dbtool.core.rules.rollup import legacy_pf_rollup


def test_field_patterns_pick_like_or_glob_per_element():
    assert field_patterns("a%,b*,c") == [(LIKE, "a%"), (GLOB, "b*"), (GLOB, "c")]
    assert field_patterns(" x , y% ") == [(GLOB, "x"), (LIKE, "y%")]


def test_test_patterns_item_conditions():
    assert parse_testpatt("unit") == [((GLOB, "unit"), None)]
    assert parse_testpatt("unit/") == [((GLOB, "unit"), (GLOB, ""))]
    assert parse_testpatt("unit/py%,lint/a*") == [((GLOB, "unit"), (LIKE, "py%")), ((GLOB, "lint"), (GLOB, "a*"))]
    assert parse_testpatt("a/b/c") == [((GLOB, "a"), (GLOB, "b/c"))]  # the item path may contain '/'
    assert parse_testpatt(",,") == []


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("a*", ["a", "abc"], ["ba", "A"]),
        ("a?c", ["abc"], ["ac", "abbc"]),
        ("[ab]x", ["ax", "bx"], ["cx"]),
        ("[!ab]x", ["cx"], ["ax"]),
        ("a.b", ["a.b"], ["axb"]),
    ],
)
def test_glob_to_regex_is_sqlite_glob(glob, matches, misses):
    rx = re.compile(glob_to_regex(glob))
    assert all(rx.match(m) for m in matches)
    assert not any(rx.match(m) for m in misses)


def test_like_to_regex_is_case_insensitive_sql_like():
    rx = re.compile(like_to_regex("Ab%_"))
    assert rx.match("abXY") and rx.match("ABcd") and not rx.match("ab")


@pytest.mark.parametrize(
    ("patt", "name", "item", "expected"),
    [
        ("unit", "unit", "", True),
        ("unit", "unit", "py311", True),  # no '/' → any item
        ("unit/", "unit", "", True),
        ("unit/", "unit", "x", False),  # 'name/' → toplevel only
        ("unit/py*", "unit", "py311", True),
        ("unit/py*", "unit", "PY311", False),  # glob: case-sensitive
        ("unit/PY%", "unit", "py311", True),  # '%': case-insensitive
        ("un*", "unit", "", True),
        ("UN%", "unit", "", True),
        ("u.it", "unit", "", True),  # other regex characters keep their meaning (C.15)
        ("lint,unit", "unit", "", True),
        ("%,~unit", "unit", "", False),  # a negated element that matches excludes
        ("%,~unit", "lint", "", True),
        ("~unit", "lint", "", False),  # only negations: nothing is included
        ("", "unit", "", False),  # an empty pattern never matches
        ("unit/", "unit", "", True),
    ],
)
def test_testpatt_matches_in_memory(patt, name, item, expected):
    assert matches_testpatt(patt, name, item) is expected


@pytest.mark.parametrize(
    ("text", "number"),
    [("1", 1), ("-2", -2), ("+3", 3), ("1.5", 1.5), (".5", 0.5), ("1e3", 1000.0), ("2E-2", 0.02), (" 7 ", 7)],
)
def test_numbers(text, number):
    assert parse_number(text) == number and type(parse_number(text)) is type(number)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "8mA", "1_000", "", "0x10", "1e", "--1", "1.2.3"])
def test_not_numbers(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("text", ["1e400", "-1e999", "9" * 400 + ".5", "1" * 5000])
def test_numbers_no_finite_float_or_int_holds_stay_text(text):
    assert parse_number(text) is None
    assert numeric_or_text(text) == text
    assert number_out_of_range(text)


@pytest.mark.parametrize("text", ["1e308", "1e-400", "8mA", "inf", ""])
def test_numbers_in_range(text):
    assert not number_out_of_range(text)


def test_a_huge_int_is_exact_but_too_big_for_a_real_column():
    assert parse_number("9" * 400) == 10**400 - 1
    assert number_out_of_range("9" * 400)


@pytest.mark.parametrize(
    ("items", "counts", "expected"),
    [
        ([("COMPLETED", "PASS"), ("COMPLETED", "PASS")], (0, 0), ("COMPLETED", "PASS")),
        ([("COMPLETED", "PASS"), ("COMPLETED", "FAIL")], (0, 0), ("COMPLETED", "FAIL")),
        ([("COMPLETED", "PASS")], (0, 2), ("COMPLETED", "FAIL")),  # toplevel fail_count
        ([("NOT_STARTED", "TEN_STRIKES")], (0, 0), ("UNKNOWN", "ABORT")),
        ([("RUNNING", "n/a"), ("COMPLETED", "PASS")], (0, 0), ("RUNNING", "ABORT")),
        ([("NOT_STARTED", "n/a")], (0, 0), ("RUNNING", "ABORT")),
        ([("COMPLETED", "ABORT")], (0, 0), ("COMPLETED", "ABORT")),
        ([("COMPLETED", "INCOMPLETE")], (0, 0), ("COMPLETED", "ABORT")),
        ([("COMPLETED", "AUTO")], (0, 0), ("COMPLETED", "AUTO")),
        ([("COMPLETED", "STUCK/INCOMPLETE")], (0, 0), ("COMPLETED", "INCOMPLETE")),
        ([("COMPLETED", "WARN"), ("COMPLETED", "PASS")], (0, 0), ("COMPLETED", "WARN")),
        ([("COMPLETED", "CHECK"), ("COMPLETED", "WARN")], (0, 0), ("COMPLETED", "CHECK")),
        ([("COMPLETED", "SKIP")], (0, 0), ("COMPLETED", "SKIP")),
        ([("COMPLETED", "WAIVED")], (0, 0), ("COMPLETED", "WAIVED")),
        ([("COMPLETED", "WEIRD")], (0, 0), ("COMPLETED", "ABORT")),
        ([("INCOMPLETE", "PASS")], (0, 0), ("UNKNOWN", "FAIL")),  # item state INCOMPLETE → FAIL
        ([("BLOCKED", "n/a")], (0, 0), ("UNKNOWN", "FAIL")),
        ([("DELETED", "ABORT"), ("COMPLETED", "PASS")], (0, 0), ("COMPLETED", "PASS")),  # deleted items ignored
        ([("KILLED", "FAIL")], (0, 0), ("UNKNOWN", "UNKNOWN")),  # no rule claims a KILLED/FAIL item
        ([], (1, 0), ("COMPLETED", "PASS")),  # no items: the toplevel's counts decide
        ([], (0, 0), ("COMPLETED", "UNKNOWN")),
    ],
)
def test_legacy_pf_rollup(items, counts, expected):
    assert legacy_pf_rollup(items, *counts) == expected


def row(state, event_time, run_duration=0, uname="host1", item_path="x", **kw):
    return {
        "id": 1,
        "state": state,
        "event_time": event_time,
        "run_duration": run_duration,
        "uname": uname,
        "item_path": item_path,
        **kw,
    }


def test_dead_job_rules():
    now = 100_000
    assert why_dead(row("RUNNING", now - 100), now, 60, 60) is not None
    assert why_dead(row("RUNNING", now - 100, run_duration=50), now, 60, 60) is None  # reported progress
    assert why_dead(row("RUNNING", now - 60), now, 60, 60) is None  # not past the deadtime
    assert why_dead(row("REMOTEHOSTSTART", now - 100), now, 1000, 60) is not None
    assert why_dead(row("LAUNCHED", now - 86401), now, 60, 60) is not None
    assert why_dead(row("LAUNCHED", now - 86000), now, 60, 60) is None
    assert why_dead(row("COMPLETED", 0), now, 60, 60) is None
    found = classify(
        [row("RUNNING", 0), row("LAUNCHED", 0), row("RUNNING", 0, uname="n/a", item_path=""), row("RUNNING", now)],
        now,
        60,
        60,
    )
    assert [len(found[k]) for k in ("incompletes", "old_launched", "toplevels")] == [1, 1, 1]
    assert "no progress for" in found["incompletes"][0]["reason"]
