"""JUnit XML in and out (import-junit, export-junit): the server's side of both.

import-junit's client parses the file and sends its cases in parts (``junit_import_part``), each
stored in one transaction. An import is known by the SHA-256 of the file's bytes, recorded with
the run (``extradat``: key ``junit-import:<digest>``, value the import's progress and counts as
JSON): a part resent after a lost answer, or an import resumed after the client was killed,
skips the cases stored already, and a file imported to the end changes nothing when imported
again. The mapping of cases to tests and test data is in ``rules/junit.py``.

export-junit's client pages through a run's leaf tests (``junit_export_part``) in (testname,
item path) order — the run's unique index — and writes the XML as it goes.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import math
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from ..db.context import Db
from ..db.schema import DELETED
from ..errors import BadRequest, Refused
from ..rules import junit as rules
from ..rules.names import bad_test_name
from ..rules.rollup import roll_up
from .common import lookup_run, require_run
from .runs import set_state_status_and_roll_up_run
from .testdata import _store_rows

DIGEST = re.compile(r"[0-9a-f]{64}")
STATE_KEY = "junit-import:"
LOOKUP_PAIRS = 2000  # (testname, item_path) pairs per lookup: 4,000 bound values, within every limit
MAX_EXTRA = 200  # characters of a dbtool.state / dbtool.status property
# a new test's row, in the table's column order (the compiled INSERT's: no reordering per row)
ROW_NAMES = ("run_id", "testname", "item_path", "state", "status", "run_duration", "comment")
SET_NAMES = ("id", "state", "status", "comment", "run_duration")


# -- import ---------------------------------------------------------------------------------------


def import_junit(db: Db, *, run_id: int, xml: str | None = None) -> dict:
    """import-junit of a document sent whole (``xml``: over the protocol; the CLI streams files in
    parts instead): its cases stored in this one transaction, known by the SHA-256 of its UTF-8."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException

    if xml is None:
        raise Refused("import-junit needs JUnit XML: FILE... or - on the command line, the xml parameter on the wire")
    data = xml.encode("utf-8")
    try:
        cases = list(rules.iter_cases(io.BytesIO(data)))
    except DefusedXmlException as err:
        raise Refused(f"the XML declares entities or external references ({type(err).__name__}); refused") from None
    except (ParseError, rules.NotJunit) as err:
        raise Refused(f"the XML is no JUnit report ({err}); nothing was stored") from None
    digest = hashlib.sha256(data).hexdigest()
    require_run(db, run_id)
    state = _load_state(db, run_id, digest)
    if state is not None and state["done"]:
        return {**state, "already": True}
    progress = state or {"next": 0, "stored": 0, "refused": 0, "reasons": {}, "done": False}
    return _import(db, run_id, digest, state, progress, cases[progress["next"] :], True, "xml")


def junit_import_part(
    db: Db,
    *,
    run_id: int,
    digest: str,
    cases: str = "[]",
    first: int = 0,
    final: bool = False,
    source: str = "",
) -> dict:
    """Store one part of an import: the cases numbered ``first``, ``first + 1`` ... of the file
    whose digest is ``digest``; the ``final`` part ends the import. Returns the import's totals:
    ``{"next", "stored", "refused", "reasons", "done", "already"}`` (``already``: it had ended before
    this request, nothing was stored)."""
    require_run(db, run_id)
    if not DIGEST.fullmatch(digest):
        raise BadRequest("digest must be the SHA-256 of the file as 64 lowercase hex digits")
    state = _load_state(db, run_id, digest)
    if state is not None and state["done"]:
        return {**state, "already": True}
    progress = state or {"next": 0, "stored": 0, "refused": 0, "reasons": {}, "done": False}
    if first > progress["next"]:
        raise Refused(
            f"{source or 'the file'}: this part begins at case {first}, but run {run_id} has only the first "
            f"{progress['next']} cases of that file; import the file again (it resumes where it stopped)"
        )
    with _no_collection():
        batch = _parse_cases(cases)[progress["next"] - first :]
        return _import(db, run_id, digest, state, progress, batch, final, source)


_COLLECTION = threading.Lock()
_PAUSED = [0]  # requests inside _no_collection


