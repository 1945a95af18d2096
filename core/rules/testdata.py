"""Test data from CSV (reference C.4, SPEC 9.7): lines into rows, the pass/fail rule, the test's roll-up.

Standard library only: the CLI's csv-to-test-data driver validates a whole input with
``read_records`` before it sends anything, and the server checks every request again.

Each CSV line is ``category,variable,value,expected,tol,units,comment,status,type``: standard CSV
(quotes allowed, a quoted field may span lines, spaces after a comma skipped), each field stripped
of surrounding whitespace, missing fields empty, fields after the ninth ignored. Lines whose fields
are all empty (blank lines, ``,,,``) are skipped. A **bad line** refuses the whole input:

* it is not valid CSV — an unterminated quoted field, text between a closing quote and the next
  comma, or a field longer than 128 KiB (``csv.field_size_limit``);
* it has no variable name — the second field is missing or empty.

Stored row: value, expected and tol are numbers when they spell one (``parse_number``: ints and
floats with an exponent; ``nan``, ``inf``, ``8mA`` stay text; an int too large for 64 bits becomes a
float), NULL when empty; units NULL when empty; category, comment and type ``""`` when empty. The
status is the one given, unless it is empty or exactly ``n/a``; then it is computed by ``judge``,
or NULL when value and expected are not both numbers.
"""

from __future__ import annotations

import csv
import io
import math
import operator
from collections.abc import Iterable, Iterator
from decimal import Decimal

from .numbers import parse_number

FIELDS = ("category", "variable", "value", "expected", "tol", "units", "comment", "status", "type")
WIDTH = len(FIELDS)
NOT_GIVEN_STATUS = ("", "n/a")
COMPARATORS = {">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le}
INT64 = 2**63

# test-data-rollup (reference C.4): the test's status from its data rows' pass/fail counts.
ROLLUP_KEEP_STATUSES = ("WARN", "FAIL")  # a PASS from the data does not hide these


def read_records(text: str) -> list[list[str]]:
    """The data lines of ``text`` as lists of nine stripped fields; ValueError names the first bad line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    records: list[list[str]] = []
    start = 1  # the line where the current record begins (a quoted field may span lines)
    try:
        for fields in reader:
            record = list(map(str.strip, fields[:WIDTH]))
            if len(record) < WIDTH:
                record.extend([""] * (WIDTH - len(record)))
            if record[1]:
                records.append(record)
            elif any(record):
                raise ValueError(f"line {start}: no variable name (the second field is empty)")
            start = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(
            f"line {start}: not valid CSV ({err}); quote a whole field, with nothing between the closing "
            "quote and the next comma"
        ) from None
    return records


def write_records(records: Iterable[list[str]]) -> str:
    """CSV text that ``read_records`` reads back as the same records (trailing empty fields dropped)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for record in records:
        end = len(record)
        while end > 2 and not record[end - 1]:
            end -= 1
        writer.writerow(record[:end])
    return out.getvalue()


def cell(text: str) -> int | float | str | None:
    """A value/expected/tol field as stored: the number it spells (SPEC 9.7), else its text; None
    when empty. Non-finite results (``1e999``) stay text; an int beyond 64 bits becomes a float."""
    if not text:
        return None
    value = parse_number(text)
    if value is None:
        return text
    if isinstance(value, float):
        return value if math.isfinite(value) else text
    return value if -INT64 <= value < INT64 else float(value)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float))


def _decimal(x: int | float) -> Decimal:
    """The decimal a number was written as (floats by their shortest repr: 0.1 is 0.1, not 0.1000…0555)."""
    return Decimal(repr(x)) if isinstance(x, float) else Decimal(x)


def judge(value: object, expected: object, tol: object) -> str | None:
    """C.4 step 2 (SPEC 9.7): ``pass``/``fail`` of a measured value (cells as ``cell`` gives them),
    or None when it cannot be judged.

    Value and expected must both be numbers. tol a number → pass iff expected-tol ≤ value ≤
    expected+tol, on the decimals as written (1.0 is within 1.1±0.1); tol one of ``> < >= <=`` →
    pass iff value OP expected; tol empty → pass iff value equals expected; any other tol →
    ``ERROR: bad tol comparator <tol>``.
    """
    if not (_is_number(value) and _is_number(expected)):
        return None
    if tol is None:
        return "pass" if value == expected else "fail"
    if _is_number(tol):
        return "pass" if _within(value, expected, tol) else "fail"
    compare = COMPARATORS.get(tol)
    if compare is None:
        return f"ERROR: bad tol comparator {tol}"
    return "pass" if compare(value, expected) else "fail"


def _within(value: float, expected: float, tol: float) -> bool:
    """expected-tol ≤ value ≤ expected+tol, exactly on the decimals as written.

    Floats decide unless value lies within rounding distance of a bound; then decimals do.
    """
    low, high = expected - tol, expected + tol
    slack = 1e-9 * (abs(expected) + abs(tol) + abs(value))  # far above float rounding error
    if low + slack < value < high - slack:
        return True
    if value < low - slack or value > high + slack:
        return False
    measured, wanted, margin = _decimal(value), _decimal(expected), _decimal(tol)
    return wanted - margin <= measured <= wanted + margin


def data_rows(records: Iterable[list[str]]) -> Iterator[dict]:
    """The stored rows of records from ``read_records``: numbers parsed, status given or judged."""
    cells: dict[str, object] = {}  # expected and tol repeat from line to line: convert each text once
    for category, variable, value, expected, tol, units, comment, status, type_ in records:
        value = cell(value)
        if expected not in cells:
            cells[expected] = cell(expected)
        if tol not in cells:
            cells[tol] = cell(tol)
        expected, tol = cells[expected], cells[tol]
        if status in NOT_GIVEN_STATUS:
            status = judge(value, expected, tol)
        yield {
            "category": category,
            "variable": variable,
            "value": value,
            "expected": expected,
            "tol": tol,
            "units": units or None,
            "comment": comment,
            "status": status,
            "type": type_,
        }


def latest_per_key(rows: Iterable[dict]) -> list[dict]:
    """One row per (category, variable): the last one given, in the order of the last occurrences
    (as if each line were upserted in turn)."""
    latest: dict[tuple[str, str], dict] = {}
    for row in rows:
        key = (row["category"], row["variable"])
        latest.pop(key, None)
        latest[key] = row
    return list(latest.values())


def rollup_status(current: str | None, pass_count: int, fail_count: int) -> str | None:
    """The test's status after test-data-rollup: FAIL when any row failed, else PASS when any passed
    (unless the test is WARN or FAIL already), else unchanged."""
    if fail_count > 0:
        return "FAIL"
    if pass_count > 0 and current not in ROLLUP_KEEP_STATUSES:
        return "PASS"
    return current
