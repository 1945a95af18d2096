"""State and status vocabularies as data (reference B.1, B.2): ranks and the sets rules use.

Ranks follow the reference's "B" column. Names not listed rank 0.
"""

from __future__ import annotations

# B.1: higher rank wins the roll-up of states.
STATE_RANK = {
    "RUNNING": 8,
    "REMOTEHOSTSTART": 7,
    "LAUNCHED": 6,
    "COMPLETED": 5,
    "NOT_STARTED": 4,
    "KILLED": 3,
    "KILLREQ": 2,
    "STUCK": 1,
    "ARCHIVED": 0,
}

# B.2 (B column): higher rank is worse and wins the roll-up of statuses.
STATUS_RANK = {
    "n/a": 1,
    "PASS": 2,
    "SKIP": 3,
    "WARN": 4,
    "WAIVED": 5,
    "CHECK": 6,
    "STUCK/DEAD": 7,
    "DEAD": 8,
    "FAIL": 9,
    "PREQ_FAIL": 10,
    "PREQ_DISCARDED": 11,
    "ABORT": 12,
    "na": 0,
}

# A run's status is the worst of its toplevels' (SPEC 9.2). The statuses B.2 leaves unranked that
# say a test went wrong rank with DEAD there, so that a KILLED or TIMED_OUT test never hides behind
# PASS; the item roll-up keeps B.2's ranks as they are (reference F.3).
RUN_STATUS_RANK = {
    **STATUS_RANK,
    **dict.fromkeys(("KILLED", "INCOMPLETE", "STUCK/INCOMPLETE", "TIMED_OUT", "FAILED TO KILL"), STATUS_RANK["DEAD"]),
}

RUNNING_STATES = frozenset({"RUNNING", "REMOTEHOSTSTART", "LAUNCHED", "STARTED"})
# States counted by the running-test counters (C.10).
COUNTED_RUNNING_STATES = ("LAUNCHED", "RUNNING", "REMOTEHOSTSTART")
ENDED_STATES = frozenset({"COMPLETED", "KILLED", "KILLREQ", "STUCK", "ARCHIVED", "INCOMPLETE"})
BADLY_ENDED_STATES = frozenset({"KILLED", "KILLREQ", "STUCK", "INCOMPLETE", "DEAD"})
DONT_ROLL_UP_STATES = frozenset({"DELETED", "REMOVING", "CLEANING", "ARCHIVE_REMOVING"})
# A test in one of these states will not change by itself: its run is complete when every test it
# has is in one (DELETED ones aside). A dead job is COMPLETED/DEAD (or, written so, state DEAD);
# KILLREQ and STUCK still wait on a job, so they are not final.
FINAL_STATES = ("COMPLETED", "KILLED", "DEAD", "ARCHIVED", "INCOMPLETE")

WELL_ENDED_STATUSES = frozenset({"PASS", "WARN", "CHECK", "WAIVED", "SKIP"})
NOT_STARTED_OK_STATUSES = frozenset({"n/a", "PASS", "SKIP", "WARN", "WAIVED", "CHECK", "DEAD", "FAIL", "na"})

# Item statuses counted as passed / failed by update-pass-fail-counts (C.3).
PASS_LIKE = ("PASS", "WARN", "WAIVED")
FAIL_LIKE = ("FAIL", "CHECK", "INCOMPLETE", "ABORT")

# Statuses an exit code maps to (B.2): 0 → PASS, anything else → FAIL.
PASS, FAIL = "PASS", "FAIL"