@contextmanager
def _no_collection() -> Iterator[None]:
    """The cyclic garbage collector paused while a part is decoded and stored: a part makes tens of
    thousands of lists, dicts and tuples that all live until it is stored, and each collection the
    allocations would trigger walks them all again (a tenth of the import's time). They hold no
    cycles, and whatever other threads leave meanwhile is collected once the part is done."""
    with _COLLECTION:
        _PAUSED[0] += 1
        if _PAUSED[0] == 1:
            _PAUSED.append(gc.isenabled())
            gc.disable()
    try:
        yield
    finally:
        with _COLLECTION:
            _PAUSED[0] -= 1
            if _PAUSED[0] == 0 and _PAUSED.pop():
                gc.enable()


def _import(
    db: Db, run_id: int, digest: str, state: dict | None, progress: dict, batch: list, final: bool, source: str
) -> dict:
    """Store a batch of an import's cases and record how far the import got (and whether it ended)."""
    if not batch and not final:
        return {**progress, "already": False}
    stored, refused = store_cases(db, run_id, batch)
    progress["next"] += len(batch)
    progress["stored"] += stored
    progress["refused"] += sum(count for count, _ in refused.values())
    for reason, (count, example) in refused.items():
        known = progress["reasons"].setdefault(reason, [0, example])
        known[0] += count
    progress["done"] = bool(final)
    _save_state(db, run_id, digest, progress, state is None)
    if final:
        set_state_status_and_roll_up_run(db, run_id=run_id)
    db.emit(
        run_id=run_id,
        cmd="import-junit",
        stored=stored,
        refused=len(batch) - stored,
        digest=digest,
        source=source,
        done=bool(final),
    )
    return {**progress, "already": False}


def _parse_cases(text: str) -> list:
    try:
        cases = json.loads(text)
    except ValueError as err:
        raise BadRequest(f"cases must be a JSON array of cases: {err}") from None
    if not isinstance(cases, list):
        raise BadRequest("cases must be a JSON array of cases")
    return cases


SHAPE = (
    "each case must be [testname, item_path, [attempt, ...], extra], or [testname, item_path, time] for a "
    "plain pass (see dbtool's rules/junit.py)"
)


def _check_shape(case: object) -> None:
    """A case as the client builds it, or BadRequest (a client's mistake, not the file's)."""
    if not (
        isinstance(case, list)
        and len(case) == 4
        and isinstance(case[0], str)
        and isinstance(case[1], str)
        and isinstance(case[2], list)
        and case[2]
        and all(isinstance(a, dict) and a.get("o", rules.PASSED) in rules.OUTCOMES for a in case[2])
        and (case[3] is None or isinstance(case[3], dict))
    ):
        raise BadRequest(SHAPE)


def _load_state(db: Db, run_id: int, digest: str) -> dict | None:
    x = db.t.extradat.c
    text = db.conn.execute(select(x.val).where(x.run_id == run_id, x.key == STATE_KEY + digest)).scalar()
    return None if text is None else json.loads(text)


def _save_state(db: Db, run_id: int, digest: str, state: dict, new: bool) -> None:
    x = db.t.extradat
    value = json.dumps(state, separators=(",", ":"))
    if new:
        db.conn.execute(insert(x).values(run_id=run_id, key=STATE_KEY + digest, val=value))
    else:
        db.conn.execute(update(x).where(x.c.run_id == run_id, x.c.key == STATE_KEY + digest).values(val=value))


def forget_imports(db: Db, run_id: int) -> None:
    """Drop a run's import records (its tests are gone: the same files may be imported again)."""
    x = db.t.extradat.c
    db.conn.execute(delete(db.t.extradat).where(x.run_id == run_id, x.key.like(STATE_KEY + "%")))


class _Case:
    __slots__ = ("attempts", "data", "extra", "final", "item_path", "testname")

    def __init__(self, testname: str, item_path: str, attempts: list, extra: dict | None, final=None) -> None:
        self.testname = testname
        self.item_path = item_path
        self.attempts = attempts
        self.extra = extra
        self.final = final  # the test row's (state, status, comment, run_duration), when known
        self.data = final is None  # whether it may have test data (a plain pass has none)


