"""Dead-job detection (reference C.8, SPEC 9.8): which running tests stopped reporting.

* incomplete: RUNNING (or REMOTEHOSTSTART) and now - event_time > run_duration + deadtime, i.e.
  no progress report for longer than the deadtime;
* old launched: LAUNCHED for more than a day;
* placeholder toplevels (uname n/a, item_path '') matching either are listed apart and left alone;
* and a test started by ``dbtool exec`` is dead when its last heartbeat is older than three
  heartbeat periods (SPEC 9.8) — the job (wrapper and command) was killed, or its host went away.
"""

from __future__ import annotations

LAUNCHED_LIMIT = 86400  # seconds a test may sit LAUNCHED
MISSED_HEARTBEATS = 3  # heartbeat periods without a beat after which an exec'd test is dead
CANDIDATE_STATES = ("RUNNING", "REMOTEHOSTSTART", "LAUNCHED")
DEAD_STATE, DEAD_STATUS = "COMPLETED", "DEAD"


def is_placeholder(row: dict) -> bool:
    """A toplevel never launched on a host (a job started by `dbtool exec` has a heartbeat)."""
    return row.get("uname") == "n/a" and row.get("item_path") == "" and row.get("hb_period") is None


def silence(row: dict, now: int) -> int:
    """Seconds since the test last showed progress (its start plus the duration it reported)."""
    return now - (row.get("event_time") or 0) - (row.get("run_duration") or 0)


def why_dead(row: dict, now: int, running_deadtime: int, remote_deadtime: int) -> str | None:
    """The reason a test counts as dead, or None when it does not."""
    state = row.get("state")
    period, last_beat = row.get("hb_period"), row.get("hb_last")
    # Times are whole seconds, so a period under a second counts as one.
    if period and last_beat is not None and now - last_beat > MISSED_HEARTBEATS * max(period, 1.0):
        return f"no heartbeat for {now - last_beat} s ({MISSED_HEARTBEATS} periods of {period:g} s)"
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
