"""Comparing results across runs, as data: what a test's (state, status) counts as, the classes of a
comparison, and the flips of a test's results over a window of runs (``compare``, ``flaky``).

No database here: the handlers (handlers/compare.py) fetch the rows and these rules judge them.
"""

from __future__ import annotations

from collections.abc import Iterable

from .vocab import FAIL_LIKE, PASS_LIKE

# A job that died or was killed says nothing about the code it tested: infrastructure, not a failure.
INFRA_STATES = frozenset({"KILLED", "DEAD"})
INFRA_STATUSES = frozenset({"DEAD", "KILLED"})

PASSED, FAILED, INFRA = "pass", "fail", "infrastructure"

# The classes of a comparison, in the order the human table lists them; the JSON keys.
REGRESSIONS, INFRASTRUCTURE, STILL_FAILING = "regressions", "infrastructure", "still_failing"
FIXED, NEW, MISSING = "fixed", "new", "missing"
CLASSES = (REGRESSIONS, INFRASTRUCTURE, STILL_FAILING, FIXED, NEW, MISSING)
GATING = (REGRESSIONS, INFRASTRUCTURE)  # what `compare --exit-code` exits 1 for


def outcome(state: str | None, status: str | None) -> str | None:
    """What a result counts as: ``pass`` (PASS, WARN, WAIVED), ``fail`` (FAIL, CHECK, INCOMPLETE,
    ABORT), ``infrastructure`` (DEAD or KILLED), or None — not finished yet, or neither (SKIP, n/a)."""
    if state in INFRA_STATES or status in INFRA_STATUSES:
        return INFRA
    if state != "COMPLETED":
        return None
    if status in PASS_LIKE:
        return PASSED
    if status in FAIL_LIKE:
        return FAILED
    return None


def classify(now: tuple[str, str] | None, before: tuple[str, str] | None) -> str | None:
    """The class of one leaf test given its (state, status) in the run and in the baseline (None:
    absent there); None when it is unchanged or not finished.

    A test that died or was killed now is infrastructure whatever it was before. A failure now is a
    regression unless the baseline failed too (still failing) — a baseline that passed, skipped or
    died does not excuse it."""
    if now is None:
        return MISSING
    current = outcome(*now)
    if current == INFRA:
        return INFRASTRUCTURE
    if before is None:
        return NEW
    previous = outcome(*before)
    if current == FAILED:
        return STILL_FAILING if previous == FAILED else REGRESSIONS
    if current == PASSED and previous == FAILED:
        return FIXED
    return None


def flips(outcomes: Iterable[str | None]) -> tuple[int, int]:
    """(results that passed or failed, changes between pass and fail) of a test's results in
    chronological order; other results (not finished, skipped, dead) are passed over."""
    counted = changes = 0
    last = None
    for result in outcomes:
        if result not in (PASSED, FAILED):
            continue
        counted += 1
        if last is not None and result != last:
            changes += 1
        last = result
    return counted, changes


def reruns(statuses: Iterable[str | None]) -> int:
    """Pass-after-fail re-runs in the status writes of one test in one run (chronological): each
    PASS written after a FAIL counts one."""
    count = 0
    failed = False
    for status in statuses:
        if status in FAIL_LIKE:
            failed = True
        elif status in PASS_LIKE:
            count += failed
            failed = False
    return count


def flip_rate(counted: int, changes: int) -> float:
    """Changes per chance to change: a test seen in N runs could have flipped N-1 times."""
    return round(changes / (counted - 1), 3) if counted > 1 else 0.0
