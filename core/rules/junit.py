"""JUnit XML ↔ dbtool tests: the mapping both ways, as data and pure functions (standard library only).

A JUnit ``<testcase>`` is one *case*: testname = its ``classname`` (or its suite's name), item path =
its ``name``. A case holds one or more *attempts*, in order: Surefire's ``<flakyFailure>`` and
``<flakyError>`` are failed attempts before the case's own (final) result; its ``<rerunFailure>`` and
``<rerunError>`` are further failed attempts after its ``<failure>``/``<error>``; a case repeated
in a file (or imported again from another file) adds attempts to the same test.

On the wire (import-junit's parts) a case is ``[testname, item_path, attempts, extra]``, or, for a
plain pass (one attempt that passed, a time at most, no properties: most of a big file),
``[testname, item_path, time]`` — the time text or null (``compact``/``expand``); in the long form each
attempt a dict — ``o`` outcome (the element: one of OUTCOMES), ``t`` time text, ``m`` message,
``y`` type, ``x`` text (the element's body or Surefire's ``<stackTrace>``), ``out``/``err``
system-out/err, ``more`` further outcome elements of the same attempt as ``[element, type,
message, text]`` (pytest reports a failure and a teardown error in one testcase); ``extra`` the
case's ``dbtool.*`` properties (``toplevel``, ``state``, ``status``: what export-junit writes so
that a run round-trips exactly), or null.

Stored: the test row takes the last attempt's result (state COMPLETED, status PASS / FAIL / SKIP,
the message's first line as comment, the time rounded to whole seconds as run_duration). What the
row cannot hold goes to the test's data (read-test-data), category ``junit/N`` for attempt N:
``failure``/``error``/``skipped``/``rerunFailure``/... (value: the type attribute, comment: the whole
message), ``<element>.text`` (comment: the body — the traceback), ``system-out``/``system-err``
(value: length, comment: the text); and, once a test has more than one attempt, ``result``
(value: status, comment: comment) and ``time`` (value: seconds) per attempt and ``junit
attempts`` (value: how many).
"""

from __future__ import annotations

import math

PASSED = "passed"
FAILURES = ("failure", "rerunFailure", "flakyFailure")
ERRORS = ("error", "rerunError", "flakyError")
SKIPPED = "skipped"
OUTCOMES = (PASSED, *FAILURES, *ERRORS, SKIPPED)
MAIN_OUTCOMES = ("failure", "error", SKIPPED)  # what a testcase's own result can be besides passed
FLAKY = ("flakyFailure", "flakyError")  # failed attempts before a case that passed in the end
RERUNS = ("rerunFailure", "rerunError")  # failed attempts after a case's failure/error

CATEGORY = "junit"  # test data of imported cases: ``junit/N`` per attempt, ``junit`` for the count
ATTEMPTS = "attempts"
EXTRA_PREFIX = "dbtool."  # testcase properties export-junit writes for an exact round trip
MAX_TEXT = 1 << 20  # characters kept of one text (a message, a traceback, system-out/err)
TRUNCATED = "\n[... {} more characters not kept by dbtool]"
MAX_NAME = 4096  # characters of a test name or item path


def attempt_category(number: int) -> str:
    return f"{CATEGORY}/{number}"


def first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0].strip()


def result(attempt: dict) -> tuple[str, str]:
    """(status, comment) of one attempt: passed → PASS; a failure → FAIL with the message's first
    line; an error → FAIL with its type in front (``ZeroDivisionError: division by zero``);
    skipped → SKIP with the reason's first line."""
    outcome = attempt.get("o") or PASSED
    line = first_line(attempt.get("m")) or first_line(attempt.get("x"))
    if outcome == PASSED:
        return "PASS", ""
    if outcome == SKIPPED:
        return "SKIP", line
    if outcome in ERRORS:
        kind = (attempt.get("y") or "").strip() or "error"
        return "FAIL", f"{kind}: {line}" if line else kind
    return "FAIL", line


