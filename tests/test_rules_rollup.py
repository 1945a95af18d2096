"""Roll-up rules of reference C.1 (algorithm B) and SPEC 9.1 tie-breaking, as pure functions."""

from __future__ import annotations

import pytest
from dbtool.core.rules.rollup import merge_item, roll_up, roll_up_run, special_sort
from dbtool.core.rules.vocab import STATE_RANK, STATUS_RANK


def top(others: list[tuple[str, str]], state: str, status: str) -> tuple[str, str]:
    """Toplevel after one item changed to (state, status), the other items as given."""
    groups: dict[tuple[str, str], int] = {}
    for g in others:
        groups[g] = groups.get(g, 0) + 1
    return roll_up(merge_item([(s, st, n) for (s, st), n in groups.items()], state, status), state, status)


@pytest.mark.parametrize(
    ("others", "item", "expected"),
    [
        # f: any running item (RUNNING, REMOTEHOSTSTART, LAUNCHED, STARTED — B counts this item too)
        ([], ("RUNNING", "n/a"), ("RUNNING", "n/a")),
        ([], ("LAUNCHED", "n/a"), ("RUNNING", "n/a")),
        ([], ("REMOTEHOSTSTART", "n/a"), ("RUNNING", "n/a")),
        ([], ("STARTED", "n/a"), ("RUNNING", "n/a")),
        ([("COMPLETED", "FAIL")], ("RUNNING", "n/a"), ("RUNNING", "FAIL")),
        ([("RUNNING", "n/a")], ("COMPLETED", "PASS"), ("RUNNING", "PASS")),
        # running wins over PREQ_FAIL for the state; the status is still PREQ_FAIL
        ([("RUNNING", "n/a")], ("NOT_STARTED", "PREQ_FAIL"), ("RUNNING", "PREQ_FAIL")),
        # f/g (B): PREQ_FAIL among statuses → NOT_STARTED / PREQ_FAIL
        ([("COMPLETED", "PASS")], ("NOT_STARTED", "PREQ_FAIL"), ("NOT_STARTED", "PREQ_FAIL")),
        # f/g: a NOT_STARTED item whose status is not "not-started-ok" → COMPLETED / STARTED
        ([("COMPLETED", "PASS")], ("NOT_STARTED", "TEN_STRIKES"), ("COMPLETED", "STARTED")),
        ([("COMPLETED", "PASS")], ("NOT_STARTED", "PREQ_DISCARDED"), ("COMPLETED", "STARTED")),
        ([], ("NOT_STARTED", "BLOCKED"), ("COMPLETED", "STARTED")),
        # NOT_STARTED with an ok status is a non-complete: NOT_STARTED / STARTED
        ([("COMPLETED", "PASS")], ("NOT_STARTED", "n/a"), ("NOT_STARTED", "STARTED")),
        ([("COMPLETED", "PASS")], ("NOT_STARTED", "FAIL"), ("NOT_STARTED", "STARTED")),
        ([], ("NOT_STARTED", "n/a"), ("NOT_STARTED", "STARTED")),
        # all completed: COMPLETED and the worst status
        ([("COMPLETED", "PASS")], ("COMPLETED", "PASS"), ("COMPLETED", "PASS")),
        ([("COMPLETED", "PASS")], ("COMPLETED", "FAIL"), ("COMPLETED", "FAIL")),
        ([("COMPLETED", "FAIL")], ("COMPLETED", "PASS"), ("COMPLETED", "FAIL")),
        ([("COMPLETED", "WARN"), ("COMPLETED", "SKIP")], ("COMPLETED", "PASS"), ("COMPLETED", "WARN")),
        ([("COMPLETED", "CHECK")], ("COMPLETED", "WAIVED"), ("COMPLETED", "CHECK")),
        ([("COMPLETED", "DEAD")], ("COMPLETED", "CHECK"), ("COMPLETED", "DEAD")),
        ([("COMPLETED", "DEAD")], ("COMPLETED", "FAIL"), ("COMPLETED", "FAIL")),
        ([("COMPLETED", "ABORT")], ("COMPLETED", "FAIL"), ("COMPLETED", "ABORT")),
        ([("COMPLETED", "STUCK/DEAD")], ("COMPLETED", "CHECK"), ("COMPLETED", "STUCK/DEAD")),
        # a non-completed state outranks COMPLETED: the highest-ranked non-complete wins
        ([("COMPLETED", "PASS")], ("KILLED", "n/a"), ("KILLED", "PASS")),
        ([("KILLREQ", "n/a")], ("KILLED", "n/a"), ("KILLED", "n/a")),
        ([("STUCK", "n/a")], ("KILLREQ", "n/a"), ("KILLREQ", "n/a")),
        ([("COMPLETED", "PASS")], ("STUCK", "FAIL"), ("STUCK", "FAIL")),
        ([("NOT_STARTED", "n/a")], ("KILLED", "FAIL"), ("NOT_STARTED", "STARTED")),
        # don't-roll-up states (DELETED, REMOVING, ...) are not non-completes
        ([("COMPLETED", "PASS")], ("DELETED", "n/a"), ("COMPLETED", "PASS")),
        ([("DELETED", "n/a")], ("COMPLETED", "FAIL"), ("COMPLETED", "FAIL")),
        ([("REMOVING", "n/a")], ("COMPLETED", "PASS"), ("COMPLETED", "PASS")),
        # ... but when nothing else is left, the first candidate state stands
        ([("DELETED", "n/a")], ("DELETED", "n/a"), ("DELETED", "n/a")),
        # rank-0 states tie: the incoming value first, then alphabetical (SPEC 9.1)
        ([("DEAD", "n/a")], ("INCOMPLETE", "n/a"), ("INCOMPLETE", "n/a")),
        ([("INCOMPLETE", "n/a")], ("DEAD", "n/a"), ("DEAD", "n/a")),
        ([("UNKNOWN", "n/a"), ("DEAD", "n/a")], ("COMPLETED", "PASS"), ("DEAD", "PASS")),
        ([("ARCHIVED", "PASS")], ("COMPLETED", "PASS"), ("ARCHIVED", "PASS")),
        # rank-0 statuses tie the same way
        ([("COMPLETED", "BLOCKED")], ("COMPLETED", "AUTO"), ("COMPLETED", "AUTO")),
        ([("COMPLETED", "ZERO_ITEMS"), ("COMPLETED", "BLOCKED")], ("COMPLETED", "na"), ("COMPLETED", "na")),
        (
            [("COMPLETED", "ZERO_ITEMS"), ("COMPLETED", "BLOCKED")],
            ("COMPLETED", "TIMED_OUT"),
            ("COMPLETED", "TIMED_OUT"),
        ),
    ],
)
def test_roll_up_rules(others, item, expected):
    assert top(others, *item) == expected


