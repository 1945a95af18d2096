"""Prerequisites of a waiting test (reference C.9, algorithm "B"): modes, itemmaps and the rules.

A test W that another test R (the *waiting* or *reference* test, ``ref_testname``/``ref_item_path``)
waits on is a **waiton**. ``get-prereqs-not-met`` answers "what still blocks R?": for each waiton,
the rows of W in the run that block R, or W's bare name when W has no rows at all. An empty answer
means every prerequisite is met. Everything here is pure (no database), so each rule can be tested
on its own; the handler (``handlers/prereqs.py``) only reads rows and calls these functions.

**Modes** (a set of words): ``normal`` (the default; it adds nothing), ``toplevel`` (a finished
waiton counts whatever its status), ``itemmatch`` and ``itemwait`` (= ``itemmap``) — together
"itemized": an item of R waits for the matching item of W — and ``exclusive`` (R must also not be
running anywhere else; handled by the handler).

**Itemmaps** map R's item path to the item path of W that R's item waits for. An itemmap is
``TESTPATT=MAP``: TESTPATT is a test pattern (reference C.15, names only, no ``/``) matched against
the **waiton's** name, and the first itemmap whose pattern matches W is W's map. MAP is one or more
lines ``regex replacement`` separated by newlines; each line is split on whitespace and the
replacement may be absent (it is then ``""``). The lines are applied in order to R's item path, each
replacing the **first** match of its regex (Python ``re`` syntax; the replacement may use ``\\1``…
and ``\\g<name>``). Without a map W's item path must equal R's. Newline is the only line separator:
a regex or a replacement can hold any character except whitespace (lines are split on it), so a
newline is the one separator that can never be part of a line, while ``;``, ``|`` or ``,`` can.

**Rules** for one waiton W — see ``judge_row`` for the per-row rules and ``waiton_blockers`` for
the outcome.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .patterns import matches_testpatt
from .regex import RegexError, check_replacement, compile_user
from .vocab import BADLY_ENDED_STATES, ENDED_STATES, WELL_ENDED_STATUSES

MODE_WORDS = ("normal", "toplevel", "itemmatch", "itemwait", "itemmap", "exclusive")

# The keys of every record get-prereqs-not-met returns, in this order.
RECORD_KEYS = ("id", "run_id", "testname", "item_path", "state", "status")


# -- modes --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Modes:
    """The mode words as flags; ``itemwait`` also stands for its synonym ``itemmap``."""

    toplevel: bool = False
    itemmatch: bool = False
    itemwait: bool = False
    exclusive: bool = False

    @property
    def itemized(self) -> bool:
        """Items of the waiting test wait for the matching items of the waiton."""
        return self.itemmatch or self.itemwait


def parse_modes(words: Iterable[str]) -> Modes:
    """The mode set of a list of mode words; an unknown word raises ValueError."""
    words = set(words)
    unknown = sorted(words - set(MODE_WORDS))
    if unknown:
        raise ValueError(f"unknown mode {', '.join(map(repr, unknown))}; use a comma list of: {', '.join(MODE_WORDS)}")
    return Modes(
        toplevel="toplevel" in words,
        itemmatch="itemmatch" in words,
        itemwait=bool(words & {"itemwait", "itemmap"}),
        exclusive="exclusive" in words,
    )


# -- itemmaps -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapLine:
    """One ``regex replacement`` line of a map."""

    regex: object  # a compiled RE2 pattern (rules/regex.py)
    replacement: str


@dataclass(frozen=True)
class ItemMap:
    """``TESTPATT=MAP``: the map for the waitons whose names match ``testpatt``."""

    testpatt: str
    lines: tuple[MapLine, ...]

    def apply(self, item_path: str) -> str:
        """The item path after every line, in order, each replacing the first match of its regex."""
        for line in self.lines:
            item_path = line.regex.sub(line.replacement, item_path, count=1)
        return item_path


def parse_map_line(line: str) -> MapLine:
    """``regex [replacement]``; raises ValueError for extra words, a bad regex or a bad replacement."""
    words = line.split()
    if len(words) > 2:
        raise ValueError(
            f"itemmap line {line.strip()!r} has {len(words)} words; a line is 'regex replacement' "
            "(the replacement may be left out, neither may contain spaces) and lines are separated by newlines"
        )
    pattern, replacement = words[0], words[1] if len(words) == 2 else ""
    try:
        regex = compile_user(pattern)
    except RegexError as err:
        raise ValueError(f"itemmap regex {pattern!r} is not a valid regular expression: {err}") from None
    try:
        check_replacement(regex, replacement)
    except RegexError as err:
        raise ValueError(
            f"itemmap replacement {replacement!r} is invalid for regex {pattern!r}: {err}; "
            "use \\1.. for the regex's groups"
        ) from None
    return MapLine(regex, replacement)


def parse_itemmap(spec: str) -> ItemMap:
    """``TESTPATT=MAP`` → ItemMap; MAP lines are separated by newlines, blank lines are ignored.

    An empty MAP is the identity map: it still wins for the waitons it matches, which lets an early
    entry exempt some waitons from a later catch-all (``%=...``).
    """
    testpatt, sep, text = spec.partition("=")
    testpatt = testpatt.strip()
    if not sep or not testpatt:
        raise ValueError(
            f"itemmap {spec!r} is not TESTPATT=MAP; give the waiton test pattern, '=', then "
            "'regex replacement' lines separated by newlines"
        )
    if "/" in testpatt:
        raise ValueError(f"itemmap test pattern {testpatt!r} must name waiton tests only, without '/' and items")
    lines = tuple(parse_map_line(line) for line in text.splitlines() if line.strip())
    return ItemMap(testpatt, lines)


def itemmap_for(itemmaps: Sequence[ItemMap], waiton: str) -> ItemMap | None:
    """The first itemmap whose test pattern matches the waiton's name, or None."""
    for itemmap in itemmaps:
        if matches_testpatt(itemmap.testpatt, waiton):
            return itemmap
    return None


