"""Usage errors (exit 2) are one line, `dbtool: error: ... (see 'dbtool CMD --help')`; negative
numbers are values on both parsing paths (the fast binder and the Typer app)."""

from __future__ import annotations

import subprocess

import pytest
from conftest import dbtool_argv
from dbtool.cli.main import typer_main
from dbtool.core.commands import COMMANDS

USAGE_ERRORS = [
    (("nosuchcmd",), "no such command 'nosuchcmd'", "dbtool"),
    (
        ("get-run-info", "--run-id", "abc"),
        "invalid value for '--run-id': 'abc' is not a valid int",
        "dbtool get-run-info",
    ),
    (("get-runs", "--bogus"), "no such option: --bogus", "dbtool get-runs"),
    (("get-test-id", "--run-id", "1"), "missing option '--testname'", "dbtool get-test-id"),
    (("get-runs", "--limit"), "option '--limit' requires an argument", "dbtool get-runs"),
    (("server", "bogus"), "no such command 'bogus'", "dbtool server"),
    (("--format", "xml", "get-runs"), "invalid value for '--format'", "dbtool"),
    (("--timeout", "-1", "get-runs"), "invalid value for '--timeout': must be between 0 and 604800 seconds", "dbtool"),
    (
        ("get-tests-for-run", "--run-id", "1", "--mode", "weird"),
        "must be one of normal, dashboard",
        "dbtool get-tests-for-run",
    ),
    (("add-var", "cnt", "-x"), "no such option: -x", "dbtool add-var"),
    (("set-var", "only-one"), "missing argument 'VALUE'", "dbtool set-var"),
    (("set-var", "a", "b", "c"), "got unexpected extra argument", "dbtool set-var"),
    # a negative number before a real mistake: the mistake is what is reported
    (("add-var", "cnt", "-3", "--bogus"), "no such option: --bogus", "dbtool add-var"),
    (("set-var", "x", "-3", "--bogus"), "no such option: --bogus", "dbtool set-var"),
]


@pytest.mark.parametrize(("args", "what", "path"), USAGE_ERRORS)
def test_usage_errors_are_one_line(area, args, what, path):
    r = area.run(*args)
    assert r.code == 2, r
    assert r.out == ""
    assert r.err.count("\n") == 1, r.err
    assert r.err.startswith("dbtool: error: "), r.err
    assert what in r.err, r.err
    assert r.err.endswith(f" (see '{path} --help')\n"), r.err


def test_unknown_command_message_exactly(area):
    r = area.run("nosuchcmd")
    assert (r.code, r.err) == (2, "dbtool: error: no such command 'nosuchcmd' (see 'dbtool --help')\n")


def test_usage_errors_raised_by_dbtool_itself_name_the_help(area):
    r = area.run("get-runs", env={"DBTOOL_TIMEOUT": "soon"})
    assert r.code == 2 and r.err.count("\n") == 1, r
    assert r.err == "dbtool: error: DBTOOL_TIMEOUT='soon' is not a number of seconds (see 'dbtool get-runs --help')\n"


def test_help_is_unchanged(area):
    top = area.run("--help")
    assert top.code == 0 and top.out.startswith("Usage: dbtool [OPTIONS] COMMAND [ARGS]...") and top.err == ""
    bare = subprocess.run(dbtool_argv(), capture_output=True, text=True)
    assert bare.returncode == 2 and bare.stderr.startswith("Usage: dbtool [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in bare.stderr
    group = area.run("server")
    assert group.code == 2 and group.err.startswith("Usage: dbtool server [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in group.err
    missing = area.run()  # options, but no command: a usage error
    assert missing.code == 2 and missing.err == "dbtool: error: missing command (see 'dbtool --help')\n"
    one = area.run("add-var", "-h")
    assert one.code == 0 and "Usage: dbtool add-var [OPTIONS]" in one.out


def test_negative_numbers_are_values(area):
    assert area.ok("add-var", "cnt", "-3").out == "-3\n"
    assert area.ok("add-var", "cnt", "-2.5", "--json").json == -5.5
    assert area.ok("add-var", "--trace", "cnt", "-0.5").out == "-6\n"
    area.ok("set-var", "x", "-7")
    assert area.ok("get-var", "x").out == "-7\n"
    # text that starts with '-' goes after '--' (the help says so)
    area.ok("set-var", "y", "--", "-dash")
    assert area.ok("get-var", "y").out == "-dash\n"
    assert "goes after '--'" in " ".join(area.ok("set-var", "--help").out.split())
    assert "(add-var cnt -3)" in " ".join(area.ok("add-var", "--help").out.split())


def test_negative_value_out_of_range_is_refused_not_a_usage_error(area):
    r = area.run("mark-incomplete", "--run-id", "1", "--deadtime", "-5")
    assert r.code == 4 and r.err == "dbtool: error: --deadtime must be at least 0, not -5\n", r


def test_negative_numbers_on_the_typer_path(area, capsys):
    """The Typer app (help, errors, what the binder leaves) reads negative numbers the same way."""
    base = ["--area", str(area.root)]
    assert typer_main([*base, "--trace", "add-var", "cnt", "-3"], COMMANDS["add-var"]) == 0
    assert typer_main([*base, "add-var", "cnt", "-4.5", "--json"], COMMANDS["add-var"]) == 0
    assert typer_main([*base, "mark-incomplete", "--run-id", "1", "--deadtime", "-5"], COMMANDS["mark-incomplete"]) == 4
    out, err = capsys.readouterr()
    assert out.splitlines()[-2:] == ["-3", "-7.5"]
    assert err.splitlines()[-1] == "dbtool: error: --deadtime must be at least 0, not -5"
