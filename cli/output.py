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

FORMATS = ("table", "json", "ndjson", "csv", "tsv")
MIN_CUT = 8  # a column a table narrows to fit the terminal keeps at least this many characters

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


def render(
    result: object,
    fmt: str = "table",
    columns: tuple[str, ...] = (),
    header: tuple[str, ...] = (),
    *,
    no_header: bool = False,
    width: int = 0,
    pretty: bool = False,
) -> str:
    """The text to print for a result ('' for nothing); ends with a newline when non-empty.

    ``columns``: the fields a table shows (every field when empty). ``header``: the field names of
    an empty list of records that does not carry its own (Records do), for the header line of CSV
    and TSV; without one an empty list prints nothing. ``no_header``: tables, CSV and TSV without
    their line of field names. ``width``: a table's rows are cut to fit it (0: never cut).
    ``pretty``: JSON indented, for a terminal (else one line).
    """
    if result is None:
        return ""
    if fmt == "json":
        if pretty:
            import json

            return json.dumps(plain(result), indent=2, ensure_ascii=False) + "\n"
        return wirejson.dumps(plain(result), spaced=True) + "\n"
    if fmt == "ndjson":
        return _ndjson(result)
    if fmt in ("csv", "tsv"):
        lines = _lines(result, header)
        if no_header and _grid(result, header) is not None:
            lines = lines[1:]
        return _csv(lines) if fmt == "csv" else _tsv(lines)
    return _table(result, columns, no_header, width)


def _ndjson(result: object) -> str:
    """One line of JSON per record (or per value of a list); one line for anything else."""
    grid = _grid(result, ()) if not isinstance(result, dict) else None
    if grid is not None:
        fields, rows = grid
        items: list = [dict(zip(fields, row, strict=True)) for row in rows]
    elif isinstance(result, list):
        items = result
    else:
        items = [result]
    return "".join(wirejson.dumps(plain(item)) + "\n" for item in items)


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


