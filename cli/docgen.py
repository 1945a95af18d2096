"""Generate the shell completions and man pages from the command registry (SPEC 2.3).

``python -m dbtool.cli.docgen [--out DIR] [--check]`` writes ``completions/`` (bash, zsh, fish)
and ``man/`` (``dbtool.1``, ``dbtool-server.1`` and one page per visible command) under DIR, the
repository root by default. With ``--check`` it writes nothing, lists the files that are stale,
missing or extra, and exits 1 when there are any.

The completion scripts come from Typer's own completion machinery: they are thin shims that call
``dbtool`` back with ``_DBTOOL_COMPLETE`` set, so completion always follows the installed registry.
The man pages are roff (man(7) macros) written here from the registry; click-man cannot be used,
it drops every OPTIONS section with typer >= 0.26. The output is deterministic (no dates, no paths).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import typer
from dbtool.core import __version__
from dbtool.core.commands import COMMANDS, LOCAL, READ, SERVER, WRITE, Command, Param
from typer.core import TyperGroup

from .app import APP_HELP, COMMON, WITHOUT_COMMON, build_app
from .binder import COMPLETE_VAR
from .guide import examples, first_sentence

PROG = "dbtool"
REGENERATE = "python -m dbtool.cli.docgen"
COMPLETIONS = {"bash": "completions/dbtool", "zsh": "completions/_dbtool", "fish": "completions/dbtool.fish"}
MAN_DIR = "man"
# Files the generator owns in man/: a page of a command that left the registry is removed.
MAN_PAGE = re.compile(r"^dbtool(-[a-z0-9-]+)?\.1$")

GLOBAL_METAVARS = {
    "--area": "PATH",
    "--project": "ALIAS",
    "--timeout": "SECONDS",
    "--format": "FORMAT",
    "--field": "NAME=VALUE",
}

KIND_TEXT = {
    READ: "A read: dbtool sends it to the area's server when one is running, and otherwise opens the "
    "database read-only and answers in its own process. A read never starts a server.",
    WRITE: "A write: it always goes through the area's server, which dbtool starts (detached) when none "
    "is running; dbtool returns once the server has committed it.",
    SERVER: "Answered by the area's server itself, never queued behind writes and never run without a "
    "server: dbtool exits 3 when none is running.",
    LOCAL: "One of dbtool's own commands: it runs in the dbtool process itself.",
}

EXIT_STATUS = (
    ("0", "Success."),
    ("1", "A lookup found nothing (get-test-id, get-var, ... on a missing record)."),
    ("2", "Usage error (unknown option, missing argument)."),
    ("3", "No server could be reached or started, or it stayed busy past --timeout."),
    (
        "4",
        "The request was refused: invalid value, unknown run/test id for a write, locked run, "
        "locked area, a test open for another job, unknown project, read-only area, wrong key.",
    ),
    ("5", "Internal error (a bug): the message names the request id and the log to read."),
)
ERRORS_TEXT = (
    "Errors go to standard error as one line, `dbtool: error: <what happened and what to do>`, with the "
    "request id when a server was involved; a traceback only with --trace."
)

ENVIRONMENT = (
    ("DBTOOL_AREA", "The area directory when neither --area nor --project is given (nor DBTOOL_PROJECT)."),
    (
        "DBTOOL_PROJECT",
        "The alias of a registered project (dbtool projects add) whose area is used when --area and --project "
        "are not given; it wins over DBTOOL_AREA.",
    ),
    ("DBTOOL_TIMEOUT", "Seconds to wait for a busy or starting server when --timeout is not given (default 60)."),
    (
        "DBTOOL_LOCK_TOKEN",
        "The token of the area lock (printed by dbtool lock-area), sent with every write: while the area is "
        "locked, only writes with it are taken.",
    ),
    (
        "DBTOOL_JOB_TOKEN",
        "The token of the job a test is open for (set by dbtool exec --exclusive for its command), sent with every "
        "write: only writes with it change that test.",
    ),
    (
        "XDG_CONFIG_HOME",
        "Where the project registry is kept: $XDG_CONFIG_HOME/dbtool/projects.toml (default ~/.config).",
    ),
)
COMPLETE_ENV = (
    COMPLETE_VAR,
    "Set by the shell completion scripts when they call dbtool back for candidates; not for interactive use.",
)

FILES = (
    (".dbtool/", "The area's directory (mode 0700), found from --area, $DBTOOL_AREA or the nearest ancestor."),
    (".dbtool/config.toml", "The area's keys and its server and database settings (written by init)."),
    (".dbtool/dbtool.db", "The SQLite database."),
    (".dbtool/server.json", "Where the running server listens (host, port, pid, key); present only while it runs."),
    (".dbtool/server.lock", "Held by the server for its whole life; a free lock means no live server."),
    (".dbtool/start.lock", "Serialises the automatic start of a server."),
    (".dbtool/logs/server.log", "The server's log."),
)

ROUTING = (
    "Every invocation finds its area (--area, else $DBTOOL_AREA, else the nearest ancestor directory "
    "holding .dbtool/) and the area's server through .dbtool/server.json.",
    "A read goes to the live server when there is one; with no server, dbtool opens the database "
    "read-only and runs the same query in its own process. A read never starts a server.",
    "A write always goes through the server. When none is running, dbtool starts one (detached, under "
    ".dbtool/start.lock, so racing clients start exactly one) and then sends the write. A server that "
    "died is detected through .dbtool/server.lock and replaced. The server acknowledges a write after "
    "it has committed it.",
    "A busy server asks the client to retry; dbtool backs off and retries until --timeout, then exits 3.",
)
OUTPUT = (
    "Lists and records print as an aligned table for people; --json (or --format json, csv, tsv or table) "
    "is for scripts. --json prints a JSON array of objects for a list, one object for a record, and the "
    "bare JSON value for a scalar.",
    "A command that creates something prints its id alone; a single-value query prints the bare value; "
    "other writes print nothing.",
    "A table keeps each record on one line: a newline, tab or carriage return in a value shows as \\n, \\t "
    "or \\r. CSV quotes values as usual. TSV does not quote: a tab, newline, carriage return or backslash in "
    "a value is written \\t, \\n, \\r or \\\\. An empty list prints nothing as a table and its header "
    "line as CSV or TSV. --json with another --format is a usage error.",
)


# --------------------------------------------------------------------------------------------
# roff text


_GLYPHS = {"\u2014": r"\(em", "\u2013": r"\(en", "\u2192": r"\(->", "\u00b1": r"\(+-", "\u2026": "..."}


def _plain(text: str) -> str:
    """Escape backslashes and spell non-ASCII characters as roff glyphs; hyphens stay hyphens."""
    text = text.replace("\\", r"\e")
    return "".join(ch if ch.isascii() else _GLYPHS.get(ch, f"\\[u{ord(ch):04X}]") for ch in text)


def _typed(text: str) -> str:
    """Something a user types (an option, a command name): every hyphen is a minus sign."""
    return _plain(text).replace("-", r"\-")


def _bold(text: str) -> str:
    return rf"\fB{_typed(text)}\fR"


def _italic(text: str) -> str:
    return rf"\fI{_typed(text)}\fR"


def _names_pattern(names: Iterable[str]) -> str:
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


# In prose: `code`, options (--run-id), command names with a hyphen, and a lone "-" are typed text.
_COMMAND_NAMES = _names_pattern(n for n, c in COMMANDS.items() if not c.hidden and ("-" in n or " " in n))
_TYPED_IN_PROSE = re.compile(
    rf"`(?P<code>[^`]+)`|(?<![\w-])(?P<typed>--?[A-Za-z0-9][\w-]*|{_COMMAND_NAMES}|--|-)(?![\w-])"
)
_COMMAND_NAME = re.compile(rf"(?<![\w-])({_COMMAND_NAMES})(?![\w-])")


def roff_text(text: str) -> str:
    """One paragraph of help as roff text: escaped, code in bold, typed words with real minus signs."""
    out: list[str] = []
    last = 0
    for m in _TYPED_IN_PROSE.finditer(text):
        out.append(_plain(text[last : m.start()]))
        out.append(_bold(m["code"]) if m["code"] is not None else _typed(m["typed"]))
        last = m.end()
    out.append(_plain(text[last:]))
    return _line("".join(out))


def _line(text: str) -> str:
    """A text line that roff must not read as a request (one starting with a period or an apostrophe)."""
    text = " ".join(text.split())
    return "\\&" + text if text.startswith((".", "'")) else text


def _arg(text: str) -> str:
    """A quoted macro argument."""
    return '"' + _plain(text).replace('"', r"\(dq") + '"'


def _sentence(text: str) -> str:
    """A help fragment as written (it may start with a literal value), ending with a period."""
    return text if text.endswith(".") else text + "."


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def _paragraph_lines(paragraphs: Iterable[str]) -> list[str]:
    lines: list[str] = []
    for i, paragraph in enumerate(paragraphs):
        if i:
            lines.append(".PP")
        lines.append(roff_text(paragraph))
    return lines


# --------------------------------------------------------------------------------------------
# the registry as the pages see it


def visible_commands() -> list[Command]:
    """The subcommands, in registry order (hidden commands are protocol-only)."""
    return [c for c in COMMANDS.values() if not c.hidden]


def page_name(cmd: Command) -> str:
    return "dbtool-" + cmd.name.replace(" ", "-")


def _group(cmd: Command) -> str:
    return cmd.name.split(" ", 1)[0] if " " in cmd.name else ""


def _mentioned(cmd: Command) -> list[Command]:
    """Other visible commands that a command's help names (cross-references for SEE ALSO)."""
    seen = dict.fromkeys(m[1] for m in _COMMAND_NAME.finditer(cmd.help))
    return [COMMANDS[n] for n in seen if n != cmd.name]


