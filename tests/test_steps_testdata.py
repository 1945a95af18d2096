"""Steps and test data: the C.4 parsing and pass/fail rules, the handlers, and the CLI paths (incl. chunking)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import dbtool_argv, execute, query, run_in_pty, wait_for
from dbtool.cli import drivers
from dbtool.core.errors import NotFound, Refused
from dbtool.core.rules import testdata
from dbtool.core.rules.numbers import number_out_of_range, parse_number
from dbtool.core.rules.testdata import (
    NumberOutOfRange,
    cell,
    data_rows,
    judge,
    latest_per_key,
    locate_out_of_range,
    read_records,
    record_ends,
    rollup_status,
)
from hypothesis import given, settings
from hypothesis import strategies as st

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)

# -- rules: parsing ----------------------------------------------------------------------------------


def test_fields_are_stripped_padded_and_truncated():
    records = read_records(" cat , var , 1 \nc,v,1,2,3,u,comment,PASS,type,extra,more\n")
    assert records == [
        ["cat", "var", "1", "", "", "", "", "", ""],
        ["c", "v", "1", "2", "3", "u", "comment", "PASS", "type"],
    ]


def test_quoted_fields_may_hold_commas_quotes_and_newlines():
    text = 'c,"v, with comma", 1 ,2,0,u,"a ""quoted""\ncomment"\nc,w,3\n'
    assert read_records(text) == [
        ["c", "v, with comma", "1", "2", "0", "u", 'a "quoted"\ncomment', "", ""],
        ["c", "w", "3", "", "", "", "", "", ""],
    ]


def test_blank_lines_and_lines_of_empty_fields_are_skipped():
    assert read_records("\n  \n,,,\r\nc,v\r\n\n") == [["c", "v", "", "", "", "", "", "", ""]]
    assert read_records("") == []


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("c,v\nc,,1\n", 2, "no variable name"),
        ("c,v\ncategory-only\n", 2, "no variable name"),
        ('c,"multi\nline",1\nc\n', 3, "no variable name"),
        ('c,v\nc,"unterminated\n', 2, "not valid CSV"),
        ('c,v\n\nc,"v"x,1\n', 3, "not valid CSV"),
    ],
)
def test_a_bad_line_is_named_by_its_number(text, line, why):
    with pytest.raises(ValueError, match=rf"^line {line}: {why}"):
        read_records(text)


# CSV texts made of the characters that matter to the parser (and a few that must not).
CSV_TEXT = st.text(alphabet=st.sampled_from('ab ,,,"\n\r\t\x00\u2028é'), max_size=60)


def _csv_module_records(text: str) -> list[list[str]] | str:
    """What the csv module reads (the reference for the split-at-commas path), or the error."""
    try:
        return [record for record, _, _ in testdata._csv_records(testdata._lines(text))]
    except ValueError as err:
        return str(err)


def _read(text: str) -> list[list[str]] | str:
    try:
        return read_records(text)
    except ValueError as err:
        return str(err)


@settings(max_examples=400, deadline=None)
@given(CSV_TEXT)
def test_plain_lines_are_read_as_the_csv_module_reads_them(text):
    assert _read(text) == _csv_module_records(text)
    assert _read(text.replace('"', "")) == _csv_module_records(text.replace('"', ""))


@settings(max_examples=400, deadline=None)
@given(CSV_TEXT, st.integers(min_value=1, max_value=4), st.integers(min_value=1, max_value=40))
def test_text_cut_at_record_ends_reads_as_the_same_records(text, rows, chars):
    expected = _read(text)
    try:
        lines, ends = record_ends(text)
    except ValueError as err:
        assert str(err) == expected  # the same first bad line as the server would name
        return
    assert len(ends) == len(expected)
    chunks = list(drivers._chunks(lines, ends, rows, chars)) if ends else []  # small limits: many cuts
    assert "".join(chunk for _, chunk in chunks) == (text if ends else "")
    assert sum(count for count, _ in chunks) == len(ends)
    assert [record for _, chunk in chunks for record in read_records(chunk)] == expected
    assert all(len(read_records(chunk)) == count for count, chunk in chunks)


# -- rules: numbers and pass/fail -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("5", 5),
        ("+5", 5),
        ("-0.5", -0.5),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("8mA", "8mA"),
        ("nan", "nan"),
        ("inf", "inf"),
        ("-Infinity", "-Infinity"),
        ("1_000", "1_000"),
        ("0x10", "0x10"),
        ("", None),
        ("123456789012345678901234", 1.2345678901234568e23),
    ],
)
def test_cells_are_numbers_when_they_spell_one(text, stored):
    value = cell(text)
    assert value == stored and type(value) is type(stored)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789+-.eE_x٣ "), min_size=1, max_size=8))
def test_cells_follow_parse_number(text):
    text = text.strip()
    number = parse_number(text)
    if number_out_of_range(text):
        with pytest.raises(NumberOutOfRange):
            cell(text)
    elif number is None:
        assert cell(text) == (text or None)
    elif isinstance(number, int) and not -(2**63) <= number < 2**63:
        assert cell(text) == float(number) and type(cell(text)) is float
    else:
        assert cell(text) == number and type(cell(text)) is type(number)


def test_judge_treats_an_empty_tol_as_no_tol():
    assert judge(5, 5, "") == judge(5, 5, None) == "pass"
    assert judge(5, 6, "") == "fail"


def _judge(value: str, expected: str, tol: str) -> str | None:
    return judge(cell(value), cell(expected), cell(tol))


@pytest.mark.parametrize(
    ("value", "expected", "tol", "status"),
    [
        # tol numeric: expected-tol <= value <= expected+tol, bounds included
        ("5", "5", "1", "pass"),
        ("6", "5", "1", "pass"),
        ("4", "5", "1", "pass"),
        ("6.01", "5", "1", "fail"),
        ("3.99", "5", "1", "fail"),
        ("1.0", "1.1", "0.1", "pass"),  # the decimals as written, not binary floats
        ("1.2", "1.1", "0.1", "pass"),
        ("1.2000001", "1.1", "0.1", "fail"),
        ("1e3", "1000", "0", "pass"),
        ("5", "5", "-1", "fail"),
        # comparators: value OP expected
        ("3", "2", ">", "pass"),
        ("2", "2", ">", "fail"),
        ("2", "2", ">=", "pass"),
        ("1", "2", ">=", "fail"),
        ("1", "2", "<", "pass"),
        ("2", "2", "<", "fail"),
        ("2", "2", "<=", "pass"),
        ("3", "2", "<=", "fail"),
        # another string in tol
        ("3", "2", "~", "ERROR: bad tol comparator ~"),
        ("3", "2", "5%", "ERROR: bad tol comparator 5%"),
        ("3", "2", "=>", "ERROR: bad tol comparator =>"),
        # no tol: equality (SPEC 9.7)
        ("5", "5", "", "pass"),
        ("1e3", "1000", "", "pass"),
        ("5", "5.5", "", "fail"),
        # value or expected not a number: nothing to judge
        ("8mA", "8", "0", None),
        ("nan", "nan", "", None),
        ("inf", "1", "1", None),
        ("5", "pass", "", None),
        ("5", "", "1", None),
        ("", "5", "1", None),
    ],
)
def test_pass_fail_rules(value, expected, tol, status):
    assert _judge(value, expected, tol) == status


def test_last_line_of_a_key_wins_in_order_of_last_occurrence():
    rows = [
        ("c", "a", 1),
        ("c", "b", 2),
        ("d", "a", 3),
        ("c", "a", 4),
    ]
    assert [r[2] for r in latest_per_key(rows)] == [2, 3, 4]


@pytest.mark.parametrize(
    ("current", "passed", "failed", "status"),
    [
        ("COMPLETED", 0, 1, "FAIL"),
        ("WARN", 5, 1, "FAIL"),
        ("n/a", 2, 0, "PASS"),
        ("AUTO", 1, 0, "PASS"),
        ("WARN", 2, 0, "WARN"),
        ("FAIL", 2, 0, "FAIL"),
        ("AUTO", 0, 0, "AUTO"),
        (None, 0, 0, None),
    ],
)
def test_rollup_status(current, passed, failed, status):
    assert rollup_status(current, passed, failed) == status


# -- handlers: test data -----------------------------------------------------------------------------------


def _test(hdb, testname: str = "t") -> int:
    run_id = hdb("register-run", target="v1/linux", runname="n")
    return hdb("register-test", run_id=run_id, testname=testname)


def _data(hdb, test_id: int, **kw) -> dict:
    """The test's data rows by variable (deleted ones too)."""
    return {r["variable"]: r for r in hdb("read-test-data", test_id=test_id, include_deleted=True, **kw)}


