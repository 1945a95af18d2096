"""Run completion (run-complete / run-reopened events), `wait-run`, and [[notify]] notifications."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import execute, query, wait_for
from dbtool.core.db.schema import SCHEMA_VERSION
from dbtool.core.rules.notify import DEAD, REGRESSION, RUN_COMPLETE, STATE_CHANGE, check_entries, kinds_of

BACKENDS = ("sqlite", "postgresql")


def completions(hdb, run_id: int | None = None) -> list[dict]:
    return [
        e
        for e in hdb.events
        if e["cmd"] in ("run-complete", "run-reopened") and (run_id is None or e["run_id"] == run_id)
    ]


def new_run(hdb, tests: tuple[str, ...] = ("a", "b", "c"), runname: str = "nightly") -> int:
    run = hdb("register-run", target="v1/linux", runname=runname)
    for name in tests:
        hdb("register-test", run_id=run, testname=name)
    return run


def finish(hdb, run: int, testname: str, status: str = "PASS", state: str = "COMPLETED", item_path: str = "") -> None:
    hdb(
        "set-state-status-and-roll-up-items",
        run_id=run,
        testname=testname,
        item_path=item_path,
        state=state,
        status=status,
    )


# -- handlers, on both backends ----------------------------------------------------------------------


def test_run_complete_is_emitted_once_when_the_last_test_ends(hdb):
    run = new_run(hdb)
    finish(hdb, run, "a")
    finish(hdb, run, "b", "FAIL")
    assert completions(hdb) == []
    assert hdb("get-run-completion", run_id=run)["complete"] is False
    finish(hdb, run, "c")
    [done] = completions(hdb)
    assert (done["cmd"], done["run_id"], done["state"], done["status"]) == ("run-complete", run, "COMPLETED", "FAIL")
    assert done["data"] == {"tests": 3}
    info = hdb("get-run-completion", run_id=run)
    assert (info["complete"], info["tests"], info["final"], info["status"]) == (True, 3, 3, "FAIL")
    assert hdb("get-run-state-status", run_id=run) == {"state": "COMPLETED", "status": "FAIL"}


def test_rewriting_final_states_emits_nothing_new(hdb):
    run = new_run(hdb, ("a", "b"))
    finish(hdb, run, "a")
    finish(hdb, run, "b")
    assert len(completions(hdb)) == 1
    finish(hdb, run, "a")  # the same final state again
    finish(hdb, run, "b", "FAIL")  # another final status
    finish(hdb, run, "b", "KILLED", state="KILLED")  # another final state
    test = hdb("get-test-id", run_id=run, testname="a")
    hdb("test-set-state-status-by-id", test_id=test, state="COMPLETED", status="WARN")
    assert len(completions(hdb)) == 1


def test_a_test_registered_or_rerun_later_reopens_the_run(hdb):
    run = new_run(hdb, ("a",))
    finish(hdb, run, "a")
    hdb("register-test", run_id=run, testname="late")
    assert [e["cmd"] for e in completions(hdb)] == ["run-complete", "run-reopened"]
    assert hdb("get-run-completion", run_id=run)["complete"] is False
    finish(hdb, run, "late")
    finish(hdb, run, "a", "n/a", state="RUNNING")  # re-run
    finish(hdb, run, "a")
    assert [e["cmd"] for e in completions(hdb)] == [
        "run-complete",
        "run-reopened",
        "run-complete",
        "run-reopened",
        "run-complete",
    ]


def test_items_complete_a_run_through_their_toplevel(hdb):
    run = hdb("register-run", target="v1/linux", runname="items")
    for item in ("py311", "py312"):
        hdb("register-test", run_id=run, testname="unit", item_path=item)
    finish(hdb, run, "unit", item_path="py311")
    assert completions(hdb) == []
    finish(hdb, run, "unit", item_path="py312")
    [done] = completions(hdb)
    assert (done["state"], done["status"]) == ("COMPLETED", "PASS")


def test_a_run_with_no_tests_and_deleted_tests(hdb):
    run = hdb("register-run", target="v1/linux", runname="empty")
    assert hdb("get-run-completion", run_id=run)["complete"] is False  # nothing registered: nothing to wait for yet
    a = hdb("register-test", run_id=run, testname="a")
    hdb("register-test", run_id=run, testname="b")
    finish(hdb, run, "b")
    hdb("delete-test-records", test_id=a)  # the one test it waited for is gone
    [done] = completions(hdb)
    assert done["cmd"] == "run-complete" and done["data"] == {"tests": 1}


def test_a_dead_job_found_by_its_heartbeat_completes_the_run(hdb):
    run = new_run(hdb, ("a", "job"))
    finish(hdb, run, "a")
    job = {"run_id": run, "testname": "job"}
    test = hdb("exec-begin", **job, host="h", pid=1, heartbeat=1.0)
    hdb.sql("UPDATE heartbeats SET last_beat = last_beat - 100 WHERE test_id = ?", test)
    assert completions(hdb) == []
    assert hdb("mark-incomplete") == [test]
    [done] = completions(hdb)
    assert (done["state"], done["status"]) == ("COMPLETED", "DEAD")
    hdb("exec-heartbeat", **job, heartbeat=1.0)  # it was alive after all: the run is open again
    assert completions(hdb)[-1]["cmd"] == "run-reopened"


def test_completion_is_kept_per_run(hdb):
    one, two = new_run(hdb, ("a",), "one"), new_run(hdb, ("a",), "two")
    finish(hdb, one, "a")
    assert [e["run_id"] for e in completions(hdb)] == [one]
    assert hdb("get-run-completion", run_id=two)["complete"] is False
    with pytest.raises(Exception, match="no run with id 999"):
        hdb("get-run-completion", run_id=999)


def test_the_completion_probe_uses_the_partial_index(hdb):
    if hdb.backend != "sqlite":
        pytest.skip("SQLite's plan")
    from dbtool.core.handlers.completion import _completion_query

    class Tables:
        t, dialect = hdb.schema, "sqlite"

    sql = str(_completion_query(Tables).compile(hdb.engine)).replace(":id", "?")
    plan = hdb.sql(f"EXPLAIN QUERY PLAN {sql}", 1)
    assert any("tests_unfinished" in str(row) for row in plan), plan


def test_writing_a_test_row_builds_no_temporary_table(hdb):
    """The partial index's condition is evaluated for every row written to tests: as NOT IN (...)
    (schema 3) SQLite built a temporary table of its values each time, a third of an insert's cost."""
    if hdb.backend != "sqlite":
        pytest.skip("SQLite's bytecode")
    for sql in (
        "INSERT INTO tests (run_id, testname, item_path, state) VALUES (1, 'a', 'b', 'COMPLETED')",
        "UPDATE tests SET state = 'RUNNING', status = 'n/a' WHERE id = 1",
    ):
        opcodes = {row[1] for row in hdb.sql(f"EXPLAIN {sql}")}
        assert "OpenEphemeral" not in opcodes, sql