def duration(text: object) -> tuple[int, float | None]:
    """(run_duration, seconds) of a ``time`` attribute: whole seconds rounded half up, and the exact
    value; (0, None) when absent. ValueError with a reason for anything but a finite number ≥ 0
    (a comma as decimal separator is taken, as some runners write it)."""
    if text is None or text == "":
        return 0, None
    if not isinstance(text, str):
        raise ValueError(f"time {text!r} is not a number of seconds")
    try:
        seconds = float(text.strip().replace(",", "."))
    except ValueError:
        raise ValueError(f"time {text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > 1e12:
        raise ValueError(f"time {text!r} is not a number of seconds between 0 and 10^12")
    return math.floor(seconds + 0.5), seconds


def keep(text: str | None) -> str | None:
    """A text as stored: at most MAX_TEXT characters, with a note of how many more there were."""
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + TRUNCATED.format(len(text) - MAX_TEXT)


# -- export: the JUnit element that says a stored result ----------------------------------------

PASS_STATUSES = frozenset({"PASS", "WARN", "WAIVED"})
ERROR_STATUSES = frozenset({"DEAD", "STUCK/DEAD", "KILLED", "TIMED_OUT", "INCOMPLETE", "STUCK/INCOMPLETE", "ABORT"})
ERROR_STATES = frozenset({"KILLED", "KILLREQ", "STUCK", "INCOMPLETE", "DEAD"})
NOT_RUN_STATES = frozenset({"NOT_STARTED", "LAUNCHED", "REMOTEHOSTSTART", "RUNNING"})


def outcome_of(state: str | None, status: str | None) -> str:
    """The JUnit outcome a CI system should show for a test's state and status: passed for PASS,
    WARN, WAIVED; skipped for SKIP and for a test that has not finished; error for a test that
    died, was killed or aborted; failure for the rest (FAIL, CHECK, PREQ_FAIL ...)."""
    if state in ERROR_STATES or status in ERROR_STATUSES:
        return "error"
    if state in NOT_RUN_STATES or status == "SKIP":
        return SKIPPED
    if status in PASS_STATUSES:
        return PASSED
    return "failure"


def imported_as(outcome: str) -> tuple[str, str]:
    """The (state, status) import-junit gives a case whose final outcome is ``outcome``."""
    return "COMPLETED", result({"o": outcome})[0]


# -- reading JUnit XML (the client streams a file; the server reads a document sent whole) --------

ROOTS = ("testsuites", "testsuite")


class NotJunit(ValueError):
    """The XML is well-formed but is no JUnit report."""


def iter_cases(source, start: int = 0):
    """The cases of a JUnit file object (bytes), in order, as the wire form above — the first
    ``start`` counted but not built (an import resumed where it stopped). Streams: each
    testcase's element is dropped once read, so memory stays bounded whatever the file's size.
    XML entity declarations and external references are refused (defusedxml: EntitiesForbidden,
    ExternalReferenceForbidden); malformed XML raises xml.etree.ElementTree.ParseError."""
    from defusedxml.ElementTree import iterparse

    suites: list[str | None] = []
    parents: list = []
    index = 0
    for event, element in iterparse(source, events=("start", "end")):
        tag = element.tag
        if event == "start":
            if not parents and tag not in ROOTS:
                raise NotJunit(f"its root element is <{tag}>, not <testsuites> or <testsuite>")
            if tag == "testsuite":
                suites.append(element.get("name"))
            parents.append(element)
            continue
        parents.pop()
        if tag == "testcase":
            if index >= start:
                yield case_of(element, suites[-1] if suites else None)
            index += 1
        elif tag == "testsuite":
            suites.pop()
        if parents and parents[-1].tag in ROOTS:  # a case, or a suite's properties/output: read, dropped
            parents[-1].remove(element)


def compact(case: list) -> list:
    """A wire case in its short form when it is a plain pass (see the module's docstring)."""
    testname, item_path, attempts, extra = case
    if extra is None and len(attempts) == 1:
        attempt = attempts[0]
        if attempt.get("o", PASSED) == PASSED and len(attempt) == ("o" in attempt) + ("t" in attempt):
            return [testname, item_path, attempt.get("t")]
    return case


def expand(case: list) -> list:
    """A short wire case in the long form (anything else as it is: the server checks it)."""
    if len(case) == 3:
        testname, item_path, text = case
        return [testname, item_path, passed(text), None]
    return case


def passed(text: object) -> list[dict]:
    """The attempts of a plain pass whose time text is ``text`` (None: no time)."""
    return [{"o": PASSED} if text is None else {"o": PASSED, "t": text}]


def case_of(element, suite: str | None) -> list:
    """One ``<testcase>`` element as a wire case (see the module's docstring)."""
    attrib = element.attrib
    main: dict = {"o": PASSED}
    _set(main, "t", attrib.get("time"))
    before: list[dict] = []
    after: list[dict] = []
    extra: dict = {}
    for child in element:
        tag = child.tag
        if tag in MAIN_OUTCOMES:
            if main["o"] == PASSED:
                main["o"] = tag
                _set(main, "m", child.get("message"))
                _set(main, "y", child.get("type"))
                _set(main, "x", keep(child.text))
            else:
                main.setdefault("more", []).append([tag, child.get("type"), child.get("message"), keep(child.text)])
        elif tag in FLAKY:
            before.append(_rerun(child))
        elif tag in RERUNS:
            after.append(_rerun(child))
        elif tag == "system-out":
            _set(main, "out", keep(child.text))
        elif tag == "system-err":
            _set(main, "err", keep(child.text))
        elif tag == "properties":
            for prop in child:
                name = prop.get("name") or ""
                if name.startswith(EXTRA_PREFIX) and name[len(EXTRA_PREFIX) :] in EXTRA_NAMES:
                    extra[name[len(EXTRA_PREFIX) :]] = prop.get("value")
    toplevel = extra.get("toplevel") == "true"
    extra = {k: v for k, v in extra.items() if k != "toplevel"}
    if toplevel:
        extra["toplevel"] = True
    testname = attrib.get("classname") or suite or ""
    item_path = "" if toplevel else attrib.get("name") or ""
    return [testname, item_path, [*before, main, *after], extra or None]


EXTRA_NAMES = ("toplevel", "state", "status")


def _rerun(element) -> dict:
    """A Surefire re-run element: its attributes, its <stackTrace> and output children."""
    attempt: dict = {"o": element.tag}
    _set(attempt, "t", element.get("time"))
    _set(attempt, "m", element.get("message"))
    _set(attempt, "y", element.get("type"))
    text = element.findtext("stackTrace")
    _set(attempt, "x", keep(text if text is not None else element.text))
    _set(attempt, "out", keep(element.findtext("system-out")))
    _set(attempt, "err", keep(element.findtext("system-err")))
    return attempt


def _set(attempt: dict, key: str, value: str | None) -> None:
    if value:
        attempt[key] = value


# -- writing JUnit XML (export-junit) ----------------------------------------------------------------

# Characters XML 1.0 cannot carry (control characters, lone surrogates): written as #xNN, as pytest does.
_NOT_XML = None


def xml_text(text: object) -> str:
    from xml.sax.saxutils import escape

    global _NOT_XML
    if _NOT_XML is None:
        import re

        _NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
    text = "" if text is None else str(text)
    return escape(_NOT_XML.sub(lambda m: f"#x{ord(m.group()):02X}", text))


def xml_attr(text: object) -> str:
    return (
        '"'
        + xml_text(text).replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;")
        + '"'
    )


def counts(groups) -> dict:
    """tests, failures, errors, skipped and time of a suite from its (state, status, count, seconds) groups."""
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0}
    for state, status, count, seconds in groups:
        totals["tests"] += count
        totals["time"] += seconds or 0
        outcome = outcome_of(state, status)
        if outcome != PASSED:
            totals[{"failure": "failures", "error": "errors", SKIPPED: "skipped"}[outcome]] += count
    return totals