def store_cases(db: Db, run_id: int, cases: list) -> tuple[int, dict[str, list]]:
    """Store cases into the run's tests; returns (stored, {reason: [count, example]}) for the refused.

    Most cases of a big file are plain passes (one attempt, a time, nothing else; the client
    sends them short, ``[testname, item_path, time]``, and a long one is taken as short): they
    take a path with no function call per case, straight to the row they insert (a tuple in
    ROW_NAMES order); the others become a _Case each."""
    refused: dict[str, list] = {}
    # (testname, item_path) → its row (a plain pass) or its _Case; a case repeated in the part adds
    # attempts to one test. In the file's order, which is the order the new tests get their ids in.
    merged: dict[tuple[str, str], tuple | _Case] = {}
    plain: dict[tuple[str, str], str | None] = {}  # the time text of each plain pass (should one repeat)
    stored = 0
    longest = rules.MAX_NAME
    floor = math.floor
    for case in cases:
        if type(case) is list and len(case) == 4 and case[3] is None and type(case[2]) is list and len(case[2]) == 1:
            attempt = case[2][0]  # a plain pass in the long form: taken as the short one
            if (
                type(attempt) is dict
                and attempt.get("o", rules.PASSED) == rules.PASSED
                and len(attempt) == ("o" in attempt) + ("t" in attempt)
            ):
                case = [case[0], case[1], attempt.get("t")]
        if type(case) is list and len(case) == 3:  # a plain pass: [testname, item_path, time]
            testname, item_path, text = case
            if (
                type(testname) is str
                and type(item_path) is str
                and 0 < len(testname) <= longest
                and 0 < len(item_path) <= longest
                and "/" not in testname
                and (testname, item_path) not in merged
            ):
                if text is None:
                    seconds = 0
                elif type(text) is str:
                    try:
                        exact = float(text)
                    except ValueError:
                        exact = -1.0
                    seconds = floor(exact + 0.5) if 0 <= exact <= 1e12 else None
                else:  # the long way refuses it
                    seconds = None
                if seconds is not None:
                    key = (testname, item_path)
                    merged[key] = (run_id, testname, item_path, "COMPLETED", "PASS", seconds, "")
                    plain[key] = text
                    stored += 1
                    continue
            case = rules.expand(case)  # the long way: checked, refused or merged as any case
        _check_shape(case)
        testname, item_path, attempts, extra = case
        problem = _problem(testname, item_path, attempts, extra)
        if problem is not None:
            reason, example = problem
            known = refused.setdefault(reason, [0, example])
            known[0] += 1
            continue
        stored += 1
        key = (testname, item_path)
        found = merged.get(key)
        if found is None:
            merged[key] = _Case(testname, item_path, list(attempts), extra)
            continue
        if type(found) is tuple:  # a plain pass, then this: attempts of one test
            found = merged[key] = _Case(testname, item_path, rules.passed(plain[key]), None)
        found.attempts = [*found.attempts, *attempts]
        found.extra = extra or found.extra
        found.final, found.data = None, True
    if merged:
        _store(db, run_id, merged, plain)
    return stored, refused


def _problem(testname: str, item_path: str, attempts: list, extra: dict | None) -> tuple[str, str] | None:
    """Why a case cannot be stored, as (reason, an example naming the case), or None."""
    where = f"testcase {item_path!r} of {testname!r}" if testname else f"testcase {item_path!r}"
    if not testname:
        return "no classname and no testsuite name to use as the test name", where
    bad = bad_test_name(testname)
    if bad is not None:
        return "a classname that is not a valid test name (it contains '/')", f"{where}: {bad}"
    if len(testname) > rules.MAX_NAME or len(item_path) > rules.MAX_NAME:
        return f"a classname or name longer than {rules.MAX_NAME} characters", where[:200]
    toplevel = bool(extra and extra.get("toplevel"))
    if not item_path and not toplevel:
        return "no name (the item path)", where
    for attempt in attempts:
        try:
            rules.duration(attempt.get("t"))
        except ValueError as err:
            return "a time that is not a number of seconds", f"{where}: {err}"
    for name in ("state", "status"):
        value = (extra or {}).get(name)
        if value is not None and not (isinstance(value, str) and 0 < len(value) <= MAX_EXTRA):
            return f"a {rules.EXTRA_PREFIX}{name} property that is not a name", f"{where}: {value!r}"
    return None