# -- notify rules (pure) -------------------------------------------------------------------------------


def test_notify_entries_are_checked_with_clear_errors():
    good = check_entries([{"events": ["run-complete", "dead"], "command": "true", "testpatt": "unit%"}], "c.toml")
    assert good[0]["name"].startswith("notify-") and good[0]["attempts"] == 8 and good[0]["timeout"] == 60
    bad = [
        ({"notify": 1}, "must be an array of tables"),
        ([{"command": "true"}], "events must be a non-empty list"),
        ([{"events": ["done"], "command": "true"}], "unknown event(s) 'done'"),
        ([{"events": ["dead"]}], "command must be a non-empty string"),
        ([{"events": ["dead"], "command": "true", "cmd": "x"}], "unknown key(s) cmd"),
        ([{"events": ["dead"], "command": "true", "timeout": 0}], "timeout must be more than 0"),
        ([{"events": ["dead"], "command": "true", "attempts": 1.5}], "attempts must be a whole number"),
        ([{"events": ["dead"], "command": "true", "testpatt": ""}], "testpatt must be a non-empty"),
        ([{"events": ["dead"], "command": "true"}] * 2, "have the same name"),
    ]
    for raw, message in bad:
        with pytest.raises(ValueError) as err:
            check_entries(raw if isinstance(raw, list) else raw["notify"], "c.toml")
        assert message in str(err.value) and str(err.value).startswith("c.toml: "), (raw, err.value)