def _default_text(p: Param) -> str:
    if p.default in (None, False, ""):
        return ""
    if isinstance(p.default, list):
        return ",".join(p.default)
    return str(p.default)


def _synopsis_param(p: Param) -> str:
    if p.type == "argv" or p.positional:
        word = _italic(p.metavar)
    elif p.type == "bool":
        word = _bold(p.option)
    else:
        word = rf"{_bold(p.option)}\ {_italic(p.metavar)}"
    if not p.required:
        word = f"[{word}]"
    return word + ("..." if p.multiple else "")


def _ordered_params(cmd: Command) -> list[Param]:
    """Options first, then positionals: valid for every command, also those taking argv words."""
    return [p for p in cmd.params if not p.positional and p.type != "argv"] + [
        p for p in cmd.params if p.positional or p.type == "argv"
    ]


def _option_tag(p: Param) -> str:
    if p.positional or p.type == "argv":
        return _italic(p.metavar)
    if p.type == "bool":
        return _bold(p.option)
    return rf"{_bold(p.option)} {_italic(p.metavar)}"


def _option_notes(p: Param) -> str:
    notes = []
    if p.required:
        notes.append("Required.")
    default = _default_text(p)
    if default and "default" not in p.help.lower():  # the help's own words about the default win
        notes.append(f"Default: {_bold(default)}.")
    if p.choices:
        notes.append("One of: " + ", ".join(_typed(c) for c in p.choices) + ".")
    if p.range_text:
        notes.append(roff_text(f"Must be {p.range_text}."))
    if p.nonempty:
        notes.append("Must not be empty.")
    if p.aliases:
        notes.append("Also spelt " + ", ".join(_bold(a) for a in p.aliases) + ".")
    if p.multiple:
        notes.append("May be given more than once.")
    if p.type == "argv":
        notes.append(r"Every remaining word; put \fB\-\-\fR before them when one begins with \-.")
    return " ".join(notes)