def _run_with_db(hdb, fn, *args):
    """Run a handler-family helper (not a command) in one committed transaction, as a command would."""
    from dbtool.core.db.context import Db
    from dbtool.core.request import RequestContext, activate

    ctx = RequestContext("test", "delete-test-records", {}, hdb.client)
    with activate(ctx), hdb.engine.connect() as conn, conn.begin():
        db = Db(conn, hdb.schema, ctx, hdb.config)
        result = fn(db, *args)
    hdb.keep_events(db.events)
    return result


def test_csv_rows_are_stored_with_numbers_text_and_status(hdb):
    t = _test(hdb)
    hdb(
        "csv-to-test-data",
        test_id=t,
        csv="volt,v1,5,5,1,V,ok\n"
        "volt,v2,8mA,8,0,mA\n"
        "volt,v3,3,2,>\n"
        "volt,v4,3,2,~\n"
        "volt,v5,1e3,1000\n"
        "volt,v6,7,5,1,,,WAIVED,meas\n"
        "volt,v7,7,5,1,,,n/a\n"
        "volt,v8,7,5,1,,,   \n"
        "volt,v9,nan,nan\n"
        "volt,v10,4,,1,V\n",
    )
    rows = _data(hdb, t)
    assert rows["v1"] | {"id": 0} == {
        "id": 0,
        "test_id": t,
        "category": "volt",
        "variable": "v1",
        "value": 5.0,
        "expected": 5.0,
        "tol": 1.0,
        "units": "V",
        "comment": "ok",
        "status": "pass",
        "type": "",
    }
    assert (rows["v2"]["value"], rows["v2"]["status"]) == ("8mA", None)
    assert (rows["v3"]["tol"], rows["v3"]["status"]) == (">", "pass")
    assert rows["v4"]["status"] == "ERROR: bad tol comparator ~"
    assert (rows["v5"]["value"], rows["v5"]["tol"], rows["v5"]["units"], rows["v5"]["status"]) == (
        1000.0,
        "",
        "",
        "pass",
    )  # blank tol and units are stored as "" (reference F.4 case 37)
    assert (rows["v6"]["status"], rows["v6"]["type"]) == ("WAIVED", "meas")  # a given status wins
    assert rows["v7"]["status"] == rows["v8"]["status"] == "fail"  # n/a and blank: not given
    assert (rows["v9"]["value"], rows["v9"]["status"]) == ("nan", None)
    # no expected: nothing judged; tol and units are kept as given
    assert (rows["v10"]["expected"], rows["v10"]["tol"], rows["v10"]["units"], rows["v10"]["status"]) == (
        None,
        1.0,
        "V",
        None,
    )
    if hdb.backend == "sqlite":  # (stored with REAL affinity: a number is kept as one)
        typeof = dict(hdb.sql("select variable, typeof(value) from test_data"))
        assert (typeof["v1"], typeof["v2"], typeof["v9"]) == ("real", "text", "text")


