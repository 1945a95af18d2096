"""The pattern languages of reference C.15, parsed into data the query layer turns into SQL.

* Field pattern list: ``a,b%,c*`` — each element is a LIKE when it contains ``%`` (SQLite LIKE:
  case-insensitive for ASCII), otherwise a GLOB (case-sensitive, ``*``/``?``); elements are
  OR-ed (and parenthesised as a whole, SPEC 9.5). An empty list matches only ''.
* Test pattern: a comma list of ``test[/item]``; each element is (test cond AND item cond).
  No ``/`` → any item; ``test/`` → the toplevel only; ``test/x%`` → LIKE on the item path.
* In-memory test matching (``matches_testpatt``): the same split, a leading ``~`` negates, and
  each side becomes a regular expression matching the whole string.
"""

from __future__ import annotations

import re

from ..errors import Refused

LIKE, GLOB = "like", "glob"

# Elements of one pattern list that becomes SQL: each is a condition OR-ed into the query, and
# SQLite refuses an expression tree over 1000 deep ("Expression tree is too large").
MAX_ELEMENTS = 200


def split_list(pattern: str) -> list[str]:
    """The elements of a comma-separated pattern list, whitespace trimmed."""
    return [part.strip() for part in pattern.split(",")]


def _sql_elements(pattern: str) -> list[str]:
    """The elements of a pattern list that becomes SQL; more than MAX_ELEMENTS are refused."""
    elements = split_list(pattern)
    if len(elements) > MAX_ELEMENTS:
        raise Refused(
            f"a pattern list may have at most {MAX_ELEMENTS} comma-separated elements, not {len(elements)}; "
            "use fewer (a '%' or '*' pattern can cover many names) or query in parts"
        )
    return elements


def element_kind(element: str) -> str:
    return LIKE if "%" in element else GLOB


def field_patterns(pattern: str) -> list[tuple[str, str]]:
    """(kind, element) for each element of a field pattern list (at most MAX_ELEMENTS)."""
    return [(element_kind(e), e) for e in _sql_elements(pattern)]


def parse_testpatt(testpatt: str) -> list[tuple[tuple[str, str], tuple[str, str] | None]]:
    """((kind, test pattern), (kind, item pattern) or None for "any item") per element (at most
    MAX_ELEMENTS)."""
    result = []
    for element in _sql_elements(testpatt):
        if not element:
            continue
        test, sep, item = element.partition("/")
        item_cond = None if not sep else (element_kind(item), item) if item else (GLOB, "")
        result.append(((element_kind(test), test), item_cond))
    return result


def glob_to_regex(glob: str) -> str:
    """An anchored regular expression equivalent to an SQLite GLOB pattern."""
    out = ["^"]
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = glob.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = glob[i + 1 : end]
                if body.startswith("^"):
                    body = "\\^" + body[1:]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    out.append("$")
    return "".join(out)


def like_to_regex(like: str) -> str:
    """An anchored, case-insensitive regular expression equivalent to an SQL LIKE pattern."""
    body = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in like)
    return "(?is)^" + body + "$"


def _side_regex(pattern: str):
    """C.15 in-memory rule: with '%', each '%' → '.*' and case-insensitive; else each '*' → '.*'.
    Users write these patterns, so they run on RE2 (linear time; see rules/regex.py)."""
    from .regex import compile_user

    if pattern == "":
        return None
    if "%" in pattern:
        return compile_user(pattern.replace("%", ".*"), case_insensitive=True)
    return compile_user(pattern.replace("*", ".*"))


def _full(regex, value: str) -> bool:
    return regex is not None and regex.fullmatch(value) is not None


def matches_testpatt(testpatt: str, testname: str, item_path: str = "") -> bool:
    """Whether a test matches a test pattern in memory (C.15), with ``~`` negation per element.

    Elements are OR-ed; a negated element that matches excludes the test even if another
    element includes it.
    """
    included = False
    for element in split_list(testpatt):
        negate = element.startswith("~")
        if negate:
            element = element[1:]
        test, sep, item = element.partition("/")
        try:
            test_re = _side_regex(test)
            item_ok = True if not sep else (item_path == "" if item == "" else _full(_side_regex(item), item_path))
        except ValueError:  # not a pattern RE2 reads: it matches nothing
            continue
        hit = _full(test_re, testname) and item_ok
        if hit and negate:
            return False
        if hit:
            included = True
    return included
