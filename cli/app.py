"""The Typer app, generated from the registry: help, usage errors, completion, local commands.

``build_app(cmd)`` builds only the invoked command (help for one command, a usage error in one
command); ``build_app(None)`` builds all of them (``dbtool --help``, completion, man pages).
Each command's function gets a generated signature, so Typer sees ordinary typed parameters.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable

import typer
from dbtool.core import __version__
from dbtool.core.commands import COMMANDS, LOCAL, Command, Param
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer._click.shell_completion import CompletionItem, add_completion_class
from typer._completion_classes import FishComplete, ZshComplete, completion_init
from typer.core import TyperCommand, TyperGroup

from .binder import WITHOUT_COMMON, GlobalOptions, compact, is_number, timeout_problem
from .guide import FAMILIES, epilog, family, first_sentence
from .output import FORMATS, error_line

APP_HELP = (
    "dbtool — the results database of a test/job area.\n\n"
    "Every Megatest API command is a subcommand; writes go through the area's server (started on "
    "demand), reads use it when it runs and read the database directly otherwise."
)

_ANNOTATIONS = {"str": str, "int": int, "float": float, "bool": bool, "list": str, "argv": list[str], "path": str}

# The options every command accepts after its name too: (parameter name, declaration, type, help).
COMMON = (
    ("g_area", "--area", str, "the area directory (default: $DBTOOL_AREA, else the nearest with .dbtool/)"),
    (
        "g_project",
        "--project",
        str,
        "the area registered under this alias (`dbtool projects add`; default: $DBTOOL_PROJECT, which wins over "
        "$DBTOOL_AREA); not together with --area",
    ),
    ("g_timeout", "--timeout", float, "seconds to wait for a busy or starting server (default $DBTOOL_TIMEOUT or 60)"),
    ("g_trace", "--trace", bool, "print the request's server-side log entries to stderr"),
    ("g_json", "--json", bool, "print the result as JSON"),
    (
        "g_format",
        "--format",
        str,
        "output format: table, json, ndjson (one JSON record per line), csv or tsv (tsv: tab-separated, no quoting; "
        "a tab, newline, carriage return or backslash in a value is written \\t, \\n, \\r, \\\\). On a terminal a "
        "table is cut to its width (…) and JSON is indented; piped, nothing is cut and JSON is one line",
    ),
    ("g_fields", "--fields", str, "A,B: print only these fields of each record, in this order"),
    ("g_no_header", "--no-header", bool, "tables, csv and tsv without their line of field names"),
    (
        "g_jq",
        "--jq",
        str,
        "EXPR: print what the jq program EXPR makes of the JSON result, one output per line (a string without "
        "quotes, as jq -r)",
    ),
    (
        "g_request_fields",
        "--field",
        list[str],
        "NAME=VALUE, repeatable: a field of the request, which its handler, the change events it makes (and so "
        "[[notify]] commands) and the request log see; `dbtool server log --field NAME=VALUE` finds the requests "
        "that carried it. After the command's name a command's own --field wins (put this one before the name)",
    ),
)


def _check_format(value: str | None) -> str | None:
    if value is not None and value not in FORMATS:
        raise typer.BadParameter(f"must be one of {', '.join(FORMATS)}; got {value!r}")
    return value


def _complete_projects(incomplete: str) -> list[str]:
    """Shell completion of --project: the aliases of the user's registry."""
    from dbtool.core.errors import DbtoolError
    from dbtool.core.projects import load

    try:
        return sorted(alias for alias in load() if alias.startswith(incomplete))
    except DbtoolError:
        return []


def _check_fields(value: list[str] | None) -> list[str] | None:
    from dbtool.core.rules.fields import parse_option

    for text in value or ():
        try:
            parse_option(text)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
    return value


def _field_list(value: str | None) -> list[str] | None:
    """--fields A,B: the field names (at least one)."""
    if value is None:
        return None
    fields = [part.strip() for part in value.split(",") if part.strip()]
    if not fields:
        raise typer.BadParameter("give the names of the fields to print, e.g. --fields id,testname")
    return fields


