"""Values the registry refuses wherever they enter, on the command line and on the wire (audit B6,
B9, B10, B12, B15, B16, B17's option names): exit 4 with one line, never an internal error."""

from __future__ import annotations

import os

import pytest
from conftest import Raw
from dbtool.core.commands import COMMANDS, lookup
from dbtool.core.errors import BadRequest, Refused


def one_line_refusal(result, *words: str) -> None:
    assert result.code == 4, result
    assert result.err.startswith("dbtool: error: ") and result.err.count("\n") == 1, result
    assert "Traceback" not in result.err
    for word in words:
        assert word in result.err, (word, result.err)


@pytest.fixture
def run(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("register-test", "--run-id", "1", "--testname", "t")
    return area


def test_text_that_is_not_utf8_is_refused_in_every_family(run):
    """B9: arguments the OS could not decode (Latin-1 bytes) are refused, not an internal error."""
    bad = os.fsdecode(b"\xff\xfe")
    for args in (
        ("set-var", bad, "v"),
        ("get-var", bad),
        ("register-run", "--target", f"v{bad}/linux", "--runname", "r2"),
        ("register-test", "--run-id", "1", "--testname", f"t{bad}"),
        ("csv-to-test-data", "--test-id", "1", "--csv", f"a,{bad},1"),
        ("get-tests-for-run", "--run-id", "1", "--testpatt", bad),
        ("get-tests-for-run", "--run-id", "1", "--match", f"testname={bad}"),
        ("exec", "--run-id", "1", "--testname", f"e{bad}", "--", "true"),
    ):
        one_line_refusal(run.run(*args), "not valid UTF-8")
    assert run.run("get-var", "x").code == 1  # nothing was stored
    assert [t["testname"] for t in run.ok("get-tests-for-run", "--run-id", "1", "--json").json] == ["t"]


def test_a_file_name_that_is_not_utf8_is_stored_with_its_bytes_escaped(run, tmp_path):
    """B9: file names are often Latin-1 on compute farms: they are kept, each stray byte as \\xNN."""
    name = os.fsdecode(b"caf\xe9.log")
    path = tmp_path / name
    path.write_text("x")
    run.ok("test-add-output-file", "--test-id", "1", "--path", str(path))
    stored = run.ok("test-get-output-files", "--test-id", "1", "--json").json[0]["path"]
    assert stored.endswith("caf\\xe9.log")


def test_empty_state_or_status_is_refused_not_written(run):
    """B10: an unset $STATE in a script must not blank the test and its toplevel."""
    run.ok("set-state-status-and-roll-up-items", "--run-id", "1", "--testname", "e", "--item-path", "a",
           "--state", "COMPLETED", "--status", "PASS")  # fmt: skip
    for args in (
        ("set-state-status-and-roll-up-items", "--run-id", "1", "--testname", "e", "--item-path", "a", "--state", ""),
        ("set-state-status-and-roll-up-items", "--run-id", "1", "--testname", "e", "--status", ""),
        ("test-set-state-status", "--test-id", "1", "--state", ""),
        ("test-set-state-status-by-id", "--test-id", "1", "--status", ""),
    ):
        one_line_refusal(run.run(*args), "must not be empty", "to leave it unchanged")
    rows = run.ok("get-tests-for-run", "--run-id", "1", "--testpatt", "e", "--json").json
    assert {(r["item_path"], r["state"], r["status"]) for r in rows} == {
        ("a", "COMPLETED", "PASS"),
        ("", "COMPLETED", "PASS"),
    }


def test_numbers_out_of_range_or_not_finite_are_refused(run):
    """B6, B12, B15: NaN and infinities, 1e300 heartbeats, negative deadtimes, limits, pids and
    ports are refused before anything happens."""
    cases = [
        (("exec", "--run-id", "1", "--testname", "h", "--heartbeat", "nan", "--", "true"), "finite"),
        (("exec", "--run-id", "1", "--testname", "h", "--heartbeat", "inf", "--", "true"), "finite"),
        (("exec", "--run-id", "1", "--testname", "h", "--heartbeat", "1e300", "--", "true"), "between"),
        (("add-var", "cnt", "1e400"), "finite"),
        (("add-var", "cnt", "nan"), "finite"),
        (("mark-incomplete", "--run-id", "1", "--deadtime", "-5"), "at least 0"),
        (("get-runs", "--limit", "-1"), "at least 0"),
        (("get-runs", "--offset", "-5"), "at least 0"),
        (("register-process", "--host", "h", "--pid", "-1"), "at least 0"),
        (("register-process", "--host", "h", "--pid", "1", "--port", "99999999"), "between 0 and 65535"),
        (("test-set-top-process-pid", "--test-id", "1", "--pid", "-5"), "at least 0"),
        (("server", "start", "--idle-timeout", "-5"), "at least 0"),
        (("get-run-info", "--run-id", str(2**70)), "out of range"),
    ]
    for args, words in cases:
        one_line_refusal(run.run(*args), words)
    assert run.run("get-tests-for-run", "--run-id", "1", "--testpatt", "h", "--json").json == []
    assert run.run("get-var", "cnt").code == 1


def test_the_wire_checks_values_as_the_command_line_does(run):
    with Raw(run) as raw:
        for cmd, params in (
            ("add-var", {"var": "c", "n": float("nan")}),
            ("get-runs", {"limit": -1}),
            ("set-var", {"var": "", "value": "v"}),
            ("set-var", {"var": "\udcff", "value": "v"}),
            ("test-set-state-status-by-id", {"test_id": 1, "state": ""}),
        ):
            answer = raw.request(cmd, params)
            assert answer["ok"] is False and answer["error"]["code"] == "refused", (cmd, answer)
    with Raw(run) as raw:  # JSON's non-standard NaN and Infinity are numbers to Python's parser: refused too
        raw.send_line(b'{"id": 1, "cmd": "add-var", "params": {"var": "c", "n": Infinity}}')
        assert raw.read()["error"]["code"] == "refused"
    assert run.run("get-var", "c").code == 1


def test_negative_numbers_are_values_on_the_command_line(run):
    """B16: `add-var cnt -3` needs no `--`."""
    assert run.ok("add-var", "cnt", "-3").out == "-3\n"
    assert run.ok("add-var", "cnt", "-.5").out == "-3.5\n"
    assert run.ok("add-var", "cnt", "--", "-1").out == "-4.5\n"


def test_pattern_options_take_the_dashed_spellings_too(run):
    """B17: --statepatt/--state-patt, --actionpatt/--action-patt, --variable/--varpatt."""
    run.ok("tasks-add", "--action", "run-tests", "--target", "v1/linux", "--runname", "r")
    short = run.ok("find-task-queue-records", "--target", "v1/linux", "--runname", "r", "--statepatt", "n%", "--json")
    dashed = run.ok("find-task-queue-records", "--target", "v1/linux", "--runname", "r", "--state-patt", "n%",
                    "--action-patt", "run%", "--json")  # fmt: skip
    assert short.json == dashed.json and len(short.json) == 1
    run.ok("csv-to-test-data", "--test-id", "1", "--csv", "cat,volts,1,1")
    rows = run.ok("read-test-data-varpatt", "--test-id", "1", "--varpatt", "volt%", "--json").json
    assert [r["variable"] for r in rows] == ["volts"]


def test_every_bound_is_checked_on_both_sides():
    """The registry declares a bound once; the wire check and the command-line check both apply it."""
    bounded = [(cmd, p) for cmd in COMMANDS.values() for p in cmd.params if p.min is not None or p.max is not None]
    assert len(bounded) > 30
    for cmd, p in bounded:
        outside = (p.min - 1) if p.min is not None else (p.max + 1)
        value = outside if p.type == "float" else int(outside)
        with pytest.raises(Refused):
            p.check_value(value)
        if not p.client_only:
            with pytest.raises((Refused, BadRequest)):
                lookup(cmd.name).bind_wire({**_required(cmd), p.name: value})


def _required(cmd) -> dict:
    fill = {"int": 1, "float": 1.0, "str": "x", "path": "/x", "list": ["x"], "argv": ["x"], "bool": True}
    return {p.name: p.choices[0] if p.choices else fill[p.type] for p in cmd.wire_params if p.required}


def test_a_timeout_that_is_no_duration_is_a_usage_error(run):
    """The global --timeout and $DBTOOL_TIMEOUT: finite, 0 to a week (inf used to be exit 5)."""
    for value in ("inf", "nan", "1e300", "-1", "abc"):
        for args, env in (((f"--timeout={value}", "get-keys"), None), (("get-keys",), {"DBTOOL_TIMEOUT": value})):
            r = run.run(*args, env=env)
            assert r.code == 2 and r.err.startswith("dbtool: error: ") and r.err.count("\n") == 1, (value, r)
    assert run.ok("--timeout", "0.5", "get-keys").out == "RELEASE\nPLATFORM\n"
