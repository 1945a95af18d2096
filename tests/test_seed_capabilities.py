"""What Kno's requests and CCP4i's database handler bring, through the CLI against real servers:
request fields and the request's log, projects by alias, the area lock, data items of a test,
several records at once, and tests open for one job (``exec --exclusive``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Raw, dbtool_argv, execute, query, wait_for
from dbtool.core import spool
from dbtool.core.area import Area as CoreArea
from dbtool.core.db.schema import SCHEMA_VERSION
from dbtool.core.errors import Held, NotFound, Refused
from dbtool.core.request import RequestContext
from dbtool.core.rules.fields import MAX_FIELDS, MAX_VALUE, from_options, parse_argstring

BACKENDS = ("sqlite", "postgresql")
PY = sys.executable
TOKEN = r"[0-9a-f]{32}"


@pytest.fixture
def run(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    return area


def logged(area, *args: str) -> list[dict]:
    """``server log --json`` entries (the server flushes its log every half second)."""
    return area.ok("server", "log", "--json", *args).json_lines


def logged_soon(area, count: int, *args: str) -> list[dict]:
    assert wait_for(lambda: len(logged(area, *args)) >= count, 10), logged(area)
    return logged(area, *args)


# -- Kno: request fields --------------------------------------------------------------------------------


def test_fields_tag_requests_and_server_log_finds_them(run):
    tagged = run.ok("--field", "ci_job=4711", "register-test", "--run-id", "1", "--testname", "a", "--field", "n=2")
    run.ok("register-test", "--run-id", "1", "--testname", "b", "--field", "ci_job=4712")
    run.ok("get-test-id", "--run-id", "1", "--testname", "a", "--field", "ci_job=4711")  # a read carries them too
    assert tagged.out.strip() == "1"
    found = logged_soon(run, 2, "--field", "ci_job=4711")
    assert [(e["cmd"], e["fields"]) for e in found] == [
        ("register-test", {"ci_job": "4711", "n": "2"}),
        ("get-test-id", {"ci_job": "4711"}),
    ]
    assert [e["fields"]["ci_job"] for e in logged(run, "--field", "ci_job")] == ["4711", "4712", "4711"]
    assert logged(run, "--field", "ci_job=4711", "--field", "n=2")[0]["cmd"] == "register-test"
    assert logged(run, "--field", "ci_job=1") == []
    assert all("fields" not in e for e in logged(run, "--cmd", "register-run"))
    people = run.ok("server", "log", "--field", "n").out
    assert "register-test" in people and "ci_job=4711 n=2" in people


def test_fields_reach_the_change_events_watchers_and_notify_commands(run):
    with open(run.dir / "config.toml", "a", encoding="utf-8") as f:
        command = "cat >> notes.jsonl; echo $DBTOOL_FIELD_ci_job >> env.txt"
        f.write(f'\n[[notify]]\nevents = ["state-change"]\ncommand = "{command}"\n')
    run.ok("server", "restart")
    run.ok(
        "set-state-status-and-roll-up-items", "--run-id", "1", "--testname", "t", "--state", "RUNNING",
        "--status", "n/a", "--field", "ci_job=4711", "--field", "by=alice smith",
    )  # fmt: skip
    events = run.ok("watch", "--since", "0", "--no-follow", "--json").json_lines
    tagged = [e for e in events if e.get("fields")]
    assert tagged and all(e["fields"] == {"ci_job": "4711", "by": "alice smith"} for e in tagged)
    assert {e["event"] for e in tagged} >= {"register-test", "set-state-status-and-roll-up-items"}
    assert "fields" not in next(e for e in events if e["event"] == "register-run")
    notes = run.root / "notes.jsonl"
    assert wait_for(lambda: notes.exists() and notes.read_text().strip(), 20)
    note = json.loads(notes.read_text().splitlines()[0])
    assert note["fields"] == {"ci_job": "4711", "by": "alice smith"}
    assert wait_for(lambda: (run.root / "env.txt").exists() and "4711" in (run.root / "env.txt").read_text(), 10)


def test_bad_fields_are_one_line_usage_errors_and_nothing_is_sent(run):
    cases = [
        (["--field", "nonsense"], "is not NAME=VALUE"),
        (["--field", "1x=2"], "is not a name"),
        (["--field", "a-b=2"], "is not a name"),
        (["--field", "=2"], "non-empty"),
        (["--field", f"{'n' * 65}=1"], "longer than 64"),
        (["--field", "v=" + "x" * (MAX_VALUE + 1)], f"at most {MAX_VALUE}"),
        ([arg for i in range(MAX_FIELDS + 1) for arg in ("--field", f"f{i}=1")], f"at most {MAX_FIELDS} fields"),
    ]
    for extra, said in cases:
        for where in ("before", "after"):
            args = ["register-test", "--run-id", "1", "--testname", "x"]
            args = [*extra, *args] if where == "before" else [*args, *extra]
            bad = run.run(*args)
            assert bad.code == 2, (extra[:2], bad)
            assert said in bad.err and len(bad.err.strip().splitlines()) == 1, bad.err
    assert run.run("get-test-id", "--run-id", "1", "--testname", "x").code == 1  # nothing reached the server


def test_a_server_refuses_malformed_fields_and_tokens_and_goes_on(run):
    with Raw(run) as raw:
        for extra, said in [
            ({"fields": "x"}, "fields must be a JSON object"),
            ({"fields": {"9": "x"}}, "is not a name"),
            ({"fields": {"a": ["x"]}}, "must have a text value"),
            ({"fields": {f"f{i}": "1" for i in range(MAX_FIELDS + 1)}}, "at most"),
            ({"lock_token": 5}, "lock_token must be a string"),
            ({"job_token": "x" * 200}, "job_token must be a string"),
        ]:
            answer = raw.request("get-keys", {}, **extra)
            assert answer["ok"] is False and answer["error"]["code"] == "bad_request", answer
            assert said in answer["error"]["message"]
        fine = raw.request("get-keys", {}, fields={"n": 3, "s": "x"})
        assert fine["ok"] is True
    entry = logged_soon(run, 1, "--field", "n=3")[0]  # a number sent as JSON is kept as its text
    assert entry["fields"] == {"n": "3", "s": "x"}


def test_field_values_read_parsed_as_kno_argstrings():
    assert [parse_argstring(v) for v in ("4711", "-2.5e3", '"4711"', '"a \\"b\\""', "#t", "#f", "x y", "", "nan")] == [
        4711,
        -2500.0,
        "4711",
        'a "b"',
        True,
        False,
        "x y",
        "",
        "nan",
    ]
    ctx = RequestContext("r", "get-keys", {})
    ctx.give(from_options(["ci_job=4711", 'tag="007"', "ci_job=4712"]))
    assert ctx.get("ci_job") == "4712" and ctx.val("ci_job") == 4712  # the raw text, and read parsed
    assert ctx.val("tag") == "007" and ctx.get("tag") == '"007"' and ctx.val("missing", 0) == 0
    ctx.store("mine", 1)
    assert ctx.data() == {"ci_job": "4712", "tag": '"007"', "mine": 1} and ctx.given == {
        "ci_job": "4712",
        "tag": '"007"',
    }


def test_handlers_see_the_fields_they_were_sent(hdb):
    """The handler's request context holds the client's fields; every event it makes carries them."""
    from dbtool.core.db.context import Db
    from dbtool.core.handlers import resolve
    from dbtool.core.request import activate

    run_id = hdb("register-run", target="v1/linux", runname="r")
    ctx = RequestContext("t", "register-test", {}, hdb.client)
    ctx.give({"ci_job": "4711"})
    with activate(ctx), hdb.engine.connect() as conn, conn.begin():
        db = Db(conn, hdb.schema, ctx, hdb.config)
        resolve("tests.register_test")(db, run_id=run_id, testname="t", item_path="")
        assert db.ctx.val("ci_job") == 4711
    assert [json.loads(e["fields"]) for e in db.events] == [{"ci_job": "4711"}]
    [(fields,)] = hdb.sql("SELECT fields FROM events WHERE cmd = 'register-test'")
    assert json.loads(fields) == {"ci_job": "4711"}


def test_a_commands_own_field_option_wins_after_its_name(run):
    run.ok("testmeta-add-record", "--testname", "t")
    run.ok("--field", "ci_job=1", "testmeta-update-field", "--testname", "t", "--field", "owner", "--value", "bob")
    assert run.ok("testmeta-get-record", "--testname", "t", "--json").json["owner"] == "bob"
    assert logged_soon(run, 1, "--field", "ci_job=1")[0]["cmd"] == "testmeta-update-field"


def test_trace_and_server_log_show_the_requests_log_to_the_nanosecond(run):
    traced = run.ok("--trace", "--field", "ci_job=7", "get-keys")
    lines = [line for line in traced.err.splitlines() if line.startswith("trace: ")]
    assert lines and all(line[15] == "." and line[16:25].isdigit() and line[25] == " " for line in lines)
    assert any(" debug received: get-keys from " in line for line in lines)
    [entry] = logged_soon(run, 1, "--field", "ci_job=7")
    assert entry["loglen"] == len(lines) == len(entry["log"])  # a traced request keeps its log
    for e in entry["log"]:
        assert {"level", "condition", "context", "message", "tick", "nsecs"} <= set(e) and 0 <= e["nsecs"] < 10**9
    detail = run.ok("server", "log", "--request", entry["id"]).out.splitlines()
    assert f"log: {len(lines)} entries" in detail[1] and detail[2].strip() == "fields: ci_job=7"
    plain = run.ok("get-keys", "--field", "ci_job=8")
    assert plain.err == ""
    [quiet] = logged_soon(run, 1, "--field", "ci_job=8")
    assert quiet["loglen"] >= 2 and "log" not in quiet  # an ordinary request's line counts its entries only
    assert "log: " in run.ok("server", "log", "--request", quiet["id"]).out


# -- CCP4i: projects by alias ---------------------------------------------------------------------------


@pytest.fixture
def config_home(tmp_path: Path) -> dict:
    home = tmp_path / "config"
    return {"XDG_CONFIG_HOME": str(home)}


def dbtool(*args: str, env: dict, cwd: str | None = None):
    from conftest import Result

    proc = subprocess.run(
        dbtool_argv(*args), capture_output=True, text=True, timeout=120, env={**os.environ, **env}, cwd=cwd
    )
    return Result(proc)


def test_projects_add_list_remove_and_select_the_area_from_anywhere(make_area, config_home, tmp_path):
    first, second = make_area("first"), make_area("second")
    first.ok("register-run", "--target", "v1/linux", "--runname", "in-first")
    env = config_home
    assert dbtool("projects", "add", "one", str(first.root), env=env).code == 0
    assert dbtool("projects", "add", "one", str(first.root), env=env).code == 0  # again: a no-op
    assert dbtool("projects", "add", "two", str(second.root), env=env).code == 0
    registry = Path(env["XDG_CONFIG_HOME"]) / "dbtool" / "projects.toml"
    assert registry.exists() and oct(registry.stat().st_mode)[-3:] in ("600", "644", "664")
    listed = dbtool("projects", "list", "--json", env=env).json
    assert listed == [
        {"alias": "one", "path": str(first.root), "status": "ok"},
        {"alias": "two", "path": str(second.root), "status": "ok"},
    ]
    elsewhere = str(tmp_path)
    got = dbtool("--project", "one", "get-runs", "--json", env=env, cwd=elsewhere).json
    assert [r["runname"] for r in got] == ["in-first"]
    by_env = dbtool("get-runs", "--json", env={**env, "DBTOOL_PROJECT": "two", "DBTOOL_AREA": str(first.root)})
    assert by_env.json == []  # $DBTOOL_PROJECT wins over $DBTOOL_AREA
    after = dbtool("get-runs", "--project", "one", "--json", env={**env, "DBTOOL_PROJECT": "two"}, cwd=elsewhere)
    assert [r["runname"] for r in after.json] == ["in-first"]  # (--project after the name; it wins over the env)
    both = dbtool("--project", "one", "--area", str(first.root), "get-runs", env=env)
    assert both.code == 2 and "--area and --project" in both.err
    unknown = dbtool("--project", "nope", "get-runs", env=env)
    assert unknown.code == 4 and "no project 'nope'" in unknown.err and "projects add nope" in unknown.err
    assert dbtool("get-runs", env={**env, "DBTOOL_PROJECT": "nope"}, cwd=elsewhere).code == 4
    other = dbtool("projects", "add", "one", str(second.root), env=env)
    assert other.code == 4 and "--replace" in other.err
    assert dbtool("projects", "add", "one", str(second.root), "--replace", env=env).code == 0
    assert dbtool("--project", "one", "get-runs", "--json", env=env).json == []
    not_area = dbtool("projects", "add", "three", elsewhere, env=env)
    assert not_area.code == 4 and "is not a dbtool area" in not_area.err
    bad_alias = dbtool("projects", "add", "-x", str(first.root), env=env)
    assert bad_alias.code in (2, 4)
    assert dbtool("projects", "add", ".x", str(first.root), env=env).code == 4
    assert dbtool("projects", "remove", "two", env=env).code == 0
    gone = dbtool("projects", "remove", "two", env=env)
    assert gone.code == 4 and "no project 'two'" in gone.err
    assert [p["alias"] for p in dbtool("projects", "list", "--json", env=env).json] == ["one"]
    import shutil

    second.run("server", "stop")
    shutil.rmtree(second.root / ".dbtool")
    assert dbtool("projects", "list", "--json", env=env).json[0]["status"] == "not an area"
    moved = dbtool("--project", "one", "get-runs", env=env)
    assert moved.code == 4 and "not a dbtool area" in moved.err and "--replace" in moved.err


def test_concurrent_project_adds_all_land_and_the_registry_is_read_only_when_asked(make_area, config_home):
    area = make_area()
    procs = [
        subprocess.Popen(
            dbtool_argv("projects", "add", f"p{i}", str(area.root)),
            env={**os.environ, **config_home},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    for p in procs:
        p.stderr.close()
    listed = dbtool("projects", "list", "--json", env=config_home).json
    assert sorted(p["alias"] for p in listed) == [f"p{i}" for i in range(8)]
    registry = Path(config_home["XDG_CONFIG_HOME"]) / "dbtool" / "projects.toml"
    registry.write_text("this is [ not toml")
    assert area.ok("get-keys", env=config_home).out == "RELEASE\nPLATFORM\n"  # not read: no --project
    broken = dbtool("--project", "p1", "get-keys", env=config_home)
    assert broken.code == 4 and str(registry) in broken.err
    probe = (
        "import sys; from dbtool.cli.main import main; code = main(sys.argv[1:]); "
        "print('dbtool.core.projects' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run(
        [PY, "-c", probe, "--area", str(area.root), "get-keys"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **config_home},
    )
    assert proc.stderr.strip().splitlines()[-1] == "False"


# -- CCP4i: the area lock -----------------------------------------------------------------------------------


def test_the_area_lock_keeps_out_every_write_without_its_token(run):
    import re

    locked = run.ok("lock-area", "--reason", "release freeze")
    token = locked.out.strip()
    assert re.fullmatch(TOKEN, token) and locked.err == ""
    refused = run.run("register-test", "--run-id", "1", "--testname", "t")
    assert refused.code == 4 and len(refused.err.strip().splitlines()) == 1
    for said in ("the area is locked by", "release freeze", "$DBTOOL_LOCK_TOKEN", time.strftime("%Y-")):
        assert said in refused.err, refused.err
    assert run.run("set-var", "x", "1").code == 4
    assert run.ok("get-runs", "--json").json[0]["runname"] == "r"  # reads go on
    assert run.ok("register-test", "--run-id", "1", "--testname", "t", env={"DBTOOL_LOCK_TOKEN": token}).out == "1\n"
    status = run.ok("server", "status", "--json").json
    assert status["area_lock"]["reason"] == "release freeze" and status["area_lock"]["holder"]
    assert "locked by" in run.ok("server", "status").out
    lock = run.ok("get-area-lock", "--json").json
    assert set(lock) == {"holder", "host", "pid", "since", "reason"} and abs(lock["since"] - time.time()) < 60
    again = run.run("lock-area")
    assert again.code == 4 and "--grab" in again.err
    renewed = run.ok("lock-area", "--reason", "still frozen", env={"DBTOOL_LOCK_TOKEN": token})
    assert renewed.out.strip() == token  # the holder keeps its token
    grabbed = run.ok("lock-area", "--grab", "--json")
    assert grabbed.json["grabbed_from"]["reason"] == "still frozen" and grabbed.json["token"] != token
    assert "took the area lock over from" in grabbed.err and "still frozen" in grabbed.err
    new = grabbed.json["token"]
    assert run.run("set-var", "x", "1", env={"DBTOOL_LOCK_TOKEN": token}).code == 4  # the old token no longer
    wrong = run.run("unlock-area", env={"DBTOOL_LOCK_TOKEN": token})
    assert wrong.code == 4 and "--force" in wrong.err
    assert run.run("unlock-area").code == 4
    assert run.ok("unlock-area", env={"DBTOOL_LOCK_TOKEN": new}).out == ""
    assert run.ok("set-var", "x", "1").code == 0
    assert run.run("get-area-lock").code == 1
    assert "was not locked" in run.ok("unlock-area").err
    run.ok("lock-area")
    forced = run.ok("unlock-area", "--force")
    assert "released the area lock of" in forced.err
    events = [e["event"] for e in run.ok("watch", "--since", "0", "--no-follow", "--json").json_lines]
    assert events.count("lock-area") == 3 and events.count("unlock-area") == 2


def test_the_area_lock_survives_a_server_restart(run):
    token = run.ok("lock-area", "--reason", "backup").out.strip()
    run.ok("server", "stop")
    assert run.wait_no_server()
    refused = run.run("set-var", "x", "1")  # (starts a new server)
    assert refused.code == 4 and "backup" in refused.err
    run.ok("server", "restart")
    assert run.run("set-var", "x", "1").code == 4
    assert run.ok("set-var", "x", "1", env={"DBTOOL_LOCK_TOKEN": token}).code == 0
    run.ok("unlock-area", env={"DBTOOL_LOCK_TOKEN": token})
    assert run.ok("set-var", "y", "2").code == 0


def test_a_spooled_report_waits_for_the_area_lock_instead_of_being_rejected(run):
    token = run.ok("lock-area").out.strip()
    core = CoreArea(str(run.root))
    path = spool.append(core, "set-var", {"var": "late", "value": "1"}, os.urandom(8).hex(), {"user": "job"})
    time.sleep(3)  # scans a second: held up, not rejected
    assert run.run("get-var", "late").code == 1
    assert not (run.dir / "spool" / spool.REJECTED).exists()
    assert any(p.name.startswith(Path(path).stem) for p in (run.dir / "spool").iterdir())
    run.ok("unlock-area", env={"DBTOOL_LOCK_TOKEN": token})
    assert wait_for(lambda: run.run("get-var", "late").out == "1\n", 20)


def test_the_area_lock_and_open_tests_hold_on_every_front_end(run, backend):
    if backend != "postgresql":
        pytest.skip("front-ends on several hosts: PostgreSQL areas only")
    host_a, host_b = {"DBTOOL_HOSTNAME": "front-a"}, {"DBTOOL_HOSTNAME": "front-b"}
    run.ok("get-keys-write", env=host_b)  # a front-end on each host
    token = run.ok("lock-area", "--reason", "migration", env=host_a).out.strip()
    refused = run.run("set-var", "x", "1", env=host_b)
    assert refused.code == 4 and "migration" in refused.err
    assert run.ok("set-var", "x", "1", env={**host_b, "DBTOOL_LOCK_TOKEN": token}).code == 0
    assert run.ok("server", "status", "--json", env=host_b).json["area_lock"]["reason"] == "migration"
    run.ok("unlock-area", env={**host_b, "DBTOOL_LOCK_TOKEN": token})
    assert run.ok("set-var", "x", "2", env=host_a).code == 0
    assert run.ok("set-var", "x", "3", env=host_b).code == 0
    job = run.popen(
        "exec", "--exclusive", "--run-id", "1", "--testname", "j", "--", "sleep", "3", env={**os.environ, **host_a}
    )  # fmt: skip
    assert wait_for(lambda: query(run, "SELECT count(*) FROM test_jobs") == [(1,)], 20)
    test_id = run.ok("get-test-id", "--run-id", "1", "--testname", "j").out.strip()
    refused = run.run("test-set-item", "--test-id", test_id, "a", "b", env=host_b)
    assert refused.code == 4 and "is open for the job of" in refused.err
    second = run.run("exec", "--exclusive", "--run-id", "1", "--testname", "j", "--", "true", env=host_b)
    assert second.code == 4
    assert job.wait(timeout=60) == 0
    job.stdout.close()
    job.stderr.close()
    assert run.ok("test-set-item", "--test-id", test_id, "a", "b", env=host_b).code == 0


def test_area_lock_handlers(hdb):
    from dbtool.core.db.context import Db
    from dbtool.core.handlers import resolve
    from dbtool.core.request import activate

    def call(name: str, lock_token: str | None = None, **params):
        ctx = RequestContext("t", name, params, hdb.client)
        ctx.lock_token = lock_token
        with activate(ctx), hdb.engine.connect() as conn, conn.begin():
            return resolve(f"arealock.{name.replace('-', '_')}")(Db(conn, hdb.schema, ctx, hdb.config), **params)

    with pytest.raises(NotFound):
        call("get-area-lock")
    first = call("lock-area", reason="why")
    assert first["grabbed_from"] is None and first["holder"] == "tester" and first["host"] == "testhost"
    assert call("get-area-lock")["reason"] == "why"
    with pytest.raises(Held, match="--grab"):
        call("lock-area")
    with pytest.raises(Held, match="no token"):
        call("unlock-area")
    assert call("lock-area", lock_token=first["token"])["token"] == first["token"]
    assert call("unlock-area", lock_token=first["token"])["unlocked"] is True
    assert call("unlock-area")["unlocked"] is False
    [(version, token)] = hdb.sql("SELECT version, lock_token FROM area_state WHERE id = 1")
    assert version == 2 and token is None  # each change raised the version; the lock held no token in plain


# -- CCP4i: data items of a test ----------------------------------------------------------------------------


def test_data_items_set_get_has_list_and_overwrite(run):
    test = run.ok("register-test", "--run-id", "1", "--testname", "t").out.strip()
    run.ok("test-set-item", "--test-id", test, "resolution", "1.8")
    run.ok("test-set-item", "--test-id", test, "space group", "P 21 21 21")
    run.ok("test-set-item", "--test-id", test, "--", "flag", "-x")
    run.ok("test-set-item", "--test-id", test, "empty", "")
    assert run.ok("test-get-item", "--test-id", test, "space group").out == "P 21 21 21\n"
    run.ok("test-set-item", "--test-id", test, "resolution", "2.1")  # again: overwritten
    assert run.ok("test-get-item", "--test-id", test, "resolution", "--json").json == "2.1"
    assert run.run("test-has-item", "--test-id", test, "resolution").code == 0
    has = run.run("test-has-item", "--test-id", test, "nope")
    assert has.code == 1 and has.out == "" and has.err == ""
    assert run.run("test-has-item", "--test-id", test, "nope", "--json").out == "false\n"
    assert run.run("test-has-item", "--test-id", test, "empty", "--json").out == "true\n"
    missing = run.run("test-get-item", "--test-id", test, "nope")
    assert missing.code == 1 and "has no item 'nope'" in missing.err
    assert run.ok("test-get-items", "--test-id", test, "--json").json == {
        "empty": "",
        "flag": "-x",
        "resolution": "2.1",
        "space group": "P 21 21 21",
    }
    table = run.ok("test-get-items", "--test-id", test).out.splitlines()
    assert table[0].split() == ["empty"] and table[2].split(None, 1) == ["resolution", "2.1"]
    events = [e for e in run.ok("watch", "--since", "0", "--no-follow", "--json").json_lines]
    items = [e for e in events if e["event"] == "test-set-item"]
    assert [e["data"]["item"] for e in items] == ["resolution", "space group", "flag", "empty", "resolution"]
    assert all(e["test_id"] == int(test) and e["testname"] == "t" for e in items)
    assert run.run("test-set-item", "--test-id", "99", "a", "b").code == 4
    assert run.run("test-get-item", "--test-id", "99", "a").code == 1
    assert run.run("test-has-item", "--test-id", "99", "a").code == 1
    assert run.run("test-get-items", "--test-id", "99").code == 1
    long_name = run.run("test-set-item", "--test-id", test, "n" * 300, "v")
    assert long_name.code == 4 and "at most 256" in long_name.err
    assert run.run("test-set-item", "--test-id", test, "", "v").code == 4


def test_data_items_of_a_purged_test_go_with_it_and_their_size_is_bounded(hdb):
    run_id = hdb("register-run", target="v1/linux", runname="r")
    test = hdb("register-test", run_id=run_id, testname="t")
    with pytest.raises(Refused, match="at most 1024 KiB"):
        hdb("test-set-item", test_id=test, item="big", value="x" * ((1 << 20) + 1))
    hdb("test-set-item", test_id=test, item="big", value="x" * (1 << 20))
    assert len(hdb("test-get-item", test_id=test, item="big")) == 1 << 20
    hdb("delete-test-records", test_id=test)
    hdb.sql("UPDATE tests SET event_time = event_time - 99 * 86400")
    assert hdb("delete-old-deleted-test-records", days=1) == 1
    assert hdb.sql("SELECT count(*) FROM test_items") == [(0,)]


# -- CCP4i: several records at once --------------------------------------------------------------------------


def test_get_tests_by_ids_in_the_order_given(run):
    for name in ("a", "b", "c"):
        run.ok("register-test", "--run-id", "1", "--testname", name)
    got = run.ok("get-tests-by-ids", "--test-ids", "3,1,3", "--json").json
    assert [(t["id"], t["testname"]) for t in got] == [(3, "c"), (1, "a"), (3, "c")]
    assert set(got[0]) >= {"id", "run_id", "testname", "item_path", "state", "status", "last_update"}
    some = run.ok("get-tests-by-ids", "--test-ids", "2, 1", "--fields", "testname,state", "--json").json
    assert some == [{"testname": "b", "state": "NOT_STARTED"}, {"testname": "a", "state": "NOT_STARTED"}]
    table = run.ok("get-tests-by-ids", "--test-ids", "2,1", "--fields", "testname,id").out.splitlines()
    assert table[0].split() == ["testname", "id"] and table[1].split() == ["b", "2"]
    csv = run.ok("get-tests-by-ids", "--test-ids", "1", "--fields", "id,testname", "--format", "csv").out
    assert csv == "id,testname\n1,a\n"
    unknown = run.run("get-tests-by-ids", "--test-ids", "1,77,2,78")
    assert unknown.code == 1 and "77, 78" in unknown.err and unknown.out == ""
    assert run.run("get-tests-by-ids", "--test-ids", "1,x").code == 4
    bad_field = run.run("get-tests-by-ids", "--test-ids", "1", "--fields", "nosuch")
    assert bad_field.code == 4 and "unknown field 'nosuch'" in bad_field.err
    run.ok("delete-test-records", "--test-id", "2")
    assert run.ok("get-tests-by-ids", "--test-ids", "2", "--json").json[0]["state"] == "DELETED"  # (by id: found)


# -- CCP4i: tests open for one job (exec --exclusive) ---------------------------------------------------------


def test_an_exclusive_job_alone_writes_its_test(run, tmp_path):
    seen = tmp_path / "seen.txt"
    script = (
        f'echo "$DBTOOL_TEST_ID $DBTOOL_RUN_ID $DBTOOL_AREA $DBTOOL_JOB_TOKEN" > {seen}; '
        f'"{PY}" -m dbtool.cli test-set-item --test-id "$DBTOOL_TEST_ID" by job || exit 9; sleep 4'
    )
    job = run.popen(
        "exec", "--exclusive", "--run-id", "1", "--testname", "job", "--heartbeat", "1", "--", "sh", "-c", script
    )
    assert wait_for(lambda: seen.exists() and len(seen.read_text().split()) == 4, 30)
    test_id, run_id, area_root, token = seen.read_text().split()
    assert (run_id, area_root) == ("1", str(run.root)) and len(token) == 32
    assert wait_for(lambda: run.run("test-has-item", "--test-id", test_id, "by").code == 0, 20)
    outsider = run.run("test-set-item", "--test-id", test_id, "by", "outsider")
    assert outsider.code == 4 and len(outsider.err.strip().splitlines()) == 1
    assert "is open for the job of" in outsider.err and "exec --exclusive" in outsider.err
    status = run.run("test-set-state-status-by-id", "--test-id", test_id, "--state", "COMPLETED", "--status", "PASS")
    assert status.code == 4
    second = run.run("exec", "--exclusive", "--run-id", "1", "--testname", "job", "--", "sh", "-c", "echo ran")
    assert second.code == 4 and "ran" not in second.out and "is open for the job of" in second.err
    plain = run.run("exec", "--run-id", "1", "--testname", "job", "--", "sh", "-c", "echo ran")
    assert plain.code == 4 and "ran" not in plain.out
    assert run.ok("test-set-item", "--test-id", test_id, "by", "me", env={"DBTOOL_JOB_TOKEN": token}).code == 0
    other = run.ok("register-test", "--run-id", "1", "--testname", "other").out.strip()
    run.ok("test-set-item", "--test-id", other, "free", "yes")  # other tests are open to all
    _, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    info = run.ok("get-test-info-by-id", "--test-id", test_id, "--json").json
    assert (info["state"], info["status"]) == ("COMPLETED", "PASS")
    run.ok("test-set-item", "--test-id", test_id, "by", "anyone")  # the job ended: open to all again
    assert query(run, "SELECT count(*) FROM test_jobs") == [(0,)]
    assert run.run("exec", "--exclusive", "--step", "s", "--run-id", "1", "--testname", "job", "--", "true").code == 2


def test_a_dead_exclusive_job_frees_its_test_and_its_zombie_cannot_write_over_the_retry(run, tmp_path):
    run.set_config("tests", "dead_check_interval", "0.3")
    run.ok("server", "restart")
    token_file = tmp_path / "token"
    job = run.popen(
        "exec", "--exclusive", "--run-id", "1", "--testname", "victim", "--heartbeat", "0.3", "--",
        "sh", "-c", f'echo "$DBTOOL_JOB_TOKEN" > {token_file}; exec sleep 120',
        start_new_session=True,
    )  # fmt: skip
    assert wait_for(lambda: token_file.exists() and token_file.read_text().strip(), 30)
    zombie = token_file.read_text().strip()
    assert wait_for(lambda: query(run, "SELECT count(*) FROM test_jobs") == [(1,)], 20)
    test_id = run.ok("get-test-id", "--run-id", "1", "--testname", "victim").out.strip()
    assert wait_for(lambda: run.ok("get-test-info-by-id", "--test-id", test_id, "--json").json["attemptnum"] != 0)
    command = run.ok("get-test-info-by-id", "--test-id", test_id, "--json").json["attemptnum"]
    os.kill(command, signal.SIGKILL)  # wrapper and command: no exec-end
    os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=30)
    assert wait_for(lambda: run.ok("get-test-info-by-id", "--test-id", test_id, "--json").json["status"] == "DEAD", 30)
    assert query(run, "SELECT count(*) FROM test_jobs") == [(0,)]  # found dead: closed
    retry = run.popen("exec", "--exclusive", "--run-id", "1", "--testname", "victim", "--", "sleep", "3")
    assert wait_for(lambda: query(run, "SELECT count(*) FROM test_jobs") == [(1,)], 20)
    late = run.run("test-set-item", "--test-id", test_id, "zombie", "was here", env={"DBTOOL_JOB_TOKEN": zombie})
    assert late.code == 4 and "is open for the job of" in late.err
    _, err = retry.communicate(timeout=60)
    assert retry.returncode == 0, err
    info = run.ok("get-test-info-by-id", "--test-id", test_id, "--json").json
    assert (info["state"], info["status"]) == ("COMPLETED", "PASS")
    assert run.run("test-has-item", "--test-id", test_id, "zombie").code == 1


def test_the_area_lock_and_an_open_test_hold_across_a_restart(run):
    token = run.ok("lock-area").out.strip()
    with_token = {**os.environ, "DBTOOL_LOCK_TOKEN": token}
    job = run.popen("exec", "--exclusive", "--run-id", "1", "--testname", "j", "--", "sleep", "8", env=with_token)
    assert wait_for(lambda: query(run, "SELECT count(*) FROM test_jobs") == [(1,)], 20)
    run.ok("server", "restart")
    test_id = run.ok("get-test-id", "--run-id", "1", "--testname", "j").out.strip()
    refused = run.run("test-set-item", "--test-id", test_id, "a", "b", env={"DBTOOL_LOCK_TOKEN": token})
    assert refused.code == 4 and "is open for the job of" in refused.err  # the lock's token does not open the test
    assert query(run, "SELECT count(*) FROM test_jobs") == [(1,)]  # (the job still runs)
    assert job.wait(timeout=60) == 0  # its reports carried the lock's token
    job.stdout.close()
    job.stderr.close()
    run.ok("unlock-area", env={"DBTOOL_LOCK_TOKEN": token})
    assert run.ok("get-test-info-by-id", "--test-id", test_id, "--json").json["status"] == "PASS"


# -- the schema upgrade -----------------------------------------------------------------------------------


def test_a_schema_4_area_is_upgraded_when_a_server_opens_it(run, backend):
    run.ok("register-test", "--run-id", "1", "--testname", "t")
    run.ok("server", "stop")
    assert run.wait_no_server()
    for sql in (
        "DROP TABLE area_state",
        "DROP TABLE test_jobs",
        "DROP TABLE test_items",
        "ALTER TABLE events DROP COLUMN fields",
        "UPDATE metadat SET val = '4' WHERE var = 'DBTOOL_SCHEMA'",
    ):
        execute(run, sql)
    events_before = query(run, "SELECT count(*) FROM events")
    assert run.run("get-runs").code == 0  # a read (it starts the server, which upgrades the area)
    assert wait_for(
        lambda: query(run, "SELECT val FROM metadat WHERE var = 'DBTOOL_SCHEMA'") == [(str(SCHEMA_VERSION),)]
    )
    assert query(run, "SELECT id, version, lock_token FROM area_state") == [(1, 0, None)]
    assert query(run, "SELECT count(*) FROM events") == events_before
    token = run.ok("lock-area").out.strip()
    assert run.run("test-set-item", "--test-id", "1", "a", "b").code == 4
    run.ok("test-set-item", "--test-id", "1", "a", "b", "--field", "up=1", env={"DBTOOL_LOCK_TOKEN": token})
    assert query(run, "SELECT fields FROM events WHERE cmd = 'test-set-item'") == [('{"up":"1"}',)]
