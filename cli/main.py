"""The ``dbtool`` entry point: parse → route → print, as three separate stages.

Parse: the fast binder (``binder.py``) binds a well-formed invocation of an API command from the
registry without importing Typer; anything else (help, errors, completion, dbtool's own
commands) goes to the Typer app (``app.py``), built with only the invoked subcommand.
Route and print: ``dispatch.execute`` (``dbtool.core.client.call``: server, direct read or
auto-start; then ``output.render`` and the exit codes of SPEC 2.4).
"""

from __future__ import annotations

import os
import sys

from dbtool.core.commands import LOCAL, Command

from .binder import COMPLETE_VAR, GlobalOptions, bind, find_command, take_global
from .dispatch import execute


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
    if COMPLETE_VAR in os.environ:  # a shell asks for candidates: answered from the registry, no Typer
        from .complete import run

        return run(os.environ[COMPLETE_VAR])
    opts = GlobalOptions()
    i = 0
    try:
        while i < len(args) and args[i].startswith("--"):
            if args[i] == "--version":  # as fast as any call: no Typer
                from dbtool.core import __version__

                print(f"dbtool {__version__}")
                return 0
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


def typer_main(args: list[str], cmd: Command | None) -> int:
    """Run the Typer app (help, usage errors, completion, local commands)."""
    from .app import run_app

    try:
        return run_app(args, cmd)
    except SystemExit as done:  # shell completion exits by itself
        code = done.code
        return code if isinstance(code, int) else (0 if code is None else 1)