def _table(result: object, columns: tuple[str, ...], no_header: bool = False, width: int = 0) -> str:
    if isinstance(result, dict):
        key_width = max((len(k) for k in result), default=0)
        room = width - key_width - 2 if width else 0
        return "".join(f"{k.ljust(key_width)}  {cut(_cell(k, v), room)}\n" for k, v in result.items())
    grid = _grid(result, ())
    if grid is not None:
        fields, rows = grid
        if not rows:  # an empty list: nothing for people (CSV and TSV keep the header)
            return ""
        shown = [c for c in columns if c in fields] or fields
        where = [fields.index(f) for f in shown]
        cells = [[_cell(f, row[i]) for f, i in zip(shown, where, strict=True)] for row in rows]
        widths = [max(len(f), *(len(row[i]) for row in cells)) for i, f in enumerate(shown)]
        if width:
            widths = fit(widths, width)
        lines = [] if no_header else [_row(shown, widths)]
        lines += [_row(row, widths) for row in cells]
        return "\n".join(lines) + "\n"
    if isinstance(result, list):  # values: one per line
        return "".join(cut(one_line(scalar_text(v)), width) + "\n" for v in result)
    return scalar_text(result) + "\n"


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(cut(c, w).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, its end replaced by … when cut (0: never cut)."""
    if width <= 0 or len(text) <= width:
        return text
    return text[: width - 1] + "…"


def fit(widths: list[int], room: int, gap: int = 2) -> list[int]:
    """Column widths whose row fits in ``room`` characters (``gap`` between columns): the widest
    column is narrowed first, none below ``MIN_CUT`` (or its own width, when narrower). When even
    that is too wide, the rows are as narrow as allowed and the terminal wraps them."""
    widths = list(widths)
    excess = sum(widths) + gap * (len(widths) - 1) - room
    while excess > 0:
        i = max(range(len(widths)), key=widths.__getitem__)
        floor = max(MIN_CUT, max((w for j, w in enumerate(widths) if j != i), default=0))
        if widths[i] <= MIN_CUT:
            break
        step = min(excess, widths[i] - max(floor, MIN_CUT)) or 1  # down to the next widest, or by one
        widths[i] -= step
        excess -= step
    return widths


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


def _csv(lines: list[list[str]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(lines)
    return buf.getvalue()


def _tsv(lines: list[list[str]]) -> str:
    return "".join("\t".join(v.translate(_TSV_ESCAPES) for v in line) + "\n" for line in lines)


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


def project(result: object, fields: list[str], name: str) -> object:
    """``--fields A,B``: only those fields of each record, in that order (a usage error names the
    fields the records have when one is unknown, or says the command returns no records)."""
    from dbtool.core.errors import UsageError

    grid = _grid(result, tuple(fields))
    if grid is None:
        raise UsageError(f"--fields picks fields of records, and {name} returns {_kind(result)}; leave --fields out")
    have, rows = grid
    if rows or type(result) is Records or isinstance(result, dict):
        unknown = [f for f in fields if f not in have]
        if unknown:
            raise UsageError(
                f"--fields: {name}'s records have no field {', '.join(map(repr, unknown))}; "
                f"they have {', '.join(have) or 'no fields'}"
            )
    where = [have.index(f) for f in fields] if rows or type(result) is Records else []
    picked = [tuple(row[i] for i in where) for row in rows]
    if isinstance(result, dict):
        return dict(zip(fields, picked[0], strict=True)) if picked else {}
    return Records(tuple(fields), picked)


def _kind(result: object) -> str:
    if isinstance(result, list):
        return "a list of values"
    if isinstance(result, bool):
        return "true or false"
    return "a single value"


def jq_text(result: object, expr: str, pretty: bool) -> str:
    """``--jq EXPR``: the outputs of the jq program over the result's JSON, each on its own line
    (indented on a terminal); a string prints without quotes, as ``jq -r`` prints it."""
    from dbtool.core.errors import UsageError

    try:
        import jq
    except ImportError:  # (a dependency of dbtool: only a broken install lacks it)
        raise UsageError("--jq needs the jq package (pip install jq)") from None
    try:
        outputs = jq.compile(expr).input_value(plain(result)).all()
    except ValueError as err:
        raise UsageError(f"--jq {expr!r}: {one_line(str(err).strip().splitlines()[0])}") from None
    lines = []
    for value in outputs:
        if isinstance(value, str):
            lines.append(value)
        elif pretty:
            import json

            lines.append(json.dumps(value, indent=2, ensure_ascii=False))
        else:
            lines.append(wirejson.dumps(value, spaced=True))
    return "".join(line + "\n" for line in lines)


def terminal_width() -> int:
    """The width of the terminal standard output is ($COLUMNS first), or 0 when it is no terminal."""
    if not sys.stdout.isatty():
        return 0
    text = os.environ.get("COLUMNS", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns or 80  # (a terminal that gives no size)
    except OSError:
        return 80


def shaped(result: object, opts, columns: tuple[str, ...] = (), header: tuple[str, ...] = (), name: str = "") -> str:
    """The text of a result as the global options shape it: --fields, --jq, the format,
    --no-header, a table cut to the terminal and JSON indented on one."""
    if opts.fields:
        result = project(result, opts.fields, name or "this command")
        columns = header = tuple(opts.fields)
    if opts.jq is not None:
        return jq_text(result, opts.jq, sys.stdout.isatty())
    fmt = opts.output
    width = terminal_width() if fmt in ("table", "json") else 0
    return render(
        result,
        fmt,
        columns,
        header,
        no_header=opts.no_header,
        width=width if fmt == "table" else 0,
        pretty=fmt == "json" and width > 0,
    )


def show(result: object, opts, columns: tuple[str, ...] = (), header: tuple[str, ...] = (), name: str = "") -> None:
    """Print a result as ``shaped`` makes it."""
    emit(shaped(result, opts, columns, header, name))