def test_f4_case_37_blank_tol_and_units_are_empty_strings(hdb):
    t = _test(hdb)
    hdb("csv-to-test-data", test_id=t, csv='faz,bar,10,8mA,,,"this is a comment"')
    row = _data(hdb, t)["bar"]
    assert (row["value"], row["expected"], row["tol"], row["units"], row["comment"], row["status"]) == (
        10,
        "8mA",
        "",
        "",
        "this is a comment",
        None,
    )
    if hdb.backend == "sqlite":
        assert hdb.sql("select typeof(tol), typeof(units) from test_data") == [("text", "text")]
    else:
        assert hdb.sql("select tol, units from test_data") == [("", "")]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("a,b,1e999,1,0", "line 1: value 1e999 is out of range for a number"),
        ("a,b,1,-1e999,0", "line 1: expected -1e999 is out of range for a number"),
        ('a,b,1,1,"1e400"', "line 1: tol 1e400 is out of range for a number"),
        (f"a,ok,1,1,0\na,b,{'9' * 400},1,0", "line 2: value 9999"),
        ('a,"multi\nline",1,1,0\na,b,1E+999', "line 3: value 1E+999"),
    ],
)
def test_numbers_that_overflow_refuse_the_whole_input(hdb, line, message):
    t = _test(hdb)
    with pytest.raises(NumberOutOfRange):
        data_rows(read_records(line))
    assert str(locate_out_of_range(line)).startswith(message)
    with pytest.raises(ValueError, match=re.escape(message)):
        record_ends(line)  # the client's check of a whole file, before it sends anything
    with pytest.raises(Refused, match=re.escape(message)):
        hdb("csv-to-test-data", test_id=t, csv=line)
    assert hdb.sql("select count(*) from test_data") == [(0,)]


def test_in_range_numbers_with_long_exponents_are_stored(hdb):
    t = _test(hdb)
    hdb("csv-to-test-data", test_id=t, csv="a,b,1e308,1e-400,0\na,c,1e99,1e99,0,e999,see e999")
    rows = _data(hdb, t)
    assert (rows["b"]["value"], rows["b"]["expected"]) == (1e308, 0.0)
    assert (rows["c"]["units"], rows["c"]["status"]) == ("e999", "pass")


def test_a_field_over_the_size_limit_says_so_without_quoting_advice():
    import csv as csv_module

    limit = csv_module.field_size_limit()
    with pytest.raises(ValueError) as err:
        read_records('a,"' + "x" * (limit + 1) + '",1')
    assert str(err.value) == (
        f"line 1: a field is longer than the limit of {limit} characters (128 KiB); store big texts elsewhere"
    )


def test_same_category_and_variable_is_replaced_with_a_new_id(hdb):
    t = _test(hdb)
    hdb("csv-to-test-data", test_id=t, csv="c,a,1,1,0\nc,b,2,2,0\nd,a,3,3,0\n")
    before = _data(hdb, t, category="c")
    hdb("csv-to-test-data", test_id=t, csv="c,a,9,1,0\nc,a,7,7,0\n")  # the last line of a key wins
    after = _data(hdb, t, category="c")
    assert (after["a"]["value"], after["a"]["status"]) == (7.0, "pass")
    assert after["a"]["id"] > max(r["id"] for r in before.values())
    assert after["b"] == before["b"]
    with pytest.raises(NotFound):
        hdb("get-data-info-by-id", data_id=before["a"]["id"])
    assert len(hdb("read-test-data", test_id=t)) == 3  # d/a is another key
    event = hdb.events[-1]
    assert (event["cmd"], event["test_id"], event["data"]) == ("csv-to-test-data", t, {"rows": 1, "replaced": 1})
    hdb("csv-to-test-data", test_id=t, csv="c,b,5\nc,new,1\nd,a,2\n")  # two keys it has, one new
    assert hdb.events[-1]["data"] == {"rows": 3, "replaced": 2}
    assert len(hdb("read-test-data", test_id=t)) == 4


def test_a_bad_line_refuses_the_whole_request(hdb):
    t = _test(hdb)
    hdb("csv-to-test-data", test_id=t, csv="c,keep,1\n")
    events = len(hdb.events)
    for csv in ("c,new,1\nc,,2\n", 'c,new,1\nc,"open\n', 'c,new,1\nc,x,"a"b\n'):
        with pytest.raises(Refused, match=r"line 2: .*nothing was stored"):
            hdb("csv-to-test-data", test_id=t, csv=csv)
    assert list(_data(hdb, t)) == ["keep"]
    assert len(hdb.events) == events


