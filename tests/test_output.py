"""Output formats through the real CLI: --fields in tables (B8), --json with --format, escaping in
table and TSV cells, headers of empty CSV/TSV results, and --trace on a direct read (B20)."""

from __future__ import annotations

import csv
import io

import pytest

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)


ODD = "line one\nline\ttwo\r\\end"  # a newline, a tab, a carriage return and a backslash


def one_run_two_tests(area, comment: str = "plain") -> None:
    area.ok("register-run", "--target", "v1/linux", "--runname", "nightly")
    for name, text in (("alpha", comment), ("beta", "plain")):
        area.ok(
            "set-state-status-and-roll-up-items",
            *("--run-id", "1", "--testname", name, "--state", "RUNNING", "--status", "n/a", "--comment", text),
        )


def header(text: str) -> list[str]:
    return text.splitlines()[0].split()


# -- B8: the table shows every field asked for ------------------------------------------------------


def test_table_shows_every_field_asked_for(area):
    one_run_two_tests(area)
    fields = "id,testname,rundir,attemptnum,final_logf,uname"
    table = area.ok("get-tests-for-run", "--run-id", "1", "--fields", fields).out
    assert header(table) == fields.split(",")
    assert len(table.splitlines()) == 3
    # only default columns asked for: those, in the order asked
    assert header(area.ok("get-tests-for-run", "--run-id", "1", "--fields", "testname,id").out) == ["testname", "id"]
    # without --fields the table keeps its default view
    assert header(area.ok("get-tests-for-run", "--run-id", "1").out)[:3] == ["id", "testname", "item_path"]

    runs = area.ok("get-runs-by-patt", "--runname", "%", "--fields", "id,runname,contour,last_update,fail_count").out
    assert {"id", "runname", "contour", "last_update", "fail_count"} <= set(header(runs))


# -- B20: --json and --format ------------------------------------------------------------------------


@pytest.mark.parametrize("other", ["csv", "tsv", "table"])
def test_json_with_another_format_is_a_usage_error(area, other):
    for args in (("--json", "--format", other, "get-keys"), ("get-keys", "--format", other, "--json")):
        r = area.run(*args)
        assert r.code == 2 and r.out == "", r
        assert r.err == (
            f"dbtool: error: --json and --format {other} disagree; give one of them (see 'dbtool get-keys --help')\n"
        )


def test_json_with_format_json_is_fine(area):
    assert area.ok("--json", "--format", "json", "get-keys").json == ["RELEASE", "PLATFORM"]
    assert area.ok("get-keys", "--format", "json", "--json").json == ["RELEASE", "PLATFORM"]


# -- B20: one row per record, whatever the values hold ---------------------------------------------


def test_table_escapes_newlines_and_tabs(area):
    one_run_two_tests(area, ODD)
    lines = area.ok("get-tests-for-run", "--run-id", "1", "--fields", "testname,comment").out.splitlines()
    assert len(lines) == 3, lines
    assert lines[1].split(None, 1) == ["alpha", "line one\\nline\\ttwo\\r\\end"]
    record = area.ok("get-test-info-by-id", "--test-id", "1").out.splitlines()
    comment = [line.split(None, 1)[1] for line in record if line.startswith("comment ")]
    assert comment == ["line one\\nline\\ttwo\\r\\end"]


def test_tsv_is_real_tsv(area):
    one_run_two_tests(area, ODD + ' "quoted", too')
    out = area.ok("get-tests-for-run", "--run-id", "1", "--fields", "id,testname,comment", "--format", "tsv").out
    lines = out.split("\n")
    assert lines[-1] == "" and len(lines) == 4, lines  # header, two rows, the final newline
    assert lines[0] == "id\ttestname\tcomment"
    assert lines[1] == '1\talpha\tline one\\nline\\ttwo\\r\\\\end "quoted", too'
    assert lines[2] == "2\tbeta\tplain"
    assert "\r" not in out


def test_csv_keeps_standard_quoting(area):
    odd = 'line one\nline\ttwo, "quoted" \\end'  # (no carriage return: text-mode pipes translate it)
    one_run_two_tests(area, odd)
    out = area.ok("get-tests-for-run", "--run-id", "1", "--fields", "id,comment", "--format", "csv").out
    assert list(csv.reader(io.StringIO(out, newline=""))) == [["id", "comment"], ["1", odd], ["2", "plain"]]


# -- B20: an empty CSV/TSV result still has its header ------------------------------------------------


def empty_results(area) -> dict[str, str]:
    return {
        # Records from the handler: the header is the query's columns, with or without a server
        "records": area.ok("get-tests-for-run", "--run-id", "2", "--format", "csv").out,
        "records-fields": area.ok("get-tests-for-run", "--run-id", "2", "--fields", "id,rundir", "--format", "tsv").out,
        # a plain list from the handler: the command's declared columns
        "declared": area.ok("get-steps-for-test", "--test-id", "1", "--format", "csv").out,
        # a plain list and no declared columns: nothing to print
        "nothing": area.ok("get-raw-run-stats", "--run-id", "1", "--format", "csv").out,
        "tags": area.ok("get-tests-tags", "--format", "csv").out,
        "tags-tsv": area.ok("get-tests-tags", "--format", "tsv").out,
    }


def test_empty_results_keep_their_header_with_and_without_server(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "nightly")
    area.ok("register-test", "--run-id", "1", "--testname", "lonely")  # test 1: no steps
    area.ok("register-run", "--target", "v1/linux", "--runname", "empty")  # run 2: no tests
    served = empty_results(area)
    area.set_config("server", "start_on_read", "false")  # every read below is direct
    area.ok("server", "stop")
    assert area.wait_no_server()
    direct = empty_results(area)
    assert area.server_pids() == []
    assert served == direct
    assert direct["nothing"] == direct["tags"] == direct["tags-tsv"] == ""
    assert direct["records-fields"] == "id\trundir\n"
    assert direct["declared"] == "id,stepname,state,status,event_time,logfile,comment\n"
    assert direct["records"].startswith("id,run_id,testname,")


def test_empty_table_and_json(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "nightly")
    assert area.ok("get-tests-for-run", "--run-id", "1").out == ""
    assert area.ok("get-tests-for-run", "--run-id", "1", "--json").json == []


# -- B20: --trace says where a direct read's answer came from ----------------------------------------


def test_trace_on_a_direct_read(area):
    area.set_config("server", "start_on_read", "false")  # (about the direct read alone)
    r = area.ok("--trace", "get-keys")
    assert r.out == "RELEASE\nPLATFORM\n"
    assert area.server_pids() == []
    assert "direct: read " in r.err and "read-only (no server running)" in r.err, r.err
    assert all(line.startswith("trace: ") for line in r.err.splitlines())
    missing = area.run("--trace", "get-run-info", "--run-id", "9")
    assert missing.code == 1 and "direct: read " in missing.err, missing


def test_watch_lines_stay_one_line(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "nightly")
    area.ok("register-test", "--run-id", "1", "--testname", "two\nlines")
    lines = area.ok("watch", "--since", "0", "--no-follow").out.splitlines()
    assert len(lines) == 2, lines
    assert lines[1].endswith("register-test run 1 test 1 two\\nlines NOT_STARTED n/a")