def _counts_attrs(groups) -> str:
    return " ".join(f"{name}={xml_attr(value)}" for name, value in counts(groups).items())


def testsuites_open(name: str, groups) -> str:
    return f'<?xml version="1.0" encoding="utf-8"?>\n<testsuites name={xml_attr(name)} {_counts_attrs(groups)}>\n'


def testsuite_open(name: str, groups, timestamp: str) -> str:
    return f"  <testsuite name={xml_attr(name)} {_counts_attrs(groups)} timestamp={xml_attr(timestamp)}>\n"


TESTSUITE_CLOSE = "  </testsuite>\n"
TESTSUITES_CLOSE = "</testsuites>\n"


def testcase(test: dict, data: list) -> str:
    """The ``<testcase>`` element(s) of a stored test (``id, testname, item_path, state, status,
    comment, run_duration``) and its junit test data rows (``[category, variable, value, comment]``).

    Earlier attempts are written as Surefire writes re-runs when they can be: failed attempts
    before a pass as <flakyFailure>/<flakyError>, failed attempts after a first failure as
    <rerunFailure>/<rerunError>; any other history (an earlier attempt that passed or was skipped)
    as one <testcase> per attempt. import-junit reads each form back as the same attempts."""
    attempts: dict[int, dict] = {}
    for category, variable, value, comment in data:
        number = _attempt_number(category)
        if number is not None:
            attempts.setdefault(number, {})[variable] = (value, comment)
    state, status = test["state"], test["status"]
    ordered = [attempts[n] for n in sorted(attempts)] or [{}]
    final = ordered[-1]
    outcome = outcome_of(state, status)
    if outcome == "failure" and _stored_outcome(final) in ERRORS:
        outcome = "error"  # an imported <error>: FAIL, and an error for CI systems
    earlier = ordered[:-1]
    earlier_outcomes = [_stored_outcome(a) or "failure" for a in earlier]
    failed_before = all(o in FAILURES or o in ERRORS for o in earlier_outcomes)
    extra = _extra(test, outcome)
    if not earlier or (failed_before and outcome in (PASSED, "failure", "error")):
        if outcome == PASSED:
            inner = [_rerun_element(a, "flaky") for a in earlier]
            return _case_element(test, final, extra, inner, final)
        first = earlier[0] if earlier else final
        first_outcome = earlier_outcomes[0] if earlier else outcome
        inner = [_outcome_element(first_outcome, first, test["comment"] if not earlier else "")]
        inner += [_rerun_element(a, "rerun") for a in [*earlier[1:], final][: len(earlier)]]
        return _case_element(test, first, extra, inner, first)
    parts = []
    for attempt, attempt_outcome in zip(earlier, earlier_outcomes, strict=True):
        attempt_extra = [e for e in extra if e[0] == "toplevel"]
        parts.append(
            _case_element(test, attempt, attempt_extra, [_outcome_element(attempt_outcome, attempt, "")], attempt)
        )
    parts.append(_case_element(test, final, extra, [_outcome_element(outcome, final, test["comment"])], final))
    return "".join(parts)