def test_test_data_writes_refuse_unknown_tests_and_missing_csv(hdb):
    t = _test(hdb)
    with pytest.raises(Refused, match="no test with id 99"):
        hdb("csv-to-test-data", test_id=99, csv="c,v,1\n")
    with pytest.raises(Refused, match="needs the CSV text"):
        hdb("csv-to-test-data", test_id=t)
    with pytest.raises(Refused, match="no test with id 99"):
        hdb("test-data-rollup", test_id=99)
    assert hdb.sql("select count(*) from test_data") == [(0,)]
    hdb("csv-to-test-data", test_id=t, csv="\n")  # nothing to store is fine
    assert hdb.sql("select count(*) from test_data") == [(0,)]


def test_read_test_data_patterns_order_and_deleted_rows(hdb):
    t = _test(hdb)
    other = hdb("register-test", run_id=1, testname="other")
    hdb("csv-to-test-data", test_id=t, csv="Zeta,b,1\nalpha,z,1\nalpha,a,1\nbeta,a,1\n")
    hdb("csv-to-test-data", test_id=other, csv="alpha,a,1\n")
    rows = hdb("read-test-data", test_id=t)
    assert [(r["category"], r["variable"]) for r in rows] == [
        ("Zeta", "b"),
        ("alpha", "a"),
        ("alpha", "z"),
        ("beta", "a"),
    ]
    assert [r["category"] for r in hdb("read-test-data", test_id=t, category="ALPHA")] == ["alpha", "alpha"]
    assert [r["category"] for r in hdb("read-test-data", test_id=t, category="%eta")] == ["Zeta", "beta"]
    assert [
        (r["category"], r["variable"]) for r in hdb("read-test-data-varpatt", test_id=t, category="%", variable="a")
    ] == [("alpha", "a"), ("beta", "a")]
    assert _run_with_db(hdb, _soft_delete_data, t) == 4
    assert hdb("read-test-data", test_id=t) == []
    deleted = hdb("read-test-data", test_id=t, include_deleted=True)
    assert [r["status"] for r in deleted] == ["DELETED"] * 4
    assert hdb("get-data-info-by-id", data_id=deleted[0]["id"])["status"] == "DELETED"
    assert len(hdb("read-test-data", test_id=other)) == 1
    assert _run_with_db(hdb, _soft_delete_data, t) == 0  # already deleted: nothing changes
    assert [e["data"] for e in hdb.events if e["cmd"] == "delete-test-data-records"] == [{"rows": 4}]


def _soft_delete_data(db, test_id):
    from dbtool.core.handlers.testdata import soft_delete_data

    return soft_delete_data(db, test_id)


def _soft_delete_steps(db, test_id):
    from dbtool.core.handlers.steps import soft_delete_steps

    return soft_delete_steps(db, test_id)


def test_get_data_info_by_id(hdb):
    t = _test(hdb)
    hdb("csv-to-test-data", test_id=t, csv="c,v,1,1,0\n")
    (data_id,) = hdb.sql("select id from test_data")[0]
    assert hdb("get-data-info-by-id", data_id=data_id)["status"] == "pass"
    with pytest.raises(NotFound, match="no test-data row with id 999"):
        hdb("get-data-info-by-id", data_id=999)


def test_rollup_counts_pass_and_fail_and_sets_the_status(hdb):
    t = _test(hdb)
    hdb("csv-to-test-data", test_id=t, csv="c,a,1,1,0\nc,b,1,1,0,,,PASS\nc,c,1,1,0,,,WARN\nc,d,x,1,0\n")
    hdb("test-data-rollup", test_id=t)
    info = hdb("get-test-info-by-id", test_id=t)
    assert (info["status"], info["pass_count"], info["fail_count"]) == ("PASS", 2, 0)
    event = hdb.events[-1]
    assert (event["cmd"], event["run_id"], event["status"]) == ("test-data-rollup", 1, "PASS")
    events = len(hdb.events)
    hdb("test-data-rollup", test_id=t)  # nothing changed: no event
    assert len(hdb.events) == events
    hdb("csv-to-test-data", test_id=t, csv="c,e,2,1,0\n")
    hdb("test-data-rollup", test_id=t)
    info = hdb("get-test-info-by-id", test_id=t)
    assert (info["status"], info["pass_count"], info["fail_count"]) == ("FAIL", 2, 1)
    _run_with_db(hdb, _soft_delete_data, t)  # DELETED rows count for neither
    hdb("test-data-rollup", test_id=t)
    info = hdb("get-test-info-by-id", test_id=t)
    assert (info["status"], info["pass_count"], info["fail_count"]) == ("FAIL", 0, 0)


def test_rollup_keeps_warn_and_leaves_status_without_data(hdb):
    t = _test(hdb)
    hdb("test-set-state-status-by-id", test_id=t, state="COMPLETED", status="WARN")
    hdb("csv-to-test-data", test_id=t, csv="c,a,1,1,0\n")
    hdb("test-data-rollup", test_id=t, run_id=1)  # the test's run: accepted
    assert hdb("get-test-info-by-id", test_id=t)["status"] == "WARN"
    u = hdb("register-test", run_id=1, testname="u")
    hdb("test-data-rollup", test_id=u)
    assert hdb("get-test-info-by-id", test_id=u)["status"] == "n/a"


# -- handlers: steps ---------------------------------------------------------------------------------------


def _step(hdb, test_id: int, stepname: str, state: str, **kw) -> None:
    hdb("teststep-set-status", test_id=test_id, stepname=stepname, state=state, **kw)


