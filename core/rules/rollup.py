"""Roll-up of item states into the toplevel (reference C.1, algorithm "B"; SPEC 9.1, 9.2).

``roll_up`` is pure: given the (state, status, count) groups of the items (this item's new
values included) and the incoming state/status, it returns the toplevel's new state/status.
A run's state follows the same rules applied to its toplevel tests, and its status is the worst
of theirs (``roll_up_run``, C.2 and SPEC 9.2).
"""

from __future__ import annotations

from collections.abc import Iterable

from .vocab import (
    DONT_ROLL_UP_STATES,
    NOT_STARTED_OK_STATUSES,
    RUN_STATUS_RANK,
    RUNNING_STATES,
    STATE_RANK,
    STATUS_RANK,
)


def special_sort(values: Iterable[str], rank: dict[str, int], first: str | None = None) -> list[str]:
    """Distinct values by rank, highest first; ties: ``first`` (the incoming value), then alphabetical."""
    distinct = {v for v in values if v is not None}
    return sorted(distinct, key=lambda v: (-rank.get(v, 0), v != first, v))


def roll_up(groups: Iterable[tuple[str, str, int]], state: str | None, status: str | None) -> tuple[str, str]:
    """The toplevel (state, status) for items grouped as (state, status, count).

    ``groups`` must already contain the changed item's new state and status (rule B).
    """
    groups = [(g_state, g_status) for g_state, g_status, count in groups if count]
    running = sum(1 for g_state, _ in groups if g_state in RUNNING_STATES)
    bad_not_started = sum(
        1 for g_state, g_status in groups if g_state == "NOT_STARTED" and g_status not in NOT_STARTED_OK_STATUSES
    )
    incoming_states = [] if state is None or state in DONT_ROLL_UP_STATES else [state]
    states = special_sort([*incoming_states, *(s for s, _ in groups)], STATE_RANK, state)
    statuses = special_sort([*([status] if status is not None else []), *(s for _, s in groups)], STATUS_RANK, status)
    non_completes = [s for s in states if s != "COMPLETED" and s not in DONT_ROLL_UP_STATES]
    preq_fail = "PREQ_FAIL" in statuses

    if running:
        new_state = "RUNNING"
    elif preq_fail:
        new_state = "NOT_STARTED"
    elif bad_not_started:
        new_state = "COMPLETED"
    elif non_completes:
        new_state = non_completes[0]
    else:
        new_state = states[0] if states else "NOT_STARTED"

    if preq_fail:
        new_status = "PREQ_FAIL"
    elif bad_not_started or (new_state == "NOT_STARTED" and non_completes):
        new_status = "STARTED"
    else:
        new_status = statuses[0] if statuses else "n/a"
    return new_state, new_status


def roll_up_run(groups: Iterable[tuple[str, str, int]]) -> tuple[str, str]:
    """A run's (state, status) from its toplevel tests grouped as (state, status, count) (SPEC 9.2).

    The state follows the B rules of ``roll_up``; the status is the worst status among the
    toplevels (``RUN_STATUS_RANK``: B.2's ranks, with KILLED and the like as bad as DEAD), so that
    a run never hides a FAIL behind a test that has not started (B's STARTED), nor a killed test
    behind passing ones.
    """
    groups = [(g_state, g_status, count) for g_state, g_status, count in groups if count]
    state, _ = roll_up(groups, None, None)
    statuses = special_sort((g_status for _, g_status, _ in groups), RUN_STATUS_RANK)
    return state, statuses[0] if statuses else "n/a"


def merge_item(groups: Iterable[tuple[str, str, int]], state: str, status: str) -> list[tuple[str, str, int]]:
    """Add one item's (state, status) to the other items' groups, merging an identical group (rule B)."""
    merged: dict[tuple[str, str], int] = {}
    for g_state, g_status, count in groups:
        merged[(g_state, g_status)] = merged.get((g_state, g_status), 0) + count
    merged[(state, status)] = merged.get((state, status), 0) + 1
    return [(s, st, n) for (s, st), n in merged.items()]


def legacy_pf_rollup(items: list[tuple[str, str]], top_pass: int, top_fail: int) -> tuple[str, str]:
    """Megatest's older SQL roll-up of a toplevel from its items (C.3 top-test-set-per-pf-counts).

    ``items`` are the (state, status) of the toplevel's items; ``top_pass``/``top_fail`` its counts.
    Each of state and status is the first rule that matches, in the reference's order.
    """
    live = [(s, st) for s, st in items if s != "DELETED"]
    states = {s for s, _ in items}
    live_statuses = {st for _, st in live}

    def any_item(pred) -> bool:
        return any(pred(s, st) for s, st in items)

    if any_item(lambda s, st: s == "NOT_STARTED" and st != "n/a"):
        state = "UNKNOWN"
    elif any_item(
        lambda s, st: (
            s in ("RUNNING", "NOT_STARTED", "LAUNCHED", "REMOTEHOSTSTART") and st not in ("TEN_STRIKES", "BLOCKED")
        )
    ):
        state = "RUNNING"
    elif states <= {"COMPLETED", "DELETED"}:
        state = "COMPLETED"
    elif "NOT_STARTED" in states:
        state = "NOT_STARTED"
    else:
        state = "UNKNOWN"

    if top_fail > 0 or states & {"BLOCKED", "INCOMPLETE"}:
        status = "FAIL"
    elif live_statuses & {"INCOMPLETE", "ABORT"}:
        status = "ABORT"
    elif "AUTO" in live_statuses:
        status = "AUTO"
    elif live_statuses & {"STUCK/INCOMPLETE", "INCOMPLETE"}:
        status = "INCOMPLETE"
    elif any_item(lambda s, st: s in ("COMPLETED", "STUCK/INCOMPLETE", "INCOMPLETE") and st == "FAIL"):
        status = "FAIL"
    else:
        status = next((w for w in ("CHECK", "SKIP", "WARN", "WAIVED") if w in live_statuses), "")
        if not status:
            if live_statuses - {"PASS", "FAIL", "WARN", "WAIVED"}:
                status = "ABORT"
            elif "NOT_STARTED" in states:
                status = "n/a"
            elif any_item(lambda s, st: s == "COMPLETED" and st == "PASS") or (top_pass > 0 and top_fail == 0):
                status = "PASS"
            else:
                status = "UNKNOWN"
    return state, status
