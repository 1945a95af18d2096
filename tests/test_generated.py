"""completions/ and man/ are generated from the registry, committed, fresh, and they work.

The committed files are compared with a fresh run of ``python -m dbtool.cli.docgen``; the man
pages are checked against the registry (a page per command, every option documented) and, when
groff is installed, rendered; completion is exercised through the real CLI's protocol and, for
each shell that is installed, through the committed script itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dbtool.cli.app import WITHOUT_COMMON
from dbtool.core.commands import COMMANDS, Command

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "python -m dbtool.cli.docgen"
VISIBLE = [c for c in COMMANDS.values() if not c.hidden]
TOP_LEVEL = sorted({c.name.split(" ", 1)[0] for c in VISIBLE})
GLOBAL_OPTIONS = ("--area", "--timeout", "--trace", "--json", "--format")


def run_docgen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dbtool.cli.docgen", *args], capture_output=True, text=True, timeout=120
    )


def tree(root: Path) -> dict[str, str]:
    """The generated kinds of file under root: completions/* and man/*.1, by relative path."""
    files = [*root.glob("completions/*"), *root.glob("man/*.1")]
    return {f.relative_to(root).as_posix(): f.read_text(encoding="utf-8") for f in files if f.is_file()}


def roff(text: str) -> str:
    """How a typed word (option, command name) is spelled in the pages: hyphens as minus signs."""
    return text.replace("-", r"\-")


def page_path(cmd: Command) -> Path:
    return ROOT / "man" / f"dbtool-{cmd.name.replace(' ', '-')}.1"


def section(page: str, title: str) -> str:
    """The body of one .SH section of a roff page ('' when absent)."""
    match = re.search(rf"^\.SH {re.escape(title)}\n(.*?)(?=^\.SH |\Z)", page, re.M | re.S)
    return match.group(1) if match else ""


# --------------------------------------------------------------------------------------------
# freshness


def test_committed_files_are_what_the_registry_generates(tmp_path):
    proc = run_docgen("--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    fresh, committed = tree(tmp_path), tree(ROOT)
    stale = sorted(p for p, text in fresh.items() if committed.get(p) != text)
    extra = sorted(set(committed) - set(fresh))
    assert not stale and not extra, (
        f"completions/ and man/ are out of date with the command registry (stale or missing: {stale}; "
        f"no longer generated: {extra}); run `{REGENERATE}` and commit the result"
    )


def test_generation_is_deterministic_and_machine_independent(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        proc = run_docgen("--out", str(out))
        assert proc.returncode == 0, proc.stderr
    a, b = tree(first), tree(second)
    assert a == b
    for path, text in a.items():
        assert str(tmp_path) not in text and str(ROOT) not in text and sys.executable not in text, path
        if path.endswith(".1"):
            assert re.search(r'^\.TH "[^"]+" 1 "" ', text, re.M), f"{path}: the .TH date must stay empty"


def test_check_lists_stale_missing_and_extra_files_and_changes_nothing(tmp_path):
    assert run_docgen("--out", str(tmp_path)).returncode == 0
    assert run_docgen("--out", str(tmp_path), "--check").returncode == 0
    (tmp_path / "man" / "dbtool-get-keys.1").write_text("edited by hand\n")
    (tmp_path / "completions" / "_dbtool").unlink()
    (tmp_path / "man" / "dbtool-no-such-command.1").write_text("a page of a removed command\n")
    before = tree(tmp_path)

    proc = run_docgen("--out", str(tmp_path), "--check")

    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "stale: man/dbtool-get-keys.1",
        "missing: completions/_dbtool",
        "extra: man/dbtool-no-such-command.1",
    ]
    assert REGENERATE in proc.stderr
    assert tree(tmp_path) == before

    assert run_docgen("--out", str(tmp_path)).returncode == 0
    assert run_docgen("--out", str(tmp_path), "--check").returncode == 0
    assert not (tmp_path / "man" / "dbtool-no-such-command.1").exists()


# --------------------------------------------------------------------------------------------
# man pages


def test_every_command_has_a_page_and_an_entry_in_dbtool_1():
    main_page = (ROOT / "man" / "dbtool.1").read_text()
    listed = section(main_page, "COMMANDS")
    problems = []
    for cmd in VISIBLE:
        path = page_path(cmd)
        if not path.is_file():
            problems.append(f"{cmd.name}: no {path.name}")
            continue
        name_line = section(path.read_text(), "NAME")
        if not name_line.startswith(roff(path.stem) + r" \- "):
            problems.append(f"{cmd.name}: NAME section is {name_line!r}")
        if f".TP\n\\fB{roff(cmd.name)}\\fR" not in listed:
            problems.append(f"{cmd.name}: not listed under COMMANDS in dbtool.1")
    assert not problems, "\n".join(problems)
    groups = {f"dbtool-{c.name.split(' ', 1)[0]}.1" for c in VISIBLE if " " in c.name}
    expected = {"dbtool.1", *groups, *(page_path(c).name for c in VISIBLE)}
    assert {f.name for f in (ROOT / "man").glob("*.1")} == expected, "one page per visible command, no more"


def test_every_page_documents_every_parameter_under_options():
    problems = []
    for cmd in VISIBLE:
        page = page_path(cmd).read_text()
        options = section(page, "OPTIONS")
        if not options.strip():
            problems.append(f"{cmd.name}: no OPTIONS section")
        for p in cmd.params:
            word = f"\\fI{roff(p.metavar)}\\fR" if p.positional or p.type == "argv" else f"\\fB{roff(p.option)}\\fR"
            if f".TP\n{word}" not in options:
                problems.append(f"{cmd.name}: {p.label} is missing from OPTIONS")
            if word not in section(page, "SYNOPSIS"):
                problems.append(f"{cmd.name}: {p.label} is missing from SYNOPSIS")
        takes_globals = section(page, "GLOBAL OPTIONS")
        if cmd.name not in WITHOUT_COMMON and not all(f"\\fB{roff(o)}\\fR" in takes_globals for o in GLOBAL_OPTIONS):
            problems.append(f"{cmd.name}: GLOBAL OPTIONS incomplete")
    assert not problems, "\n".join(problems)


def test_dbtool_1_has_the_reference_sections():
    page = (ROOT / "man" / "dbtool.1").read_text()
    for title in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "GLOBAL OPTIONS", "EXIT STATUS", "ENVIRONMENT"):
        assert section(page, title).strip(), title
    assert all(f".TP\n\\fB{code}\\fR" in section(page, "EXIT STATUS") for code in "012345")
    assert "DBTOOL_AREA" in section(page, "ENVIRONMENT") and "DBTOOL_TIMEOUT" in section(page, "ENVIRONMENT")
    assert "config.toml" in section(page, "FILES") and "server.json" in section(page, "FILES")


def test_pages_escape_roff_specials():
    for path in sorted((ROOT / "man").glob("*.1")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.name}:{number}: {line!r}"
            assert line.isascii(), where
            assert not line.startswith("'"), where
            if line.startswith(".") and not line.startswith('.\\"'):
                assert re.match(r"\.(TH|SH|SS|TP|PP|B|BR|br|nh|ad l)\b", line), where
            if line.startswith((".TP", ".SH", ".PP")):
                continue
            assert not re.search(r"(?<!\\)--", line), f"unescaped option hyphens: {where}"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_pages_render_without_warnings_and_show_their_options():
    for cmd in VISIBLE:
        proc = subprocess.run(
            ["groff", "-man", "-ww", "-Tascii", str(page_path(cmd))], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0 and not proc.stderr, f"{page_path(cmd).name}: {proc.stderr}"
        text = re.sub(r".\x08", "", proc.stdout)  # drop the overstrike bold/underline
        for p in cmd.params:
            assert (p.metavar if p.positional or p.type == "argv" else p.option) in text, (cmd.name, p.name)
    for name in ("dbtool.1", "dbtool-server.1"):
        proc = subprocess.run(["groff", "-man", "-ww", "-z", str(ROOT / "man" / name)], capture_output=True, text=True)
        assert proc.returncode == 0 and not proc.stderr, f"{name}: {proc.stderr}"


# --------------------------------------------------------------------------------------------
# completion through the real CLI


def complete_bash(line: str) -> list[str]:
    """What `dbtool` answers the bash completion protocol for the last word of ``line``."""
    words = line.split(" ")
    env = {**os.environ, "_DBTOOL_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
    proc = subprocess.run(
        [sys.executable, "-m", "dbtool.cli"], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )
    assert proc.returncode == 0 and proc.stdout.strip(), f"no candidates for {line!r}: {proc.stderr.strip()}"
    return proc.stdout.splitlines()


def test_bash_protocol_offers_every_command():
    candidates = complete_bash("dbtool ")
    assert not set(TOP_LEVEL) - set(candidates), set(TOP_LEVEL) - set(candidates)
    server = [c.name.split(" ", 1)[1] for c in VISIBLE if c.name.startswith("server ")]
    assert sorted(complete_bash("dbtool server ")) == sorted(server)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("dbtool get-te", {"get-test-id", "get-tests-for-run", "get-tests-tags"}),
        ("dbtool server st", {"start", "status", "stop"}),
        ("dbtool get-tests-for-run --te", {"--testpatt"}),
        ("dbtool --area /nowhere get-run-i", {"get-run-info"}),
        ("dbtool set-var --", {"--area", "--timeout", "--trace", "--json", "--format", "--help"}),
    ],
)
def test_bash_protocol_completes_names_and_options(line, expected):
    candidates = complete_bash(line)
    prefix = line.rsplit(" ", 1)[1]
    assert expected <= set(candidates)
    assert all(c.startswith(prefix) for c in candidates)


# --------------------------------------------------------------------------------------------
# the committed scripts in real shells


@pytest.fixture
def shell_env(tmp_path) -> dict:
    """An environment whose PATH finds a `dbtool` that runs this checkout's CLI, and no user config."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "dbtool"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m dbtool.cli "$@"\n')
    wrapper.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
    }


def run_shell(argv: list[str], env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, cwd=env["HOME"])
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_script_registers_and_completes(shell_env):
    script = ROOT / "completions" / "dbtool"
    proc = run_shell(
        [
            "bash",
            "--norc",
            "--noprofile",
            "-c",
            f'source "{script}" && complete -p dbtool && '
            "COMP_WORDS=(dbtool get-tests-for-r) COMP_CWORD=1 && _dbtool_completion dbtool && "
            'printf "%s\\n" "${COMPREPLY[@]}"',
        ],
        shell_env,
    )
    out = proc.stdout.splitlines()
    assert out[0] == "complete -o default -F _dbtool_completion dbtool"
    assert {"get-tests-for-run", "get-tests-for-run-mindata"} <= set(out[1:]), proc.stderr


ZSH_STUBS = 'compdef() { print -r -- "compdef $*" }; _arguments() { print -r -- "_arguments $*" }; '


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_is_valid_when_sourced_and_when_autoloaded(shell_env):
    script = ROOT / "completions" / "_dbtool"
    assert script.read_text().startswith("#compdef dbtool\n")
    run_shell(["zsh", "-n", str(script)], shell_env)

    sourced = run_shell(
        [
            "zsh",
            "-f",
            "-c",
            ZSH_STUBS + f'source "{script}"; words=(dbtool get-tests-for-r); CURRENT=2; _dbtool_completion',
        ],
        shell_env,
    )
    assert "compdef _dbtool_completion dbtool" in sourced.stdout
    assert '"get-tests-for-run"' in sourced.stdout, sourced.stderr

    # Installed in $fpath, zsh autoloads the file as _dbtool on the first Tab: it must complete then.
    autoloaded = run_shell(
        [
            "zsh",
            "-f",
            "-c",
            ZSH_STUBS + f'fpath=("{script.parent}" $fpath); autoload -Uz _dbtool; '
            "words=(dbtool get-tests-for-run --te); CURRENT=3; _dbtool",
        ],
        shell_env,
    )
    assert "compdef" not in autoloaded.stdout
    assert autoloaded.stdout.startswith("_arguments ") and '"--testpatt"' in autoloaded.stdout, autoloaded.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_script_completes_commands_and_options(shell_env):
    script = ROOT / "completions" / "dbtool.fish"
    run_shell(["fish", "--no-execute", str(script)], shell_env)
    cases = (
        ("dbtool get-tests-for-r", "get-tests-for-run"),
        ("dbtool get-tests-for-run --te", "--testpatt"),  # its help holds "[/item]"
        ("dbtool get-runs --", "--runname"),  # its help is longer than a terminal line
    )
    for line, expected in cases:
        proc = run_shell(["fish", "-c", f'source "{script}"; complete -C "{line}"'], shell_env)
        values = [entry.split("\t", 1)[0] for entry in proc.stdout.splitlines()]
        assert expected in values, f"{line!r}: {proc.stdout!r} {proc.stderr!r}"
        prefix = line.rsplit(" ", 1)[1]
        assert all(v.startswith(prefix) for v in values), f"a candidate spilled onto another line: {proc.stdout!r}"