def _final(case: _Case) -> tuple[str, str, str, int]:
    """The test row's (state, status, comment, run_duration) from the case's last attempt."""
    last = case.attempts[-1]
    status, comment = rules.result(last)
    if len(case.attempts) > 1 and status == "PASS":
        comment = f"passed on attempt {len(case.attempts)}"
    state = "COMPLETED"
    extra = case.extra or {}
    state = extra.get("state") or state
    status = extra.get("status") or status
    return state, status, comment, rules.duration(last.get("t"))[0]


def _store(db: Db, run_id: int, merged: dict[tuple[str, str], tuple | _Case], plain: dict) -> None:
    t = db.t.tests
    existing = _lookup(db, run_id, list(merged))
    cases = [case for case in merged.values() if type(case) is not tuple]  # all but the plain passes
    finals = {}
    set_rows = []
    if not existing:  # a fresh run, or new names: every case a new test
        new_rows = list(merged.values())
        for i, case in enumerate(new_rows):
            if type(case) is not tuple:
                state, status, comment, seconds = finals[case.testname, case.item_path] = case.final or _final(case)
                new_rows[i] = (run_id, case.testname, case.item_path, state, status, seconds, comment)
    else:
        new_rows = []
        for key, case in merged.items():
            if type(case) is tuple:
                state, status, seconds, comment = case[3:]
            else:
                state, status, comment, seconds = finals[key] = case.final or _final(case)
            found = existing.get(key)
            if found is None:
                new_rows.append((run_id, key[0], key[1], state, status, seconds, comment))
            else:
                set_rows.append((found[0], state, status, comment, seconds))
                if type(case) is tuple:  # it may have attempts before: its data then records this one
                    cases.append(
                        _Case(key[0], key[1], rules.passed(plain[key]), None, (state, status, comment, seconds))
                    )
    new_ids: dict[tuple[str, str], int] = {}
    if new_rows:
        last = _last_id(db)
        added = db.fast.execute_tuples(
            "junit_insert_tests",
            lambda: _insert_ignore(db.dialect, t, ROW_NAMES, ("run_id", "testname", "item_path")),
            ROW_NAMES,
            new_rows,
        )
        if added != len(new_rows):  # another front-end made some of them meanwhile (PostgreSQL)
            ids = _lookup(db, run_id, [(row[1], row[2]) for row in new_rows])
            set_rows.extend((ids[row[1], row[2]][0], row[3], row[4], row[6], row[5]) for row in new_rows)
        elif last is not None and _last_id(db) == last + added:  # their ids are last + 1, last + 2 ...
            new_ids = {(row[1], row[2]): last + i for i, row in enumerate(new_rows, 1)}
    if set_rows:
        db.fast.execute_tuples(
            "junit_set_tests",
            lambda: (
                update(t)
                .where(t.c.id == bindparam("b_id"))
                .values({name: bindparam(f"b_{name}") for name in SET_NAMES[1:]})
            ),
            tuple(f"b_{name}" for name in SET_NAMES),
            set_rows,
        )
    _store_attempts(db, run_id, cases, existing, new_ids)
    toplevel_cases = [c for c in cases if not c.item_path]  # (never a plain pass: those are items)
    if toplevel_cases:  # a toplevel of its own (export-junit's dbtool.toplevel): its event names the
        # test, so that the run's completion is settled and [[notify]] sees it
        ids = _lookup(db, run_id, [(c.testname, "") for c in toplevel_cases])
    for case in toplevel_cases:
        state, status, _comment, _seconds = finals[case.testname, ""]
        test_id = ids[case.testname, ""][0]
        db.emit(run_id=run_id, test_id=test_id, testname=case.testname, item_path="", state=state, status=status)
    _roll_up(db, run_id, sorted({name for name, path in merged if path}))


def _last_id(db: Db) -> int | None:
    """SQLite: the largest id in tests (0 when empty). A part's new tests, inserted by this one
    writer, get the ids after it in their order (SQLite gives a new row the largest rowid + 1 while
    that is below 2**63 - 1; _store checks the largest id afterwards), so the ids of the tests that
    have data need no lookup. None on PostgreSQL, whose ids come from a sequence other front-ends
    also draw from."""
    if db.dialect != "sqlite":
        return None
    rows = db.fast.rows("junit_last_id", lambda: select(func.max(db.t.tests.c.id)), {})
    return rows[0][0] or 0