def test_steps_have_start_and_end_rows(hdb):
    t = _test(hdb)
    _step(hdb, t, "compile", "start", status="-")
    _step(hdb, t, "compile", "end", status="0", comment="built", logfile="compile.log")
    _step(hdb, t, "link", "start")
    steps = hdb("get-steps-for-test", test_id=t)
    assert [(s["stepname"], s["state"], s["status"], s["logfile"], s["comment"]) for s in steps] == [
        ("compile", "start", "-", "", ""),
        ("compile", "end", "0", "compile.log", "built"),
        ("link", "start", "n/a", "", ""),
    ]
    assert set(steps[0]) == {"id", "test_id", "stepname", "state", "status", "event_time", "logfile", "comment"}
    assert steps[0]["test_id"] == t and steps[0]["event_time"] > 1_600_000_000
    data = hdb("get-steps-data", test_id=t, run_id=777)  # the run id is ignored
    assert [s | {"comment": None} for s in steps] == [d | {"comment": None} for d in data]
    assert "comment" not in data[0]
    event = hdb.events[-1]
    assert (event["cmd"], event["run_id"], event["test_id"], event["state"], event["status"]) == (
        "teststep-set-status",
        1,
        t,
        None,
        None,
    )
    assert event["data"] == {"step_id": steps[2]["id"], "stepname": "link", "step_state": "start", "step_status": "n/a"}


def test_resending_a_state_replaces_its_row(hdb):
    t = _test(hdb)
    _step(hdb, t, "s", "start")
    _step(hdb, t, "s", "end", status="1")
    first_start = hdb("get-steps-for-test", test_id=t)[0]
    hdb.sql("update test_steps set event_time = 5 where id = ?", first_start["id"])
    _step(hdb, t, "s", "start", status="-", comment="again")
    steps = hdb("get-steps-for-test", test_id=t)
    assert [(s["state"], s["status"], s["comment"]) for s in steps] == [("end", "1", ""), ("start", "-", "again")]
    assert steps[1]["id"] > first_start["id"] and steps[1]["event_time"] > 5
    with pytest.raises(NotFound, match=f"no step with id {first_start['id']}"):
        hdb("get-steps-info-by-id", step_id=first_start["id"])


def test_deleted_steps_are_hidden_but_found_by_id(hdb):
    t = _test(hdb)
    other = hdb("register-test", run_id=1, testname="other")
    _step(hdb, t, "s", "start")
    _step(hdb, t, "s", "end")
    _step(hdb, other, "s", "start")
    hdb("delete-steps-for-test", test_id=t)
    assert hdb("get-steps-for-test", test_id=t) == []
    assert hdb("get-steps-data", test_id=t) == []
    deleted = hdb("get-steps-for-test", test_id=t, include_deleted=True)
    assert [s["status"] for s in deleted] == ["DELETED", "DELETED"]
    assert hdb("get-steps-info-by-id", step_id=deleted[0]["id"])["status"] == "DELETED"
    assert len(hdb("get-steps-for-test", test_id=other)) == 1
    event = hdb.events[-1]
    assert (event["cmd"], event["test_id"], event["data"]) == ("delete-steps-for-test", t, {"steps": 2})
    assert _run_with_db(hdb, _soft_delete_steps, t) == 0
    _step(hdb, t, "s", "end", status="0")  # a deleted (step, state) can be recorded again
    assert [(s["state"], s["status"]) for s in hdb("get-steps-for-test", test_id=t)] == [("end", "0")]
    assert _run_with_db(hdb, _soft_delete_steps, t) == 1


def test_null_logfile_and_comment_read_as_empty(hdb):
    t = _test(hdb)
    hdb.sql(
        "insert into test_steps (test_id, stepname, state, logfile, comment) values (?, 's', 'start', NULL, NULL)", t
    )
    (step,) = hdb("get-steps-for-test", test_id=t)
    assert (step["logfile"], step["comment"], step["status"]) == ("", "", "n/a")


def test_step_writes_refuse_unknown_tests_and_empty_names(hdb):
    t = _test(hdb)
    with pytest.raises(Refused, match="no test with id 99"):
        _step(hdb, 99, "s", "start")
    with pytest.raises(Refused, match="no test with id 99"):
        hdb("delete-steps-for-test", test_id=99)
    with pytest.raises(Refused, match="--stepname must not be empty"):
        _step(hdb, t, "", "start")
    with pytest.raises(Refused, match="--state must not be empty"):
        _step(hdb, t, "s", "")
    assert hdb.sql("select count(*) from test_steps") == [(0,)]
    with pytest.raises(NotFound):
        hdb("get-steps-info-by-id", step_id=1)


# -- CLI ---------------------------------------------------------------------------------------------------


def _setup(area) -> tuple[str, str]:
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "nightly").out.strip()
    test_id = area.ok("register-test", "--run-id", run_id, "--testname", "unit").out.strip()
    return run_id, test_id


def _rows(area) -> list[tuple]:
    """The stored rows, values as numbers where they are (PostgreSQL keeps them as text, and
    dbtool reads them back as numbers; SQLite keeps numbers in a REAL-affinity column)."""
    rows = query(area, "select test_id, category, variable, value, status from test_data order by id")
    return [(t, c, v, parse_number(x) if isinstance(x, str) and parse_number(x) is not None else x, s)
            for t, c, v, x, s in rows]  # fmt: skip


def _csv_events(area) -> int:
    return query(area, "select count(*) from events where cmd = 'csv-to-test-data'")[0][0]


