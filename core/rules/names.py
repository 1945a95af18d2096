"""Names of tests, runs and target parts: one rule for every family (SPEC 2.1; reference A.17, C.19).

Each function returns what is wrong with a name (a phrase for an error message), or None when it
is fine. A test name cannot be empty or contain '/', which separates it from an item path in test
patterns; a run name cannot be empty (the reference calls a missing one an error); a target gives
every key a value, none containing '/', which joins them.
"""

from __future__ import annotations

from collections.abc import Sequence


def bad_test_name(name: object) -> str | None:
    if isinstance(name, str) and name and "/" not in name:
        return None
    return f"invalid test name {name!r}: it must be non-empty text and contain no '/'"


def bad_run_name(name: object) -> str | None:
    if isinstance(name, str) and name:
        return None
    return f"invalid run name {name!r}: it must be non-empty text"


def bad_key_values(keys: Sequence[str], values: Sequence[object]) -> str | None:
    """What is wrong with a run's key values (None, a NULL value, is allowed: it reads as -na-)."""
    for key, value in zip(keys, values, strict=True):
        if value is not None and (not isinstance(value, str) or "/" in value):
            return f"{key} must be text without '/', not {value!r}"
    empty = [key for key, value in zip(keys, values, strict=True) if value == ""]
    if not empty:
        return None
    named = empty[0] if len(empty) == 1 else ", ".join(empty[:-1]) + " and " + empty[-1]
    return f"leaves {named} empty: give a value for every key"
