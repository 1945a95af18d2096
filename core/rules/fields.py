"""Request fields a client sends (Kno's request fields): names, limits, and argstring values.

A client tags a request with ``--field NAME=VALUE`` (``"fields": {"NAME": "VALUE"}`` on the wire).
The value travels and is kept as the text the client gave; read parsed (``parse_argstring``, Kno's
REQ/VAL) a number becomes a number, ``#t``/``#f`` true/false, a double-quoted string the string
inside its quotes (so ``'"4711"'`` stays the text 4711), and anything else stays the text.

Standard library only, and no ``re``: the client checks its fields before it sends them.
"""

from __future__ import annotations

MAX_FIELDS = 32  # fields of one request
MAX_NAME = 64  # characters of a field name
MAX_VALUE = 4096  # characters of a field value


def name_problem(name: object) -> str:
    """What is wrong with a field name ('' when it is fine): an identifier of letters, digits and
    '_', not starting with a digit, at most MAX_NAME characters."""
    if not isinstance(name, str) or not name:
        return "a field name must be non-empty text"
    if len(name) > MAX_NAME:
        return f"field name {name[:MAX_NAME]!r}... is longer than {MAX_NAME} characters"
    if name[0].isdigit() or not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
        return f"field name {name!r} is not a name: use letters, digits and '_', not starting with a digit"
    return ""


def value_problem(name: str, value: object) -> str:
    """What is wrong with a field's value ('' when it is fine)."""
    if not isinstance(value, str):
        return f"field {name} must have a text value, not {type(value).__name__}"
    if len(value) > MAX_VALUE:
        return f"field {name} has {len(value)} characters; a field value has at most {MAX_VALUE}"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"field {name} is not valid UTF-8 text"
    return ""


def parse_option(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` of a --field option as (name, value); ValueError saying what is wrong."""
    name, eq, value = text.partition("=")
    if not eq:
        raise ValueError(f"--field {text!r} is not NAME=VALUE (e.g. --field ci_job=4711)")
    problem = name_problem(name) or value_problem(name, value)
    if problem:
        raise ValueError(problem)
    return name, value


def from_options(options: list[str]) -> dict[str, str]:
    """The fields of repeated --field options (a name given again: the last value); ValueError."""
    fields: dict[str, str] = {}
    for text in options:
        name, value = parse_option(text)
        fields[name] = value
    if len(fields) > MAX_FIELDS:
        raise ValueError(f"a request carries at most {MAX_FIELDS} fields, not {len(fields)}")
    return fields


def check_wire(fields: object) -> tuple[dict[str, str], str]:
    """Fields as they arrived in a request: (the fields, '') or ({}, what is wrong). A number
    sent as JSON is kept as its text, as if it had been typed."""
    if not isinstance(fields, dict):
        return {}, "fields must be a JSON object of name: value"
    if len(fields) > MAX_FIELDS:
        return {}, f"a request carries at most {MAX_FIELDS} fields, not {len(fields)}"
    checked = {}
    for name, value in fields.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = repr(value)
        problem = name_problem(name) or value_problem(name, value)
        if problem:
            return {}, problem
        checked[name] = value
    return checked, ""


def parse_argstring(text: object) -> object:
    """A field's value read parsed, like Kno's argstrings: numbers are numbers, ``#t``/``#f`` are
    true/false, a double-quoted string is the text inside the quotes (``\\"``, ``\\\\``, ``\\n``, ``\\t``
    unescaped); anything else (and anything that is not text) is returned as it is."""
    if not isinstance(text, str):
        return text
    stripped = text.strip()
    if stripped in ("#t", "#f"):
        return stripped == "#t"
    if len(stripped) >= 2 and stripped[0] == '"' and stripped[-1] == '"':
        return _unquote(stripped[1:-1])
    from .numbers import parse_number

    number = parse_number(stripped) if stripped else None
    return text if number is None else number


_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _unquote(body: str) -> str:
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            out.append(_ESCAPES.get(body[i + 1], body[i + 1]))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def matches(wanted: list[tuple[str, str | None]], carried: object) -> bool:
    """Whether a request's logged fields have every wanted (name, value) — a value of None: any."""
    if not isinstance(carried, dict):
        return False
    return all(name in carried and (value is None or carried[name] == value) for name, value in wanted)