def test_rank_zero_statuses_rank_below_ranked_ones():
    # "na" (rank 0) loses to n/a (rank 1); unknown words rank 0 too
    assert top([("COMPLETED", "na")], "COMPLETED", "n/a") == ("COMPLETED", "n/a")
    assert top([("COMPLETED", "WEIRD")], "COMPLETED", "PASS") == ("COMPLETED", "PASS")


def test_status_order_is_the_reference_b_column():
    ranked = sorted((s for s in STATUS_RANK if STATUS_RANK[s] > 0), key=STATUS_RANK.get)
    assert ranked == [
        "n/a",
        "PASS",
        "SKIP",
        "WARN",
        "WAIVED",
        "CHECK",
        "STUCK/DEAD",
        "DEAD",
        "FAIL",
        "PREQ_FAIL",
        "PREQ_DISCARDED",
        "ABORT",
    ]
    # each worse status beats every better one in a roll-up
    for worse_i, worse in enumerate(ranked):
        for better in ranked[:worse_i]:
            if "PREQ_FAIL" in (worse, better):
                continue  # PREQ_FAIL has its own rule (NOT_STARTED/PREQ_FAIL)
            assert top([("COMPLETED", better)], "COMPLETED", worse)[1] == worse
            assert top([("COMPLETED", worse)], "COMPLETED", better)[1] == worse


