"""The class "exit 5 means a bug in dbtool, never a user's mistake", kept closed for good.

For every command of the registry, odd values for every parameter — text that is not UTF-8,
empty, huge, negative, NaN and infinities, 10,000-element lists, unicode, quotes — must give exit
0, 1, 2 or 4, one line on stderr when it fails, never a traceback; the server answers ping
afterwards, and `PRAGMA integrity_check` says ok at the end. The calls run in this process
(``dbtool.cli.main.main``) against a real server process and a real SQLite file, so the many
examples stay cheap.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Area, dbtool_argv, kill_area
from dbtool.cli.main import main
from dbtool.core.commands import COMMANDS, LOCAL, SERVER, Command, Param
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Left out, and why: demo builds its own area and runs 22 jobs (tests/test_exec.py runs it);
# `server stop`, `kill-server` and `server restart` take the server away from the other examples
# (their refusals of bad values are checked in tests/test_values.py and tests/test_trust.py);
# dashboard serves until a signal (tests/test_dashboard.py runs it as a process, bad values too).
SKIPPED = {"demo", "server stop", "kill-server", "server restart", "dashboard"}
CASES = sorted(name for name, cmd in COMMANDS.items() if not cmd.hidden and name not in SKIPPED)
ALLOWED = {0, 1, 2, 4}
NOT_UTF8 = os.fsdecode(b"caf\xe9\xff")

ODD_TEXT = [
    "",
    " ",
    "x" * 10_000,
    NOT_UTF8,
    "é✓𝄞 ünïcode",
    "%",
    "*",
    "a,b",
    "-",
    "--",
    "\n\t\r",
    "'\"`$(x)",
    "NULL",
    "1e400",
    "nan",
    "-5",
    "0",
    "/",
    "a/b",
    "(a+)+$",
    ",".join(["a%"] * 5_000),
    "testname=" + "(a+)+$" * 40,
]
PLAIN_TEXT = ["t", "RUNNING", "PASS", "v1/linux", "r", "1", "testname=^t", "c,v,1,1,0"]
ODD_INT = ["0", "-1", "1", "2", "999999", str(2**70), str(-(2**70)), "abc", "", "1.5", "1e3"]
ODD_FLOAT = ["nan", "inf", "-inf", "1e300", "1e400", "-1", "0", "0.5", "abc", ""]
ODD_LIST = [",".join(["a%"] * 10_000), ",".join(map(str, range(10_000))), "", ",", "a,,b", NOT_UTF8, "1,2"]


def odd_paths(tmp: Path) -> list[str]:
    """File names under the test's own directory only (init creates what it is given)."""
    return [
        str(tmp / "input.csv"),
        str(tmp / "missing" / "deep" / "x"),
        str(tmp / NOT_UTF8),
        str(tmp / "area" / ".dbtool" / "config.toml"),
        str(tmp / "new area é"),
        "",
        "-",
    ]


def text_values(p: Param) -> st.SearchStrategy[str]:
    if p.choices:
        return st.sampled_from([*p.choices, "bogus", ""])
    return st.sampled_from(ODD_TEXT + PLAIN_TEXT)


def value_strategy(p: Param, tmp: Path) -> st.SearchStrategy[list[str]]:
    """The words one parameter contributes to a command line ([] = left out)."""
    if p.type == "argv":
        return st.just(["--", sys.executable, "-c", "pass"])
    if p.type == "bool":
        return st.sampled_from([[], [p.option]])
    if p.type == "int":
        values = st.sampled_from(ODD_INT)
    elif p.type == "float":
        values = st.sampled_from(ODD_FLOAT)
    elif p.type == "list":
        values = st.sampled_from(ODD_LIST + PLAIN_TEXT)
    elif p.type == "path" or (p.name == "path" and p.positional):
        values = st.sampled_from(odd_paths(tmp))
    else:
        values = text_values(p)
    if p.positional:
        return values.map(lambda v: [v])
    words = values.map(lambda v: [p.option, v])
    if p.multiple:
        words = st.lists(values, max_size=3).map(lambda vs: [w for v in vs for w in (p.option, v)])
    return words if p.required else st.one_of(st.just([]), words)


