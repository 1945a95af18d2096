"""The ``dbtool`` entry point: parse → route → print, as three separate stages.

Parse: the fast binder (``binder.py``) binds a well-formed invocation of an API command from the
registry without importing Typer; anything else (help, errors, completion, dbtool's own
commands) goes to the Typer app (``app.py``), built with only the invoked subcommand.
Route: ``dbtool.core.client.call`` (server, direct read, or auto-start).
Print: ``output.render`` and the exit codes of SPEC 2.4.
"""

from __future__ import annotations

import os
import sys

from dbtool.core.commands import COMMANDS, LOCAL, Command
from dbtool.core.errors import DbtoolError, Refused, UsageError

from .binder import GlobalOptions, bind, take_global, timeout_problem

COMPLETE_VAR = "_DBTOOL_COMPLETE"
GROUPS = ("server", "projects")  # commands of two words: `server start`, `projects add`


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = _main(args)
    except KeyboardInterrupt:
        print("dbtool: interrupted", file=sys.stderr)
        code = 130
    except Exception as err:  # a bug: one line, the traceback only with --trace
        if "--trace" in args:
            import traceback

            traceback.print_exc()
        from .output import error_line

        print(
            error_line(f"internal error: {type(err).__name__}: {err} (run with --trace for details)"), file=sys.stderr
        )
        code = 5
    if argv is None:
        sys.exit(code)
    return code


def _main(args: list[str]) -> int:
    if COMPLETE_VAR in os.environ:
        from .app import enable_completion

        enable_completion()
        return typer_main(args, None)
    opts = GlobalOptions()
    i = 0
    try:
        while i < len(args) and args[i].startswith("--"):
            nxt = take_global(args, i, opts)
            if nxt is None:
                break
            i = nxt
    except ValueError:
        return typer_main(args, None)
    cmd, rest = find_command(args[i:])
    if cmd is None:
        return typer_main(args, None)
    if cmd.kind != LOCAL:
        params = bind(cmd, rest, opts)
        if params is not None:
            return execute(cmd, params, opts)
    return typer_main(args, cmd)


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


def typer_main(args: list[str], cmd: Command | None) -> int:
    """Run the Typer app (help, usage errors, completion, local commands)."""
    from .app import run_app

    try:
        return run_app(args, cmd)
    except SystemExit as done:  # shell completion exits by itself
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)


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


# Commands that work on no area: --project (or $DBTOOL_PROJECT) is not looked up for them.
AREA_FREE = frozenset({"init", "demo", "projects add", "projects remove", "projects list"})


def execute(cmd: Command, params: dict, opts: GlobalOptions) -> int:
    """Route a bound command and print its result; returns the exit code."""
    try:
        opts.check()
        if cmd.name not in AREA_FREE:
            opts.resolve_project()
        params = cmd.check_cli(params, travel=cmd.kind != LOCAL)
        if cmd.kind == LOCAL:
            from .local import run_local

            return run_local(cmd, params, opts)
        if cmd.dead:
            raise Refused(cmd.dead)
        send = sender(cmd, opts)
        result = run_driver(cmd, params, opts, send) if cmd.driver else send(params)
    except DbtoolError as err:
        return report(err, opts, cmd)
    from .output import ExitWith, render

    code = 0
    if type(result) is ExitWith:
        result, code = result.result, result.code
    # --fields: the table shows every field asked for, and an empty CSV/TSV has them as its header
    fields = tuple(params.get("fields") or ())
    emit(render(result, opts.output, () if fields else cmd.columns, fields or cmd.columns))
    return code


def sender(cmd: Command, opts: GlobalOptions):
    """``send(params)``: route one request of ``cmd`` in the area of ``opts`` and return its result
    (Records stay Records: an empty one still has its columns), printing its log with --trace."""
    from dbtool.core.area import find_area
    from dbtool.core.client import call

    area = find_area(opts.area)
    timeout = default_timeout(opts)
    extra = opts.extra()

    def send(request_params: dict) -> object:
        reply = call(area, cmd, request_params, timeout=timeout, trace=opts.trace, extra=extra)
        if opts.trace:
            print_log(reply.log)
        return reply.result

    return send


def run_driver(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """Run a command's client-side driver: ``driver(cmd, params, opts, send)`` → the result to print
    (an ``output.ExitWith`` to leave with an exit code other than 0).

    ``send(params)`` routes one request and returns its result; a driver may call it many times
    (e.g. a large file in chunks) and must consume its client-only parameters.
    """
    import importlib

    module, _, name = cmd.driver.partition(":")
    return getattr(importlib.import_module(f"dbtool.cli.{module}"), name)(cmd, params, opts, send)


def report(err: DbtoolError, opts: GlobalOptions, cmd: Command | None = None) -> int:
    """Print a one-line error (the request id when a server was involved) and return its exit code;
    a usage error names the command's help."""
    if opts.trace:
        print_log(err.extra.get("log") or [])
        if err.__cause__ is not None:
            import traceback

            traceback.print_exception(err.__cause__, file=sys.stderr)
    from .output import error_line

    rid = err.extra.get("request_id")
    suffix = f" [request {rid}]" if rid and rid != "-" else ""
    help_path = f"dbtool {cmd.name}" if isinstance(err, UsageError) and cmd is not None else None
    print(error_line(err.message + suffix, help_path), file=sys.stderr)
    return err.exit_code


def print_log(entries: list) -> None:
    """--trace: the request's log entries on stderr, each with its time to the nanosecond."""
    if not entries:
        return
    from .output import log_entry_text, one_line

    for e in entries:
        if isinstance(e, dict):
            print("trace: " + one_line(log_entry_text(e)), file=sys.stderr)


def emit(text: str) -> None:
    if not text:
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `dbtool ... | head`: the reader left, that is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
