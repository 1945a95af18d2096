"""Printing results: an aligned table for people; json, csv or tsv for scripts (SPEC 2.3).

A record (dict) prints as a two-column table, a list of records as rows, a list of values one
per line, a scalar bare, and None (a write with nothing to say) not at all.
"""

from __future__ import annotations

import time

from dbtool.core import wirejson

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
    ]
)


def error_line(message: str, help_path: str | None = None) -> str:
    """The one line an error prints on stderr (SPEC 2.4); a usage error names the help to read."""
    return f"dbtool: error: {message}" + (f" (see '{help_path} --help')" if help_path else "")


def render(result: object, fmt: str = "table", columns: tuple[str, ...] = ()) -> str:
    """The text to print for a result ('' for nothing); ends with a newline when non-empty."""
    if result is None:
        return ""
    if fmt == "json":
        return wirejson.dumps(result, spaced=True) + "\n"
    if fmt in ("csv", "tsv"):
        return _delimited(result, "," if fmt == "csv" else "\t")
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


def _cell(name: str, value: object) -> str:
    if name in TIME_FIELDS and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return scalar_text(value)


def _is_records(result: object) -> bool:
    return isinstance(result, list) and bool(result) and all(isinstance(r, dict) for r in result)


def _fields(records: list[dict]) -> list[str]:
    fields: dict[str, None] = {}
    for record in records:
        for key in record:
            fields.setdefault(key, None)
    return list(fields)


def _table(result: object, columns: tuple[str, ...]) -> str:
    if isinstance(result, dict):
        width = max((len(k) for k in result), default=0)
        return "".join(f"{k.ljust(width)}  {_cell(k, v)}\n" for k, v in result.items())
    if _is_records(result):
        fields = _fields(result)
        shown = [c for c in columns if c in fields] if columns else fields
        shown = shown or fields
        rows = [[_cell(f, r.get(f)) for f in shown] for r in result]
        widths = [max(len(f), *(len(row[i]) for row in rows)) for i, f in enumerate(shown)]
        lines = ["  ".join(f.ljust(w) for f, w in zip(shown, widths, strict=True)).rstrip()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        return "\n".join(lines) + "\n"
    if isinstance(result, list):
        return "".join(scalar_text(v) + "\n" for v in result)
    return scalar_text(result) + "\n"


def _delimited(result: object, sep: str) -> str:
    import csv
    import io

    buf = io.StringIO()
    if sep == ",":
        out = csv.writer(buf, lineterminator="\n")
    else:
        out = csv.writer(buf, delimiter="\t", quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    records = [result] if isinstance(result, dict) else result if _is_records(result) else None
    if records is not None:
        fields = _fields(records)
        out.writerow(fields)
        for r in records:
            out.writerow([scalar_text(r.get(f)) for f in fields])
    elif isinstance(result, list):
        for v in result:
            out.writerow([scalar_text(v)])
    else:
        out.writerow([scalar_text(result)])
    return buf.getvalue()