def _options_section(cmd: Command) -> list[str]:
    lines = [".SH OPTIONS"]
    if not cmd.params:
        return [*lines, "This command takes no options of its own."]
    for p in _ordered_params(cmd):
        text = roff_text(_sentence(p.help))
        notes = _option_notes(p)
        lines += [".TP", _option_tag(p), f"{text} {notes}".strip()]
    lines += [".TP", _bold("-h") + ", " + _bold("--help"), "Print the command's help and exit."]
    return lines


def _global_options() -> list[tuple[str, str]]:
    tags = []
    for _name, decl, kind, help_text in COMMON:
        tag = _bold(decl) if kind is bool else rf"{_bold(decl)} {_italic(GLOBAL_METAVARS.get(decl, 'VALUE'))}"
        tags.append((tag, help_text))
    return tags


def _global_options_section() -> list[str]:
    lines = [".SH GLOBAL OPTIONS", roff_text("Options every command takes, before or after the command's name:")]
    for tag, help_text in _global_options():
        lines += [".TP", tag, roff_text(_sentence(help_text))]
    return lines


def _definition_list(section: str, entries: Iterable[tuple[str, str]], tag: Callable[[str], str]) -> list[str]:
    lines = [f".SH {section}"]
    for name, text in entries:
        lines += [".TP", tag(name), roff_text(text)]
    return lines