def _insert_ignore(dialect: str, table, names: tuple[str, ...], conflict: tuple[str, ...]):
    """INSERT ... ON CONFLICT DO NOTHING whose executemany row count is the rows inserted."""
    module = sqlite if dialect == "sqlite" else postgresql
    values = {name: bindparam(name) for name in names}
    return module.insert(table).values(values).on_conflict_do_nothing(index_elements=list(conflict))


def _lookup(db: Db, run_id: int, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple]:
    """(testname, item_path) → (id, state, status, comment, run_duration) of the run's tests among ``keys``.

    When the run has no test of these names (a fresh run: the usual import) one query says so.
    Otherwise SQLite answers one prepared lookup per key on the unique index (a few µs each); a
    PostgreSQL front-end, for which each statement is a round trip, asks for up to LOOKUP_PAIRS
    keys at once."""
    if not keys:
        return {}
    t = db.t.tests.c
    names = sorted({name for name, _ in keys})
    if not any(_any_test_named(db, run_id, names[i : i + LOOKUP_PAIRS]) for i in range(0, len(names), LOOKUP_PAIRS)):
        return {}
    columns = (t.id, t.state, t.status, t.comment, t.run_duration)
    found: dict[tuple[str, str], tuple] = {}
    if db.dialect == "sqlite":
        build = lambda: select(*columns).where(  # noqa: E731
            t.run_id == bindparam("run_id"), t.testname == bindparam("testname"), t.item_path == bindparam("item_path")
        )
        for key in keys:
            rows = db.fast.rows("junit_lookup", build, {"run_id": run_id, "testname": key[0], "item_path": key[1]})
            if rows:
                found[key] = tuple(rows[0])
        return found
    cursor = db.fast.cursor  # the keys as two arrays joined on the unique index: one short statement
    for start in range(0, len(keys), LOOKUP_PAIRS):
        part = keys[start : start + LOOKUP_PAIRS]
        cursor.execute(PG_LOOKUP, ([name for name, _ in part], [path for _, path in part], run_id))
        for row in cursor.fetchall():
            found[row[0], row[1]] = tuple(row[2:])
    return found


# PostgreSQL: a run's tests by (testname, item_path), the pairs given as two arrays (a row-value IN
# list of thousands of pairs costs PostgreSQL a hundred milliseconds and more to plan)
PG_LOOKUP = (
    "SELECT t.testname, t.item_path, t.id, t.state, t.status, t.comment, t.run_duration FROM tests t"
    " JOIN unnest(%s::text[], %s::text[]) AS k(testname, item_path)"
    " ON t.testname = k.testname AND t.item_path = k.item_path WHERE t.run_id = %s"
)


def _any_test_named(db: Db, run_id: int, names: list[str]) -> bool:
    t = db.t.tests.c
    query = select(t.id).where(t.run_id == run_id, t.testname.in_(names)).limit(1)
    return bool(db.fast.table(query).rows)


def _store_attempts(db: Db, run_id: int, cases: list[_Case], existing: dict, new_ids: dict) -> None:
    """The test data of each case's attempts (rules/junit.py): texts, and the history of re-runs.
    ``existing``: the tests there before this part (their rows); ``new_ids``: the ids of the tests it
    added, when known."""
    prior = _prior_attempts(
        db, [existing[c.testname, c.item_path] for c in cases if (c.testname, c.item_path) in existing]
    )
    wanted = [c for c in cases if _has_data(c) or prior.get(existing.get((c.testname, c.item_path), (None,))[0], 0)]
    if not wanted:
        return
    ids = {**new_ids, **{k: v[0] for k, v in existing.items()}}
    missing = [(c.testname, c.item_path) for c in wanted if (c.testname, c.item_path) not in ids]
    ids.update((k, v[0]) for k, v in _lookup(db, run_id, missing).items())
    rows: list[tuple] = []
    for case in wanted:
        test_id = ids[case.testname, case.item_path]
        before, first_row = prior.get(test_id, (0, None))
        total = before + len(case.attempts)
        if total > 1:
            rows.append((test_id, rules.CATEGORY, rules.ATTEMPTS, total, "", "", "", "", "n/a", ""))
            if first_row is not None:  # the result the test had: its first attempt
                _state, status, comment, seconds = first_row
                category = rules.attempt_category(1)
                rows.append((test_id, category, "result", status, "", "", "", comment or "", "n/a", ""))
                rows.append((test_id, category, "time", seconds or 0, "", "", "", "", "n/a", ""))
        for number, attempt in enumerate(case.attempts, before + 1):
            rows.extend(_attempt_rows(test_id, number, attempt, total > 1))
    _store_rows(db, 0, rows)