def test_event_kinds():
    test = {"test_id": 1, "run_id": 1, "testname": "t", "item_path": ""}
    assert kinds_of({"cmd": "run-complete", "run_id": 1, "state": "COMPLETED", "status": "PASS"}) == [RUN_COMPLETE]
    assert kinds_of({"cmd": "run-reopened", "run_id": 1, "state": "COMPLETED"}) == []
    assert kinds_of({**test, "cmd": "x", "state": "COMPLETED", "status": "FAIL"}) == [STATE_CHANGE, REGRESSION]
    assert kinds_of({**test, "cmd": "mark-incomplete", "state": "COMPLETED", "status": "DEAD"}) == [STATE_CHANGE, DEAD]
    rolled = {**test, "cmd": "x", "state": "COMPLETED", "status": "DEAD", "data": '{"rollup":true}'}
    assert kinds_of(rolled) == [STATE_CHANGE]
    beat = {**test, "cmd": "exec-heartbeat", "state": "RUNNING", "status": "n/a", "data": '{"run_duration":3}'}
    assert kinds_of(beat) == []
    assert kinds_of({**test, "cmd": "test-set-top-process-pid", "data": '{"pid":3}'}) == []


# -- the CLI, on both backends ----------------------------------------------------------------------------


def cli_run(area, tests: tuple[str, ...] = ("a", "b")) -> str:
    run = area.ok("register-run", "--target", "v1/linux", "--runname", f"r{time.monotonic_ns()}").out.strip()
    for name in tests:
        area.ok("register-test", "--run-id", run, "--testname", name)
    return run


def cli_finish(area, run: str, testname: str, status: str = "PASS") -> None:
    area.ok(
        "set-state-status-and-roll-up-items",
        "--run-id",
        run,
        "--testname",
        testname,
        "--state",
        "COMPLETED",
        "--status",
        status,
    )


def test_wait_run_exit_codes(area, backend):
    passing = cli_run(area, ("a",))
    cli_finish(area, passing, "a")
    done = area.run("wait-run", "--run-id", passing)
    assert (done.code, done.out) == (0, "COMPLETED PASS\n"), done
    failing = cli_run(area, ("a",))
    cli_finish(area, failing, "a", "FAIL")
    done = area.run("wait-run", "--run-id", failing, "--json")
    assert done.code == 1 and done.json["status"] == "FAIL" and done.json["complete"] is True, done
    open_run = cli_run(area, ("a", "b"))
    cli_finish(area, open_run, "a")
    started = time.monotonic()
    late = area.run("wait-run", "--run-id", open_run, "--max-wait", "1")
    assert late.code == 3 and "not complete after 1 s: 1 of its 2 test(s)" in late.err, late
    assert 1 <= time.monotonic() - started < 10
    unknown = area.run("wait-run", "--run-id", "999")
    assert unknown.code == 4 and unknown.err.count("\n") == 1 and "no run with id 999" in unknown.err, unknown