def test_cli_steps_exact_forms(area):
    run_id, test_id = _setup(area)
    ids = ("--run-id", run_id, "--test-id", test_id)
    out = area.ok("teststep-set-status", *ids, "--stepname", "build", "--state", "start", "--status", "-").out
    assert out == ""
    area.ok(
        "teststep-set-status",
        *ids,
        "--stepname",
        "build",
        "--state",
        "end",
        "--status",
        "0",
        "--comment",
        "done",
        "--logfile",
        "build.log",
    )
    steps = area.ok("get-steps-for-test", *ids, "--json").json
    assert [(s["stepname"], s["state"], s["status"], s["logfile"], s["comment"]) for s in steps] == [
        ("build", "start", "-", "", ""),
        ("build", "end", "0", "build.log", "done"),
    ]
    table = area.ok("get-steps-for-test", *ids).out
    assert "build.log" in table and "stepname" in table.splitlines()[0]
    assert area.ok("get-steps-info-by-id", "--step-id", str(steps[1]["id"]), "--json").json["logfile"] == "build.log"
    missing = area.run("get-steps-info-by-id", "--step-id", "999")
    assert missing.code == 1 and "no step with id 999" in missing.err
    unknown = area.run(
        "teststep-set-status", "--run-id", run_id, "--test-id", "999", "--stepname", "s", "--state", "start"
    )
    assert unknown.code == 4 and "no test with id 999" in unknown.err
    area.ok("delete-steps-for-test", *ids)
    assert area.ok("get-steps-for-test", *ids, "--json").json == []


def test_cli_test_data_exact_forms(area):
    run_id, test_id = _setup(area)
    ids = ("--run-id", run_id, "--test-id", test_id)
    assert area.ok("csv-to-test-data", *ids, "--csv", "perf,speed,10,12,3,ops\nperf,mem,8mA,8,0").out == ""
    rows = area.ok("read-test-data", *ids, "--category", "PERF", "--json").json
    assert [(r["variable"], r["value"], r["status"]) for r in rows] == [("mem", "8mA", None), ("speed", 10.0, "pass")]
    area.ok("csv-to-test-data", *ids, "--csv", "size,bytes,200,100,>=")
    assert area.ok("test-data-rollup", *ids).out == ""
    info = area.ok("get-test-info-by-id", "--test-id", test_id, "--json").json
    assert (info["status"], info["pass_count"], info["fail_count"]) == ("PASS", 2, 0)
    assert area.ok("read-test-data-varpatt", *ids, "--variable", "s%", "--json").json[0]["variable"] == "speed"
    data_id = str(rows[1]["id"])
    assert area.ok("get-data-info-by-id", "--data-id", data_id, "--json").json["variable"] == "speed"
    missing = area.run("get-data-info-by-id", "--data-id", "999")
    assert missing.code == 1 and "no test-data row with id 999" in missing.err


def test_cli_csv_from_file_and_stdin(area, tmp_path):
    run_id, test_id = _setup(area)
    path = tmp_path / "data.csv"
    path.write_bytes("\ufeffc,from_file,1,1,0\r\n".encode())  # a spreadsheet export: BOM and CRLF
    area.ok("csv-to-test-data", "--run-id", run_id, "--test-id", test_id, "--file", str(path))
    area.ok("csv-to-test-data", "--test-id", test_id, "--file", "-", input="c,from_stdin,2,1,0\n")
    assert _rows(area) == [(1, "c", "from_file", 1.0, "pass"), (1, "c", "from_stdin", 2.0, "fail")]


def test_cli_usage_errors(area, tmp_path):
    _, test_id = _setup(area)
    neither = area.run("csv-to-test-data", "--test-id", test_id)
    assert neither.code == 2 and "exactly one of --csv TEXT, --file F or --file -" in neither.err
    both = area.run("csv-to-test-data", "--test-id", test_id, "--csv", "c,v", "--file", "-")
    assert both.code == 2 and "not both" in both.err
    absent = area.run("csv-to-test-data", "--test-id", test_id, "--file", str(tmp_path / "nope.csv"))
    assert absent.code == 2 and "cannot read --file" in absent.err
    binary = tmp_path / "latin1.csv"
    binary.write_bytes(b"c,v\xe9,1\n")
    assert area.run("csv-to-test-data", "--test-id", test_id, "--file", str(binary)).code == 2
    assert _rows(area) == []


def _big_csv(rows: int, bad_line: int | None = None) -> str:
    lines = [f"cat{i % 7},var{i},{i % 13},6,5,ms,row {i}" for i in range(rows)]
    if bad_line is not None:
        lines[bad_line - 1] = "cat,,1"
    return "\n".join(lines) + "\n"


def test_cli_large_file_arrives_in_parts_and_is_stored_whole(area, tmp_path):
    run_id, test_id = _setup(area)
    path = tmp_path / "big.csv"
    path.write_text(_big_csv(120_000))
    result = area.ok("--trace", "csv-to-test-data", "--run-id", run_id, "--test-id", test_id, "--file", str(path))
    assert result.out == "" and "/120000 rows" not in result.err  # no progress bar when not on a terminal
    assert result.err.count("test-data-upload-part") >= 3  # the trace of each part
    rows = _rows(area)
    assert len(rows) == 120_000
    assert rows[0] == (1, "cat0", "var0", 0.0, "fail") and rows[-1] == (1, "cat5", "var119999", 9.0, "pass")
    assert _csv_events(area) == 1  # one event: when the whole upload became visible
    assert _count(area, "select count(*) from test_data_staged") == 0  # the staging is gone
    # sending it again replaces every row
    area.ok("csv-to-test-data", "--test-id", test_id, "--file", str(path))
    assert len(_rows(area)) == 120_000 and _csv_events(area) == 2