def test_state_order_is_the_reference_b1_ranks():
    ranked = sorted(STATE_RANK, key=lambda s: -STATE_RANK[s])
    assert ranked[:8] == [
        "RUNNING",
        "REMOTEHOSTSTART",
        "LAUNCHED",
        "COMPLETED",
        "NOT_STARTED",
        "KILLED",
        "KILLREQ",
        "STUCK",
    ]


def test_groups_count_items_not_rows():
    # Many identical groups count as one group; zero counts are ignored.
    assert roll_up([("COMPLETED", "PASS", 5), ("RUNNING", "n/a", 0)], "COMPLETED", "PASS") == ("COMPLETED", "PASS")


def test_merge_item_merges_identical_group():
    merged = merge_item([("COMPLETED", "PASS", 2), ("RUNNING", "n/a", 1)], "COMPLETED", "PASS")
    assert sorted(merged) == [("COMPLETED", "PASS", 3), ("RUNNING", "n/a", 1)]


def test_special_sort_ties():
    assert special_sort(["B", "A", "C"], {}, first="C") == ["C", "A", "B"]
    assert special_sort(["PASS", "FAIL", "n/a"], STATUS_RANK) == ["FAIL", "PASS", "n/a"]
    assert special_sort(["X", "X", None], {}) == ["X"]


# -- the run roll-up (SPEC 9.2 as amended) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("toplevels", "expected"),
    [
        # B24: the B rules would give NOT_STARTED/STARTED and hide the failures
        (
            [("COMPLETED", "FAIL"), ("KILLED", "KILLED"), ("COMPLETED", "DEAD"), ("NOT_STARTED", "n/a")],
            ("NOT_STARTED", "FAIL"),
        ),
        ([("COMPLETED", "PASS"), ("NOT_STARTED", "TEN_STRIKES")], ("COMPLETED", "PASS")),  # B: COMPLETED/STARTED
        ([("RUNNING", "n/a"), ("COMPLETED", "FAIL")], ("RUNNING", "FAIL")),
        ([("COMPLETED", "PASS"), ("COMPLETED", "WARN")], ("COMPLETED", "WARN")),
        ([("COMPLETED", "PASS"), ("NOT_STARTED", "PREQ_FAIL")], ("NOT_STARTED", "PREQ_FAIL")),
        ([("COMPLETED", "ABORT"), ("NOT_STARTED", "PREQ_FAIL")], ("NOT_STARTED", "ABORT")),  # the worst wins
        ([("NOT_STARTED", "n/a")], ("NOT_STARTED", "n/a")),
        ([("COMPLETED", "KILLED"), ("COMPLETED", "INCOMPLETE")], ("COMPLETED", "INCOMPLETE")),  # equal: alphabetical
        ([("COMPLETED", "PASS"), ("KILLED", "KILLED")], ("KILLED", "KILLED")),  # a killed test never hides behind PASS
        ([("COMPLETED", "PASS"), ("COMPLETED", "TIMED_OUT")], ("COMPLETED", "TIMED_OUT")),
        ([("COMPLETED", "FAIL"), ("KILLED", "KILLED")], ("KILLED", "FAIL")),  # FAIL is worse still (the demo)
        ([("COMPLETED", "PASS"), ("COMPLETED", "AUTO")], ("COMPLETED", "PASS")),  # not a failure: rank 0
    ],
)
def test_run_state_follows_the_b_rules_and_its_status_is_the_worst_toplevel(toplevels, expected):
    groups = [(state, status, 1) for state, status in toplevels]
    assert roll_up_run(groups) == expected
    assert roll_up_run(groups)[0] == roll_up(groups, None, None)[0]


def test_run_roll_up_counts_groups_with_items_only():
    assert roll_up_run([("COMPLETED", "PASS", 3), ("COMPLETED", "FAIL", 0)]) == ("COMPLETED", "PASS")
