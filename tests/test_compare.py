"""compare, history and flaky: the rules, the handlers on both backends, and the CLI as a CI gate uses it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import put
from dbtool.core.errors import Refused
from dbtool.core.rules.compare import classify, flip_rate, flips, outcome, reruns

BACKENDS = ("sqlite", "postgresql")

EMPTY = {"regressions": [], "fixed": [], "still_failing": [], "new": [], "missing": [], "infrastructure": []}


def result(hdb, run_id: int, testname: str, status: str, item_path: str = "", state: str = "COMPLETED") -> None:
    put(hdb, run_id, testname, item_path, state, status)


def new_run(hdb, runname: str, target: str = "v1/linux", when: int | None = None, **tests: str) -> int:
    """A run whose toplevel tests have these statuses (COMPLETED; KILLED for status KILLED)."""
    run_id = hdb("register-run", target=target, runname=runname)
    if when is not None:
        hdb.sql("update runs set event_time = ? where id = ?", when, run_id)
    for name, status in tests.items():
        result(hdb, run_id, name, status, state="KILLED" if status == "KILLED" else "COMPLETED")
    return run_id


def entry(testname: str, status: str | None, baseline_status: str | None, item_path: str = "") -> dict:
    return {"testname": testname, "item_path": item_path, "status": status, "baseline_status": baseline_status}


# -- the rules -------------------------------------------------------------------------------------


def test_outcome_of_a_result():
    assert outcome("COMPLETED", "PASS") == outcome("COMPLETED", "WAIVED") == "pass"
    assert outcome("COMPLETED", "FAIL") == outcome("COMPLETED", "ABORT") == "fail"
    assert outcome("COMPLETED", "DEAD") == outcome("KILLED", "KILLED") == outcome("DEAD", "n/a") == "infrastructure"
    assert outcome("RUNNING", "PASS") is None and outcome("COMPLETED", "SKIP") is None


def test_classify_every_class():
    passed, failed, dead = ("COMPLETED", "PASS"), ("COMPLETED", "FAIL"), ("COMPLETED", "DEAD")
    assert classify(failed, passed) == "regressions"
    assert classify(failed, ("COMPLETED", "SKIP")) == "regressions"  # a skip or a dead job excuses nothing
    assert classify(failed, dead) == "regressions"
    assert classify(passed, failed) == "fixed"
    assert classify(failed, failed) == "still_failing"
    assert classify(passed, None) == "new" and classify(None, passed) == "missing"
    assert classify(dead, passed) == classify(("KILLED", "KILLED"), None) == "infrastructure"
    assert classify(passed, passed) is None and classify(("RUNNING", "n/a"), passed) is None


def test_flips_reruns_and_rate():
    assert flips(["pass", "fail", None, "fail", "infrastructure", "pass", "pass"]) == (5, 2)
    assert flips([None, "pass"]) == (1, 0)
    assert flip_rate(5, 2) == 0.5 and flip_rate(1, 0) == 0.0 and flip_rate(4, 1) == 0.333
    assert reruns(["FAIL", "n/a", "PASS", "FAIL", "FAIL", "PASS", "PASS"]) == 2
    assert reruns(["PASS", "FAIL"]) == 0


# -- compare: classes ------------------------------------------------------------------------------


def test_compare_puts_every_leaf_test_in_its_class(hdb):
    base = new_run(hdb, "base", a="PASS", b="FAIL", c="FAIL", d="PASS", f="PASS", g="PASS", h="PASS", i="SKIP")
    for item, status in (("x", "PASS"), ("y", "PASS")):
        result(hdb, base, "suite", status, item)
    run = new_run(hdb, "now", a="FAIL", b="PASS", c="FAIL", d="PASS", e="FAIL", h="KILLED", i="FAIL")
    result(hdb, run, "g", "DEAD")  # what the dead-job scan writes: COMPLETED/DEAD
    result(hdb, run, "suite", "FAIL", "x")
    result(hdb, run, "suite", "PASS", "y")
    assert hdb("compare", run_id=run) == {
        "run": run,
        "baseline": base,
        "regressions": [entry("a", "FAIL", "PASS"), entry("i", "FAIL", "SKIP"), entry("suite", "FAIL", "PASS", "x")],
        "fixed": [entry("b", "PASS", "FAIL")],
        "still_failing": [entry("c", "FAIL", "FAIL")],
        "new": [entry("e", "FAIL", None)],
        "missing": [entry("f", None, "PASS")],
        "infrastructure": [entry("g", "DEAD", "PASS"), entry("h", "KILLED", "PASS")],
        "unfinished": 0,
    }  # the toplevel "suite" (it has items) and the unchanged "d" are not listed


def test_a_toplevel_that_gains_items_is_compared_as_its_leaves(hdb):
    base = new_run(hdb, "base", t="PASS")
    run = new_run(hdb, "now")
    result(hdb, run, "t", "PASS", "x")
    assert hdb("compare", run_id=run)["missing"] == [entry("t", None, "PASS")]
    assert hdb("compare", run_id=run)["new"] == [entry("t", "PASS", None, "x")]
    assert hdb("compare", run_id=run)["baseline"] == base


def test_unfinished_tests_are_counted_not_compared(hdb):
    new_run(hdb, "base", a="PASS", b="PASS")
    run = new_run(hdb, "now", a="PASS")
    result(hdb, run, "b", "n/a", state="RUNNING")
    assert hdb("compare", run_id=run) == {"run": run, "baseline": 1, **EMPTY, "unfinished": 1}


def test_deleted_tests_are_not_compared(hdb):
    new_run(hdb, "base", a="PASS", b="PASS")
    run = new_run(hdb, "now", a="PASS", b="FAIL")
    hdb("delete-test-records", test_id=hdb("get-test-id", run_id=run, testname="b"))
    assert hdb("compare", run_id=run)["missing"] == [entry("b", None, "PASS")]
    assert hdb("compare", run_id=run)["regressions"] == []


# -- compare: the baseline -------------------------------------------------------------------------


def test_run_is_complete_from_the_tests_table(hdb):
    from dbtool.core.handlers.compare import run_is_complete

    run = new_run(hdb, "r")

    def complete() -> bool:
        with hdb.engine.connect() as conn:
            from dbtool.core.db.context import Db
            from dbtool.core.request import RequestContext

            return run_is_complete(Db(conn, hdb.schema, RequestContext("t", "compare", {}, {})), run)

    assert not complete()  # no tests yet: nothing has run
    hdb("register-test", run_id=run, testname="a")
    assert not complete()  # NOT_STARTED
    result(hdb, run, "a", "FAIL")
    hdb("register-test", run_id=run, testname="b")
    assert not complete()
    result(hdb, run, "b", "KILLED", state="KILLED")
    assert complete()
    result(hdb, run, "c", "n/a", state="RUNNING")
    assert not complete()
    hdb("delete-test-records", test_id=hdb("get-test-id", run_id=run, testname="c"))
    assert complete()  # a deleted test does not hold its run open


def test_auto_baseline_is_the_latest_earlier_complete_run_of_the_target(hdb):
    old = new_run(hdb, "old", when=100, a="PASS")
    new_run(hdb, "other-target", target="v1/mac", when=300, a="FAIL")
    incomplete = new_run(hdb, "incomplete", when=350, a="FAIL")
    result(hdb, incomplete, "b", "n/a", state="RUNNING")
    deleted = new_run(hdb, "deleted", when=360, a="FAIL")
    hdb("delete-run", run_id=deleted)
    run = new_run(hdb, "now", when=400, a="FAIL")
    new_run(hdb, "later", when=500, a="FAIL")
    assert hdb("compare", run_id=run)["baseline"] == old
    assert hdb("compare", run_id=run)["regressions"] == [entry("a", "FAIL", "PASS")]
    # earlier by event time, whatever the ids say
    younger_id = new_run(hdb, "backfilled", when=200, a="FAIL")
    assert hdb("compare", run_id=run)["baseline"] == younger_id
    # equal event times: the higher id is the later run
    tie = new_run(hdb, "tie", when=400, a="PASS")
    assert hdb("compare", run_id=tie)["baseline"] == run
    assert hdb("compare", run_id=run)["baseline"] == younger_id  # the tie's id is higher: not earlier


def test_runname_narrows_the_auto_baseline(hdb):
    nightly = new_run(hdb, "nightly-1", when=100, a="PASS")
    new_run(hdb, "adhoc", when=200, a="FAIL")
    run = new_run(hdb, "nightly-2", when=300, a="FAIL")
    assert hdb("compare", run_id=run)["baseline"] == 2
    assert hdb("compare", run_id=run, runname="nightly-*")["baseline"] == nightly
    assert hdb("compare", run_id=run, runname="nightly%")["regressions"] == [entry("a", "FAIL", "PASS")]
    assert hdb("compare", run_id=run, runname="weekly*")["baseline"] is None


def test_no_baseline_makes_every_test_new(hdb):
    run = new_run(hdb, "first", a="PASS", b="FAIL", k="KILLED")
    assert hdb("compare", run_id=run) == {
        "run": run,
        "baseline": None,
        **EMPTY,
        "new": [entry("a", "PASS", None), entry("b", "FAIL", None)],
        "infrastructure": [entry("k", "KILLED", None)],
        "unfinished": 0,
    }


def test_an_explicit_baseline_may_be_any_run(hdb):
    later = new_run(hdb, "later", target="v1/mac", when=900, a="PASS")
    incomplete = new_run(hdb, "incomplete", when=800, a="PASS")
    result(hdb, incomplete, "b", "n/a", state="RUNNING")
    run = new_run(hdb, "now", when=100, a="FAIL")
    assert hdb("compare", run_id=run, baseline=str(later))["regressions"] == [entry("a", "FAIL", "PASS")]
    assert hdb("compare", run_id=run, baseline=str(incomplete))["baseline"] == incomplete


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"run_id": 99}, "--run-id 99: no such run"),
        ({"run_id": 1, "baseline": "99"}, "--baseline 99: no such run"),
        ({"run_id": 1, "baseline": "last"}, "--baseline must be a run id or 'auto', not 'last'"),
        ({"run_id": 1, "baseline": "-2"}, "--baseline must be a run id or 'auto'"),
        ({"run_id": 1, "baseline": "1"}, "is the run itself"),
        ({"run_id": 1, "baseline": "2", "runname": "x"}, "--runname narrows --baseline auto"),
        ({"run_id": 1, "baseline": "3"}, "--baseline 3: the run is deleted"),
    ],
)
def test_compare_refuses_bad_input(hdb, params, message):
    new_run(hdb, "a", a="PASS")
    new_run(hdb, "b", a="PASS")
    hdb("delete-run", run_id=new_run(hdb, "c", a="PASS"))
    with pytest.raises(Refused, match=message.replace("(", r"\(").replace(")", r"\)")):
        hdb("compare", **params)


# -- history ---------------------------------------------------------------------------------------


def test_history_lists_a_test_run_by_run_newest_first(hdb):
    first = new_run(hdb, "n1", when=100, a="PASS")
    third = new_run(hdb, "n3", when=300, a="FAIL")
    second = new_run(hdb, "n2", when=200, a="PASS")
    mac = new_run(hdb, "m1", target="v1/mac", when=250, a="FAIL")
    hdb("delete-run", run_id=new_run(hdb, "gone", when=400, a="PASS"))
    new_run(hdb, "without", when=500, b="PASS")
    rows = hdb("history", testname="a")
    assert [r["run_id"] for r in rows] == [third, mac, second, first]
    assert rows[0] == {
        "run_id": third,
        "runname": "n3",
        "target": "v1/linux",
        "event_time": 300,
        "state": "COMPLETED",
        "status": "FAIL",
        "comment": "",
        "test_id": hdb("get-test-id", run_id=third, testname="a"),
    }
    assert [r["run_id"] for r in hdb("history", testname="a", limit=2)] == [third, mac]
    assert [r["run_id"] for r in hdb("history", testname="a", target="v1/linux")] == [third, second, first]
    assert [r["run_id"] for r in hdb("history", testname="a", target="%/MAC,v9/*")] == [mac]
    assert hdb("history", testname="nosuch") == []


def test_history_of_an_item(hdb):
    run = new_run(hdb, "r", when=100)
    result(hdb, run, "suite", "FAIL", "x")
    result(hdb, run, "suite", "PASS", "y")
    assert [r["status"] for r in hdb("history", testname="suite", item_path="y")] == ["PASS"]
    assert [r["status"] for r in hdb("history", testname="suite")] == ["FAIL"]  # the rolled-up toplevel


# -- flaky -----------------------------------------------------------------------------------------


def test_flaky_ranks_flips_within_the_window(hdb):
    statuses = {
        "steady": ["PASS"] * 6,
        "flappy": ["PASS", "FAIL", "PASS", "FAIL", "PASS", "FAIL"],
        "once": ["PASS", "PASS", "PASS", "PASS", "FAIL", "FAIL"],
        "old": ["FAIL", "PASS", "PASS", "PASS", "PASS", "PASS"],
    }
    for n in range(6):
        new_run(hdb, f"n{n}", when=100 + n, **{name: values[n] for name, values in statuses.items()})
    new_run(hdb, "mac", target="v1/mac", when=50, once="FAIL")
    new_run(hdb, "mac2", target="v1/mac", when=60, once="PASS")
    rows = hdb("flaky", target="v1/linux")
    assert [(r["testname"], r["runs"], r["flips"], r["flip_rate"]) for r in rows] == [
        ("flappy", 6, 5, 1.0),
        ("old", 6, 1, 0.2),
        ("once", 6, 1, 0.2),
    ]
    assert rows[0] == {
        "testname": "flappy",
        "item_path": "",
        "target": "v1/linux",
        "runs": 6,
        "flips": 5,
        "flip_rate": 1.0,
        "reruns": 0,
    }
    windowed = hdb("flaky", target="v1/linux", window=5)  # "old" flipped before the last five runs
    assert [(r["testname"], r["flips"]) for r in windowed] == [("flappy", 4), ("once", 1)]
    assert [(r["target"], r["testname"]) for r in hdb("flaky")] == [
        ("v1/linux", "flappy"),
        ("v1/mac", "once"),  # one flip in its two runs: a rate of 1
        ("v1/linux", "old"),
        ("v1/linux", "once"),
    ]
    assert hdb("flaky", target="v9/*") == []


def test_flaky_counts_pass_after_fail_reruns_within_a_run(hdb):
    run = new_run(hdb, "r", when=100)
    for status in ("FAIL", "PASS", "FAIL", "PASS"):  # failed, re-run, passed; twice
        result(hdb, run, "retried", "n/a", state="RUNNING")
        result(hdb, run, "retried", status)
    result(hdb, run, "suite", "FAIL", "x")
    result(hdb, run, "suite", "PASS", "x")
    result(hdb, run, "worse", "PASS")
    result(hdb, run, "worse", "FAIL")  # pass then fail is no re-run that passed
    rows = hdb("flaky")
    assert [(r["testname"], r["item_path"], r["runs"], r["flips"], r["reruns"]) for r in rows] == [
        ("retried", "", 1, 0, 2),
        ("suite", "x", 1, 0, 1),
    ]


def test_create_schema_adds_missing_indexes_to_an_existing_area(hdb):
    from dbtool.core.db.engine import create_schema
    from sqlalchemy import inspect

    def indexes() -> set[str]:
        with hdb.engine.connect() as conn:
            return {i["name"] for i in inspect(conn).get_indexes("runs")}

    assert "runs_target" in indexes()
    hdb.sql("drop index runs_target")
    assert "runs_target" not in indexes()
    for _ in range(2):  # idempotent
        with hdb.engine.connect() as conn, conn.begin():
            create_schema(conn, ["RELEASE", "PLATFORM"], "test")
        assert "runs_target" in indexes()


# -- the command line --------------------------------------------------------------------------------


def cli_result(area, run: str, testname: str, status: str, state: str = "COMPLETED") -> None:
    area.ok(
        "set-state-status-and-roll-up-items", "--run-id", run, "--testname", testname, "--state", state,
        "--status", status,
    )  # fmt: skip


def test_compare_on_the_command_line(area):
    base = area.ok("register-run", "--target", "v1/linux", "--runname", "n1").out.strip()
    for name in ("a", "b"):
        cli_result(area, base, name, "PASS")
    run = area.ok("register-run", "--target", "v1/linux", "--runname", "n2").out.strip()
    cli_result(area, run, "a", "FAIL")
    cli_result(area, run, "b", "PASS")
    table = area.ok("compare", "--run-id", run)
    lines = table.out.splitlines()
    assert lines[0] == (
        f"run {run} against baseline {base}: 1 regression, 0 infrastructure, 0 still failing, 0 fixed, 0 new, 0 missing"
    )
    assert lines[1].split() == ["class", "testname", "item_path", "baseline_status", "status"]
    assert lines[2].split() == ["regressions", "a", "PASS", "FAIL"]
    assert len(lines) == 3 and table.err == ""
    data = area.ok("compare", "--run-id", run, "--json").json
    assert data["run"] == int(run) and data["baseline"] == int(base)
    assert data["regressions"] == [entry("a", "FAIL", "PASS")]
    csv = area.ok("compare", "--run-id", run, "--baseline", base, "--format", "csv").out
    assert csv == "class,testname,item_path,baseline_status,status\nregressions,a,,PASS,FAIL\n"
    gate = area.run("compare", "--run-id", run, "--exit-code", "--json")
    assert gate.code == 1 and gate.json["regressions"]
    assert area.run("compare", "--run-id", base, "--exit-code").code == 0  # no baseline: nothing regressed
    history = area.ok("history", "--testname", "a", "--json").json
    assert [(h["run_id"], h["status"]) for h in history] == [(int(run), "FAIL"), (int(base), "PASS")]
    flaky = area.ok("flaky", "--json").json
    assert [(f["testname"], f["flips"]) for f in flaky] == [("a", 1)]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--run-id", "99"], 4, "dbtool: error: --run-id 99: no such run; `dbtool get-runs` lists the runs"),
        (["--run-id", "1", "--baseline", "latest"], 4, "dbtool: error: --baseline must be a run id or 'auto'"),
        (["--run-id", "x"], 2, "dbtool: error:"),
        (["--run-id", "1", "--baseline", ""], 4, "dbtool: error: --baseline must not be empty"),
    ],
)
def test_compare_bad_input_is_one_line_and_not_a_regression(area, args, code, message):
    area.ok("register-run", "--target", "v1/linux", "--runname", "n1")
    bad = area.run("compare", *args, "--exit-code")
    assert bad.code == code and bad.out == ""
    assert len(bad.err.splitlines()) == 1 and bad.err.startswith(message), bad


def test_flaky_and_history_refuse_bad_values(area):
    bad = area.run("flaky", "--window", "0")
    assert bad.code == 4 and bad.err.startswith("dbtool: error: --window must be") and len(bad.err.splitlines()) == 1
    bad = area.run("history", "--testname", "")
    assert bad.code == 4 and len(bad.err.splitlines()) == 1


CI_SCRIPT = """\
set -u
report() {  # one CI build: register the run, run the tests, gate on the comparison
    RUN=$(dbtool register-run --target v1.2/linux --runname "build-$1")
    shift
    for result in "$@"; do
        status=${result#*=}
        state=COMPLETED
        if [ "$status" = KILLED ]; then state=KILLED; fi
        dbtool set-state-status-and-roll-up-items --run-id "$RUN" --testname "${result%=*}" \\
            --state "$state" --status "$status" > /dev/null
    done
    if dbtool compare --run-id "$RUN" --exit-code > "compare-$RUN.txt"; then
        echo "gate $RUN: pass"
    else
        echo "gate $RUN: fail $?"
    fi
}
report 1 unit=PASS lint=PASS
report 2 unit=PASS lint=FAIL
report 3 unit=PASS lint=FAIL
report 4 unit=PASS lint=PASS docs=FAIL
report 5 unit=KILLED lint=PASS docs=FAIL
report 6 unit=PASS lint=PASS docs=FAIL
"""


def test_a_ci_script_gates_on_compare_exit_code(area, tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DBTOOL_AREA": str(area.root),
    }
    script = tmp_path / "ci.sh"
    script.write_text(textwrap.dedent(CI_SCRIPT))
    proc = subprocess.run(["sh", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "gate 1: pass",  # the first build: no baseline, nothing regressed
        "gate 2: fail 1",  # lint regressed
        "gate 3: pass",  # lint still fails: no new regression
        "gate 4: pass",  # lint fixed; docs is new (failing, but new)
        "gate 5: fail 1",  # unit was killed: infrastructure
        "gate 6: pass",  # back to normal; docs still failing
    ]
    assert "no baseline" in proc.stderr  # the first build's note
    assert (tmp_path / "compare-2.txt").read_text().splitlines()[2].split() == ["regressions", "lint", "PASS", "FAIL"]
