"""Printing results: an aligned table for people; json, csv or tsv for scripts (SPEC 2.3).

A record (dict) prints as a two-column table, a list of records (or Records: columns and rows,
as a query returns them) as rows, a list of values one per line, a scalar bare, and None (a write
with nothing to say) not at all. A table cell shows a line break or tab escaped (``\\n``, ``\\t``,
``\\r``), so each record stays on one line; TSV escapes them (and ``\\``) the same way, without
quoting; CSV quotes as the csv module does.
"""

from __future__ import annotations

import os
import sys
import time

from dbtool.core import wirejson
from dbtool.core.protocol import Records, plain

FORMATS = ("table", "json", "csv", "tsv")

# Integer Unix times shown as local date-time in tables (JSON/CSV keep the number).
TIME_FIELDS = frozenset(
    [
        "event_time",
        "last_update",
        "creation_time",
        "execution_time",
        "update_time",
        "accessed",
        "started_at",
        "created",
        "last_df_time",
        "last_du_time",
        "starttime",
        "endtime",
        "reviewed",
        "since",
        "opened",
        "updated",
    ]
)


class ExitWith:
    """What a driver returns to leave with an exit code of its own (``compare --exit-code``): the
    result to print, then the code."""

    __slots__ = ("code", "result")

    def __init__(self, result: object, code: int) -> None:
        self.result = result
        self.code = code


def error_line(message: str, help_path: str | None = None) -> str:
    """The one line an error prints on stderr (SPEC 2.4); a usage error names the help to read."""
    return f"dbtool: error: {one_line(message)}" + (f" (see '{help_path} --help')" if help_path else "")


def render(result: object, fmt: str = "table", columns: tuple[str, ...] = (), header: tuple[str, ...] = ()) -> str:
    """The text to print for a result ('' for nothing); ends with a newline when non-empty.

    ``columns``: the fields a table shows (every field when empty). ``header``: the field names of
    an empty list of records that does not carry its own (Records do), for the header line of CSV
    and TSV; without one an empty list prints nothing.
    """
    if result is None:
        return ""
    if fmt == "json":
        return wirejson.dumps(plain(result), spaced=True) + "\n"
    if fmt == "csv":
        return _csv(result, header)
    if fmt == "tsv":
        return _tsv(result, header)
    return _table(result, columns)


def scalar_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    if isinstance(value, (dict, list)):
        return wirejson.dumps(value, spaced=True)
    return str(value)


# A table cell keeps its record on one line: line breaks and tabs are shown escaped.
_CELL_ESCAPES = str.maketrans({"\n": "\\n", "\t": "\\t", "\r": "\\r"})
# TSV as PostgreSQL's COPY and MySQL write it: no quoting; the separator, line breaks and the escape
# character itself written with a backslash, so that `cut -f` and `while IFS=$'\t' read` see one line per record.
_TSV_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def one_line(text: str) -> str:
    """Text for a line of human output: line breaks, tabs and other control characters shown escaped."""
    if text.isprintable():
        return text
    text = text.translate(_CELL_ESCAPES)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cell(name: str, value: object) -> str:
    if name in TIME_FIELDS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return one_line(scalar_text(value))


def _is_records(result: object) -> bool:
    return isinstance(result, list) and bool(result) and all(isinstance(r, dict) for r in result)


def _fields(records: list[dict]) -> list[str]:
    fields: dict[str, None] = {}
    for record in records:
        for key in record:
            fields.setdefault(key, None)
    return list(fields)


def _grid(result: object, header: tuple[str, ...]) -> tuple[list[str], list] | None:
    """(field names, rows of values) of Records, a list of records or one record; an empty list
    has the given header and no rows; None for anything else (values, a scalar)."""
    if type(result) is Records:
        return list(result.columns), result.rows
    if isinstance(result, dict):
        return list(result), [list(result.values())] if result else []
    if _is_records(result):
        fields = _fields(result)
        return fields, [[r.get(f) for f in fields] for r in result]
    if isinstance(result, list) and not result:
        return list(header), []
    return None


def _table(result: object, columns: tuple[str, ...]) -> str:
    if isinstance(result, dict):
        width = max((len(k) for k in result), default=0)
        return "".join(f"{k.ljust(width)}  {_cell(k, v)}\n" for k, v in result.items())
    grid = _grid(result, ())
    if grid is not None:
        fields, rows = grid
        if not rows:  # an empty list: nothing for people (CSV and TSV keep the header)
            return ""
        shown = [c for c in columns if c in fields] or fields
        where = [fields.index(f) for f in shown]
        cells = [[_cell(f, row[i]) for f, i in zip(shown, where, strict=True)] for row in rows]
        widths = [max(len(f), *(len(row[i]) for row in cells)) for i, f in enumerate(shown)]
        lines = ["  ".join(f.ljust(w) for f, w in zip(shown, widths, strict=True)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return "\n".join(lines) + "\n"
    if isinstance(result, list):  # values: one per line
        return "".join(one_line(scalar_text(v)) + "\n" for v in result)
    return scalar_text(result) + "\n"


def _lines(result: object, header: tuple[str, ...]) -> list[list[str]]:
    """The lines of a CSV or TSV: a header and one line per record, one value per line, or a scalar."""
    grid = _grid(result, header)
    if grid is not None:
        fields, rows = grid
        if not fields:
            return []
        return [fields, *([scalar_text(v) for v in row] for row in rows)]
    if isinstance(result, list):
        return [[scalar_text(v)] for v in result]
    return [[scalar_text(result)]]


def _csv(result: object, header: tuple[str, ...]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(_lines(result, header))
    return buf.getvalue()


def _tsv(result: object, header: tuple[str, ...]) -> str:
    return "".join("\t".join(v.translate(_TSV_ESCAPES) for v in line) + "\n" for line in _lines(result, header))


def log_entry_text(e: dict) -> str:
    """A request log entry for people: its time to the nanosecond, level, condition, context, message."""
    tick, nsecs = e.get("tick", 0), e.get("nsecs", 0)
    if not isinstance(tick, (int, float)) or not isinstance(nsecs, int):
        tick, nsecs = 0, 0
    stamp = time.strftime("%H:%M:%S", time.localtime(tick)) + f".{nsecs:09d}"
    context = e.get("context")
    where = f" {context if isinstance(context, str) else wirejson.dumps(context)}" if context not in (None, "") else ""
    return f"{stamp} {e.get('level')} {e.get('condition')}{where}: {e.get('message')}"


def emit(text: str) -> None:
    if not text:
        return
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `dbtool ... | head`: the reader left, that is fine
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