def _examples_section(cmd: Command) -> list[str]:
    """Real invocations (cli/guide.py's EXAMPLES), each with what it does."""
    found = examples(cmd)
    if not found:
        return []
    lines = [".SH EXAMPLES"]
    for line, text in found:
        lines += [".TP", _bold(f"dbtool {line}"), roff_text(_sentence(text[:1].upper() + text[1:]))]
    return lines


def _exit_status_section() -> list[str]:
    lines = _definition_list("EXIT STATUS", EXIT_STATUS, _bold)
    return [*lines, ".PP", roff_text(ERRORS_TEXT)]


def _see_also(pages: Iterable[str]) -> list[str]:
    pages = list(dict.fromkeys(pages))
    lines = [".SH SEE ALSO"]
    for i, page in enumerate(pages):
        lines.append(f".BR {_typed(page)} (1){',' if i < len(pages) - 1 else ''}")
    return lines


def _header(title: str) -> list[str]:
    return [
        f'.\\" Generated from the dbtool command registry by `{REGENERATE}`; do not edit.',
        f'.TH {_arg(title.upper())} 1 "" {_arg(f"dbtool {__version__}")} "dbtool manual"',
        ".nh",
        ".ad l",
    ]


# --------------------------------------------------------------------------------------------
# pages


def command_page(cmd: Command) -> str:
    """The man page of one subcommand."""
    common = cmd.name not in WITHOUT_COMMON
    synopsis = [".SH SYNOPSIS", ".B dbtool"]
    if common:
        synopsis.append(r"[\fIGLOBAL\ OPTIONS\fR]")
    synopsis.append(_bold(cmd.name))
    synopsis += [_synopsis_param(p) for p in _ordered_params(cmd)]

    routing = (
        f"dbtool refuses it with exit status 4 and changes nothing: {cmd.dead}." if cmd.dead else KIND_TEXT[cmd.kind]
    )
    description = [".SH DESCRIPTION", *_paragraph_lines(_paragraphs(cmd.help)), ".PP", roff_text(routing)]
    if cmd.api != cmd.name:
        description += [
            ".PP",
            rf"Megatest API name: {_bold(cmd.api)}; the protocol accepts both spellings.",
        ]
    if cmd.columns:
        columns = ", ".join(cmd.columns)
        description += [
            ".PP",
            roff_text(
                f"The table output shows the columns {columns}"
                + (", or the fields asked for with --fields" if any(p.name == "fields" for p in cmd.params) else "")
                + "; --json and --format csv or tsv give every field."
            ),
        ]

    lines = [
        *_header(page_name(cmd)),
        ".SH NAME",
        rf"{_typed(page_name(cmd))} \- {roff_text(first_sentence(cmd.help))}",
    ]
    lines += synopsis + description + _options_section(cmd)
    if common:
        lines += _global_options_section()
    lines += _examples_section(cmd)
    lines += _exit_status_section()
    if common:
        lines += _definition_list("ENVIRONMENT", ENVIRONMENT, _bold)
    group = _group(cmd)
    related = [page_name(c) for c in _mentioned(cmd)]
    lines += _see_also(["dbtool", *([f"dbtool-{group}"] if group else []), *related])
    return "\n".join(lines) + "\n"


def group_page(group: str, help_text: str, members: list[Command]) -> str:
    """The page of a command group (``server``): its subcommands and where each is described."""
    lines = [
        *_header(f"dbtool-{group}"),
        ".SH NAME",
        rf"{_typed(f'dbtool-{group}')} \- {roff_text(first_sentence(help_text))}",
    ]
    lines += [
        ".SH SYNOPSIS",
        ".B dbtool",
        r"[\fIGLOBAL\ OPTIONS\fR]",
        _bold(group),
        r"\fICOMMAND\fR [\fIOPTIONS\fR]",
        ".SH DESCRIPTION",
        *_paragraph_lines(_paragraphs(help_text)),
        ".SH COMMANDS",
    ]
    for cmd in members:
        lines += [".TP", _bold(cmd.name.split(" ", 1)[1]), roff_text(cmd.help)]
        lines.append(rf"See {_bold(page_name(cmd))}(1).")
    lines += _global_options_section() + _exit_status_section()
    lines += _definition_list("ENVIRONMENT", ENVIRONMENT, _bold)
    lines += _see_also(["dbtool", *(page_name(c) for c in members)])
    return "\n".join(lines) + "\n"