def _has_data(case: _Case) -> bool:
    if not case.data:
        return False
    if len(case.attempts) > 1:
        return True
    attempt = case.attempts[0]
    return (
        any(attempt.get(name) for name in ("m", "x", "out", "err", "more", "y"))
        or attempt.get("o", "passed") != "passed"
    )


def _prior_attempts(db: Db, found: Iterable[tuple]) -> dict[int, tuple[int, tuple | None]]:
    """test id → (attempts stored so far, the test row's result when it becomes attempt 1)."""
    rows = list(found)
    if not rows:
        return {}
    d = db.t.test_data.c
    counts: dict[int, int] = {}
    ids = [row[0] for row in rows]
    for start in range(0, len(ids), LOOKUP_PAIRS):
        query = select(d.test_id, d.value).where(
            d.test_id.in_(ids[start : start + LOOKUP_PAIRS]), d.category == rules.CATEGORY, d.variable == rules.ATTEMPTS
        )
        for test_id, value in db.conn.execute(query):
            counts[test_id] = int(float(value))
    prior: dict[int, tuple[int, tuple | None]] = {}
    for test_id, state, status, comment, seconds in rows:
        if test_id in counts:
            prior[test_id] = (counts[test_id], None)
        elif state not in ("NOT_STARTED", "DELETED"):  # a result from before: the test's attempt 1
            prior[test_id] = (1, (state, status, comment, seconds))
    return prior


def _attempt_rows(test_id: int, number: int, attempt: dict, history: bool) -> list[tuple]:
    category = rules.attempt_category(number)
    rows = []

    def row(variable: str, value: object, comment: str | None) -> None:
        rows.append((test_id, category, variable, value, "", "", "", rules.keep(comment) or "", "n/a", ""))

    outcome = attempt.get("o", rules.PASSED)
    if history:
        status, comment = rules.result(attempt)
        row("result", status, comment)
        _seconds, exact = rules.duration(attempt.get("t"))
        row("time", exact if exact is not None else 0, None)
    elements = [] if outcome == rules.PASSED else [[outcome, attempt.get("y"), attempt.get("m"), attempt.get("x")]]
    for element, type_, message, text in elements + list(attempt.get("more") or []):
        if element not in rules.OUTCOMES or element == rules.PASSED:
            continue
        row(element, type_ or "", message)
        if text:
            row(f"{element}.text", None, text)
    for name, key in (("system-out", "out"), ("system-err", "err")):
        text = attempt.get(key)
        if text:
            row(name, None, text)
    return rows


def _roll_up(db: Db, run_id: int, testnames: list[str]) -> None:
    """Roll the items of these toplevels up into them (reference C.1's rules, as items do one by one)."""
    if not testnames:
        return
    t = db.t.tests
    c = t.c
    db.fast.execute_tuples(
        "junit_ensure_toplevels",
        lambda: _insert_ignore(db.dialect, t, ("run_id", "testname", "item_path"), ("run_id", "testname", "item_path")),
        ("run_id", "testname", "item_path"),
        [(run_id, name, "") for name in testnames],
    )
    tops: dict[str, tuple] = {}
    groups: dict[str, list] = {name: [] for name in testnames}
    for start in range(0, len(testnames), LOOKUP_PAIRS):
        names = testnames[start : start + LOOKUP_PAIRS]
        query = select(c.testname, c.id, c.state, c.status).where(
            c.run_id == run_id, c.item_path == "", c.testname.in_(names)
        )
        if db.dialect != "sqlite":  # in a fixed order, as every roll-up locks them
            query = query.order_by(c.id).with_for_update()
        for name, top_id, state, status in db.conn.execute(query):
            tops[name] = (top_id, state, status)
        grouped = (
            select(c.testname, c.state, c.status, func.count())
            .where(c.run_id == run_id, c.item_path != "", c.testname.in_(names))
            .group_by(c.testname, c.state, c.status)
        )
        for name, state, status, count in db.conn.execute(grouped):
            groups[name].append((state, status, count))
    changed = []
    for name in testnames:
        top_id, state, status = tops[name]
        new = roll_up(groups[name], None, None)
        if new != (state, status):
            changed.append((top_id, *new))
            db.emit(
                run_id=run_id, test_id=top_id, testname=name, item_path="", state=new[0], status=new[1], rollup=True
            )
    if changed:
        db.fast.execute_tuples(
            "junit_set_toplevels",
            lambda: (
                update(t)
                .where(c.id == bindparam("b_id"))
                .values(state=bindparam("b_state"), status=bindparam("b_status"))
            ),
            ("b_id", "b_state", "b_status"),
            changed,
        )