def _attempt_number(category: str) -> int | None:
    prefix, _, number = category.partition("/")
    if prefix != CATEGORY or not number.isdigit():
        return None
    return int(number)


def _extra(test: dict, outcome: str) -> list[tuple[str, str]]:
    """The dbtool.* properties that make the round trip exact: toplevel, and the state and status
    when import-junit would not give them back from the JUnit outcome alone."""
    extra = [("toplevel", "true")] if not test["item_path"] else []
    if (test["state"], test["status"]) != imported_as(outcome):
        extra += [("state", test["state"]), ("status", test["status"])]
    return extra


def _case_element(test: dict, timed: dict, extra: list, inner: list[str], output: dict) -> str:
    """A <testcase>: its time from ``timed`` (an attempt's exact time, else run_duration), its
    properties, its outcome and re-run elements, and the system-out/err of ``output``."""
    seconds = timed.get("time", (test["run_duration"], None))[0]
    name = test["testname"] if not test["item_path"] else test["item_path"]
    attrs = f"classname={xml_attr(test['testname'])} name={xml_attr(name)} time={xml_attr(_seconds(seconds))}"
    parts = [f"    <testcase {attrs}>\n"]
    if extra:
        parts.append("      <properties>\n")
        parts += [f"        <property name={xml_attr(EXTRA_PREFIX + k)} value={xml_attr(v)}/>\n" for k, v in extra]
        parts.append("      </properties>\n")
    parts += inner
    for variable in ("system-out", "system-err"):
        if variable in output:
            parts.append(f"      <{variable}>{xml_text(output[variable][1])}</{variable}>\n")
    parts.append("    </testcase>\n")
    return "".join(parts)