def _command_list(commands: list[Command], group_help: dict[str, str]) -> list[str]:
    """One entry per command; a group's own entry comes just before its first member."""
    lines = []
    for i, cmd in enumerate(commands):
        group = _group(cmd)
        if group in group_help and group not in (_group(c) for c in commands[:i]):
            summary = roff_text(_sentence(first_sentence(group_help[group])))
            lines += [".TP", _bold(group), rf"{summary} See {_bold(f'dbtool-{group}')}(1)."]
        tag = _bold(cmd.name) + (rf" \fI({cmd.kind})\fR" if cmd.kind in (READ, WRITE) else "")
        lines += [".TP", tag, roff_text(_sentence(first_sentence(cmd.help)))]
    return lines


def main_page(commands: list[Command], group_help: dict[str, str]) -> str:
    """dbtool.1: every subcommand, the global options, routing, output, exit status, environment, files."""
    own = [c for c in commands if c.kind in (LOCAL, SERVER)]
    api = [c for c in commands if c.kind in (READ, WRITE)]
    lines = [
        *_header("dbtool"),
        ".SH NAME",
        r"dbtool \- " + roff_text(first_sentence(APP_HELP.removeprefix("dbtool \u2014 "))),
    ]
    lines += [
        ".SH SYNOPSIS",
        ".B dbtool",
        r"[\fIGLOBAL\ OPTIONS\fR] \fICOMMAND\fR [\fIOPTIONS\fR] [\fIARGUMENTS\fR]",
        ".br",
        ".B dbtool",
        rf"\fICOMMAND\fR {_bold('--help')}",
        ".br",
        ".B dbtool",
        _bold("--version"),
        ".SH DESCRIPTION",
        *_paragraph_lines(_paragraphs(APP_HELP)[1:]),
        ".PP",
        roff_text(
            "Every command has its own page, dbtool-COMMAND(1), and `dbtool COMMAND --help` explains it. "
            "Each command is a read or a write (see ROUTING below); the Megatest API names map to "
            "command names by turning `->` into `-to-`, `/` and `_` into `-`, and dropping `!` and `?`."
        ),
        ".SH COMMANDS",
        '.SS "dbtool\'s own commands"',
        *_command_list(own, group_help),
        '.SS "Megatest API commands"',
        *_command_list(api, group_help),
    ]
    lines += _global_options_section()
    lines += [".TP", _bold("--version"), "Print dbtool's version and exit."]
    lines += [".TP", _bold("-h") + ", " + _bold("--help"), "Print the help and exit."]
    lines += [".SH ROUTING", *_paragraph_lines(ROUTING)]
    lines += [".SH OUTPUT", *_paragraph_lines(OUTPUT)]
    lines += _exit_status_section()
    lines += _definition_list("ENVIRONMENT", (*ENVIRONMENT, COMPLETE_ENV), _bold)
    lines += _definition_list("FILES", FILES, _italic)
    pages = [*(page_name(c) for c in commands), *(f"dbtool-{g}" for g in group_help)]
    lines += _see_also(sorted(pages))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# completions


def completion_scripts(cli: TyperGroup) -> dict[str, str]:
    """The bash, zsh and fish scripts from Typer's completion classes, for prog name ``dbtool``.

    Each script only calls ``dbtool`` back with ``_DBTOOL_COMPLETE=complete_<shell>``; the
    candidates come from the installed command tree at completion time.
    """
    from typer._click.shell_completion import get_completion_class
    from typer.completion import completion_init

    completion_init()  # registers Typer's shell classes (build_app uses add_completion=False)
    scripts = {}
    for shell, path in COMPLETIONS.items():
        complete = get_completion_class(shell)(cli, {}, PROG, COMPLETE_VAR)
        source = complete.source().strip("\n")
        if shell == "zsh":
            source = _zsh_autoloadable(source, complete.func_name)
        scripts[path] = _with_notice(source)
    return scripts


