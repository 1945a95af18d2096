"""import-junit and export-junit: real reports from a real runner (pytest --junitxml), a Surefire
sample, malicious XML, re-import, the round trip, a big file in bounded memory, standard input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import dbtool_argv, run_in_pty

BACKENDS = ("sqlite", "postgresql")

PYTEST_FILE = """
import pytest

def test_pass():
    pass

def test_fail():
    assert 1 == 2, "one is not two"

@pytest.fixture
def broken():
    raise ZeroDivisionError("division by zero")

def test_error(broken):
    pass

def test_skip():
    pytest.skip("not on this platform")

def test_out():
    print("hello from stdout")
"""

SUREFIRE = """<?xml version="1.0" encoding="UTF-8"?>
<testsuite xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
    xsi:noNamespaceSchemaLocation="https://maven.apache.org/surefire/maven-surefire-plugin/xsd/surefire-test-report-3.0.xsd"
    name="com.example.CalcTest" time="2.5" tests="4" errors="0" skipped="0" failures="1">
  <properties><property name="java.version" value="17"/></properties>
  <testcase name="adds" classname="com.example.CalcTest" time="0.012"/>
  <testcase name="divides" classname="com.example.CalcTest" time="1.6">
    <flakyFailure message="expected 2 but was 3" type="org.opentest4j.AssertionFailedError">
      <stackTrace>org.opentest4j.AssertionFailedError: expected 2 but was 3
	at com.example.CalcTest.divides(CalcTest.java:20)</stackTrace>
      <system-out>first try</system-out>
    </flakyFailure>
  </testcase>
  <testcase name="rounds" classname="com.example.CalcTest" time="0.5">
    <failure message="expected 1 but was 0" type="org.opentest4j.AssertionFailedError">at CalcTest.java:30</failure>
    <rerunFailure message="expected 1 but was 0 again" type="org.opentest4j.AssertionFailedError">
      <stackTrace>at CalcTest.java:30 (rerun)</stackTrace>
    </rerunFailure>
  </testcase>
  <testcase name="parses" classname="com.example.CalcTest" time="0.3">
    <error message="null" type="java.lang.NullPointerException">java.lang.NullPointerException
	at com.example.CalcTest.parses(CalcTest.java:40)</error>
  </testcase>
</testsuite>
"""

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<testsuite name="x"><testcase classname="a" name="&lol3;"/></testsuite>
"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<testsuite name="x"><testcase classname="a" name="b"><failure message="&xxe;"/></testcase></testsuite>
"""

PARAMETER_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/evil.dtd"> %remote;]>
<testsuite name="x"><testcase classname="a" name="b"/></testsuite>
"""

UNPARSED_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE foo [<!NOTATION gif SYSTEM "image/gif"><!ENTITY logo SYSTEM "logo.gif" NDATA gif>]>
<testsuite name="x"><testcase classname="a" name="b"/></testsuite>
"""


def new_run(area, name: str = "ci") -> str:
    return area.ok("register-run", "--target", "v1/linux", "--runname", name).out.strip()


def records_of(area, run: str) -> dict[tuple[str, str], dict]:
    records = area.ok("get-tests-for-run", "--run-id", run, "--json").json
    return {(r["testname"], r["item_path"]): r for r in records}


def data_of(area, test_id: int) -> dict[tuple[str, str], dict]:
    rows = area.ok("read-test-data", "--test-id", str(test_id), "--json").json
    return {(r["category"], r["variable"]): r for r in rows}


PYTEST = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "junit_logging=all"]