def wanted_item_path(itemmaps: Sequence[ItemMap], waiton: str, ref_item_path: str) -> str:
    """The item path of the waiton that the waiting item waits for: its own, mapped by the waiton's map."""
    itemmap = itemmap_for(itemmaps, waiton)
    return ref_item_path if itemmap is None else itemmap.apply(ref_item_path)


# -- the rules ----------------------------------------------------------------------------------------


class RowEffect(NamedTuple):
    """What one row of a waiton contributes: the rule that fired (None: none did) and its effect."""

    rule: int | None
    parent_met: bool = False
    item_met: bool = False
    unmet: bool = False


def judge_row(row: Mapping[str, Any], *, ref_is_item: bool, wanted: str, modes: Modes) -> RowEffect:
    """Rules 0-5 of C.9 (B) for one row of the waiton W; the first rule that applies decides.

    Words: *completed* = state is an ended state (COMPLETED, KILLED, KILLREQ, STUCK, ARCHIVED,
    INCOMPLETE); *running* = RUNNING, REMOTEHOSTSTART, LAUNCHED or STARTED; *killed* = a badly-ended
    state (KILLED, KILLREQ, STUCK, INCOMPLETE, DEAD); *ok* = status PASS, WARN, CHECK, WAIVED or
    SKIP; *toplevel row* = W's row with item path ''; *same item* = the row's item path equals
    ``wanted`` (the waiting item path after W's itemmap); *itemized* = mode itemmatch or itemwait.

    0. an item row, the waiting test is a toplevel, itemized, the row completed → parent met;
    1. the toplevel row, completed, and ok or mode toplevel → parent met;
    2. the toplevel row, killed, mode toplevel → parent met (DEAD is killed but not completed);
    3. itemized, the waiting test is an item, same item → item met when completed and (ok or mode
       toplevel), otherwise the row is an **unmet item**. (B also marks the parent met here when the
       row is the toplevel and completed or running; that cannot change the outcome — an unmet item
       blocks anyway and a met one already meets W — so it is left out.)
    4. completed and ok and mode itemmatch → item met (any finished good item of W will do);
    5. completed and ok and same item → item met.
    """
    state, status, item_path = row["state"], row["status"], row["item_path"]
    completed = state in ENDED_STATES
    killed = state in BADLY_ENDED_STATES
    ok = status in WELL_ENDED_STATUSES
    is_toplevel = item_path == ""
    same_item = item_path == wanted

    if not is_toplevel and not ref_is_item and modes.itemized and completed:
        return RowEffect(0, parent_met=True)
    if is_toplevel and completed and (ok or modes.toplevel):
        return RowEffect(1, parent_met=True)
    if is_toplevel and killed and modes.toplevel:
        return RowEffect(2, parent_met=True)
    if modes.itemized and ref_is_item and same_item:
        done = completed and (ok or modes.toplevel)
        return RowEffect(3, item_met=done, unmet=not done)
    if completed and ok and modes.itemmatch:
        return RowEffect(4, item_met=True)
    if completed and ok and same_item:
        return RowEffect(5, item_met=True)
    return RowEffect(None)


def missing_waiton(run_id: int, name: str) -> dict:
    """The record that stands for a waiton with no rows in the run: only its name and run are known."""
    return {"id": None, "run_id": run_id, "testname": name, "item_path": None, "state": None, "status": None}


def waiton_blockers(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    run_id: int,
    ref_item_path: str,
    wanted: str,
    modes: Modes,
) -> list[dict]:
    """What of waiton ``name`` blocks the waiting test (C.9 step 2 outcome); ``[]`` when it is met.

    ``rows`` are W's rows in the run (toplevel and items); ``wanted`` is the waiting item path after
    W's itemmap. After ``judge_row`` has seen every row:

    * rule 3 recorded unmet items → those rows block (even if W's toplevel is met);
    * otherwise, if some row made W's parent or item met → nothing blocks;
    * otherwise every row of W blocks, or, when W has no rows (never seen), W's name record.
    """
    if not rows:
        return [missing_waiton(run_id, name)]
    ref_is_item = ref_item_path != ""
    effects = [(row, judge_row(row, ref_is_item=ref_is_item, wanted=wanted, modes=modes)) for row in rows]
    unmet = [dict(row) for row, effect in effects if effect.unmet]
    if unmet:
        return unmet
    if any(effect.parent_met or effect.item_met for _, effect in effects):
        return []
    return [dict(row) for row in rows]


def unique_records(records: Iterable[dict]) -> list[dict]:
    """Records without repeats, first occurrence kept: rows by id, name records by test name."""
    seen: set[tuple[str, object]] = set()
    unique = []
    for record in records:
        key = ("row", record["id"]) if record["id"] is not None else ("name", record["testname"])
        if key not in seen:
            seen.add(key)
            unique.append(record)
    return unique