def _zsh_autoloadable(script: str, func: str) -> str:
    """Make Typer's zsh script complete on the first Tab when zsh autoloads it from $fpath.

    Typer's script only registers its function with compdef, which suits ``source``; autoloaded
    as ``_dbtool`` it would register on the first Tab and complete only from the second one.
    """
    register = f"compdef {func} {PROG}"
    if script.count(register) != 1:
        raise RuntimeError(f"Typer's zsh completion script changed; expected one line {register!r}:\n{script}")
    both = f'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then\n  {func} "$@"\nelse\n  {register}\nfi'
    return script.replace(register, both)


def _with_notice(script: str) -> str:
    """The script with a "generated" comment; zsh's ``#compdef`` line must stay the first line."""
    notice = f"# Generated from the dbtool command registry by `{REGENERATE}`; do not edit."
    first, _, rest = script.partition("\n")
    if first.startswith("#compdef"):
        return f"{first}\n{notice}\n{rest}\n"
    return f"{notice}\n{script}\n"


# --------------------------------------------------------------------------------------------
# all files


def _group_help(cli: TyperGroup) -> dict[str, str]:
    """The help of each command group (``server``), as the Typer app declares it."""
    groups = dict.fromkeys(_group(c) for c in visible_commands() if _group(c))
    return {g: cli.commands[g].help or "" for g in groups}


def generate() -> dict[str, str]:
    """Every generated file: relative path → content."""
    cli = typer.main.get_command(build_app(None))
    assert isinstance(cli, TyperGroup)
    commands = visible_commands()
    group_help = _group_help(cli)
    files = completion_scripts(cli)
    files[f"{MAN_DIR}/dbtool.1"] = main_page(commands, group_help)
    for group, help_text in group_help.items():
        members = [c for c in commands if _group(c) == group]
        files[f"{MAN_DIR}/dbtool-{group}.1"] = group_page(group, help_text, members)
    for cmd in commands:
        files[f"{MAN_DIR}/{page_name(cmd)}.1"] = command_page(cmd)
    return files


def compare(files: dict[str, str], out: Path) -> dict[str, list[str]]:
    """What differs between the generated files and those under ``out``: stale, missing, extra."""
    report: dict[str, list[str]] = {"stale": [], "missing": [], "extra": []}
    for path, text in sorted(files.items()):
        target = out / path
        if not target.is_file():
            report["missing"].append(path)
        elif target.read_text(encoding="utf-8") != text:
            report["stale"].append(path)
    report["extra"] = [p for p in _owned_files(out) if p not in files]
    return report


def _owned_files(out: Path) -> list[str]:
    man = out / MAN_DIR
    if not man.is_dir():
        return []
    return sorted(f"{MAN_DIR}/{f.name}" for f in man.iterdir() if f.is_file() and MAN_PAGE.match(f.name))


def write(files: dict[str, str], out: Path) -> dict[str, list[str]]:
    """Bring ``out`` up to date (files that already match are left alone); returns what changed."""
    report = compare(files, out)
    for path in report["stale"] + report["missing"]:
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[path], encoding="utf-8")
    for path in report["extra"]:
        (out / path).unlink()
    return report


def source_root() -> Path | None:
    """The repository root when this module runs from a source checkout, else None."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "core" / "commands.py").is_file():
        return root
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description="Generate dbtool's shell completions and man pages from the command registry."
    )
    parser.add_argument("--out", type=Path, help="directory that holds completions/ and man/ (default: the checkout)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    out = args.out or source_root()
    if out is None:
        parser.error("not running from a source checkout: pass --out DIR")
    files = generate()
    if args.check:
        report = compare(files, out)
        for kind, paths in report.items():
            for path in paths:
                print(f"{kind}: {path}")
        if any(report.values()):
            print(f"the generated files under {out} are out of date; run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    report = write(files, out)
    for kind, paths in report.items():
        for path in paths:
            print(f"{'removed' if kind == 'extra' else 'wrote'}: {path}")
    if not any(report.values()):
        print(f"{len(files)} files under {out} are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