def test_wait_run_returns_promptly_after_the_last_write(area, backend):
    run = cli_run(area, ("a", "b"))
    area.ok("ping")  # (a server up, so the waiter's start is quick)
    waiter = area.popen("wait-run", "--run-id", run, "--max-wait", "60")
    try:
        assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 1, 20)
        cli_finish(area, run, "a")
        time.sleep(0.3)
        assert waiter.poll() is None  # one test left
        cli_finish(area, run, "b", "FAIL")
        last_write = time.monotonic()
        out, err = waiter.communicate(timeout=30)
        assert time.monotonic() - last_write < 2.0
        assert (waiter.returncode, out) == (1, "COMPLETED FAIL\n"), err
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    events = area.ok("watch", "--run-id", run, "--since", "0", "--no-follow", "--json").json_lines
    assert [e["event"] for e in events].count("run-complete") == 1
    [complete] = [e for e in events if e["event"] == "run-complete"]
    assert (complete["state"], complete["status"], complete["data"]) == ("COMPLETED", "FAIL", {"tests": 2})


def add_notify(area, body: str) -> None:
    with open(area.dir / "config.toml", "a") as f:
        f.write("\n[[notify]]\n" + body.strip() + "\n")


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_notifications_once_across_a_server_restart(area, backend):
    out = area.root / "notified.jsonl"
    add_notify(
        area,
        'events = ["run-complete"]\ncommand = "cat >> notified.jsonl; echo $DBTOOL_EVENT $DBTOOL_RUN_ID >> env.txt"',
    )
    first = cli_run(area, ("a",))
    cli_finish(area, first, "a")
    assert wait_for(lambda: len(lines_of(out)) == 1, 20)
    area.ok("server", "stop")
    assert area.wait_no_server()
    second = cli_run(area, ("a",))  # (starts a server again)
    cli_finish(area, second, "a", "FAIL")
    assert wait_for(lambda: len(lines_of(out)) == 2, 20)
    area.ok("server", "restart")
    time.sleep(1.5)  # a third server start delivers nothing again
    notes = lines_of(out)
    assert [(n["event"], n["run_id"], n["status"]) for n in notes] == [
        ("run-complete", int(first), "PASS"),
        ("run-complete", int(second), "FAIL"),
    ]
    assert (area.root / "env.txt").read_text() == f"run-complete {first}\nrun-complete {second}\n"


def test_a_failing_command_is_retried(area, backend):
    out = area.root / "got.jsonl"
    # fails the first time (no marker yet), succeeds the second
    add_notify(
        area,
        'name = "flaky"\nevents = ["dead", "regression", "state-change"]\ntestpatt = "b"\n'
        'command = "if [ -e marker ]; then cat >> got.jsonl; else touch marker; exit 3; fi"',
    )
    run = cli_run(area, ("a", "b"))
    cli_finish(area, run, "a")  # not b: not told
    cli_finish(area, run, "b")
    assert wait_for(lambda: len(lines_of(out)) == 2, 20)
    time.sleep(1.0)
    notes = lines_of(out)  # once each, however often the first was tried
    assert [(n["event"], n["cmd"], n["testname"], n["state"], n["status"]) for n in notes] == [
        ("state-change", "register-test", "b", "NOT_STARTED", "n/a"),
        ("state-change", "set-state-status-and-roll-up-items", "b", "COMPLETED", "PASS"),
    ]
    assert (area.root / "marker").exists()
    log = (area.run_dir / "logs" / "server.log").read_text()
    assert "notify flaky: event" in log and "failed (exit code 3); retrying in 1 s" in log


def test_a_regression_against_the_last_complete_run(area, backend):
    out = area.root / "reg.jsonl"
    add_notify(area, 'events = ["regression"]\ncommand = "cat >> reg.jsonl"')
    base = cli_run(area, ("a", "b"))
    cli_finish(area, base, "a")
    cli_finish(area, base, "b", "FAIL")
    run = cli_run(area, ("a", "b"))
    cli_finish(area, run, "a", "FAIL")  # PASS before: a regression
    cli_finish(area, run, "b", "FAIL")  # FAIL before: still failing
    assert wait_for(lambda: len(lines_of(out)) == 1, 20)
    time.sleep(1.0)
    [note] = lines_of(out)
    assert (note["event"], note["run_id"], note["testname"]) == ("regression", int(run), "a")
    assert (note["baseline_run_id"], note["baseline_status"]) == (int(base), "PASS")


