"""Dead-job detection (reference C.8, SPEC 9.8): which running tests stopped reporting.

* incomplete: RUNNING (or REMOTEHOSTSTART) and now - event_time > run_duration + deadtime, i.e.
  no progress report for longer than the deadtime;
* old launched: LAUNCHED for more than a day;
* placeholder toplevels (uname n/a, item_path '') matching either are listed apart and left alone.
"""

from __future__ import annotations

LAUNCHED_LIMIT = 86400  # seconds a test may sit LAUNCHED
CANDIDATE_STATES = ("RUNNING", "REMOTEHOSTSTART", "LAUNCHED")
DEAD_STATE, DEAD_STATUS = "COMPLETED", "DEAD"


def is_placeholder(row: dict) -> bool:
    return row.get("uname") == "n/a" and row.get("item_path") == ""


def silence(row: dict, now: int) -> int:
    """Seconds since the test last showed progress (its start plus the duration it reported)."""
    return now - (row.get("event_time") or 0) - (row.get("run_duration") or 0)


def why_dead(row: dict, now: int, running_deadtime: int, remote_deadtime: int) -> str | None:
    """The reason a test counts as dead, or None when it does not."""
    state = row.get("state")
    if state == "RUNNING" and silence(row, now) > running_deadtime:
        return f"no progress for {silence(row, now)} s (deadtime {running_deadtime} s)"
    if state == "REMOTEHOSTSTART" and silence(row, now) > remote_deadtime:
        return f"no progress for {silence(row, now)} s since REMOTEHOSTSTART (deadtime {remote_deadtime} s)"
    if state == "LAUNCHED" and now - (row.get("event_time") or 0) > LAUNCHED_LIMIT:
        return f"LAUNCHED {now - (row.get('event_time') or 0)} s ago and never started"
    return None


def classify(rows: list[dict], now: int, running_deadtime: int, remote_deadtime: int) -> dict[str, list[dict]]:
    """Split candidate rows into incompletes, old_launched and (dead-looking) placeholder toplevels."""
    found: dict[str, list[dict]] = {"incompletes": [], "old_launched": [], "toplevels": []}
    for row in rows:
        reason = why_dead(row, now, running_deadtime, remote_deadtime)
        if reason is None:
            continue
        if is_placeholder(row):
            found["toplevels"].append({**row, "reason": reason})
        elif row["state"] == "LAUNCHED":
            found["old_launched"].append({**row, "reason": reason})
        else:
            found["incompletes"].append({**row, "reason": reason})
    return found