def test_cli_bad_line_anywhere_refuses_everything(area, tmp_path):
    run_id, test_id = _setup(area)
    path = tmp_path / "bad.csv"
    path.write_text(_big_csv(20_000, bad_line=17_001))
    bad = area.run("csv-to-test-data", "--run-id", run_id, "--test-id", test_id, "--file", str(path))
    assert bad.code == 4
    assert f"bad CSV in {path}: line 17001: no variable name" in bad.err and "nothing was stored" in bad.err
    stdin = area.run("csv-to-test-data", "--test-id", test_id, "--file", "-", input='c,v,1\nc,"open\n')
    assert stdin.code == 4 and "line 2: not valid CSV" in stdin.err
    inline = area.run("csv-to-test-data", "--test-id", test_id, "--csv", "c,v,1\n,,x")
    assert inline.code == 4 and "line 2" in inline.err
    assert _rows(area) == [] and _csv_events(area) == 0


def test_cli_unknown_test_changes_nothing(area, tmp_path):
    run_id, _ = _setup(area)
    path = tmp_path / "big.csv"
    path.write_text(_big_csv(12_000))
    for source in (("--csv", "c,v,1"), ("--file", str(path)), ("--csv", "")):
        unknown = area.run("csv-to-test-data", "--run-id", run_id, "--test-id", "999", *source)
        assert unknown.code == 4 and "no test with id 999" in unknown.err
    rollup = area.run("test-data-rollup", "--run-id", run_id, "--test-id", "999")
    assert rollup.code == 4
    assert _rows(area) == [] and _csv_events(area) == 0


def test_server_validates_what_a_protocol_client_sends(area):
    from dbtool.core.link import Connection

    _, test_id = _setup(area)
    with Connection(area.server_info) as conn:
        bad = conn.request("csv->test-data", {"test_id": int(test_id), "csv": 'c,good,1\nc,"x"y,2\n'})
        assert bad["ok"] is False and bad["error"]["code"] == "refused"
        assert "line 2: not valid CSV" in bad["error"]["message"]
        good = conn.request("csv-to-test-data", {"test_id": int(test_id), "csv": "c,good,1\n"})
        assert good["ok"] is True and good["result"] is None
    assert _rows(area) == [(1, "c", "good", 1.0, None)]


def test_progress_bar_only_on_a_terminal(area, tmp_path):
    _, test_id = _setup(area)
    path = tmp_path / "big.csv"
    path.write_text(_big_csv(12_000))
    code, err = run_in_pty(
        dbtool_argv("--area", str(area.root), "csv-to-test-data", "--test-id", test_id, "--file", str(path))
    )
    assert code == 0, err
    assert "csv-to-test-data [" in err and "12000/12000 rows" in err
    assert len(_rows(area)) == 12_000


CLIENT_PROBE = r"""
import json, sys
from dbtool.cli.main import main
code = main(json.loads(sys.argv[1]))
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"sqlmodel", "sqlalchemy", "pydantic", "typer"})
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_csv_driver_stays_on_the_light_client_path(area, tmp_path):
    _, test_id = _setup(area)
    path = tmp_path / "data.csv"
    path.write_text("c,v,1,1,0\n")
    argv = ["--area", str(area.root), "csv-to-test-data", "--test-id", test_id, "--file", str(path)]
    proc = subprocess.run([sys.executable, "-c", CLIENT_PROBE, json.dumps(argv)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"code": 0, "heavy": []}
    assert _rows(area) == [(1, "c", "v", 1.0, "pass")]


# -- an upload in parts is all or nothing (F10) -------------------------------------------------------


def _count(area, sql: str, *args) -> int | None:
    """One number from the database (None when the table does not exist)."""
    return query(area, sql, *args)[0][0]


def _visible(area, test_id: str) -> int:
    return _count(area, "select count(*) from test_data where test_id = ?", int(test_id))


def _received(area, test_id: str) -> int:
    """Rows of the test's upload the server has taken so far (staged, or already visible)."""
    staged = _count(area, "select count(*) from test_data_staged") or 0
    return staged + _visible(area, test_id)


def _reap(proc) -> int:
    code = proc.wait(timeout=120)
    proc.stdout.close()
    proc.stderr.close()
    return code


@pytest.mark.parametrize(("rows", "after"), [(100_000, 0), (100_000, 1), (250_000, 150_000)])
def test_a_client_killed_mid_upload_leaves_all_of_the_file_or_none(area, tmp_path, rows, after):
    """Killed before anything arrived, after its first part, after three of its five parts."""
    run_id, test_id = _setup(area)
    path = tmp_path / "big.csv"
    path.write_text(_big_csv(rows))
    client = area.popen("csv-to-test-data", "--run-id", run_id, "--test-id", test_id, "--file", str(path))
    try:
        assert wait_for(lambda: _received(area, test_id) >= after or client.poll() is not None, 120)
    finally:
        client.kill()  # kill -9, as a batch system that ends the job step
        _reap(client)
    assert _visible(area, test_id) in (0, rows)  # never a prefix
    area.ok("csv-to-test-data", "--test-id", test_id, "--file", str(path))  # sending it again completes it
    assert _visible(area, test_id) == rows


