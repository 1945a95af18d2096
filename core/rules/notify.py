"""``[[notify]]`` entries of config.toml: their checking, and which events each one is told of.

Pure: no database. An entry is a table with ``events`` (a list of the kinds below), ``command``
(run by ``sh -c`` in the area's root), and optionally ``testpatt``, ``name`` (what its cursor in
the database is kept under; by default a digest of the entry), ``timeout`` (seconds the command
may run, 60) and ``attempts`` (runs of a failing command before the event is given up, 8).
"""

from __future__ import annotations

import hashlib
import json

RUN_COMPLETE, REGRESSION, DEAD, STATE_CHANGE = "run-complete", "regression", "dead", "state-change"
KINDS = (RUN_COMPLETE, REGRESSION, DEAD, STATE_CHANGE)
KEYS = ("name", "events", "command", "testpatt", "timeout", "attempts")
DEFAULT_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 8
MAX_TIMEOUT = 86400.0
HEARTBEAT_CMD = "exec-heartbeat"
COMPLETION_CMDS = ("run-complete", "run-reopened")


class NotifyError(ValueError):
    """A [[notify]] entry that cannot be used; the message says which and why."""


def check_entries(raw: object, where: str) -> list[dict]:
    """The checked entries of ``[[notify]]`` (``where`` names the file in messages)."""
    if not isinstance(raw, list):
        raise NotifyError(f"{where}: notify must be an array of tables ([[notify]]), not {type(raw).__name__}")
    entries = [_check_entry(entry, f"{where}: [[notify]] #{n}") for n, entry in enumerate(raw, start=1)]
    seen: dict[str, int] = {}
    for n, entry in enumerate(entries, start=1):
        if entry["name"] in seen:
            raise NotifyError(
                f"{where}: [[notify]] #{n} and #{seen[entry['name']]} have the same name {entry['name']!r}; "
                "give each its own name"
            )
        seen[entry["name"]] = n
    return entries


def _check_entry(entry: object, label: str) -> dict:
    if not isinstance(entry, dict):
        raise NotifyError(f"{label} must be a table, not {type(entry).__name__}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise NotifyError(f"{label} has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
    events = entry.get("events")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        raise NotifyError(f"{label}: events must be a non-empty list of {', '.join(KINDS)}")
    bad = [e for e in events if e not in KINDS]
    if bad:
        raise NotifyError(f"{label}: unknown event(s) {', '.join(map(repr, bad))}; known: {', '.join(KINDS)}")
    command = entry.get("command")
    if not isinstance(command, str) or not command.strip():
        raise NotifyError(f"{label}: command must be a non-empty string (run by sh -c in the area)")
    if "\0" in command:
        raise NotifyError(f"{label}: command must not contain a NUL character")
    testpatt = entry.get("testpatt")
    if testpatt is not None:
        if not isinstance(testpatt, str) or not testpatt.strip():
            raise NotifyError(f'{label}: testpatt must be a non-empty test pattern string, e.g. "unit%,lint"')
        from ..errors import Refused
        from .patterns import parse_testpatt

        try:
            parse_testpatt(testpatt)
        except Refused as err:
            raise NotifyError(f"{label}: testpatt {testpatt!r}: {err.message}") from None
    timeout = _number(entry, "timeout", DEFAULT_TIMEOUT, label)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise NotifyError(f"{label}: timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    attempts = _number(entry, "attempts", DEFAULT_ATTEMPTS, label)
    if attempts != int(attempts) or not 1 <= attempts <= 1000:
        raise NotifyError(f"{label}: attempts must be a whole number from 1 to 1000")
    name = entry.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 200):
        raise NotifyError(f"{label}: name must be a non-empty string of at most 200 characters")
    checked = {
        "events": list(dict.fromkeys(events)),
        "command": command,
        "testpatt": testpatt,
        "timeout": float(timeout),
        "attempts": int(attempts),
    }
    checked["name"] = name or _digest(checked)
    return checked


def _number(entry: dict, key: str, default: float, label: str) -> float:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise NotifyError(f"{label}: {key} must be a number, not {value!r}")
    return value


def _digest(entry: dict) -> str:
    """The default cursor name: the same entry keeps its cursor across restarts and reorderings."""
    what = json.dumps([entry["events"], entry["command"], entry["testpatt"]], separators=(",", ":"))
    return "notify-" + hashlib.sha256(what.encode()).hexdigest()[:16]


def kinds_of(event: dict) -> list[str]:
    """The notification kinds an events-table row may be (``regression`` is only a candidate:
    a leaf test's FAIL, which the notifier checks against the run's baseline)."""
    cmd = event.get("cmd")
    if cmd == RUN_COMPLETE:
        return [RUN_COMPLETE]
    if event.get("test_id") is None or cmd in COMPLETION_CMDS:
        return []
    if event.get("state") is None and event.get("status") is None:
        return []
    data = _data(event)
    if cmd == HEARTBEAT_CMD and "run_duration" in data:
        return []  # a heartbeat: the same state again
    kinds = [STATE_CHANGE]
    if event.get("status") == "DEAD" and not data.get("rollup"):
        kinds.append(DEAD)
    if event.get("status") == "FAIL" and not data.get("rollup"):
        kinds.append(REGRESSION)
    return kinds


def _data(event: dict) -> dict:
    data = event.get("data")
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return {}
    return data if isinstance(data, dict) else {}


def wanted(entry: dict, event: dict, kind: str) -> bool:
    """Whether ``entry`` asks for ``kind`` and the event's test matches its testpatt (an event of a
    whole run, run-complete, matches any testpatt)."""
    if kind not in entry["events"]:
        return False
    if entry["testpatt"] and event.get("testname") is not None:
        from .patterns import matches_testpatt

        return matches_testpatt(entry["testpatt"], event["testname"], event.get("item_path") or "")
    return True


def backoff(attempt: int) -> float:
    """Seconds before the next run of a command that failed ``attempt`` times: 1, 2, 4 ... 300."""
    return min(300.0, 2.0 ** (attempt - 1))
