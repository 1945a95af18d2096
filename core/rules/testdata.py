"""Test data from CSV (reference C.4, SPEC 9.7): lines into rows, the pass/fail rule, the test's roll-up.

Standard library only: the CLI's csv-to-test-data driver checks a whole input with
``record_ends`` before it sends anything (then sends it in parts cut at record ends), and the
server reads every request with ``read_records``, checking it again.

Each CSV line is ``category,variable,value,expected,tol,units,comment,status,type``: standard CSV
(quotes allowed, a quoted field may span lines, spaces after a comma skipped), each field stripped
of surrounding whitespace, missing fields empty, fields after the ninth ignored. Lines whose fields
are all empty (blank lines, ``,,,``) are skipped. A **bad line** refuses the whole input:

* it is not valid CSV — an unterminated quoted field, text between a closing quote and the next
  comma, or a field longer than 128 KiB (``csv.field_size_limit``);
* it has no variable name — the second field is missing or empty;
* its value, expected or tol is a number no finite float holds (``1e999``): SQLite's REAL
  affinity would store it as infinity.

Stored row: value, expected and tol are numbers when they spell one (``parse_number``: ints and
floats with an exponent; ``nan``, ``inf``, ``8mA`` stay text; an int too large for 64 bits becomes a
float); value and expected NULL when empty; tol, units, category, comment and type ``""`` when
empty (reference F.4 case 37). The status is the one given, unless it is empty or exactly
``n/a``; then it is computed by ``judge``, or NULL when value and expected are not both numbers.
"""

from __future__ import annotations

import csv
import io
import math
import operator
import re
from collections.abc import Iterable, Iterator
from decimal import Decimal

from .numbers import NUMBER_PATTERN, number_out_of_range

# parse_number's numbers, group 1 when an int (no fraction, no exponent)
_CELL_NUMBER = re.compile(rf"([+-]?\d+)|({NUMBER_PATTERN})")
_NUMBER_CHARS = "0123456789+-.eE"  # the ASCII characters of a number

FIELDS = ("category", "variable", "value", "expected", "tol", "units", "comment", "status", "type")
WIDTH = len(FIELDS)
NOT_GIVEN_STATUS = ("", "n/a")
COMPARATORS = {">": operator.gt, "<": operator.lt, ">=": operator.ge, "<=": operator.le}
INT64 = 2**63

# test-data-rollup (reference C.4): the test's status from its data rows' pass/fail counts.
ROLLUP_KEEP_STATUSES = ("WARN", "FAIL")  # a PASS from the data does not hide these


def read_records(text: str) -> list[list[str]]:
    """The data lines of ``text`` as lists of nine stripped fields; ValueError names the first bad line."""
    lines = _lines(text)
    if not _plain(text, lines):
        return [record for record, _, _ in _csv_records(lines)]
    records = list(csv.reader(lines))  # plain text: one line, one record
    if not _edge_space(text) and set(map(len, records)) == {WIDTH} and all(map(_VARIABLE, records)):
        return records  # nine fields each, none to strip, every line names a variable: the usual file
    kept: list[list[str]] = []
    for number, fields in enumerate(records, 1):
        record = list(map(str.strip, fields[:WIDTH]))
        if len(record) < WIDTH:
            record.extend(_PAD[len(record) :])
        if record[1]:
            kept.append(record)
        elif any(record):
            raise _no_variable(number)
    return kept


def record_ends(text: str) -> tuple[list[str], list[int]]:
    """The lines of ``text`` and, per data record, the number of lines up to its end: the places
    where the text can be cut into parts that ``read_records`` reads as the same records.

    Checks every line as ``read_records`` does (ValueError names the first bad line), then the
    numbers as ``data_rows`` does (the first line with a number out of range), without building
    the records: the client's check of a whole file before it sends any of it.
    """
    lines = _lines(text)
    if not _plain(text, lines):
        ends = []
        suspects = []
        for record, start, end in _csv_records(lines):
            ends.append(end)
            if _may_overflow("".join(record[2:5])):
                suspects.append((record, start))
        _refuse_out_of_range(suspects)
        return lines, ends
    ends = []
    suspect_lines = []
    for number, line in enumerate(lines, 1):
        fields = line.split(",", 5)
        if len(fields) > 1 and fields[1].strip():
            ends.append(number)
            if _may_overflow("".join(fields[2:5])):
                suspect_lines.append(number)
        elif any(map(str.strip, line.split(",", WIDTH)[:WIDTH])):
            raise _no_variable(number)
    _refuse_out_of_range((_stripped(lines[n - 1].split(",", WIDTH)), n) for n in suspect_lines)
    return lines, ends