def test_a_server_killed_mid_upload_still_ends_with_every_row(area, tmp_path):
    run_id, test_id = _setup(area)
    path = tmp_path / "big.csv"
    path.write_text(_big_csv(250_000))  # five parts: after the first, more are to come
    first = area.server_info["pid"]
    client = area.popen("csv-to-test-data", "--run-id", run_id, "--test-id", test_id, "--file", str(path))
    try:
        assert wait_for(lambda: (_count(area, "select count(*) from test_data_staged") or 0) > 0, 120)
        os.kill(first, signal.SIGKILL)
    finally:
        code = _reap(client)
    assert code == 0
    assert area.server_info["pid"] != first  # the client resumed on a new server
    assert _visible(area, test_id) == 250_000
    assert _count(area, "select count(*) from test_data_staged") == 0
    assert _count(area, "select count(*) from test_data_uploads") == 0


def _part(hdb, test_id: int, part: int, csv: str, final: bool = False, upload: str = "u1") -> object:
    return hdb("test-data-upload-part", test_id=test_id, upload=upload, part=part, csv=csv, final=final)


def test_upload_parts_stay_invisible_until_the_final_part_replaces_as_csv_to_test_data_does(hdb):
    t = _test(hdb)
    hdb("csv-to-test-data", test_id=t, csv="c,old,1,1,0\nc,kept,5\n")
    assert _part(hdb, t, 0, "c,a,1,1,0\nc,old,2,1,0\n") == {"upload": "u1", "parts": 1}
    assert _part(hdb, t, 1, "c,b,3\nc,a,9,1,0\n") == {"upload": "u1", "parts": 2}
    assert _part(hdb, t, 1, "c,b,3\nc,a,9,1,0\n") == {"upload": "u1", "parts": 2}  # resent: harmless
    assert set(_data(hdb, t)) == {"old", "kept"}  # staged rows are invisible
    hdb.events.clear()
    assert _part(hdb, t, 2, "c,z,0\n", final=True) is None
    data = {name: (row["value"], row["status"]) for name, row in _data(hdb, t).items()}
    assert data == {"kept": (5.0, None), "old": (2.0, "fail"), "a": (9.0, "fail"), "b": (3.0, None), "z": (0.0, None)}
    assert [(e["cmd"], e["data"]["rows"], e["data"]["parts"]) for e in hdb.events] == [("csv-to-test-data", 5, 3)]
    assert hdb.sql("select count(*) from test_data_staged") == [(0,)]
    assert hdb.sql("select count(*) from test_data_uploads") == [(0,)]
    with pytest.raises(NotFound, match="send the upload again from part 0"):
        _part(hdb, t, 1, "c,late,1\n")  # the upload is finished: its id is unknown now


def test_upload_parts_refuse_gaps_other_tests_and_bad_lines(hdb):
    t, other = _test(hdb), hdb("register-test", run_id=1, testname="other")
    with pytest.raises(Refused, match="no test with id 999"):
        _part(hdb, 999, 0, "c,v,1\n")
    _part(hdb, t, 0, "c,v,1\n")
    with pytest.raises(NotFound, match="has no part 1"):
        _part(hdb, t, 2, "c,w,1\n")  # part 1 never arrived
    with pytest.raises(Refused, match=f"is for test {t}, not {other}"):
        _part(hdb, other, 1, "c,w,1\n")
    with pytest.raises(Refused, match=r"bad CSV in part 1 of upload u1 .* line 2: no variable name"):
        _part(hdb, t, 1, "c,w,1\nc,,2\n")
    with pytest.raises(Refused, match="at most 64 characters"):
        _part(hdb, t, 0, "c,v,1\n", upload="x" * 65)
    assert _data(hdb, t) == {} and _data(hdb, other) == {}


def test_an_upload_without_a_part_for_a_day_is_pruned_when_another_begins(hdb):
    t = _test(hdb)
    _part(hdb, t, 0, "c,v,1\nc,w,2\n", upload="gone")
    hdb.sql("update test_data_uploads set touched = touched - 86401")
    _part(hdb, t, 0, "c,x,1\n", upload="fresh")
    assert hdb.sql("select upload from test_data_uploads") == [("fresh",)]
    assert hdb.sql("select count(*) from test_data_staged") == [(1,)]
    with pytest.raises(NotFound):
        _part(hdb, t, 1, "c,y,1\n", final=True, upload="gone")


def test_the_client_starts_over_once_when_the_server_lost_its_upload(area, tmp_path):
    run_id, test_id = _setup(area)
    path = tmp_path / "big.csv"
    path.write_text(_big_csv(250_000))  # five parts: after the first, more are to come
    client = area.popen("csv-to-test-data", "--run-id", run_id, "--test-id", test_id, "--file", str(path))
    try:
        assert wait_for(lambda: (_count(area, "select count(*) from test_data_staged") or 0) > 0, 120)
        client.send_signal(signal.SIGSTOP)
        # what the prune does to an upload without a part for a day, in one transaction as it does (a part
        # the client sent before it stopped is stored before or after it, never in between)
        execute(area, ("delete from test_data_staged", "delete from test_data_uploads"))
    finally:
        client.send_signal(signal.SIGCONT)
        code = _reap(client)
    assert code == 0
    assert _visible(area, test_id) == 250_000
    assert _count(area, "select count(*) from test_data_staged") == 0
    log = [json.loads(line) for line in (area.run_dir / "logs" / "requests.jsonl").read_text().splitlines()]
    lost = [e for e in log if e["cmd"] == "test-data-upload-part" and not e["ok"]]
    assert [e["error"]["code"] for e in lost] == ["not_found"]  # it started over, once