def _seconds(value: object) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "0"
    return repr(number) if not number.is_integer() else str(int(number))


def _stored_outcome(attempt: dict) -> str | None:
    for outcome in (*MAIN_OUTCOMES, *FAILURES, *ERRORS):
        if outcome in attempt:
            return outcome
    result_row = attempt.get("result")
    if result_row is not None:
        return {"PASS": PASSED, "SKIP": SKIPPED}.get(str(result_row[0]), "failure")
    return None


def _element_fields(attempt: dict, outcome: str) -> tuple[str, str, str]:
    """(type, message, text) of an attempt's outcome element, whatever its stored spelling."""
    for spelling in (outcome, *FAILURES, *ERRORS, *MAIN_OUTCOMES):
        if spelling in attempt:
            type_, message = attempt[spelling]
            text = attempt.get(f"{spelling}.text", (None, ""))[1]
            return str(type_ or ""), message or "", text or ""
    result_row = attempt.get("result")
    return "", (result_row[1] if result_row else "") or "", ""


def _outcome_element(outcome: str, attempt: dict, comment: str) -> str:
    if outcome == PASSED:
        return ""
    type_, message, text = _element_fields(attempt, outcome)
    message = message or comment or ""
    base = "error" if outcome in ERRORS else "failure" if outcome in FAILURES else SKIPPED
    attrs = f"message={xml_attr(message)}" + (f" type={xml_attr(type_)}" if type_ else "")
    return f"      <{base} {attrs}>{xml_text(text)}</{base}>\n"


def _rerun_element(attempt: dict, kind: str) -> str:
    """A failed attempt as Surefire writes one: <flakyFailure> before a pass, <rerunFailure> after a failure."""
    outcome = _stored_outcome(attempt) or "failure"
    type_, message, text = _element_fields(attempt, outcome)
    tag = kind + ("Error" if outcome in ERRORS else "Failure")
    attrs = f"message={xml_attr(message)}" + (f" type={xml_attr(type_)}" if type_ else "")
    seconds = attempt.get("time")
    if seconds is not None:
        attrs += f" time={xml_attr(_seconds(seconds[0]))}"
    inner = f"<stackTrace>{xml_text(text)}</stackTrace>" if text else ""
    for variable in ("system-out", "system-err"):
        if variable in attempt:
            inner += f"<{variable}>{xml_text(attempt[variable][1])}</{variable}>"
    return f"      <{tag} {attrs}>{inner}</{tag}>\n"


PAGE = 2000  # tests per page of export-junit
EXPORT_COLUMNS = ("id", "testname", "item_path", "state", "status", "comment", "run_duration")


def write_run(fetch_page, run_id: int, write) -> None:
    """Write a run as JUnit XML, page by page: ``fetch_page(params)`` answers junit-export-part,
    ``write(text)`` takes the XML. One <testsuite> per test name, one <testcase> per leaf test."""
    import time

    after = None
    suite = None
    stamp = ""
    while True:
        page = fetch_page({"run_id": run_id, "limit": PAGE, **({"after": after} if after else {})})
        if after is None:
            run = page["run"]
            write(testsuites_open(f"{run['target']}/{run['runname']}", page["totals"]))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run["event_time"] or 0))
        for row in page["cases"]:
            test = dict(zip(EXPORT_COLUMNS, row, strict=True))
            if test["testname"] != suite:
                if suite is not None:
                    write(TESTSUITE_CLOSE)
                suite = test["testname"]
                write(testsuite_open(suite, page["suites"][suite], stamp))
            write(testcase(test, page["data"].get(str(test["id"]), [])))
        if not page["more"] or not page["cases"]:
            break
        last = page["cases"][-1]
        after = [last[1], last[2]]
    if suite is not None:
        write(TESTSUITE_CLOSE)
    write(TESTSUITES_CLOSE)