def test_notifications_never_delay_writes(area, backend):
    add_notify(area, 'events = ["state-change"]\ncommand = "sleep 3"\ntimeout = 10')
    run = cli_run(area, ("a",))
    started = time.monotonic()
    for n in range(10):
        area.ok("set-state-status-and-roll-up-items", "--run-id", run, "--testname", f"t{n}", "--state", "RUNNING")
    assert time.monotonic() - started < 8.0  # ten writes, while the first notification alone sleeps 3 s
    area.ok("server", "stop", timeout=60)


def test_a_bad_notify_config_is_refused_in_one_line(area, backend):
    add_notify(area, 'events = ["finished"]\ncommand = "true"')
    result = area.run("register-run", "--target", "v1/linux", "--runname", "x")
    assert result.code == 4 and result.err.count("\n") == 1, result
    assert "[[notify]] #1: unknown event(s) 'finished'" in result.err


# -- dead jobs, JUnit imports, compare, the schema upgrade: real processes, on both backends ------------


def run_events(area, cmd: str) -> list[tuple]:
    """(run_id, seq) of the stored events of one kind, in order."""
    return query(area, "SELECT run_id, seq FROM events WHERE cmd = ? ORDER BY seq", cmd)


def test_a_dead_job_found_by_the_servers_scan_is_notified_once(area, backend):
    out = area.root / "dead.jsonl"
    add_notify(area, 'events = ["dead"]\ncommand = "cat >> dead.jsonl"')
    area.set_config("tests", "dead_check_interval", "0.2")
    run = cli_run(area, ("job",))
    # no exec: no heartbeat; only its event time tells that it is alive
    area.ok(
        "set-state-status-and-roll-up-items", "--run-id", run, "--testname", "job", "--item-path", "i1",
        "--state", "RUNNING", "--status", "n/a",
    )  # fmt: skip
    assert query(area, "SELECT count(*) FROM tests WHERE status = 'DEAD'") == [(0,)]
    execute(area, "UPDATE tests SET event_time = event_time - 100000 WHERE state = 'RUNNING'")
    assert wait_for(lambda: len(lines_of(out)) == 1, 30)
    time.sleep(1.0)  # more scans: nothing new
    [note] = lines_of(out)
    assert (note["event"], note["run_id"], note["testname"], note["item_path"]) == ("dead", int(run), "job", "i1")
    assert (note["state"], note["status"]) == ("COMPLETED", "DEAD")
    assert query(area, "SELECT state, status FROM tests WHERE item_path = 'i1'") == [("COMPLETED", "DEAD")]
    dead = query(area, "SELECT count(*) FROM events WHERE status = 'DEAD' AND item_path = 'i1'")
    assert dead == [(1,)]
    assert [r for r, _ in run_events(area, "run-complete")] == [int(run)]  # a dead job ends its run too


JUNIT_HEAD = '<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name="suite" tests="{n}">\n'
JUNIT_TAIL = "</testsuite></testsuites>\n"


def junit_file(path: Path, cases: list[tuple[str, str, str]]) -> Path:
    """A JUnit report of (classname, name, outcome) cases, outcome 'pass' or 'fail'."""
    body = []
    for classname, name, outcome in cases:
        inner = '<failure message="boom">trace</failure>' if outcome == "fail" else ""
        body.append(f'<testcase classname="{classname}" name="{name}" time="0.1">{inner}</testcase>\n')
    path.write_text(JUNIT_HEAD.format(n=len(cases)) + "".join(body) + JUNIT_TAIL)
    return path


def subscribed_waiter(area, run: str):
    area.ok("ping")
    waiter = area.popen("wait-run", "--run-id", run, "--max-wait", "60")
    assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 1, 20)
    return waiter


