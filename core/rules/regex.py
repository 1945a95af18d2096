"""Regular expressions that come from users, run in linear time (RE2), on every path.

A backtracking engine (Python's ``re``) can take exponential time on a short pattern such as
``(a+)+$``, and it holds the interpreter while it does: one ``--match`` would freeze the server,
``ping`` included. RE2 (``google-re2``) guarantees time linear in the text and bounds its memory,
at the price of lookarounds and backreferences in patterns (``\\1`` in a replacement is fine).
Every regular expression built from input goes through ``compile_user``: ``--match``, the SQL
``REGEXP`` function, in-memory test patterns (watch filters) and prerequisite item maps.
"""

from __future__ import annotations

from functools import lru_cache

import re2

MAX_PATTERN = 256  # characters in a pattern a user gives
MAX_MEMORY = 8 << 20  # bytes RE2 may use for one compiled pattern

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would print parse errors to stderr; we raise them as messages
_OPTIONS.max_mem = MAX_MEMORY


class RegexError(ValueError):
    """A pattern RE2 cannot compile (syntax, or a feature it leaves out); the message says which."""


@lru_cache(maxsize=1024)
def compile_user(pattern: str, case_insensitive: bool = False):
    """A compiled pattern; RegexError (a ValueError) with the reason when it is not one."""
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"the pattern is longer than {MAX_PATTERN} characters")
    text = f"(?i){pattern}" if case_insensitive else pattern
    try:
        return re2.compile(text, options=_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode("utf-8", "replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        backreference = reason.startswith("invalid escape sequence: \\") and reason[-1:].isdigit()
        unsupported = "perl operator" in reason or backreference
        hint = " (lookarounds and backreferences are not supported)" if unsupported else ""
        raise RegexError(f"bad regular expression {pattern!r}: {reason}{hint}") from None


def search(pattern: str, value: object) -> bool:
    """Whether the pattern occurs in the value's text (the SQL REGEXP function); False for NULL."""
    return value is not None and compile_user(pattern).search(str(value)) is not None


def check_replacement(regex, replacement: str) -> None:
    """Refuse a replacement template the regex cannot fill: a group it does not have (``\\3`` for
    two groups, ``\\g<name>``) or an escape that means nothing (``\\d``), as Python's re would."""
    i = 0
    while i < len(replacement):
        if replacement[i] != "\\":
            i += 1
            continue
        nxt = replacement[i + 1 : i + 2]
        if nxt.isdigit() and nxt != "0":
            j = i + 1
            while j < len(replacement) and j < i + 3 and replacement[j].isdigit():
                j += 1
            if int(replacement[i + 1 : j]) > regex.groups:
                raise RegexError(f"invalid group reference {replacement[i + 1 : j]} (the regex has {regex.groups})")
            i = j
        elif nxt == "g":
            end = replacement.find(">", i)
            name = replacement[i + 3 : end] if replacement[i + 2 : i + 3] == "<" and end > 0 else None
            if name is None:
                raise RegexError("missing <name> after \\g")
            if not (name in regex.groupindex or (name.isdigit() and int(name) <= regex.groups)):
                raise RegexError(f"unknown group name {name!r}")
            i = end + 1
        elif nxt and nxt in "\\abfnrtv0":
            i += 2
        else:
            raise RegexError(f"bad escape \\{nxt} in the replacement")
