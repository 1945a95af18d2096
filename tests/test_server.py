"""The server as a real process: auto-start races, kill -9 recovery, durability, bad input, lifecycle."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

from conftest import handshake, query, wait_for
from dbtool.core import PROTOCOL

BACKENDS = ("sqlite", "postgresql")  # the CLI suite runs on both (conftest.pytest_generate_tests)


def server_starts(area) -> int:
    log = area.run_dir / "logs" / "server.log"
    return log.read_text().count(" serving ") if log.exists() else 0


def test_32_writers_racing_on_cold_area_start_one_server(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("server", "stop")
    assert area.wait_no_server()
    before = server_starts(area)
    procs = [
        area.popen(
            "set-state-status-and-roll-up-items",
            "--run-id",
            "1",
            "--testname",
            "race",
            "--item-path",
            f"i{i}",
            "--state",
            "COMPLETED",
            "--status",
            "PASS",
        )
        for i in range(32)
    ]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert [r[0] for r in results] == [0] * 32, [r for r in results if r[0]]
    assert server_starts(area) - before == 1
    assert len(area.server_pids()) == 1
    ids = {int(r[1]) for r in results}
    assert len(ids) == 32
    top = area.ok("get-tests-for-run", "--run-id", "1", "--testpatt", "race/", "--json").json
    assert (top[0]["state"], top[0]["status"]) == ("COMPLETED", "PASS")


def test_kill_9_then_next_command_recovers_and_acknowledged_writes_survive(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    for i in range(20):
        area.ok("set-var", f"v{i}", str(i))
    pid = area.server_info["pid"]
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not area.server_pids())
    assert area.server_info is not None  # stale record left behind
    # every acknowledged write is in the database file (read without any server)
    assert query(area, "select count(*) from metadat where var like 'v%'") == [(20,)]
    # a read recovers at once (answered from the database) and starts a new server behind it (SPEC 3.2) ...
    assert area.ok("get-var", "v19").out == "19\n"
    assert wait_for(lambda: (area.server_info or {}).get("pid") not in (None, pid) and len(area.server_pids()) == 1)
    # ... which the next write uses
    area.ok("set-var", "after", "1")
    info = area.server_info
    assert info["pid"] != pid and area.server_pids() == [info["pid"]]
    assert area.ok("ping", "--json").json["pid"] == info["pid"]


def test_kill_9_during_concurrent_writes_loses_no_acknowledged_write(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    procs = [area.popen("set-var", f"k{i}", str(i)) for i in range(24)]
    time.sleep(0.3)
    pid = area.server_info["pid"]
    os.kill(pid, signal.SIGKILL)
    acked = []
    for i, p in enumerate(procs):
        code = p.wait(timeout=120)
        p.stdout.close()
        p.stderr.close()
        if code == 0:
            acked.append(f"k{i}")
    stored = {r[0] for r in query(area, "select var from metadat where var like 'k%'")}
    assert set(acked) <= stored
    # clients that lost their server retried against a new one: all succeeded
    assert len(acked) == 24


def connect(area, key: str | None = None):
    """A raw protocol connection: (socket, file, hello)."""
    info = area.server_info
    sock = socket.create_connection((info["address"], info["port"]), timeout=10)
    f = sock.makefile("rwb")
    hello = handshake(f, info, key, {"user": "t"})
    return sock, f, hello


def send(f, obj) -> dict:
    f.write((obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n")
    f.flush()
    return json.loads(f.readline())


def test_wrong_hmac_is_refused_and_server_keeps_serving(area):
    area.ok("set-var", "x", "1")
    sock, f, _ = connect(area, key="00" * 16)
    reply = send(f, {"id": 1, "cmd": "get-var", "params": {"var": "x"}})
    assert reply["ok"] is False and reply["error"]["code"] == "unauthorized"
    assert f.readline() == b""  # closed
    sock.close()
    assert area.ok("get-var", "x").out == "1\n"


def test_malformed_and_invalid_requests_get_error_answers(area):
    area.ok("set-var", "x", "1")
    sock, f, _ = connect(area)
    assert send(f, b"{not json")["error"]["code"] == "bad_request"
    assert send(f, b"[1,2]")["error"]["code"] == "bad_request"
    assert send(f, {"id": 2, "cmd": "frobnicate"})["error"]["message"].startswith("unknown command 'frobnicate'")
    wrong_type = send(f, {"id": 3, "cmd": "get-test-id", "params": {"run_id": "one", "testname": "t"}})
    assert (
        wrong_type["error"]["code"] == "bad_request" and "run_id expects an integer" in wrong_type["error"]["message"]
    )
    missing = send(f, {"id": 4, "cmd": "get-test-id", "params": {"run_id": 1}})
    assert "missing required parameter testname" in missing["error"]["message"]
    unknown = send(f, {"id": 5, "cmd": "get-var", "params": {"var": "x", "nope": 1}})
    assert "unknown parameter 'nope'" in unknown["error"]["message"]
    # the same connection still works, under both spellings of a name
    good = send(f, {"id": 6, "cmd": "get-var", "params": {"var": "x"}})
    assert good == {"id": 6, "request_id": good["request_id"], "ok": True, "result": 1}
    assert send(f, {"id": 7, "cmd": "get-keys"})["result"] == ["RELEASE", "PLATFORM"]
    sock.close()


def test_oversized_line_is_refused_and_connection_closed(area):
    area.ok("set-var", "x", "1")
    sock, f, _ = connect(area)
    big = b'{"id": 1, "cmd": "set-var", "params": {"var": "big", "value": "' + b"x" * (17 * 1024 * 1024) + b'"}}\n'
    try:
        f.write(big)
        f.flush()
    except OSError:
        pass  # the server may close before we finish sending
    line = f.readline()
    if line:
        reply = json.loads(line)
        assert reply["error"]["code"] == "bad_request" and "longer than" in reply["error"]["message"]
    sock.close()
    assert area.ok("get-var", "x").out == "1\n"
    assert area.run("get-var", "big").code == 1


def test_protocol_version_mismatch_is_explicit(area):
    area.ok("set-var", "x", "1")
    info = area.server_info
    sock = socket.create_connection((info["address"], info["port"]), timeout=10)
    f = sock.makefile("rwb")
    json.loads(f.readline())  # the hello
    f.write(json.dumps({"challenge": "ab" * 16, "protocol": PROTOCOL + 1}).encode() + b"\n")
    f.flush()
    reply = json.loads(f.readline())
    assert reply["error"]["code"] == "version_mismatch" and "server restart" in reply["error"]["message"]
    sock.close()


def test_second_server_start_hands_off(area):
    first = area.ok("server", "start").out
    info = area.server_info
    assert f":{info['port']} (pid {info['pid']})" in first
    second = area.ok("server", "start")
    assert second.out == first
    fg = area.run("server", "start", "--foreground", timeout=60)
    assert fg.code == 0 and f"(pid {info['pid']})" in fg.out
    assert area.server_pids() == [info["pid"]]


def test_server_stop_and_sigterm_are_graceful(area):
    area.ok("set-var", "x", "1")
    area.ok("server", "stop")
    assert area.server_info is None and area.wait_no_server()
    assert not (area.dir / "dbtool.db-wal").exists() or (area.dir / "dbtool.db-wal").stat().st_size == 0
    assert "no server is running" in area.ok("server", "stop").err
    assert area.run("server", "status").code == 3
    area.ok("set-var", "y", "2")
    os.kill(area.server_info["pid"], signal.SIGTERM)
    assert area.wait_no_server() and area.server_info is None
    assert area.ok("get-var", "y").out == "2\n"


def test_idle_timeout_stops_server(area):
    area.set_config("server", "idle_timeout", "1")
    area.ok("set-var", "x", "1")
    assert area.server_pids()
    assert area.wait_no_server(timeout=20)
    assert area.server_info is None


def test_server_status_reports(area):
    area.ok("set-var", "x", "1")
    status = area.ok("server", "status", "--json").json
    assert status["pid"] == area.server_info["pid"]
    assert status["requests"] >= 1 and status["queue_depth"] == 0 and status["uptime"] >= 0
    assert "key" not in status


def test_server_refuses_a_write_that_fails_and_keeps_the_others(area):
    # one request in a group failing (unknown run) must not undo the others
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    procs = [area.popen("set-var", f"g{i}", "1") for i in range(8)]
    bad = area.popen("set-state-status-and-roll-up-items", "--run-id", "77", "--testname", "t", "--state", "X")
    assert bad.wait(timeout=60) == 4
    assert [p.wait(timeout=60) for p in procs] == [0] * 8
    for p in (*procs, bad):
        p.stdout.close()
        p.stderr.close()
    assert area.ok("get-var", "g7").out == "1\n"