# -- export ---------------------------------------------------------------------------------------

EXPORT_COLUMNS = rules.EXPORT_COLUMNS


def junit_export_part(db: Db, *, run_id: int, after: list[str] | None = None, limit: int = 2000) -> dict:
    """One page of a run's leaf tests (items, and toplevels without items; deleted ones left out)
    in (testname, item path) order after ``after`` = [testname, item_path], with their junit test
    data and, for each test name that begins in this page, its suite's counts by state and status.
    The first page (no ``after``) also has the run's record and its totals."""
    run = lookup_run(db, run_id)
    t = db.t.tests
    c = t.c
    items = t.alias("items")
    has_items = (
        select(items.c.id)
        .where(
            items.c.run_id == c.run_id,
            items.c.testname == c.testname,
            items.c.item_path != "",
            items.c.state != DELETED,
        )
        .exists()
    )
    leaf = and_(c.run_id == run_id, c.state != DELETED, or_(c.item_path != "", ~has_items))
    query = select(*(c[name] for name in EXPORT_COLUMNS)).where(leaf)
    if after:
        if len(after) != 2:
            raise Refused("--after takes a test name and an item path")
        query = query.where(tuple_(c.testname, c.item_path) > tuple_(*after))
    page = db.fast.table(query.order_by(c.testname, c.item_path).limit(limit + 1)).rows
    more = len(page) > limit
    page = page[:limit]
    names = sorted({row[1] for row in page} - ({after[0]} if after else set()))
    suites: dict[str, list] = {name: [] for name in names}
    for start in range(0, len(names), LOOKUP_PAIRS):
        grouped = (
            select(c.testname, c.state, c.status, func.count(), func.sum(c.run_duration))
            .where(leaf, c.testname.in_(names[start : start + LOOKUP_PAIRS]))
            .group_by(c.testname, c.state, c.status)
        )
        for name, state, status, count, seconds in db.conn.execute(grouped):
            suites[name].append([state, status, count, int(seconds or 0)])
    data: dict[str, list] = {}
    ids = [row[0] for row in page]
    d = db.t.test_data.c
    for start in range(0, len(ids), LOOKUP_PAIRS):
        query = (
            select(d.test_id, d.category, d.variable, d.value, d.comment)
            .where(d.test_id.in_(ids[start : start + LOOKUP_PAIRS]), d.category.like(rules.CATEGORY + "%"))
            .where(func.coalesce(d.status, "") != "DELETED")
            .order_by(d.test_id, d.id)
        )
        for test_id, category, variable, value, comment in db.conn.execute(query):
            data.setdefault(str(test_id), []).append([category, variable, value, comment])
    answer = {"cases": [list(row) for row in page], "data": data, "suites": suites, "more": more}
    if not after:
        totals = (
            select(c.state, c.status, func.count(), func.sum(c.run_duration)).where(leaf).group_by(c.state, c.status)
        )
        answer["totals"] = [[s, st, n, int(sec or 0)] for s, st, n, sec in db.conn.execute(totals)]
        answer["run"] = {
            "id": run["id"],
            "runname": run["runname"],
            "target": run["target"],
            "event_time": run["event_time"],
        }
    return answer


def export_junit(db: Db, *, run_id: int) -> str:
    """export-junit's whole document in one answer (over the protocol; the CLI pages instead)."""
    parts: list[str] = []
    rules.write_run(lambda params: junit_export_part(db, **params), run_id, parts.append)
    return "".join(parts)
