"""Help that guides (issue 18): examples that parse, the top-level help by family, `dbtool help`,
`dbtool completion`, completion of values from the area without Typer, a fast --version, and the
man pages and completion scripts installed with the package where man and the shells find them."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import dbtool_argv, run_in_pty
from dbtool.cli import dispatch
from dbtool.cli.app import build_app
from dbtool.cli.binder import GLOBAL_VALUES, find_command
from dbtool.cli.guide import EXAMPLES, FAMILIES, family, first_sentence
from dbtool.core.commands import COMMANDS, LOCAL

ROOT = Path(__file__).resolve().parent.parent
VISIBLE = [c for c in COMMANDS.values() if not c.hidden]
MOST_USED = (
    "register-run",
    "register-test",
    "set-state-status-and-roll-up-items",
    "test-set-state-status-by-id",
    "exec",
    "get-tests-for-run",
    "get-runs",
    "watch",
    "csv-to-test-data",
    "import-junit",
    "export-junit",
    "compare",
    "history",
    "wait-run",
    "get-test-id",
    "get-run-info",
    "set-var",
    "get-var",
    "report",
    "dashboard",
    "server start",
    "server status",
    "server log",
    "init",
    "have-incompletes",
    "delete-run",
)


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(dbtool_argv(*args), capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


# -- examples -------------------------------------------------------------------------------


def example_argv(line: str) -> list[str]:
    """An example's words as the shell passes them (a redirection is the shell's, not dbtool's)."""
    words = shlex.split(line)
    return words[: words.index(">")] if ">" in words else words


def parsed(argv: list[str]) -> tuple[str, dict]:
    """What the Typer app binds for ``argv`` (the command's name, its parameters), execution faked."""
    captured = {}

    def fake_execute(cmd, params, opts):  # (the checks execute makes before it sends anything)
        opts.check()
        captured["result"] = (cmd.name, cmd.check_cli(params, travel=cmd.kind != LOCAL))
        return 0

    i = 0
    while argv[i].startswith("--"):
        i += 2 if argv[i] in GLOBAL_VALUES else 1
    cmd, _rest = find_command(argv[i:])
    assert cmd is not None, f"no command in {argv}"
    original = dispatch.execute
    dispatch.execute = fake_execute
    try:
        try:
            build_app(cmd)(args=argv, prog_name="dbtool", standalone_mode=True)
        except SystemExit as done:
            assert done.code == 0, f"{shlex.join(argv)}: exit {done.code}"
    finally:
        dispatch.execute = original
    return captured["result"]


@pytest.mark.parametrize(("name", "line"), [(name, line) for name, lines in EXAMPLES.items() for line, _ in lines])
def test_every_example_parses_as_its_command(name, line):
    assert name in COMMANDS and not COMMANDS[name].hidden and not COMMANDS[name].dead, name
    bound_name, _params = parsed(example_argv(line))
    assert bound_name == name, line


def test_the_most_used_commands_have_examples_each_explained():
    missing = [n for n in MOST_USED if n not in EXAMPLES]
    assert not missing, missing
    assert len(EXAMPLES) >= 25
    for name, lines in EXAMPLES.items():
        assert lines, name
        for line, text in lines:
            assert line.strip() and text.strip() and "\n" not in text, (name, line)
            assert example_argv(line)[0] != "dbtool", f"{name}: an example is written without the leading dbtool"


def test_examples_show_in_help_and_in_the_man_page():
    for name in ("get-runs", "exec", "server log"):
        proc = run(*name.split(), "--help")
        assert proc.returncode == 0, proc.stderr
        assert "Examples:" in proc.stdout
        for line, text in EXAMPLES[name]:
            assert f"dbtool {line}" in proc.stdout and text in proc.stdout, line
        page = (ROOT / "man" / f"dbtool-{name.replace(' ', '-')}.1").read_text()
        assert ".SH EXAMPLES" in page
        first = EXAMPLES[name][0][0]
        assert f"\\fBdbtool {first}".replace("-", "\\-") in page


# -- the top-level help -----------------------------------------------------------------------


def test_top_level_help_is_grouped_by_family_with_whole_summaries_and_no_dead_entries():
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    titles = [title for key, title in FAMILIES if any(family(c) == key for c in VISIBLE if not c.dead)]
    positions = [out.index(f"\n  {title}:\n") for title in titles]
    assert positions == sorted(positions), "the families in their order"
    assert out.count("\nCommands:\n") == 1
    squeezed = "".join(out.split())  # (wrapping may break a line at any space or after a hyphen)
    for cmd in VISIBLE:
        if cmd.dead:
            assert f"\n  {cmd.name} " not in out, f"dead entry {cmd.name} listed"
        elif " " not in cmd.name:
            assert "".join(first_sentence(cmd.help).split()) in squeezed, f"{cmd.name}: summary cut"
    runs = out[out.index("\n  Runs:\n") : out.index("\n  Tests:\n")]
    assert "register-run" in runs and "get-runs" in runs and "register-test" not in runs


