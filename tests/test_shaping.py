"""Output that scripts shape (issue 18): --fields on any command that returns records, --format
ndjson, --no-header, a table cut to the terminal, JSON indented on a terminal and one line when
piped, --jq, and --check for yes/no queries — all through the real CLI against a real area."""

from __future__ import annotations

import csv
import io
import json
import os

import pytest
from conftest import dbtool_argv, run_in_pty
from dbtool.cli.output import cut, fit, render
from dbtool.core.protocol import Records


@pytest.fixture
def run_area(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "nightly")
    for name, comment in (("alpha", "short"), ("beta", "a long comment " * 12 + "end")):
        area.ok(
            "set-state-status-and-roll-up-items",
            *("--run-id", "1", "--testname", name, "--state", "RUNNING", "--status", "n/a", "--comment", comment),
        )
    return area


# -- --fields on any command returning records ------------------------------------------------------


def test_fields_on_a_command_without_its_own(run_area):
    """get-runs has no fields parameter: the client picks them, in the order asked, on every format."""
    out = run_area.ok("get-runs", "--fields", "runname,id").out
    assert out.splitlines() == ["runname  id", "nightly  1"]
    rows = list(csv.reader(io.StringIO(run_area.ok("--fields", "id,runname", "get-runs", "--format", "csv").out)))
    assert rows == [["id", "runname"], ["1", "nightly"]]
    records = json.loads(run_area.ok("get-runs", "--json", "--fields", "id").out)
    assert records == [{"id": 1}]


def test_fields_on_one_record_and_on_an_empty_list(run_area):
    record = json.loads(run_area.ok("get-run-info", "--run-id", "1", "--json", "--fields", "runname,id").out)
    assert list(record) == ["runname", "id"]
    empty = run_area.ok("get-runs", "--target", "nothing/%", "--format", "csv", "--fields", "id,runname")
    assert empty.out == "id,runname\n"


def test_unknown_field_or_a_result_without_records_is_a_usage_error(run_area):
    bad = run_area.run("get-runs", "--fields", "id,nope")
    assert bad.code == 2 and "'nope'" in bad.err and "runname" in bad.err and bad.out == ""
    run_area.ok("set-var", "x", "1")
    value = run_area.run("get-var", "x", "--fields", "id")
    assert value.code == 2 and "returns a single value" in value.err
    assert run_area.run("get-runs", "--fields", ",").code == 2


# -- formats --------------------------------------------------------------------------------------------


def test_ndjson_is_one_record_per_line(run_area):
    lines = run_area.ok("get-tests-for-run", "--run-id", "1", "--format", "ndjson").out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["testname"] for r in records] == ["alpha", "beta"]
    assert len(run_area.ok("get-run-info", "--run-id", "1", "--format", "ndjson").out.splitlines()) == 1


def test_no_header(run_area):
    table = run_area.ok("get-tests-for-run", "--run-id", "1", "--no-header", "--fields", "testname,state").out
    assert table.split() == ["alpha", "RUNNING", "beta", "RUNNING"]
    tsv = run_area.ok("--no-header", "get-runs", "--format", "tsv", "--fields", "id,runname").out
    assert tsv == "1\tnightly\n"
    refused = run_area.run("get-runs", "--json", "--no-header")
    assert refused.code == 2 and "--no-header" in refused.err


def test_piped_output_is_never_cut_and_json_is_one_line(run_area):
    out = run_area.ok("get-tests-for-run", "--run-id", "1", "--fields", "testname,comment").out
    assert "a long comment " * 12 + "end" in out and "…" not in out
    assert len(run_area.ok("get-run-info", "--run-id", "1", "--json").out.splitlines()) == 1


def test_on_a_terminal_a_table_fits_and_json_is_indented(run_area):
    env = {**os.environ, "COLUMNS": "60"}
    argv = dbtool_argv("--area", str(run_area.root), "get-tests-for-run", "--run-id", "1")
    code, text = run_in_pty([*argv, "--fields", "id,testname,state,comment"], env=env)
    lines = [line for line in text.replace("\r", "").splitlines() if line]
    assert code == 0 and len(lines) == 3, text
    assert all(len(line) <= 60 for line in lines), lines
    assert lines[2].endswith("…") and "beta" in lines[2]
    code, text = run_in_pty(dbtool_argv("--area", str(run_area.root), "get-run-info", "--run-id", "1", "--json"))
    assert code == 0 and text.replace("\r", "").startswith("{\n  "), text
    assert json.loads(text.replace("\r", ""))["runname"] == "nightly"


