"""Values of a whole record given as JSON (insert-run, insert-test): each checked against its column.

Column kinds: ``integer`` (an int, not a bool, within 64 bits), ``real`` (an int or a finite
float), ``text`` (a string of valid Unicode) and ``number or text`` (any of those scalars, as
test_data's value columns hold). NULL (None) is judged apart: a column either takes it or not.
"""

from __future__ import annotations

import math

INTEGER, REAL, TEXT, NUMBER_OR_TEXT = "integer", "real", "text", "number or text"
INT64 = 2**63

_EXPECTED = {INTEGER: "an integer", REAL: "a number", TEXT: "text", NUMBER_OR_TEXT: "a number or text"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -INT64 <= value < INT64


def _is_real(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _is_text(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")  # JSON can spell lone surrogates ("\ud800"), which no database stores
    except UnicodeEncodeError:
        return False
    return True


_FITS = {
    INTEGER: _is_int,
    REAL: _is_real,
    TEXT: _is_text,
    NUMBER_OR_TEXT: lambda value: _is_real(value) or _is_text(value),
}


def bad_value(column: str, kind: str, value: object, nullable: bool = True) -> str | None:
    """What is wrong with ``value`` for a column of this kind, or None when it fits."""
    if value is None:
        return None if nullable else f"{column} must not be null"
    if _FITS[kind](value):
        return None
    return f"{column} must be {_EXPECTED[kind]}, not {value!r}"
