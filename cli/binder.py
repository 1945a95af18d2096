"""The fast argument binder: binds a complete, well-formed invocation straight from the registry.

A job wrapper calls dbtool thousands of times; importing Typer costs more than the rest of a
call. This binder handles the common case — long options (``--opt V`` / ``--opt=V``), flags and
positionals, all valid — and answers ``None`` for anything else (help, short options, errors,
unknown options), which then goes to the Typer app for the proper message. A property test
checks that both bind every command's arguments identically.
"""

from __future__ import annotations

import os

from dbtool.core.commands import COMMANDS, Command
from dbtool.core.errors import UsageError

from .output import FORMATS

# Options every command accepts, before or after its name (after it, a command's own option of the
# same spelling wins: testmeta-update-field --field, server log --field).
GLOBAL_VALUES = {
    "--area": "area",
    "--project": "project",
    "--timeout": "timeout",
    "--format": "format",
    "--field": "request_fields",
    "--fields": "fields",
    "--jq": "jq",
}
GLOBAL_FLAGS = {"--trace": "trace", "--json": "json", "--no-header": "no_header"}
REPEATED = frozenset({"request_fields"})  # a global option given again adds to it


# Commands of two words (`server start`, `projects add`, `config set`): their first words.
GROUPS = frozenset(name.partition(" ")[0] for name in COMMANDS if " " in name)
# Local commands that do not work on an existing area take no --area/--timeout/--format.
WITHOUT_COMMON = frozenset({"init", "demo", "completion", "help"})

COMPLETE_VAR = "_DBTOOL_COMPLETE"  # set by the shell completion scripts (completions/)


class GlobalOptions:
    __slots__ = ("area", "fields", "format", "jq", "json", "no_header", "project", "request_fields", "timeout", "trace")

    def __init__(self) -> None:
        self.area: str | None = None
        self.project: str | None = None
        self.timeout: float | None = None
        self.format: str | None = None
        self.trace = False
        self.json = False
        self.request_fields: list[str] = []  # --field NAME=VALUE, as given
        self.fields: list[str] | None = None  # --fields A,B: the fields of the records printed
        self.jq: str | None = None  # --jq EXPR: the result filtered by a jq program
        self.no_header = False  # --no-header: tables, CSV and TSV without their line of field names

    def set(self, name: str, value: object) -> None:
        if name in REPEATED:
            getattr(self, name).extend(value if isinstance(value, list) else [value])
        else:
            setattr(self, name, value)

    @property
    def output(self) -> str:
        return "json" if self.json or (self.jq is not None and self.format is None) else (self.format or "table")

    def check(self) -> None:
        """Refuse options that contradict each other (a usage error)."""
        if self.json and self.format not in (None, "json"):
            raise UsageError(f"--json and --format {self.format} disagree; give one of them")
        if self.area is not None and self.project is not None:
            raise UsageError(f"--area and --project both name the area; give one of them (--project {self.project})")
        if self.jq is not None and self.format not in (None, "json"):
            raise UsageError(f"--jq filters JSON and --format {self.format} is not; leave one of them out")
        if self.no_header and self.output in ("json", "ndjson"):
            raise UsageError("--no-header is for table, csv and tsv output; JSON has no header line")

    def extra(self) -> dict | None:
        """The request members these options add: the request's fields (--field)."""
        if not self.request_fields:
            return None
        from dbtool.core.rules.fields import from_options

        try:
            return {"fields": from_options(self.request_fields)}
        except ValueError as err:
            raise UsageError(str(err)) from None

    def resolve_project(self) -> None:
        """--project ALIAS: the area it names, as if given with --area (the registry is read only then)."""
        if self.project is not None:
            from dbtool.core.projects import area_of

            self.area = area_of(self.project, "--project")
            self.project = None


MAX_TIMEOUT = 7 * 86400.0  # seconds: a week is longer than anyone waits for a server


def timeout_problem(value: float) -> str:
    """Why a --timeout (or $DBTOOL_TIMEOUT) is no usable number of seconds ('' when it is)."""
    if not 0 <= value <= MAX_TIMEOUT:  # NaN fails both comparisons
        return f"must be between 0 and {MAX_TIMEOUT:g} seconds"
    return ""