def test_fit_narrows_the_widest_columns_first():
    assert fit([4, 30, 10], 30) == [4, 12, 10]
    assert fit([4, 5], 80) == [4, 5]
    assert fit([40, 40, 40], 20) == [8, 8, 8]  # no narrower than MIN_CUT: the terminal wraps
    assert cut("abcdefghij", 5) == "abcd…" and cut("abc", 5) == "abc" and cut("abcdef", 0) == "abcdef"
    table = render(Records(("a", "b"), [("x" * 50, "y")]), "table", width=20)
    assert max(map(len, table.splitlines())) <= 20 and "…" in table


# -- --jq ---------------------------------------------------------------------------------------------


def test_jq_filters_the_json_result(run_area):
    assert run_area.ok("get-tests-for-run", "--run-id", "1", "--jq", ".[].testname").out == "alpha\nbeta\n"
    counts = run_area.ok(
        "--jq", "map(.state) | group_by(.) | map({(.[0]): length}) | add", "get-tests-for-run", "--run-id", "1"
    ).out
    assert json.loads(counts) == {"RUNNING": 2}
    assert run_area.ok("get-run-info", "--run-id", "1", "--jq", ".id").out == "1\n"


def test_jq_errors_are_usage_errors(run_area):
    bad = run_area.run("get-runs", "--jq", ".[")
    assert bad.code == 2 and bad.err.startswith("dbtool: error: --jq") and len(bad.err.splitlines()) == 1
    clash = run_area.run("get-runs", "--jq", ".", "--format", "csv")
    assert clash.code == 2 and "--jq" in clash.err


def test_jq_is_imported_only_when_used(run_area):
    import subprocess

    code = "import sys; from dbtool.cli.main import main; main(sys.argv[1:]) if 0 else None; print('jq' in sys.modules)"
    out = subprocess.run(dbtool_argv_code(code), capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    probe = (
        "import sys; from dbtool.cli.main import main; code = main(sys.argv[1:]); "
        "print('|jq=' + str('jq' in sys.modules))"
    )
    args = ["--area", str(run_area.root), "get-runs"]
    plain = subprocess.run(dbtool_argv_code(probe, *args), capture_output=True, text=True, check=True).stdout
    used = subprocess.run(dbtool_argv_code(probe, *args, "--jq", "."), capture_output=True, text=True, check=True)
    assert plain.endswith("|jq=False\n") and used.stdout.endswith("|jq=True\n")


def dbtool_argv_code(code: str, *args: str) -> list[str]:
    return [dbtool_argv()[0], "-c", code, *args]


# -- --check -----------------------------------------------------------------------------------------


def test_check_answers_with_the_exit_status(run_area):
    answer = json.loads(run_area.ok("have-incompletes", "--run-id", "1", "--json").out)
    asked = run_area.run("have-incompletes", "--run-id", "1", "--check")
    assert asked.out == "" and asked.code == (0 if answer else 1)
    incomplete = run_area.run("get-run-completion", "--run-id", "1", "--check")
    assert incomplete.code == 1 and incomplete.out == ""
    for name in ("alpha", "beta"):
        run_area.ok(
            "set-state-status-and-roll-up-items",
            *("--run-id", "1", "--testname", name, "--state", "COMPLETED", "--status", "PASS"),
        )
    complete = run_area.run("get-run-completion", "--run-id", "1", "--check")
    assert complete.code == 0 and complete.out == ""
    assert run_area.run("get-run-completion", "--run-id", "99", "--check").code == 1  # (no such run: exit 1)
    test_id = run_area.ok("get-test-id", "--run-id", "1", "--testname", "alpha").out.strip()
    quiet = run_area.run("test-has-item", "--test-id", test_id, "r_free", "--check", "--json")
    assert quiet.code == 1 and quiet.out == ""
