"""The exact command forms of SPEC 2.1, run literally (every optional part included) against a real server."""

from __future__ import annotations

import subprocess

from conftest import Area, dbtool_argv


def test_every_exact_form_of_spec_2_1(tmp_path):
    root = tmp_path / "proj"
    proc = subprocess.run(dbtool_argv("init", str(root), "--keys", "RELEASE,PLATFORM"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    a = Area(root)
    try:
        run = a.ok(
            "register-run",
            "--target",
            "v1.2/linux",
            "--runname",
            "nightly",
            "--state",
            "new",
            "--status",
            "n/a",
            "--owner",
            "ci",
            "--contour",
            "c1",
        ).out.strip()
        assert run == "1"
        assert a.ok("register-run", "--target", "v1.2/linux", "--runname", "nightly").out.strip() == run
        test = a.ok("register-test", "--run-id", run, "--testname", "unit", "--item-path", "py311").out.strip()
        rolled = a.ok(
            "set-state-status-and-roll-up-items",
            "--run-id",
            run,
            "--testname",
            "unit",
            "--item-path",
            "py311",
            "--state",
            "RUNNING",
            "--status",
            "n/a",
            "--comment",
            "started",
        ).out.strip()
        assert rolled == test
        a.ok(
            "test-set-state-status-by-id",
            "--run-id",
            run,
            "--test-id",
            test,
            "--state",
            "COMPLETED",
            "--status",
            "PASS",
            "--comment",
            "ok",
        )
        assert a.ok("get-test-id", "--run-id", run, "--testname", "unit", "--item-path", "py311").out.strip() == test
        missing = a.run("get-test-id", "--run-id", run, "--testname", "nope")
        assert missing.code == 1 and missing.out == ""
        runs = a.ok("get-runs", "--runname", "night*", "--target", "v1.2/%", "--limit", "5", "--offset", "0", "--json")
        assert [r["id"] for r in runs.json] == [1]
        assert a.ok("get-run-info", "--run-id", run, "--json").json["owner"] == "ci"
        tests = a.ok(
            "get-tests-for-run",
            "--run-id",
            run,
            "--testpatt",
            "unit/py%",
            "--states",
            "COMPLETED,RUNNING",
            "--statuses",
            "PASS,FAIL",
            "--json",
        ).json
        assert [t["item_path"] for t in tests] == ["py311"]
        none_left = a.ok(
            "get-tests-for-run", "--run-id", run, "--states", "COMPLETED", "--statuses", "PASS", "--not-in"
        )
        assert none_left.out == ""
        assert a.ok("get-test-info-by-id", "--test-id", test, "--json").json["comment"] == "ok"
        for state, status in (("start", "-"), ("end", "0")):
            a.ok(
                "teststep-set-status",
                "--run-id",
                run,
                "--test-id",
                test,
                "--stepname",
                "build",
                "--state",
                state,
                "--status",
                status,
                "--comment",
                "c",
                "--logfile",
                "build.log",
            )
        steps = a.ok("get-steps-for-test", "--run-id", run, "--test-id", test, "--json").json
        assert [(s["stepname"], s["state"], s["logfile"]) for s in steps] == [
            ("build", "start", "build.log"),
            ("build", "end", "build.log"),
        ]
        a.ok("csv-to-test-data", "--run-id", run, "--test-id", test, "--csv", "perf,speed,10,10,1,ops")
        data_file = tmp_path / "data.csv"
        data_file.write_text("perf,size,5,4,0.5,MB\n")
        a.ok("csv-to-test-data", "--run-id", run, "--test-id", test, "--file", str(data_file))
        a.ok("csv-to-test-data", "--run-id", run, "--test-id", test, "--file", "-", input="mem,rss,1,1,0,MB\n")
        data = a.ok("read-test-data", "--run-id", run, "--test-id", test, "--category", "perf", "--json").json
        assert [(d["variable"], d["status"]) for d in data] == [("size", "fail"), ("speed", "pass")]
        a.ok("set-var", "NAME", "VALUE")
        assert a.ok("get-var", "NAME").out == "VALUE\n"
        a.ok("del-var", "NAME")
        assert a.ok("inc-var", "N").out == "1\n"
        assert a.ok("dec-var", "N").out == "0\n"
        assert a.ok("add-var", "N", "5").out == "5\n"
        victim = a.ok("register-run", "--target", "v1.2/mac", "--runname", "scratch").out.strip()
        a.ok("lock-unlock-run", "--run-id", victim, "--lock", "--user", "alice")
        assert a.run("delete-run", "--run-id", victim).code == 4
        a.ok("lock-unlock-run", "--run-id", victim, "--unlock", "--user", "alice")
        a.ok("delete-run", "--run-id", victim)
        assert a.ok("get-keys", "--json").json == ["RELEASE", "PLATFORM"]
        assert a.ok("get-target", "--run-id", run).out == "v1.2/linux\n"
        assert a.ok("get-run-name-from-id", "--run-id", run).out == "nightly\n"
        assert a.ok("get-num-runs", "--runname", "night%").out == "1\n"
        assert a.ok("test-toplevel-num-items", "--run-id", run, "--testname", "unit").out == "1\n"
        a.ok("test-data-rollup", "--run-id", run, "--test-id", test)
        info = a.ok("get-test-info-by-id", "--test-id", test, "--json").json
        assert (info["status"], info["pass_count"], info["fail_count"]) == ("FAIL", 2, 1)
        a.ok("testmeta-add-record", "--testname", "unit")
        a.ok("testmeta-update-field", "--testname", "unit", "--field", "owner", "--value", "bob")
        assert a.ok("testmeta-get-record", "--testname", "unit", "--json").json["owner"] == "bob"
        a.ok("no-sync-set", "NAME", "VALUE")
        assert a.ok("no-sync-get-default", "NAME", "--default", "D").out == "VALUE\n"
        a.ok("no-sync-del", "NAME")
        assert a.ok("no-sync-get-default", "NAME", "--default", "D").out == "D\n"
        lock = a.ok("no-sync-get-lock", "L", "--json").json
        assert lock["acquired"] is True and "value" in lock
        assert a.ok("ping", "--json").json["area"] == str(root)
    finally:
        from conftest import kill_area

        kill_area(str(root))
