"""Numbers in text (SPEC 9.7): ints and floats with optional exponent; nan/inf and units stay text."""

from __future__ import annotations

import re

NUMBER_PATTERN = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(NUMBER_PATTERN)


def parse_number(text: object) -> int | float | None:
    """The number ``text`` spells, or None. ``"8mA"``, ``"nan"``, ``"1_000"`` are not numbers."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        return text
    if not isinstance(text, str):
        return None
    s = text.strip()
    m = _NUMBER.fullmatch(s)
    if m is None:
        return None
    if "." in s or "e" in s or "E" in s:
        return float(s)
    return int(s)


def numeric_or_text(text: object) -> object:
    """A stored value as a script expects it back: the number if it is one, else the text."""
    number = parse_number(text)
    return text if number is None else number