def command_line(cmd: Command, tmp: Path) -> st.SearchStrategy[list[str]]:
    """A whole command line: the command's name, options in any mix, then its positionals (after
    ``--`` when one begins with '-') and its command words."""
    options = [p for p in cmd.params if not p.positional and p.type != "argv"]
    positionals = [p for p in cmd.params if p.positional]
    rest = [p for p in cmd.params if p.type == "argv"]
    never = {"watch": "no_follow", "server log": "follow", "server start": "foreground", "start-server": "foreground"}
    options = [p for p in options if p.name != never.get(cmd.name)]
    fixed = ["--no-follow"] if cmd.name == "watch" else []

    def join(parts: tuple) -> list[str]:
        option_words, positional_words, rest_words = parts
        words = [w for part in option_words for w in part]
        values = [w for part in positional_words for w in part]
        if any(v.startswith("-") for v in values):
            values = ["--", *values]
        return [*cmd.name.split(" "), *words, *fixed, *values, *[w for part in rest_words for w in part]]

    return st.tuples(
        st.tuples(*(value_strategy(p, tmp) for p in options)),
        st.tuples(*(value_strategy(p, tmp) for p in positionals)),
        st.tuples(*(value_strategy(p, tmp) for p in rest)),
    ).map(join)


def _stream(data: bytes = b"") -> io.TextIOWrapper:
    """A text stream with a byte buffer under it, as a process's standard streams have."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="backslashreplace", write_through=True)


def run_cli(area: Area, argv: list[str]) -> tuple[int, str, str]:
    out, err = _stream(), _stream()
    old_stdin, sys.stdin = sys.stdin, _stream(b"c,v,1,1\n")
    cwd = os.getcwd()
    os.chdir(area.root.parent)  # where a relative path (or init's default ".") lands
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--area", str(area.root), "--timeout", "20", *argv])
    finally:
        os.chdir(cwd)
        sys.stdin = old_stdin
    return code, out.buffer.getvalue().decode(errors="replace"), err.buffer.getvalue().decode(errors="replace")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One area for every example: a run with tests, steps and data, and its server running."""
    root = tmp_path_factory.mktemp("props") / "area"
    subprocess.run(dbtool_argv("init", str(root), "--keys", "RELEASE,PLATFORM"), check=True, capture_output=True)
    area = Area(root)
    area.set_config("server", "idle_timeout", "600")
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    for item in ("", "a", "b"):
        area.ok("set-state-status-and-roll-up-items", "--run-id", "1", "--testname", "t", "--item-path", item,
                "--state", "COMPLETED", "--status", "PASS")  # fmt: skip
    area.ok("teststep-set-status", "--test-id", "1", "--stepname", "s", "--state", "start")
    area.ok("csv-to-test-data", "--test-id", "1", "--csv", "c,v,1,1,0")
    (root.parent / "input.csv").write_text("c,w,2,2,0\n")
    yield area
    kill_area(str(root))
    con = sqlite3.connect(root / ".dbtool" / "dbtool.db")
    try:
        assert con.execute("pragma integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()


PLAIN = {"int": "1", "float": "1", "str": "t", "list": "a", "bool": ""}


def plain_words(cmd: Command, p: Param, tmp: Path) -> list[str]:
    """A sensible value for a required parameter (the odd one goes elsewhere)."""
    if p.type == "argv":
        return ["--", sys.executable, "-c", "pass"]
    if p.type == "path" or (p.name == "path" and p.positional):
        value = str(tmp / "input.csv") if cmd.name != "init" else str(tmp / "fresh")
    else:
        value = p.choices[0] if p.choices else PLAIN[p.type]
    return [value] if p.positional else [p.option] if p.type == "bool" else [p.option, value]


def sweep(cmd: Command, tmp: Path):
    """One command line per (parameter, odd value): the others required ones plain."""
    for p in cmd.params:
        if p.type in ("argv", "bool"):
            continue
        if p.type == "path" or (p.name == "path" and p.positional):
            odd = odd_paths(tmp)
        else:
            odd = {"int": ODD_INT, "float": ODD_FLOAT, "list": ODD_LIST}.get(p.type, ODD_TEXT)
        for value in odd:
            options, positionals, rest = [], [], []
            for q in cmd.params:
                if q is p:
                    words = [value] if q.positional else [q.option, value]
                elif q.required or q.type == "argv":
                    words = plain_words(cmd, q, tmp)
                else:
                    continue
                (rest if q.type == "argv" else positionals if q.positional else options).extend(words)
            if any(v.startswith("-") for v in positionals):
                positionals = ["--", *positionals]
            fixed = ["--no-follow"] if cmd.name == "watch" else []
            yield [*cmd.name.split(" "), *options, *fixed, *positionals, *rest]


MAX_WAIT = 2.0


def bounded(argv: list[str]) -> list[str]:
    """wait-run blocks until its run is complete, and a run of the shared area may never be (other
    examples register tests in it): its --max-wait at most MAX_WAIT seconds, and MAX_WAIT when the
    line has none. A value that is no finite number is left as it is (it must be refused)."""
    if argv[:1] != ["wait-run"]:
        return argv
    words = list(argv)
    given = False
    for i, word in enumerate(words[:-1]):
        if word == "--max-wait":
            given = True
            try:
                seconds = float(words[i + 1])
            except ValueError:
                continue
            if math.isfinite(seconds) and seconds > MAX_WAIT:
                words[i + 1] = str(MAX_WAIT)
    return words if given else [*words, "--max-wait", str(MAX_WAIT)]


# Commands whose exit code is also an answer: this code, with nothing on stderr, is not an error.
VERDICTS = {
    "wait-run": 1,  # the run is complete, but not PASS (its state and status are on stdout)
    "test-has-item": 1,  # the test has no item of that name
    "have-incompletes": 1,  # --check: there are none
    "get-run-completion": 1,  # --check: the run is not complete
    "doctor": 1,  # a check failed (each check's line is on stdout)
}


def check_answer(cmd: Command, argv: list[str], code: int, err: str) -> None:
    assert "Traceback" not in err, (argv, err)
    waited = cmd.name == "wait-run" and code == 3 and "is not complete after" in err  # (its bounded --max-wait)
    assert code in ALLOWED or waited or (cmd.kind == SERVER and code == 3 and "no server" in err), (argv, code, err)
    if code != 0 and not (VERDICTS.get(cmd.name) == code and not err):
        lines = err.splitlines()
        assert lines and lines[-1].startswith("dbtool: error: "), (argv, err)
        assert len(lines) == 1 or (cmd.kind == LOCAL and all(line.startswith("dbtool") for line in lines)), (argv, err)


@pytest.mark.parametrize("name", CASES)
def test_every_odd_value_of_every_parameter(shared, name):
    """Each odd value in each parameter on its own, the other parameters sensible."""
    cmd = COMMANDS[name]
    for argv in sweep(cmd, shared.root.parent):
        code, _out, err = run_cli(shared, bounded(argv))
        check_answer(cmd, argv, code, err)
    code, _out, err = run_cli(shared, ["ping"])
    assert code == 0, err  # the server survived every call


@pytest.mark.parametrize("name", CASES)
def test_odd_values_in_any_mix_never_make_an_internal_error(shared, name):
    """Odd values in several parameters at once (hypothesis, derandomized: the same every run)."""
    cmd = COMMANDS[name]
    tmp = shared.root.parent

    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(command_line(cmd, tmp))
    def check(argv: list[str]) -> None:
        code, _out, err = run_cli(shared, bounded(argv))
        check_answer(cmd, argv, code, err)

    check()
    code, _out, err = run_cli(shared, ["ping"])
    assert code == 0, err  # the server survived every example
