"""B21: a watch whose server stops says so (exit 3, the --since that resumes it), unlike --count or
--no-follow (exit 0); a hand-off names the server start options it did not apply."""

from __future__ import annotations

import json

from conftest import wait_for

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)


def subscribers(area) -> int:
    return area.ok("server", "status", "--json").json["subscribers"]


def stop_under_watch(area, *watch_args: str, events_before_stop: int) -> tuple[int, list[dict], str]:
    """Run `watch` until it printed ``events_before_stop`` events, stop the server; its exit code,
    the events it printed and its stderr."""
    proc = area.popen("watch", "--json", *watch_args)
    try:
        events = [json.loads(proc.stdout.readline()) for _ in range(events_before_stop)]
        assert wait_for(lambda: subscribers(area) == 1)
        area.ok("server", "stop")
        proc.wait(timeout=60)
        # read through the file objects: readline above may have buffered lines already
        # (communicate() reads the pipes underneath and would miss them)
        events += [json.loads(line) for line in proc.stdout.read().splitlines()]
        return proc.returncode, events, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_watch_exits_3_with_the_resume_command_when_the_server_stops(area):
    for value in range(3):
        area.ok("set-var", "x", str(value))
    code, events, err = stop_under_watch(area, "--since", "0", events_before_stop=3)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert code == 3
    assert err == "dbtool: error: the server stopped; resume with dbtool watch --since 3\n"
    assert area.wait_no_server()


def test_the_resume_command_keeps_the_filters(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("set-state-status-and-roll-up-items", "--run-id", "1", "--testname", "a b", "--state", "X", "--status", "Y")
    code, events, err = stop_under_watch(
        area, "--since", "0", "--run-id", "1", "--testpatt", "a b", events_before_stop=1
    )
    last = events[-1]["seq"]
    assert code == 3
    resume = f"dbtool watch --run-id 1 --testpatt 'a b' --since {last}"
    assert err == f"dbtool: error: the server stopped; resume with {resume}\n"


def test_resuming_from_the_printed_seq_misses_nothing(area):
    area.ok("set-var", "x", "0")
    code, events, err = stop_under_watch(area, "--since", "0", events_before_stop=1)
    assert code == 3
    since = err.rsplit("--since ", 1)[1].strip()
    area.ok("set-var", "x", "1")  # a new server
    resumed = area.ok("watch", "--since", since, "--no-follow", "--json").json_lines
    assert [e["seq"] for e in resumed] == [events[-1]["seq"] + 1]


def test_a_live_watch_with_no_event_still_names_its_seq(area):
    area.ok("set-var", "x", "0")
    code, events, err = stop_under_watch(area, events_before_stop=0)
    assert (code, events) == (3, [])
    assert err == "dbtool: error: the server stopped; resume with dbtool watch --since 1\n"


def test_count_and_no_follow_still_exit_0(area):
    for value in range(3):
        area.ok("set-var", "x", str(value))
    assert len(area.ok("watch", "--since", "0", "--count", "2", "--json").json_lines) == 2
    replay = area.ok("watch", "--since", "0", "--no-follow", "--json")
    assert [e["seq"] for e in replay.json_lines] == [1, 2, 3] and replay.err == ""


# -- hand-off ----------------------------------------------------------------------------------------------


def test_handoff_names_the_options_it_did_not_apply(area):
    first = area.ok("server", "start")
    info = area.server_info
    other_port = info["port"] + 1 if info["port"] < 65535 else info["port"] - 1
    again = area.ok("server", "start", "--port", str(other_port), "--idle-timeout", "7", "--bind", "127.0.0.2")
    assert again.out == first.out  # where the running server is
    assert again.err == (
        f"dbtool: warning: a server already runs for {area.root}; not applied: "
        f"--bind 127.0.0.2 (it listens on 127.0.0.1), --port {other_port} (it listens on port {info['port']}), "
        "--idle-timeout 7 (its idle timeout is 120 s); "
        f"to apply, run dbtool server restart --bind 127.0.0.2 --port {other_port} --idle-timeout 7\n"
    )
    assert area.server_info["pid"] == info["pid"]
    assert area.ok("server", "status", "--json").json["idle_timeout"] == 120


def test_handoff_with_the_running_values_says_nothing(area):
    area.ok("server", "start")
    info = area.server_info
    same = area.ok("server", "start", "--port", str(info["port"]), "--idle-timeout", "120", "--bind", "localhost")
    assert same.err == ""
    assert area.ok("server", "start", "--port", "0").err == ""  # 0: any port, so the running one is fine
    assert area.ok("server", "start", "--bind", "127.0.0.1", "--port", str(info["port"])).err == ""


def test_a_started_server_has_the_options_given(area):
    started = area.ok("server", "start", "--idle-timeout", "90")
    assert started.err == ""
    assert area.ok("server", "status", "--json").json["idle_timeout"] == 90