@pytest.mark.parametrize("outcome", ["pass", "fail"])
def test_import_junit_of_the_last_registered_tests_completes_the_run(area, backend, tmp_path, outcome):
    run = area.ok("register-run", "--target", "v1/linux", "--runname", "ci").out.strip()
    for classname, name in (("unit", "t1"), ("unit", "t2"), ("lint", "ruff")):
        area.ok("register-test", "--run-id", run, "--testname", classname, "--item-path", name)
    waiter = subscribed_waiter(area, run)
    try:
        first = junit_file(tmp_path / "first.xml", [("unit", "t1", "pass"), ("lint", "ruff", "pass")])
        assert area.ok("import-junit", "--run-id", run, str(first)).out == "stored 2, refused 0\n"
        time.sleep(0.3)
        assert waiter.poll() is None and run_events(area, "run-complete") == []  # unit/t2 not yet
        last = junit_file(tmp_path / "last.xml", [("unit", "t2", outcome)])
        assert area.ok("import-junit", "--run-id", run, str(last)).out == "stored 1, refused 0\n"
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    status = "PASS" if outcome == "pass" else "FAIL"
    assert (waiter.returncode, out) == ((0, "COMPLETED PASS\n") if outcome == "pass" else (1, "COMPLETED FAIL\n")), err
    assert [r for r, _ in run_events(area, "run-complete")] == [int(run)]
    info = area.ok("get-run-completion", "--run-id", run, "--json").json
    assert (info["complete"], info["tests"], info["final"], info["status"]) == (True, 5, 5, status)
    # the same file again changes nothing, and emits nothing more
    assert area.ok("import-junit", "--run-id", run, str(last)).out.startswith("stored 0, refused 0; imported")
    assert len(run_events(area, "run-complete")) == 1


def test_import_junit_of_registered_toplevels_completes_the_run(area, backend, tmp_path):
    """Toplevel tests registered up front (as Megatest's runner does), their results imported from a
    report export-junit wrote (toplevel cases: dbtool.toplevel)."""
    source = cli_run(area, ("build", "deploy"))
    cli_finish(area, source, "build")
    cli_finish(area, source, "deploy", "FAIL")
    report = tmp_path / "export.xml"
    area.ok("export-junit", "--run-id", source, "-o", str(report))
    run = cli_run(area, ("build", "deploy"))
    waiter = subscribed_waiter(area, run)
    try:
        assert area.ok("import-junit", "--run-id", run, str(report)).out == "stored 2, refused 0\n"
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert (waiter.returncode, out) == (1, "COMPLETED FAIL\n"), err
    assert [r for r, _ in run_events(area, "run-complete")] == [int(source), int(run)]
    assert area.ok("get-run-completion", "--run-id", run, "--json").json["complete"] is True


def test_compare_auto_baseline_is_the_latest_complete_run_by_completed_at(area, backend):
    old = cli_run(area, ("a", "b"))
    cli_finish(area, old, "a")
    cli_finish(area, old, "b")
    middle = cli_run(area, ("a", "b"))
    cli_finish(area, middle, "a", "FAIL")  # b still NOT_STARTED: incomplete
    run = cli_run(area, ("a", "b"))
    cli_finish(area, run, "a", "FAIL")
    cli_finish(area, run, "b")

    def baseline() -> int | None:
        return area.ok("compare", "--run-id", run, "--json").json["baseline"]

    assert baseline() == int(old)  # the incomplete run between them is skipped
    assert area.ok("compare", "--run-id", run, "--json").json["regressions"][0]["testname"] == "a"
    cli_finish(area, middle, "b")
    assert baseline() == int(middle)  # complete now
    assert area.ok("compare", "--run-id", run, "--json").json["regressions"] == []
    # the answer is runs.completed_at, as the writer keeps it (no scan of the tests)
    execute(area, "UPDATE runs SET completed_at = NULL WHERE id = ?", [(int(middle),)])
    assert baseline() == int(old)
    execute(area, "UPDATE runs SET completed_at = NULL WHERE id = ?", [(int(old),)])
    assert baseline() is None