@pytest.fixture(scope="module")
def pytest_report(tmp_path_factory) -> Path:
    """A JUnit report written by pytest itself (the runner every Python CI uses)."""
    where = tmp_path_factory.mktemp("pytest-report")
    (where / "test_sample.py").write_text(PYTEST_FILE)
    report = where / "report.xml"
    proc = subprocess.run(
        [*PYTEST, f"--junitxml={report}", "test_sample.py"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTEST_ADDOPTS": ""},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # a test failed, as intended
    return report


def test_pytest_report(area, pytest_report: Path) -> None:
    run = new_run(area)
    result = area.run("import-junit", "--run-id", run, str(pytest_report))
    assert result.code == 0, result.err
    assert result.out == "stored 5, refused 0\n"
    tests = records_of(area, run)
    by_item = {item: t for (name, item), t in tests.items() if name == "test_sample"}
    assert {item: (t["state"], t["status"]) for item, t in by_item.items()} == {
        "": ("COMPLETED", "FAIL"),  # the toplevel: its items rolled up
        "test_pass": ("COMPLETED", "PASS"),
        "test_fail": ("COMPLETED", "FAIL"),
        "test_error": ("COMPLETED", "FAIL"),
        "test_skip": ("COMPLETED", "SKIP"),
        "test_out": ("COMPLETED", "PASS"),
    }
    assert by_item["test_fail"]["comment"].startswith("AssertionError: one is not two")
    # pytest's <error> has no type attribute: "error", then its message (which names the exception)
    assert by_item["test_error"]["comment"] == 'error: failed on setup with "ZeroDivisionError: division by zero"'
    assert "not on this platform" in by_item["test_skip"]["comment"]
    failure = data_of(area, by_item["test_fail"]["id"])
    assert "assert 1 == 2" in failure["junit/1", "failure.text"]["comment"]  # the whole traceback is kept
    assert "hello from stdout" in data_of(area, by_item["test_out"]["id"])["junit/1", "system-out"]["comment"]
    assert area.ok("get-run-info", "--run-id", run, "--json").json["status"] == "FAIL"


def test_reimport_changes_nothing(area, pytest_report: Path) -> None:
    run = new_run(area)
    area.ok("import-junit", "--run-id", run, str(pytest_report))
    before = records_of(area, run)
    again = area.run("import-junit", "--run-id", run, str(pytest_report))
    assert again.code == 0, again.err
    assert again.out.startswith("stored 0, refused 0; imported into this run before, unchanged")
    assert records_of(area, run) == before
    other = new_run(area, "other")  # another run takes the same file
    assert area.ok("import-junit", "--run-id", other, str(pytest_report)).out == "stored 5, refused 0\n"


def test_repeated_case_and_rerun_failure_are_attempts(area, tmp_path: Path) -> None:
    report = tmp_path / "reruns.xml"
    report.write_text(
        textwrap.dedent("""\
        <testsuites><testsuite name="suite">
          <testcase classname="t.flaky" name="case" time="0.2"><failure message="boom">trace 1</failure></testcase>
          <testcase classname="t.flaky" name="case" time="0.3"/>
          <testcase classname="t.hard" name="case" time="1"><failure message="first">a</failure>
            <rerunFailure message="second" type="E"><stackTrace>b</stackTrace></rerunFailure></testcase>
        </testsuite></testsuites>
        """)
    )
    run = new_run(area)
    assert area.ok("import-junit", "--run-id", run, str(report)).out == "stored 3, refused 0\n"
    tests = records_of(area, run)
    flaky = tests["t.flaky", "case"]
    assert (flaky["status"], flaky["comment"]) == ("PASS", "passed on attempt 2")
    data = data_of(area, flaky["id"])
    assert data["junit", "attempts"]["value"] == 2
    assert [data["junit/1", "result"]["value"], data["junit/2", "result"]["value"]] == ["FAIL", "PASS"]
    assert data["junit/1", "failure.text"]["comment"] == "trace 1"
    hard = tests["t.hard", "case"]
    assert (hard["status"], hard["comment"]) == ("FAIL", "second")
    assert data_of(area, hard["id"])["junit/2", "rerunFailure.text"]["comment"] == "b"
    # the same case in another file: one more attempt of the same test
    later = tmp_path / "later.xml"
    later.write_text('<testsuite name="s"><testcase classname="t.hard" name="case" time="2"/></testsuite>')
    area.ok("import-junit", "--run-id", run, str(later))
    data = data_of(area, records_of(area, run)["t.hard", "case"]["id"])
    assert data["junit", "attempts"]["value"] == 3
    assert data["junit/3", "result"]["value"] == "PASS"


def test_surefire_report(area, tmp_path: Path) -> None:
    report = tmp_path / "TEST-com.example.CalcTest.xml"
    report.write_text(SUREFIRE)
    run = new_run(area)
    assert area.ok("import-junit", "--run-id", run, str(report)).out == "stored 4, refused 0\n"
    tests = records_of(area, run)
    name = "com.example.CalcTest"
    assert {item: t["status"] for (n, item), t in tests.items() if n == name} == {
        "": "FAIL",
        "adds": "PASS",
        "divides": "PASS",
        "rounds": "FAIL",
        "parses": "FAIL",
    }
    assert tests[name, "parses"]["comment"] == "java.lang.NullPointerException: null"
    assert tests[name, "divides"]["run_duration"] == 2  # 1.6 s rounded
    flaky = data_of(area, tests[name, "divides"]["id"])
    assert flaky["junit/1", "result"]["value"] == "FAIL"
    assert "CalcTest.java:20" in flaky["junit/1", "flakyFailure.text"]["comment"]
    assert flaky["junit/1", "system-out"]["comment"] == "first try"
    assert flaky["junit/2", "result"]["value"] == "PASS"


@pytest.mark.parametrize(
    "xml",
    [BILLION_LAUGHS, EXTERNAL_ENTITY, PARAMETER_ENTITY, UNPARSED_ENTITY],
    ids=["billion-laughs", "external-entity", "parameter-entity", "unparsed-entity"],
)
def test_xml_attacks_refused(area, tmp_path: Path, xml: str) -> None:
    report = tmp_path / "evil.xml"
    report.write_text(xml)
    run = new_run(area)
    result = area.run("import-junit", "--run-id", run, str(report))
    assert result.code == 4
    assert "declares XML entities or external references" in result.err
    assert "nothing was stored" in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert records_of(area, run) == {}


def test_bad_input(area, tmp_path: Path) -> None:
    run = new_run(area)
    broken = tmp_path / "broken.xml"
    broken.write_text('<testsuite name="s"><testcase classname="a" name="b"></testsuite>')
    result = area.run("import-junit", "--run-id", run, str(broken))
    assert result.code == 4 and "is not well-formed XML" in result.err and "nothing was stored" in result.err
    other = tmp_path / "other.xml"
    other.write_text("<html><body/></html>")
    result = area.run("import-junit", "--run-id", run, str(other))
    assert result.code == 4 and "is not a JUnit report: its root element is <html>" in result.err
    result = area.run("import-junit", "--run-id", run, str(tmp_path / "missing.xml"))
    assert result.code == 2 and "no such file" in result.err
    result = area.run("import-junit", "--run-id", "999", str(broken))
    assert result.code == 4
    assert records_of(area, run) == {}


def test_refused_cases_are_counted(area, tmp_path: Path) -> None:
    report = tmp_path / "mixed.xml"
    report.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="ok" name="one"/>'
        '<testcase classname="a/b" name="slash"/>'
        '<testcase classname="a/c" name="slash2"/>'
        '<testcase name="nameless-suite"/>'
        '<testcase classname="ok" name="slow" time="soon"/>'
        "</testsuite></testsuites>"
    )
    run = new_run(area)
    result = area.run("import-junit", "--run-id", run, str(report))
    assert result.code == 4
    assert result.out.startswith("stored 1, refused 4: 2 with a classname that is not a valid test name")
    assert "1 with no classname and no testsuite name" in result.out
    assert "1 with a time that is not a number of seconds" in result.out
    assert "4 of 5 cases were refused" in result.err
    assert set(records_of(area, run)) == {("ok", ""), ("ok", "one")}
    summary = area.run("--json", "import-junit", "--run-id", new_run(area, "again"), str(report))
    assert summary.json["stored"] == 1 and summary.json["refused"] == 4


def test_export_round_trip(area, pytest_report: Path, tmp_path: Path) -> None:
    run = new_run(area)
    area.ok("import-junit", "--run-id", run, str(pytest_report))
    surefire = tmp_path / "surefire.xml"
    surefire.write_text(SUREFIRE)
    area.ok("import-junit", "--run-id", run, str(surefire))
    area.ok("set-state-status-and-roll-up-items", "--run-id", run, "--testname", "compile", "--state", "COMPLETED",
            "--status", "PASS")  # fmt: skip
    area.ok("set-state-status-and-roll-up-items", "--run-id", run, "--testname", "farm", "--item-path", "job1",
            "--state", "KILLED", "--status", "DEAD")  # fmt: skip
    exported = tmp_path / "export.xml"
    area.ok("export-junit", "--run-id", run, "-o", str(exported))
    text = exported.read_text()
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>\n<testsuites ')
    assert "<flakyFailure" in text and "<rerunFailure" in text and "<error " in text and "<skipped " in text
    import xml.etree.ElementTree as ET

    root = ET.fromstring(text)
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["test_sample"].get("tests") == "5" and suites["test_sample"].get("skipped") == "1"
    copy = new_run(area, "copy")
    assert area.ok("import-junit", "--run-id", copy, str(exported)).code == 0
    original, again = records_of(area, run), records_of(area, copy)
    assert {k: (t["state"], t["status"]) for k, t in again.items()} == {
        k: (t["state"], t["status"]) for k, t in original.items()
    }
    flaky = again["com.example.CalcTest", "divides"]
    assert data_of(area, flaky["id"])["junit", "attempts"]["value"] == 2
    assert area.ok("export-junit", "--run-id", copy).out.count("<testcase ") == text.count("<testcase ")


def test_stdin(area, pytest_report: Path) -> None:
    run = new_run(area)
    result = area.run("import-junit", "--run-id", run, "-", input=pytest_report.read_text())
    assert (result.code, result.out) == (0, "stored 5, refused 0\n"), result.err
    again = area.run("import-junit", "--run-id", run, "-", input=pytest_report.read_text())
    assert again.out.startswith("stored 0, refused 0")


def write_big(path: Path, cases: int) -> None:
    with open(path, "w") as f:
        f.write('<?xml version="1.0"?>\n<testsuites><testsuite name="big">\n')
        for i in range(cases):
            attrs = f'classname="pkg.m{i // 500}" name="test_{i}" time="0.0{i % 10}"'
            if i % 50 == 7:
                f.write(f'<testcase {attrs}><failure message="no {i}">{"x" * 2000}</failure></testcase>\n')
            else:
                f.write(f"<testcase {attrs}/>\n")
        f.write("</testsuite></testsuites>\n")


def peak_rss_kb(argv: list[str]) -> tuple[int, str]:
    """Run a process to its end; its exit code's output and its own peak RSS (KiB, from wait4)."""
    # (through a fresh `python -c` that measures only its own child: RUSAGE of a process that waited
    # for bigger children before, such as the test runner, would report their peak instead)
    probe = (
        "import os, subprocess, sys, json\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)\n"
        "out = p.stdout.read().decode()\n"
        "_pid, _status, usage = os.wait4(p.pid, 0)\n"
        "print(json.dumps([usage.ru_maxrss, out]))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, timeout=300)
    kb, out = json.loads(done.stdout)
    return kb, out


def test_big_file_bounded_memory(area, tmp_path: Path) -> None:
    """100,000 cases (11 MB) and 10,000 (1 MB): the client's peak memory does not grow with the file."""
    small, big = tmp_path / "small.xml", tmp_path / "big.xml"
    write_big(small, 10_000)
    write_big(big, 100_000)
    rss = {}
    for path, name in ((small, "small"), (big, "big")):
        kb, out = peak_rss_kb(dbtool_argv("--area", str(area.root), "import-junit", "--run-id", new_run(area, name),
                                          str(path)))  # fmt: skip
        assert out.startswith(f"stored {10_000 if name == 'small' else 100_000}, refused 0"), out
        rss[name] = kb
    assert rss["big"] < rss["small"] + 20_000, rss  # bounded: not 10x the small file's
    assert rss["big"] < 120_000, rss
    counted = area.ok("get-count-tests-running-for-run-id", "--run-id", "2")  # a read works afterwards
    assert counted.out.strip() == "0"


def test_progress_bar_on_a_terminal(area, tmp_path: Path) -> None:
    report = tmp_path / "bar.xml"
    write_big(report, 20_000)
    code, text = run_in_pty(
        dbtool_argv("--area", str(area.root), "import-junit", "--run-id", new_run(area), str(report))
    )
    assert code == 0, text
    assert "import-junit [" in text and "cases" in text
    assert "stored 20000, refused 0" in text
    plain = area.ok("import-junit", "--run-id", new_run(area, "plain"), str(report))
    assert plain.out == "stored 20000, refused 0\n" and plain.err == ""


# -- the wire form of a part (handlers, on both backends) ------------------------------------------


def _part(hdb, run_id: int, cases: list, digest: str = "a" * 64) -> dict:
    return hdb("junit-import-part", run_id=run_id, digest=digest, cases=json.dumps(cases), first=0, final=True)


def test_a_plain_pass_in_short_form_is_stored_as_in_long_form(hdb) -> None:
    short, long = (hdb("register-run", target=f"v1/{n}", runname="r") for n in ("short", "long"))
    _part(hdb, short, [["C", "t1", "1.6"], ["C", "t2", None], ["C", "t3", "0.2"], ["C", "t3", "0,7"]])
    attempt = {"o": "passed"}
    _part(
        hdb,
        long,
        [
            ["C", "t1", [{**attempt, "t": "1.6"}], None],
            ["C", "t2", [attempt], None],
            ["C", "t3", [{**attempt, "t": "0.2"}], None],
            ["C", "t3", [{"t": "0,7"}], None],
        ],
    )
    rows = "SELECT testname, item_path, state, status, run_duration, comment FROM tests WHERE run_id = ? ORDER BY id"
    assert hdb.sql(rows, short) == hdb.sql(rows, long)
    assert hdb.sql(rows, short)[:3] == [
        ("C", "t1", "COMPLETED", "PASS", 2, ""),
        ("C", "t2", "COMPLETED", "PASS", 0, ""),
        ("C", "t3", "COMPLETED", "PASS", 1, "passed on attempt 2"),  # the repeat: two attempts of one test
    ]
    data = "SELECT d.category, d.variable, d.value FROM test_data d JOIN tests t ON t.id = d.test_id"
    data += " WHERE t.run_id = ? ORDER BY d.category, d.variable"
    assert hdb.sql(data, short) == hdb.sql(data, long) != []


def test_a_short_case_that_is_no_plain_pass_is_refused_or_a_bad_request(hdb) -> None:
    from dbtool.core.errors import BadRequest

    run = hdb("register-run", target="v1/x", runname="r")
    answer = _part(hdb, run, [["C", "ok", "1"], ["C", "t", 5], ["C", "u", "soon"], ["a/b", "v", "1"], ["", "w", None]])
    assert (answer["stored"], answer["refused"]) == (1, 4)
    assert set(answer["reasons"]) == {
        "a time that is not a number of seconds",
        "a classname that is not a valid test name (it contains '/')",
        "no classname and no testsuite name to use as the test name",
    }
    with pytest.raises(BadRequest, match="each case must be"):
        _part(hdb, run, [[1, "x", "1"]], digest="b" * 64)
