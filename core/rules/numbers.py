"""Numbers in text (SPEC 9.7): ints and floats with optional exponent; nan/inf and units stay text."""

from __future__ import annotations

import math
import re

NUMBER_PATTERN = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(NUMBER_PATTERN)


def parse_number(text: object) -> int | float | None:
    """The number ``text`` spells, or None. ``"8mA"``, ``"nan"``, ``"1_000"`` are not numbers, nor
    is a float no finite float holds (``"1e400"``): it stays text rather than becoming infinity.
    Ints are exact (up to the digits Python's int() reads)."""
    if isinstance(text, bool):
        return None
    if isinstance(text, int):
        return text
    if isinstance(text, float):
        return text if math.isfinite(text) else None
    if not isinstance(text, str):
        return None
    s = text.strip()
    m = _NUMBER.fullmatch(s)
    if m is None:
        return None
    try:
        if "." in s or "e" in s or "E" in s:
            number = float(s)
            return number if math.isfinite(number) else None
        return int(s)
    except ValueError:  # more digits than int() converts (sys.get_int_max_str_digits)
        return None


def number_out_of_range(text: str) -> bool:
    """Whether ``text`` spells a number that no finite float holds: a REAL column (SQLite's REAL
    affinity converts such text) would store it as infinity."""
    s = text.strip()
    return _NUMBER.fullmatch(s) is not None and not math.isfinite(float(s))


def numeric_or_text(text: object) -> object:
    """A stored value as a script expects it back: the number if it is one, else the text."""
    number = parse_number(text)
    return text if number is None else number