def _check_jq(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise typer.BadParameter("give a jq program, e.g. --jq '.[].id'")
    return value


def _check_timeout(value: float | None) -> float | None:
    problem = timeout_problem(value) if value is not None else ""
    if problem:
        raise typer.BadParameter(problem)
    return value


_COMMON_CHECKS = {
    "g_format": _check_format,
    "g_timeout": _check_timeout,
    "g_request_fields": _check_fields,
    "g_fields": _field_list,
    "g_jq": _check_jq,
}


def _converter(p: Param) -> Callable[[object], object] | None:
    """An option callback turning Typer's value into the registry's type (lists, choices)."""
    if (p.type == "list" and not p.multiple) or p.choices or p.type == "path":

        def convert(value: object) -> object:
            if value is None or not isinstance(value, str):
                return value
            try:
                return p.from_text(value)
            except ValueError as err:
                raise typer.BadParameter(str(err).replace(f"{p.label} ", "", 1)) from None

        return convert
    return None


def _choices(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """Shell completion of an option's fixed values."""

    def complete(incomplete: str) -> list[str]:
        return [c for c in choices if c.startswith(incomplete)]

    return complete


def _parameter(p: Param) -> inspect.Parameter:
    annotation = list[str] if p.multiple else _ANNOTATIONS[p.type]
    default: object = ... if p.required else p.default
    if p.type == "list" and isinstance(default, list):
        default = ",".join(default)
    if p.type == "argv":
        info = typer.Argument(... if p.required else None, help=p.help, metavar=p.metavar, show_default=False)
    elif p.positional:
        info = typer.Argument(default, help=p.help, metavar=p.metavar, callback=_converter(p), show_default=False)
    else:
        info = typer.Option(
            default,
            *p.options,
            help=p.help,
            metavar=p.metavar or None,
            callback=_converter(p),
            autocompletion=_choices(p.choices) if p.choices else None,
            show_default=default not in (None, False, "", ...),
        )
    return inspect.Parameter(p.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def _common_parameters(taken: frozenset[str] = frozenset()) -> list[inspect.Parameter]:
    """The global options as a command's own (those of a spelling the command has itself left out)."""
    params = []
    for name, decl, kind, help_text in COMMON:
        if decl in taken:
            continue
        default = False if kind is bool else None
        complete = _choices(FORMATS) if name == "g_format" else _complete_projects if name == "g_project" else None
        info = typer.Option(
            default,
            decl,
            help=help_text,
            callback=_COMMON_CHECKS.get(name),
            autocompletion=complete,
            show_default=False,
        )
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=kind))
    return params


def _callback_for(cmd: Command) -> Callable[..., None]:
    def run(typer_ctx: typer.Context, **kwargs: object) -> None:
        from .dispatch import execute

        opts = typer_ctx.find_root().obj or GlobalOptions()
        for name, _decl, _kind, _help in COMMON:
            value = kwargs.pop(name, None)
            if value not in (None, False):
                opts.set(name[2:], value)
        params = {p.name: kwargs.get(p.name) for p in cmd.params}
        if cmd.kind != LOCAL:
            params = compact(cmd, params)
        raise typer.Exit(execute(cmd, params, opts))

    context = inspect.Parameter("typer_ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    signature = [context, *(_parameter(p) for p in cmd.params)]
    if cmd.name not in WITHOUT_COMMON:
        signature += _common_parameters(frozenset(o for p in cmd.params for o in p.options))
    run.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    run.__name__ = cmd.name.replace(" ", "_").replace("-", "_")
    run.__doc__ = cmd.help
    return run


def _version(value: bool) -> None:
    if value:
        print(f"dbtool {__version__}")
        raise typer.Exit(0)


_HELP = {decl: help_text for _name, decl, _kind, help_text in COMMON}


def _root(
    ctx: typer.Context,
    area: str = typer.Option(None, "--area", help=_HELP["--area"], show_default=False),
    project: str = typer.Option(
        None, "--project", help=_HELP["--project"], autocompletion=_complete_projects, show_default=False
    ),
    timeout: float = typer.Option(
        None, "--timeout", help=_HELP["--timeout"], callback=_check_timeout, show_default=False
    ),
    trace: bool = typer.Option(False, "--trace", help=_HELP["--trace"]),
    json: bool = typer.Option(False, "--json", help=_HELP["--json"]),
    format: str = typer.Option(
        None,
        "--format",
        help=_HELP["--format"],
        callback=_check_format,
        autocompletion=_choices(FORMATS),
        show_default=False,
    ),
    field: list[str] = typer.Option(  # noqa: B008 (Typer's way to declare an option)
        None, "--field", help=_HELP["--field"], callback=_check_fields, metavar="NAME=VALUE", show_default=False
    ),
    fields: str = typer.Option(
        None, "--fields", help=_HELP["--fields"], callback=_field_list, metavar="A,B", show_default=False
    ),
    no_header: bool = typer.Option(False, "--no-header", help=_HELP["--no-header"]),
    jq: str = typer.Option(None, "--jq", help=_HELP["--jq"], callback=_check_jq, metavar="EXPR", show_default=False),
    version: bool = typer.Option(
        False, "--version", help="print dbtool's version and exit", callback=_version, is_eager=True
    ),
) -> None:
    opts = GlobalOptions()
    opts.area, opts.timeout, opts.trace, opts.json, opts.format = area, timeout, trace, json, format
    opts.project = project
    opts.fields, opts.no_header, opts.jq = fields, no_header, jq
    opts.set("request_fields", list(field or []))
    ctx.obj = opts


class _NumbersAreValues(TyperCommand):
    """A subcommand whose parser reads a negative number (``add-var cnt -3``) as a value, not as an
    option, exactly as the fast binder does (``binder.is_number``). Click has no setting for this
    (``ignore_unknown_options`` would also swallow a mistyped ``--option`` as a value), so the parser's
    private ``_process_opts`` is wrapped; the typer pin and tests/test_usage.py hold it."""

    def make_parser(self, ctx: typer.Context):
        parser = super().make_parser(ctx)
        process_opts = parser._process_opts

        def process(arg: str, state) -> None:
            if is_number(arg):
                state.largs.append(arg)
            else:
                process_opts(arg, state)

        parser._process_opts = process
        return parser


class _FamilyGroup(TyperGroup):
    """The top-level group: its help lists the commands by family (runs, tests, ...), each with the
    first sentence of its help in full; dead Megatest entries are left out (they are refused)."""

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {key: [] for key, _title in FAMILIES}
        for name in self.list_commands(ctx):
            sub = self.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            cmd = COMMANDS.get(name)
            if cmd is not None and cmd.dead:
                continue
            if cmd is None:  # a group (server, projects): its first member's family
                cmd = next((c for c in COMMANDS.values() if c.name.startswith(name + " ")), None)
                summary = (sub.help or "").split("\n", 1)[0]
                key = family(cmd) if cmd is not None else "setup"
                summary = first_sentence(summary)
            else:
                key, summary = family(cmd), first_sentence(cmd.help)
            sections.setdefault(key, []).append((name, summary))
        with formatter.section("Commands"):
            for n, (key, title) in enumerate(FAMILIES):
                rows = sorted(sections.get(key, ()))
                if rows:
                    if n:
                        formatter.write_paragraph()
                    formatter.write_text(f"{title}:")
                    with formatter.indentation():
                        formatter.write_dl(rows, col_max=34)
        formatter.write_paragraph()
        formatter.write_text("`dbtool help COMMAND` (or `dbtool COMMAND --help`) explains a command, with examples.")


def run_app(args: list[str], only: Command | None) -> int:
    """Run the Typer app on ``args`` and return the exit code. Click's usage errors print as one
    line, ``dbtool: error: <what> (see 'dbtool CMD --help')``; help stays Click's own."""
    app = build_app(only)
    try:
        code = app(args=args, prog_name="dbtool", standalone_mode=False)
    except NoArgsIsHelpError as err:  # `dbtool`, `dbtool server`: the help, as Click prints it
        err.show()
        return err.exit_code
    except ClickException as err:
        print(usage_line(err, only), file=sys.stderr)
        return err.exit_code
    except typer.Abort:
        print("dbtool: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


def usage_line(err: ClickException, only: Command | None) -> str:
    """Click's message on one line, its first letter lowered and its final period dropped, with
    the help of the command it is about."""
    text = " ".join(err.format_message().split()).removesuffix(".")
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    ctx = getattr(err, "ctx", None)
    path = ctx.command_path if ctx is not None else "dbtool" if only is None else f"dbtool {only.name}"
    return error_line(text, path)


def build_app(only: Command | None = None) -> typer.Typer:
    settings = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
    app = typer.Typer(
        name="dbtool",
        help=APP_HELP,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        context_settings=settings,
        cls=_FamilyGroup,
    )
    app.callback()(_root)
    groups = {
        name: typer.Typer(
            name=name, help=help_text, no_args_is_help=True, rich_markup_mode=None, context_settings=settings
        )
        for name, help_text in GROUP_HELP.items()
    }
    commands = [only] if only is not None else list(COMMANDS.values())
    used = set()
    for cmd in commands:
        if cmd.hidden:
            continue
        first, _, rest = cmd.name.partition(" ")
        group, name = (groups[first], rest) if rest else (app, cmd.name)
        if rest:
            used.add(first)
        if any(p.type == "argv" for p in cmd.params):
            settings_for, cls = {"allow_interspersed_args": False}, None
        else:
            settings_for, cls = {}, _NumbersAreValues if any(p.positional for p in cmd.params) else None
        group.command(name=name, help=cmd.help, epilog=epilog(cmd), context_settings=settings_for, cls=cls)(
            _callback_for(cmd)
        )
    for name, group in groups.items():
        if name in used or only is None:
            app.add_typer(group, name=name)
    return app


# Commands of two words (`server start`, `projects add`): the group's help.
GROUP_HELP = {
    "server": "Start, stop and inspect the area's server.",
    "config": "Read and change the area's config.toml (comments and layout kept; values checked).",
    "projects": "Areas by alias: `dbtool --project ALIAS COMMAND` works on the area registered as ALIAS, from "
    "any directory. The registry is the user's own, $XDG_CONFIG_HOME/dbtool/projects.toml (~/.config by default).",
}


# -- shell completion (``_DBTOOL_COMPLETE``, see main.py and completions/) -----------------------


def enable_completion() -> None:
    """Register the shell classes that answer ``_DBTOOL_COMPLETE=complete_<shell>``.

    ``add_completion=False`` (no --install-completion option) also skips Typer's registration, so
    without this every completion call fails with "Shell bash not supported". Typer's own zsh and
    fish classes render each help through rich markup, which raises on a help like "test[/item]"
    and wraps a long help onto several lines (each a bogus candidate); ours print it plain, on one line.
    """
    completion_init()
    add_completion_class(_PlainZshComplete, "zsh")
    add_completion_class(_PlainFishComplete, "fish")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _zsh_quote(text: str) -> str:
    # The candidates are eval'ed inside `_arguments '*: :(("value":"help" ...))'`.
    return text.replace('"', '""').replace("'", "'\\''").replace("$", "\\$").replace("`", "\\`").replace(":", r"\\:")


class _PlainZshComplete(ZshComplete):
    def format_completion(self, item: CompletionItem) -> str:
        value = _zsh_quote(item.value)
        return f'"{value}":"{_zsh_quote(_one_line(item.help))}"' if item.help else f'"{value}"'


class _PlainFishComplete(FishComplete):
    def format_completion(self, item: CompletionItem) -> str:
        return f"{item.value}\t{_one_line(item.help)}" if item.help else item.value