def _global_value(name: str, text: str) -> object:
    if name == "timeout":
        value = float(text)
        if timeout_problem(value):
            raise ValueError(text)
        return value
    if name == "format" and text not in FORMATS:
        raise ValueError(text)
    if name == "fields":
        fields = [part.strip() for part in text.split(",") if part.strip()]
        if not fields:
            raise ValueError(text)
        return fields
    if name == "jq" and not text.strip():
        raise ValueError(text)
    if name == "request_fields":
        from dbtool.core.rules.fields import parse_option

        parse_option(text)  # (ValueError: Typer explains)
    return text


def take_global(args: list[str], i: int, opts: GlobalOptions) -> int | None:
    """If args[i] is a global option, apply it and return the next index; else None.

    Raises ValueError when it is a global option used wrongly (left for Typer to explain).
    """
    name, eq, value = args[i].partition("=")
    if name in GLOBAL_FLAGS:
        if eq:
            raise ValueError(name)
        opts.set(GLOBAL_FLAGS[name], True)
        return i + 1
    if name in GLOBAL_VALUES:
        if not eq:
            if i + 1 >= len(args):
                raise ValueError(name)
            value = args[i + 1]
            i += 1
        opts.set(GLOBAL_VALUES[name], _global_value(GLOBAL_VALUES[name], value))
        return i + 1
    return None


def bind(cmd: Command, args: list[str], opts: GlobalOptions) -> dict | None:
    """The parameters ``args`` give ``cmd`` (only those given), or None to defer to Typer."""
    by_option = {o: p for p in cmd.params if not p.positional and p.type != "argv" for o in p.options}
    positional = [p for p in cmd.params if p.positional]
    rest = next((p for p in cmd.params if p.type == "argv"), None)
    params: dict = {}
    words: list[str] = []
    i = 0
    try:
        while i < len(args):
            arg = args[i]
            if arg == "--":
                words.extend(args[i + 1 :])
                break
            if not arg.startswith("-") or arg == "-" or is_number(arg):
                if rest is not None:  # like click without interspersed args: words end the options
                    words.extend(args[i:])
                    break
                words.append(arg)
                i += 1
                continue
            if not arg.startswith("--"):
                return None  # short options (-h): Typer's business
            name, eq, value = arg.partition("=")
            p = by_option.get(name)
            if p is None:  # (a command's own option wins over a global one of the same spelling)
                nxt = take_global(args, i, opts)
                if nxt is None:
                    return None
                i = nxt
                continue
            if p.type == "bool":
                if eq:
                    return None
                params[p.name] = True
                i += 1
                continue
            if not eq:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    return None
                value = args[i + 1]
                i += 1
            if p.multiple:
                params.setdefault(p.name, []).append(value)
            else:
                params[p.name] = p.from_text(value)
            i += 1
    except ValueError:
        return None
    if rest is not None and len(words) > len(positional):
        params[rest.name] = words[len(positional) :]
        words = words[: len(positional)]
    if len(words) > len(positional):
        return None
    for p, word in zip(positional, words, strict=False):
        if word.startswith("-") and word != "-" and not is_number(word):
            return None
        try:
            params[p.name] = p.from_text(word)
        except ValueError:
            return None
    return params if all(p.name in params for p in cmd.params if p.required) else None


def is_number(word: str) -> bool:
    """A negative number given as a value (``add-var cnt -3``), not an option."""
    body = word[1:]
    return word.startswith("-") and (body[:1].isdigit() or (body[:1] == "." and body[1:2].isdigit()))


def compact(cmd: Command, params: dict) -> dict:
    """Drop parameters that are unset or equal to their default (what goes on the wire)."""
    out = {}
    for p in cmd.params:
        value = params.get(p.name)
        if value is None or value == p.default or (p.type == "bool" and value is False):
            continue
        out[p.name] = value
    return out


def default_timeout(opts: GlobalOptions) -> float:
    if opts.timeout is not None:
        return opts.timeout
    text = os.environ.get("DBTOOL_TIMEOUT")
    if not text:
        return 60.0
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"DBTOOL_TIMEOUT={text!r} is not a number of seconds") from None
    problem = timeout_problem(value)
    if problem:
        raise UsageError(f"DBTOOL_TIMEOUT={text!r} {problem}")
    return value


def find_command(words: list[str]) -> tuple[Command | None, list[str]]:
    """The command named by the first word(s) of ``words`` (``server start`` takes two)."""
    if not words:
        return None, []
    name, rest = words[0], words[1:]
    if name in GROUPS and rest:
        name, rest = f"{name} {rest[0]}", rest[1:]
    cmd = COMMANDS.get(name)
    if cmd is None or cmd.hidden:
        return None, []
    return cmd, rest
