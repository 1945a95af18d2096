"""Route a bound command and print its result: the second and third stages of ``main``.

``execute`` checks the options, sends the request (``sender``: server, direct read or auto-start;
``run_driver`` for a command with a client-side driver), prints the result and returns the exit
code; ``report`` prints an error as its one line. Drivers and local commands import from here and
from ``binder``/``output``, never from ``main``, the entry point.
"""

from __future__ import annotations

import sys

from dbtool.core.commands import LOCAL, Command
from dbtool.core.errors import DbtoolError, Refused, UsageError

from .binder import GlobalOptions, default_timeout
from .output import emit

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
        from .output import ExitWith, shaped

        code = 0
        if type(result) is ExitWith:
            result, code = result.result, result.code
        # --fields of the command: the table shows every field asked for, and an empty CSV/TSV has them as its header
        fields = tuple(params.get("fields") or ())
        text = shaped(result, opts, () if fields else cmd.columns, fields or cmd.columns, cmd.name)
    except DbtoolError as err:
        return report(err, opts, cmd)
    emit(text)
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
