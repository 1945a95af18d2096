"""The client side of ``compare``: the classes as one table for people, notes on stderr, and the exit
code of ``--exit-code`` (a CI gate). Client path: standard library only."""

from __future__ import annotations

import sys

from dbtool.core.commands import Command
from dbtool.core.protocol import Records
from dbtool.core.rules.compare import CLASSES, GATING

from .binder import GlobalOptions
from .output import ExitWith, one_line

ROW_FIELDS = ("testname", "item_path", "baseline_status", "status")


def compare(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """Send the comparison; ``--json`` prints it as it comes, other formats one row per listed test
    (its class first), a table after a summary line. ``--exit-code``: 1 on a regression or an
    infrastructure entry, else 0."""
    gate = params.pop("exit_code", False)
    result = send(params)
    for note in notes(result):
        print(f"dbtool: note: {note}", file=sys.stderr)
    shown = result
    if opts.output != "json":
        rows = [(name, *(entry[f] for f in ROW_FIELDS)) for name in CLASSES for entry in result[name]]
        shown = Records(("class", *ROW_FIELDS), rows)
        if opts.output == "table":
            from .output import emit

            emit(summary(result) + "\n")
    if not gate:
        return shown
    return ExitWith(shown, 1 if any(result[name] for name in GATING) else 0)


def summary(result: dict) -> str:
    """``run 12 against baseline 10: 1 regression, 0 infrastructure, ...``."""
    against = f"baseline {result['baseline']}" if result["baseline"] is not None else "no baseline"
    counts = ", ".join(f"{len(result[name])} {_label(name, len(result[name]))}" for name in CLASSES)
    return f"run {result['run']} against {against}: {counts}"


def _label(name: str, count: int) -> str:
    label = name.replace("_", " ")
    return label[:-1] if label == "regressions" and count == 1 else label


def notes(result: dict) -> list[str]:
    """What a reader of the comparison should know that its lists do not say."""
    found = []
    if result["baseline"] is None:
        found.append(
            f"run {result['run']} has no baseline (no earlier complete run of its target matches): "
            "every test counts as new"
        )
    if result.get("unfinished"):
        found.append(one_line(f"{result['unfinished']} test(s) of run {result['run']} are not finished: not compared"))
    return found