_PAD = [""] * WIDTH
_KEY = operator.itemgetter(0, 1)  # (category, variable) of a record
_VARIABLE = operator.itemgetter(1)


def _lines(text: str) -> list[str]:
    """Lines as the csv module sees them: ended by \\n, \\r or \\r\\n, the ending kept."""
    return io.StringIO(text, newline="").readlines()


def _plain(text: str, lines: list[str]) -> bool:
    """No quote and no line over the field size limit: then every line is one record whose fields
    are the text between commas, and splitting at commas reads what the csv module reads."""
    return '"' not in text and max(map(len, lines), default=0) <= csv.field_size_limit()


_ASCII_SPACE = " \t\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.strip strips in ASCII, besides \r and \n


def _edge_space(text: str) -> bool:
    """Whether a field of plain text may start or end with whitespace (False: no field needs
    stripping). Cheaper than stripping 900,000 fields: a few scans of the text for the rare pairs."""
    if not text.isascii():
        return True
    for space in _ASCII_SPACE:
        if space in text:
            if text[0] == space or text[-1] == space:
                return True
            if any(
                pair in text
                for pair in (space + ",", "," + space, space + "\n", "\n" + space, space + "\r", "\r" + space)
            ):
                return True
    return False


def _no_variable(line: int) -> ValueError:
    return ValueError(f"line {line}: no variable name (the second field is empty)")


# -- numbers no float holds (``1e999``): SQLite's REAL affinity would store them as infinity --------


class NumberOutOfRange(ValueError):
    """A value, expected or tol that no finite float holds (raised by ``cell``)."""


NUMERIC_FIELDS = ((2, "value"), (3, "expected"), (4, "tol"))
_MAX_INT_DIGITS = 209  # a number with more digits before its point (and no exponent) may overflow


def _may_overflow(numbers: str) -> bool:
    """Whether value+expected+tol (joined) could hold a number out of range: such a number has an
    exponent or a great many digits. Cheap, for every line of a file."""
    return "e" in numbers or "E" in numbers or len(numbers) > _MAX_INT_DIGITS


def _stripped(fields: list[str]) -> list[str]:
    record = list(map(str.strip, fields[:WIDTH]))
    return record + _PAD[len(record) :]


def _refuse_out_of_range(records: Iterable[tuple[list[str], int]]) -> None:
    """ValueError naming the first of these (record, line) whose value, expected or tol no finite
    float holds."""
    for record, line in records:
        for index, name in NUMERIC_FIELDS:
            if number_out_of_range(record[index]):
                field = record[index] if len(record[index]) <= 40 else record[index][:37] + "..."
                raise ValueError(f"line {line}: {name} {field} is out of range for a number")


def locate_out_of_range(text: str) -> ValueError:
    """For text ``data_rows`` refused with NumberOutOfRange (read_records took it): the error
    naming the first line with a number out of range."""
    try:
        record_ends(text)
    except ValueError as err:
        return err
    return NumberOutOfRange("a value, expected or tol is out of range for a number")


def _csv_records(lines: list[str]) -> Iterator[tuple[list[str], int, int]]:
    """Each data record (nine stripped fields) with the line it starts on and the number of lines
    read to its end."""
    reader = csv.reader(lines, strict=True, skipinitialspace=True)
    start = 1  # the line where the current record begins (a quoted field may span lines)
    try:
        for fields in reader:
            record = list(map(str.strip, fields[:WIDTH]))
            if len(record) < WIDTH:
                record.extend(_PAD[len(record) :])
            if record[1]:
                yield record, start, reader.line_num
            elif any(record):
                raise _no_variable(start)
            start = reader.line_num + 1
    except csv.Error as err:
        if "field larger than field limit" in str(err):
            raise ValueError(
                f"line {start}: a field is longer than the limit of {csv.field_size_limit()} characters "
                "(128 KiB); store big texts elsewhere"
            ) from None
        raise ValueError(
            f"line {start}: not valid CSV ({err}); quote a whole field, with nothing between the closing "
            "quote and the next comma"
        ) from None


