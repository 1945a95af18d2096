"""``dbtool report`` and ``dbtool dashboard``: the results grid as a one-file HTML report, and live
in a browser. The page, its data and the web server are in dbtool.core.web, imported only here."""

from __future__ import annotations

import os
import tempfile

from dbtool.core.area import find_area
from dbtool.core.commands import COMMANDS, INT64
from dbtool.core.errors import NotFound, Refused, UsageError

from .binder import GlobalOptions, default_timeout
from .drivers import _watched

ALL_DETAILS_UP_TO = 20_000  # a report of at most this many tests has the details of every one
MOST_DETAILS = 100_000  # a larger one has those of the tests that did not pass, at most this many


def sender(opts: GlobalOptions):
    """``send(command name, params)`` → the result, routed as every command is (core/client.py)."""
    from dbtool.core.client import call

    area = find_area(opts.area)
    timeout = default_timeout(opts)

    def send(name: str, params: dict) -> object:
        return call(area, COMMANDS[name], params, timeout=timeout).result

    return send


# -- report ---------------------------------------------------------------------------------------


def report(
    opts: GlobalOptions,
    *,
    run_id: list[str] | None = None,
    target: str | None = None,
    last: int | None = None,
    output: str | None = None,
) -> int:
    """Write the grid of the runs to ``output`` (atomically: a temporary file renamed)."""
    from dbtool.core.web import build
    from dbtool.core.web.page import config, script_json, write_page

    run_ids = _run_ids(run_id or [])
    if not output:
        raise UsageError("give the file to write with -o FILE.html")
    if run_ids and (target is not None or last is not None):
        raise UsageError("give either --run-id N (repeatable) or --target PATT [--last K], not both")
    if not run_ids and target is None:
        raise UsageError("give the runs: --run-id N (repeatable), or --target PATT [--last K] ('%' for every target)")
    temp = _temp_beside(output)
    try:
        send = sender(opts)
        runs, seq = build.select_runs(send, run_ids, target, last)
        if not runs:
            raise NotFound(f"no run's target matches {target!r}; `dbtool get-runs` lists the runs and their targets")
        counter = _Counter() if _watched() else None
        grid = build.collect(send, runs, seq, progress=counter)
        data = grid.finish()
        not_passed = grid.tests > ALL_DETAILS_UP_TO
        cap = MOST_DETAILS if not_passed else None
        lines = []
        for test in build.details(send, [run["id"] for run in runs], not_passed=not_passed, cap=cap):
            where = grid.cell_of(test["run_id"], test["testname"], test["item_path"])
            if where is not None:
                lines.append(f"{where[0]} {where[1]} {script_json(build.detail_record(test))}\n")
        if counter is not None:
            counter.done()
        note = _details_note(grid.tests, not_passed, len(lines), cap)
        title = _title(runs, target)
        with os.fdopen(os.open(temp, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as out:
            write_page(out.write, title, config("report", note), data, lines)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # as a file the user wrote (mkstemp makes it private)
        os.replace(temp, output)
    except OSError as err:
        _remove(temp)
        raise UsageError(f"cannot write {output}: {err.strerror or err}") from None
    except BaseException:
        _remove(temp)
        raise
    return 0


def _run_ids(values: list[str]) -> list[int]:
    """The --run-id values (each may be a comma list too)."""
    ids = []
    for value in values:
        for part in value.split(","):
            try:
                run_id = int(part)
            except ValueError:
                raise UsageError(f"--run-id expects a run id (an integer), got {part!r}") from None
            if not -INT64 <= run_id < INT64:
                raise Refused(f"--run-id {part} is out of range (64-bit integers only)")
            ids.append(run_id)
    return ids


def _temp_beside(output: str) -> str:
    """A temporary file in the output's directory (so the rename is atomic), made before anything is
    read: an output that cannot be written is reported at once."""
    if os.path.isdir(output):
        raise UsageError(f"cannot write {output}: it is a directory; give a file name, e.g. {output}/report.html")
    directory = os.path.dirname(os.path.abspath(output))
    try:
        fd, temp = tempfile.mkstemp(prefix=".dbtool-report-", suffix=".html", dir=directory)
    except OSError as err:
        raise UsageError(
            f"cannot write {output}: {err.strerror}; give a file in a directory you can write to"
        ) from None
    os.close(fd)
    return temp


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _details_note(tests: int, not_passed: bool, given: int, cap: int | None) -> str:
    """What the report says of a test whose details it lacks."""
    if not not_passed:
        return "This report has no details of this test."
    text = (
        f"To keep its size small, this report of {tests:,} tests has the details of the tests that did not pass "
        "(not COMPLETED PASS) only"
    )
    if cap is not None and given >= cap:
        text += f", and of the first {cap:,} of those"
    return text + "; `dbtool dashboard` shows every test's."


def _title(runs: list[dict], target: str | None) -> str:
    if len(runs) == 1:
        return f"dbtool: {runs[0]['target']} {runs[0]['runname']}"
    return f"dbtool: {len(runs)} runs" + (f" of {target}" if target and target != "%" else "")


class _Counter:
    """How many tests were read so far, with the time elapsed, on stderr (for a person watching;
    cli/progress.py: the total is not known before the runs are read)."""

    def __init__(self) -> None:
        from .progress import Phases

        self.seen = 0
        self.line = Phases("report", "reading the runs")

    def __call__(self, tests: int) -> None:
        self.seen = tests
        self.line.phase(f"{tests:,} tests read")

    def done(self) -> None:
        self.line.done()


# -- dashboard ------------------------------------------------------------------------------------


def dashboard(opts: GlobalOptions, *, bind: str | None = None, port: int = 0, no_open: bool = False) -> int:
    """Serve the live grid until SIGINT or SIGTERM."""
    from dbtool.core.web.dashboard import serve

    area = find_area(opts.area)
    return serve(area, sender(opts), bind or "127.0.0.1", port, open_browser=not no_open, timeout=default_timeout(opts))