def test_a_schema_2_area_is_upgraded_when_a_server_opens_it(area, backend):
    done = cli_run(area, ("a", "b"))
    cli_finish(area, done, "a")
    cli_finish(area, done, "b", "FAIL")
    open_run = cli_run(area, ("a", "b"))
    cli_finish(area, open_run, "a")
    area.ok("server", "stop")
    assert area.wait_no_server()
    # the schema 2 layout: no runs.completed_at, no notify_cursors, no index of unfinished tests
    for sql in (
        "DROP INDEX tests_unfinished",
        "DROP TABLE notify_cursors",
        "ALTER TABLE runs DROP COLUMN completed_at",
        "UPDATE metadat SET val = '2' WHERE var = 'DBTOOL_SCHEMA'",
    ):
        execute(area, sql)
    events_before = query(area, "SELECT count(*), max(seq) FROM events")
    [(last_update,)] = query(area, "SELECT last_update FROM runs WHERE id = ?", int(done))
    area.ok("server", "start")
    assert query(area, "SELECT val FROM metadat WHERE var = 'DBTOOL_SCHEMA'") == [(str(SCHEMA_VERSION),)]
    completed = dict(query(area, "SELECT id, completed_at FROM runs"))
    assert completed == {int(done): last_update, int(open_run): None}
    assert query(area, "SELECT count(*), max(seq) FROM events") == events_before  # the past emits nothing
    assert query(area, "SELECT count(*) FROM notify_cursors") == [(0,)]
    if backend == "sqlite":
        indexes = query(area, "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tests'")
    else:
        indexes = query(area, "SELECT indexname FROM pg_indexes WHERE tablename = 'tests' AND schemaname = ?",
                        area.pg_schema)  # fmt: skip
    assert "tests_unfinished" in {name for (name,) in indexes}
    assert area.ok("get-run-completion", "--run-id", done, "--json").json["complete"] is True
    cli_finish(area, open_run, "b")  # the upgraded area goes on as any other
    assert [r for r, _ in run_events(area, "run-complete")] == [int(done), int(open_run)]


def test_a_schema_3_area_gets_the_new_index_of_unfinished_tests(area, backend):
    run = cli_run(area, ("a", "b"))
    cli_finish(area, run, "a")
    area.ok("server", "stop")
    assert area.wait_no_server()
    old = "state NOT IN ('COMPLETED', 'KILLED', 'DEAD', 'ARCHIVED', 'INCOMPLETE', 'DELETED')"
    for sql in (
        "DROP INDEX tests_unfinished",
        f"CREATE INDEX tests_unfinished ON tests (run_id) WHERE {old}",
        "UPDATE metadat SET val = '3' WHERE var = 'DBTOOL_SCHEMA'",
    ):
        execute(area, sql)
    area.ok("server", "start")
    assert query(area, "SELECT val FROM metadat WHERE var = 'DBTOOL_SCHEMA'") == [(str(SCHEMA_VERSION),)]
    if backend == "sqlite":
        [(definition,)] = query(area, "SELECT sql FROM sqlite_master WHERE name = 'tests_unfinished'")
        assert "NOT IN" not in definition and "<> 'DELETED'" in definition
    else:
        [(definition,)] = query(area, "SELECT indexdef FROM pg_indexes WHERE indexname = 'tests_unfinished'"
                                " AND schemaname = ?", area.pg_schema)  # fmt: skip
        assert "ALL (" not in definition and "<> 'DELETED'" in definition
    assert area.ok("get-run-completion", "--run-id", run, "--json").json["complete"] is False
    cli_finish(area, run, "b")
    assert area.ok("get-run-completion", "--run-id", run, "--json").json["complete"] is True