def test_every_visible_command_has_a_known_family():
    keys = {key for key, _title in FAMILIES}
    assert {family(c) for c in VISIBLE} <= keys


# -- dbtool help ------------------------------------------------------------------------------------


def test_help_command_shows_the_page_of_a_command_and_of_dbtool():
    assert run("help", "get-runs").stdout == run("get-runs", "--help").stdout
    assert run("help", "server", "start").stdout == run("server", "start", "--help").stdout
    alone = run("help")
    assert alone.returncode == 0 and alone.stdout == run("--help").stdout


def test_help_of_an_unknown_command_exits_2_with_close_names():
    proc = run("help", "get-rns")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "get-runs" in proc.stderr and "did you mean" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- dbtool completion -------------------------------------------------------------------------------


@pytest.mark.parametrize(("shell", "path"), [("bash", "dbtool"), ("zsh", "_dbtool"), ("fish", "dbtool.fish")])
def test_completion_prints_the_committed_script(shell, path):
    proc = run("completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (ROOT / "completions" / path).read_text()
    assert proc.stderr == ""  # not a terminal: only the script


def test_completion_on_a_terminal_says_how_to_install_it_and_help_does_too():
    code, out = run_in_pty(dbtool_argv("completion", "bash"))
    assert code == 0 and "_dbtool_completion" in out
    assert "share/bash-completion/completions" in out
    helped = run("completion", "--help")
    assert "~/.zfunc/_dbtool" in helped.stdout and "vendor_completions.d" in helped.stdout
    assert run("completion", "tcsh").returncode == 2


# -- completion of values, without Typer ------------------------------------------------------------


def complete(line: str, cwd: Path, shell: str = "bash") -> subprocess.CompletedProcess:
    words = line.split(" ")
    env = {**os.environ, "_DBTOOL_COMPLETE": f"complete_{shell}"}
    if shell == "bash":
        env.update(COMP_WORDS=line, COMP_CWORD=str(len(words) - 1))
    else:
        env.update(_TYPER_COMPLETE_ARGS=line, _TYPER_COMPLETE_FISH_ACTION="get-args")
    code = (
        "import sys; from dbtool.cli.main import main; code = main(sys.argv[1:]); "
        "heavy = sorted(m for m in ('typer', 'sqlmodel', 'sqlalchemy', 'rich') if m in sys.modules); "
        "print('HEAVY', heavy, file=sys.stderr); sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=cwd)
    assert "HEAVY []" in proc.stderr, f"completion imported {proc.stderr}"
    return proc


@pytest.fixture
def filled(area):
    run_ids = [int(area.ok("register-run", "--target", f"v1/{p}", "--runname", "nightly").out) for p in ("a", "b")]
    for name in ("build", "unit"):
        area.ok("register-test", "--run-id", str(run_ids[0]), "--testname", name)
    area.ok("register-test", "--run-id", str(run_ids[1]), "--testname", "lint")
    area.ok("server", "stop")
    return area, run_ids


def test_values_complete_from_the_area_and_the_vocabularies(filled):
    area, (first, second) = filled
    cwd = area.root
    runs = complete("dbtool get-tests-for-run --run-id ", cwd).stdout.split()
    assert runs == [str(second), str(first)]
    assert complete(f"dbtool get-test-id --run-id {first} --testname ", cwd).stdout.split() == ["build", "unit"]
    assert complete("dbtool history --testname ", cwd).stdout.split() == ["build", "lint", "unit"]
    assert complete("dbtool history --testname u", cwd).stdout.split() == ["unit"]
    ids = complete(f"dbtool get-steps-for-test --run-id {second} --test-id ", cwd).stdout.split()
    assert len(ids) == 1 and ids[0].isdigit()
    states = complete("dbtool set-state-status-and-roll-up-items --state ", cwd).stdout.split()
    assert {"RUNNING", "COMPLETED", "NOT_STARTED", "KILLED"} <= set(states)
    assert complete("dbtool test-set-state-status-by-id --status P", cwd).stdout.split() == [
        "PASS",
        "PREQ_FAIL",
        "PREQ_DISCARDED",
    ]
    assert complete("dbtool get-tests-for-run --statuses PASS,FA", cwd).stdout.splitlines() == [
        "PASS,FAIL",
        "PASS,FAILED TO KILL",
    ]
    assert complete("dbtool --format ", cwd).stdout.split() == ["table", "json", "ndjson", "csv", "tsv"]
    assert complete("dbtool completion ", cwd).stdout.split() == ["bash", "zsh", "fish"]
    # --area given on the line wins, from anywhere
    elsewhere = complete(f"dbtool --area {area.root} get-run-info --run-id ", ROOT).stdout.split()
    assert elsewhere == [str(second), str(first)]
    # zsh and fish show what a run is
    fish = complete("dbtool get-run-info --run-id ", cwd, "fish").stdout
    assert f"{first}\tnightly" in fish
    assert "_arguments" in complete("dbtool get-run-info --run-id ", cwd, "zsh").stdout
    assert area.server_info is None, "a completion never starts a server"


def test_errors_give_no_candidates_and_no_traceback(tmp_path):
    assert complete("dbtool get-run-info --run-id ", tmp_path).stdout == ""  # no area
    broken = tmp_path / "broken"
    (broken / ".dbtool").mkdir(parents=True)
    (broken / ".dbtool" / "config.toml").write_text("[area]\nkeys = []\n")
    (broken / ".dbtool" / "dbtool.db").write_text("not a database")
    proc = complete("dbtool get-test-id --testname ", broken)
    assert proc.returncode == 0 and proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert complete("dbtool no-such-command --", tmp_path).stdout == ""


def test_names_and_options_complete_without_typer(tmp_path):
    assert "get-tests-for-run" in complete("dbtool get-te", tmp_path).stdout.split()
    assert complete("dbtool sdb", tmp_path).stdout.split() == ["sdb-qry"]  # refused, but a command
    assert complete("dbtool help server st", tmp_path).stdout.split() == ["start", "stats", "status", "stop"]
    assert complete("dbtool config s", tmp_path).stdout.split() == ["set"]  # every two-word group
    assert "--testpatt" in complete("dbtool get-tests-for-run --run-id 3 --te", tmp_path).stdout.split()


# -- --version --------------------------------------------------------------------------------------


def test_version_does_not_import_typer():
    code = (
        "import sys; from dbtool.cli.main import main; code = main(['--version']); "
        "print('typer' in sys.modules, 'sqlalchemy' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    version, modules = proc.stdout.splitlines()
    assert version.startswith("dbtool ") and modules == "False False"
    assert run("--area", "/nowhere", "--version").stdout == version + "\n"


# -- installed with the package ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A real, non-editable `pip install` of this checkout into a fresh virtual environment."""
    base = tmp_path_factory.mktemp("install")
    source, venv = base / "src", base / "venv"
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info", "__pycache__", ".pytest_cache")
    shutil.copytree(ROOT, source, ignore=ignore)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    # (the venv's own pip: another environment's pip would uninstall its own dbtool first)
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return venv


def test_pip_install_puts_man_pages_and_completions_where_tools_look(installed):
    share = installed / "share"
    pages = {p.name for p in (share / "man" / "man1").glob("*.1")}
    assert pages == {p.name for p in (ROOT / "man").glob("*.1")}
    assert (share / "man" / "man1" / "dbtool-get-runs.1").read_text() == (
        ROOT / "man" / "dbtool-get-runs.1"
    ).read_text()
    assert (share / "bash-completion" / "completions" / "dbtool").read_text() == (
        ROOT / "completions" / "dbtool"
    ).read_text()
    assert (share / "zsh" / "site-functions" / "_dbtool").is_file()
    assert (share / "fish" / "vendor_completions.d" / "dbtool.fish").is_file()
    assert (installed / "bin" / "dbtool").is_file()


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed (.ci/run installs man-db)")
def test_man_finds_the_installed_pages_from_path(installed):
    env = {k: v for k, v in os.environ.items() if k != "MANPATH"}
    env["PATH"] = f"{installed / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    for page in ("dbtool", "dbtool-get-runs"):
        proc = subprocess.run(["man", "-w", page], capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert Path(proc.stdout.strip()) == installed / "share" / "man" / "man1" / f"{page}.1"
    proc = subprocess.run(["man", "-w", "dbtool-get-runs"], capture_output=True, text=True, env={**env, "MANPATH": ""})
    assert proc.returncode == 0 and proc.stdout.strip().endswith("dbtool-get-runs.1"), proc.stderr


@pytest.mark.parametrize(
    "line",
    ["dbtool get-te", 'dbtool --testname "a b" x', "a 'b c' d\\ e", "x  y ", 'q "a\\"b" \'c\\d\'', ""],
)
def test_completion_splits_words_as_the_shell_does(line):
    from dbtool.cli.complete import split_words

    assert split_words(line) == shlex.split(line)
    assert split_words('dbtool --testname "unfinish') == ["dbtool", "--testname", "unfinish"]


def test_every_global_option_is_bound_typed_and_completed_alike():
    """The global options are spelled in three places (the fast binder, the Typer app, the Tab's
    short help, which must not import Typer): one set of spellings in all three."""
    from dbtool.cli.app import COMMON
    from dbtool.cli.binder import GLOBAL_FLAGS
    from dbtool.cli.complete import GLOBAL_HELP

    bound = set(GLOBAL_VALUES) | set(GLOBAL_FLAGS)
    assert bound == {decl for _name, decl, _kind, _help in COMMON} == set(GLOBAL_HELP)