def cell(text: str) -> int | float | str | None:
    """A value/expected/tol field (stripped, as ``read_records`` gives it) as stored: the number it
    spells (SPEC 9.7, ``parse_number``), else its text; None when empty. An int beyond 64 bits
    becomes a float; a number no float holds (``1e999``) raises NumberOutOfRange."""
    if not text:
        return None
    if text.strip(_NUMBER_CHARS):  # another character: unicode digits, or text (parse_number's rule)
        match = _CELL_NUMBER.fullmatch(text)
        if match is None:
            return text
        integer = match.lastindex == 1
    else:  # ASCII digits, signs, points, exponents only: a number exactly when int/float reads it
        integer = "." not in text and "e" not in text and "E" not in text
    try:
        if integer:
            value = int(text)
            return value if -INT64 <= value < INT64 else float(value)
        number = float(text)
    except OverflowError:  # an int beyond every float
        raise NumberOutOfRange(text) from None
    except ValueError:  # "+-5", "1e", "." (or more digits than int() converts)
        if number_out_of_range(text):
            raise NumberOutOfRange(text) from None
        return text
    if not math.isfinite(number):
        raise NumberOutOfRange(text)
    return number


NUMBER_TYPES = (int, float)


def _decimal(x: int | float) -> Decimal:
    """The decimal a number was written as (floats by their shortest repr: 0.1 is 0.1, not 0.1000…0555)."""
    return Decimal(repr(x)) if isinstance(x, float) else Decimal(x)


def judge(value: object, expected: object, tol: object) -> str | None:
    """C.4 step 2 (SPEC 9.7): ``pass``/``fail`` of a measured value (cells as ``cell`` gives them),
    or None when it cannot be judged.

    Value and expected must both be numbers. tol a number → pass iff expected-tol ≤ value ≤
    expected+tol, on the decimals as written (1.0 is within 1.1±0.1); tol one of ``> < >= <=`` →
    pass iff value OP expected; tol empty (None or "") → pass iff value equals expected; any other tol →
    ``ERROR: bad tol comparator <tol>``.
    """
    if not (isinstance(value, NUMBER_TYPES) and isinstance(expected, NUMBER_TYPES)):
        return None
    if tol is None or tol == "":
        return "pass" if value == expected else "fail"
    if isinstance(tol, NUMBER_TYPES):
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


def data_rows(records: Iterable[list[str]], lead: tuple = ()) -> list[tuple]:
    """The stored rows of records from ``read_records``: ``lead`` (e.g. the test id) and the
    ``FIELDS`` — numbers parsed (value and expected NULL when empty, tol ""), status given or judged.
    NumberOutOfRange for a number no float holds (``locate_out_of_range`` names its line)."""
    cells: dict[str, object] = {}  # expected and tol repeat from line to line: convert each text once
    rows = []
    for category, variable, value, expected, tol, units, comment, status, type_ in records:
        value = cell(value)
        if expected not in cells:
            cells[expected] = cell(expected)
        if tol not in cells:
            cells[tol] = cell(tol)
        expected, tol = cells[expected], cells[tol] if tol else ""
        if status in NOT_GIVEN_STATUS:
            status = judge(value, expected, tol)
        rows.append((*lead, category, variable, value, expected, tol, units, comment, status, type_))
    return rows


def latest_per_key(records: list) -> list:
    """One record per (category, variable) — the first two fields: the last one given, in the order
    of the last occurrences (as if each line were upserted in turn)."""
    if len(set(map(_VARIABLE, records))) == len(records) or len(set(map(_KEY, records))) == len(records):
        return records  # no key repeats (the usual case; the first test is the cheaper one)
    latest: dict[tuple, list] = {}
    for record in records:
        key = _KEY(record)
        latest.pop(key, None)
        latest[key] = record
    return list(latest.values())


def rollup_status(current: str | None, pass_count: int, fail_count: int) -> str | None:
    """The test's status after test-data-rollup: FAIL when any row failed, else PASS when any passed
    (unless the test is WARN or FAIL already), else unchanged."""
    if fail_count > 0:
        return "FAIL"
    if pass_count > 0 and current not in ROLLUP_KEEP_STATUSES:
        return "PASS"
    return current
