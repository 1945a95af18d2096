"""The server in operation: request log, --trace, statistics, watch, backpressure, limits, idempotency,
version/auth refusals, restart, permissions, read-only and full databases, journal modes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time

import pytest
from conftest import Raw, dbtool_argv, wait_for


def log_entries(area) -> list[dict]:
    path = area.dir / "logs" / "requests.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- request log, --trace, stats ---------------------------------------------------------------------------


def test_request_log_and_server_log_command(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    failed = area.run("set-state-status-and-roll-up-items", "--run-id", "9", "--testname", "t", "--state", "X")
    rid = failed.err.rsplit("[request ", 1)[1].rstrip("]\n")
    by_id = area.ok("server", "log", "--request", rid, "--json").json
    assert by_id["cmd"] == "set-state-status-and-roll-up-items" and by_id["ok"] is False
    assert by_id["error"]["code"] == "refused" and by_id["params"]["run_id"] == 9
    assert by_id["client"].startswith(f"{os.environ.get('USER', 'root')}@") or "@" in by_id["client"]
    assert by_id["ms"] >= 0 and by_id["ts"] > 0
    area.ok("server", "stop")  # flushes the log
    entries = log_entries(area)
    assert {"register-run", "set-state-status-and-roll-up-items", "server-stop"} <= {e["cmd"] for e in entries}
    ok_entry = next(e for e in entries if e["cmd"] == "register-run")
    assert ok_entry["ok"] is True and "log" not in ok_entry and "params" not in ok_entry
    human = area.ok("server", "log", "--cmd", "register-run").out.splitlines()
    assert len(human) == 1 and " register-run " in human[0] and human[0].endswith(" ok")
    assert len(area.ok("server", "log", "--limit", "1").out.splitlines()) == 1
    assert area.ok("server", "log", "--since", "1h").out.count("\n") >= 3
    assert area.ok("server", "log", "--since", str(time.time() + 3600)).out == ""
    assert area.run("server", "log", "--request", "nope").code == 1
    assert area.run("server", "log", "--since", "someday").code == 2


def test_server_log_follow(area):
    area.ok("set-var", "a", "1")
    proc = area.popen("server", "log", "--follow", "--cmd", "set-var")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
    reader.start()
    try:
        time.sleep(1.0)
        area.ok("set-var", "b", "2")
        area.ok("set-var", "c", "3")
        assert wait_for(lambda: len(lines) >= 3, 30)
    finally:
        proc.kill()
        proc.wait()
        reader.join(10)
        proc.stdout.close()
        proc.stderr.close()
    assert all(" set-var " in line for line in lines[:3])


def test_trace_prints_the_requests_log_entries(area):
    area.ok("set-var", "x", "1")
    traced = area.ok("--trace", "set-var", "x", "2")
    assert "trace: " in traced.err and " received: set-var from " in traced.err and " queued: behind " in traced.err
    read = area.ok("get-var", "x", "--trace")
    assert read.out == "2\n" and " read: on dbtool-reader" in read.err
    failing = area.run("get-var", "nope", "--trace")
    assert failing.code == 1 and "trace: " in failing.err


def test_server_stats(area):
    for i in range(5):
        area.ok("set-var", f"v{i}", str(i))
    area.ok("get-var", "v1")
    stats = area.ok("server", "stats", "--json").json
    s = stats["commands"]["set-var"]
    assert s["count"] == 5 and s["errors"] == 0 and 0 < s["p50_ms"] <= s["p95_ms"] <= s["max_ms"]
    assert stats["queue_depth"] == 0 and stats["connections"] >= 1 and stats["uptime"] > 0
    table = area.ok("server", "stats").out.splitlines()
    assert table[0].startswith("uptime ") and table[1].split()[:3] == ["command", "count", "errors"]
    area.ok("server", "stop")
    assert "request statistics at stop" in (area.dir / "logs" / "server.log").read_text()


# -- watch ------------------------------------------------------------------------------------------------


def test_watch_replays_then_goes_live_without_gap_or_repeat(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    for i in range(10):
        area.ok("set-var", f"before{i}", "1")
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            area.ok("set-var", f"during{i}", "1")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        time.sleep(0.5)
        watched = area.ok("watch", "--since", "0", "--count", "40", "--json", timeout=120)
    finally:
        stop.set()
        thread.join()
    seqs = [json.loads(line)["seq"] for line in watched.out.splitlines()]
    assert seqs == list(range(1, 41))  # replayed and live events, contiguous: no gap, no repeat


def test_watch_filters_by_run_and_test_pattern(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "a")
    area.ok("register-run", "--target", "v1/mac", "--runname", "b")
    for run, test in (("1", "unit"), ("2", "unit"), ("1", "lint"), ("1", "unit")):
        area.ok("set-state-status-and-roll-up-items", "--run-id", run, "--testname", test, "--state", "RUNNING")
    got = area.ok("watch", "--since", "0", "--run-id", "1", "--testpatt", "unit", "--count", "3", "--json").json_lines
    assert all(e["run_id"] == 1 and e["testname"] == "unit" for e in got)


def test_stalled_watcher_never_delays_writers_and_gets_resync(area):
    area.set_config("server", "watch_queue", "50")
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("server", "stop")
    con = sqlite3.connect(area.dir / "dbtool.db")
    con.executemany("insert into tests (run_id, testname) values (1, ?)", [(f"t{i}",) for i in range(2000)])
    con.commit()
    con.close()
    area.ok("set-var", "x", "0")
    stalled = Raw(area, rcvbuf=4096)
    ack = stalled.request("watch-stream", {})
    assert ack["ok"] is True and ack["result"]["watching"] is True
    # this watcher reads nothing while 4000 events and 60 more writes go through
    for state in ("A", "B"):
        area.ok("set-tests-state-status", "--run-id", "1", "--testnames", "t%", "--new-state", state)
    for i in range(60):
        area.ok("set-var", f"w{i}", str(i))
    assert area.ok("server", "status", "--json").json["queue_depth"] == 0
    # when it finally reads: the events it got before falling behind, then where to replay from
    events = []
    while True:
        event = stalled.read()
        assert event is not None, "the stream ended without a resync marker"
        if event["event"] == "resync":
            break
        if event["event"] == "live":  # the (empty) replay is complete
            assert event["seq"] == ack["result"]["live_from"]
            continue
        events.append(event)
    stalled.close()
    assert len(events) < 4000
    assert event["from_seq"] == (events[-1]["seq"] if events else ack["result"]["live_from"])
    assert [e["seq"] for e in events] == list(range(ack["result"]["live_from"] + 1, event["from_seq"] + 1))
    # the CLI resubscribes after a resync by itself: from 0 it sees every stored event exactly once
    total = sqlite3.connect(area.dir / "dbtool.db").execute("select max(seq) from events").fetchone()[0]
    seqs = [e["seq"] for e in area.ok("watch", "--since", "0", "--count", str(total), "--json").json_lines]
    assert seqs == list(range(1, total + 1))


def test_watch_ends_when_the_server_stops_and_a_vanished_watcher_is_dropped(area):
    area.ok("set-var", "x", "0")
    with Raw(area) as gone:
        assert gone.request("watch-stream", {})["ok"] is True
    assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 0)
    proc = area.popen("watch", "--json")
    assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 1)
    area.ok("server", "stop")
    # a script can tell "the server stopped" (exit 3, and where to resume) from "--count reached" (0)
    assert proc.wait(timeout=30) == 3
    err = proc.stderr.read()
    assert err.startswith("dbtool: error: the server stopped") and "dbtool watch" in err and "--since" in err, err
    assert err.count("\n") == 1
    proc.stdout.close()
    proc.stderr.close()


def test_half_closed_connections_get_their_answers_then_eof(area):
    """A client that shuts its sending side: a watch ends (unsubscribed), a last line without a
    newline is still answered, and the server then closes the connection."""
    import socket

    area.ok("set-var", "x", "0")
    with Raw(area) as watcher:
        watcher.send_line(json.dumps({"id": 1, "cmd": "watch-stream", "params": {}}).encode())
        watcher.sock.shutdown(socket.SHUT_WR)
        answers = []
        while (line := watcher.read()) is not None:
            answers.append(line)
        assert answers[0]["ok"] is True and answers[0]["result"]["watching"] is True
    with Raw(area) as unterminated:  # the watch is the last line, without its newline
        unterminated.f.write(json.dumps({"id": 2, "cmd": "watch-stream", "params": {}}).encode())
        unterminated.f.flush()
        unterminated.sock.shutdown(socket.SHUT_WR)
        assert unterminated.read()["result"]["watching"] is True
        area.ok("set-var", "x", "1")
        lines = []
        while (line := unterminated.read()) is not None:
            lines.append(line)
        assert len(lines) <= 1  # at most the "live" marker: the stream ended, the connection closed
    assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 0)
    with Raw(area) as pinger:
        pinger.f.write(json.dumps({"id": 7, "cmd": "ping", "params": {}}).encode())  # no newline
        pinger.f.flush()
        pinger.sock.shutdown(socket.SHUT_WR)
        answer = pinger.read()
        assert answer["id"] == 7 and answer["ok"] is True
        assert pinger.read() is None


def test_list_results_are_packed_only_for_clients_that_ask(area):
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "r").out.strip()
    for name in ("a", "b", "c"):
        area.ok("register-test", "--run-id", run_id, "--testname", name)
    with Raw(area) as raw:
        plain = raw.request("get-tests-for-run", {"run_id": int(run_id)})
        packed = raw.request("get-tests-for-run", {"run_id": int(run_id)}, pack=True)
        bad = raw.request("get-tests-for-run", {"run_id": int(run_id)}, pack="yes")
    assert [t["testname"] for t in plain["result"]] == ["a", "b", "c"]
    assert "result" not in packed and packed["records"]["columns"] == list(plain["result"][0])
    columns = packed["records"]["columns"]
    assert [dict(zip(columns, row, strict=True)) for row in packed["records"]["rows"]] == plain["result"]
    assert bad["error"]["code"] == "bad_request" and "pack" in bad["error"]["message"]
    # the CLI asks for packed records and prints the same records
    assert [t["testname"] for t in area.ok("get-tests-for-run", "--run-id", run_id, "--json").json] == ["a", "b", "c"]
    with Raw(area) as raw:  # one row or none: packed too, and read back the same
        one = raw.request("get-tests-for-run", {"run_id": int(run_id), "testpatt": "b"}, pack=True)
        none = raw.request("get-tests-for-run", {"run_id": int(run_id), "testpatt": "zz"}, pack=True)
    assert [dict(zip(columns, row, strict=True)) for row in one["records"]["rows"]] == plain["result"][1:2]
    assert (
        none["records"]["rows"] == []
        and area.ok("get-tests-for-run", "--run-id", run_id, "--testpatt", "zz", "--json").json == []
    )


def test_watcher_limit_is_a_clear_refusal(area):
    area.set_config("server", "max_subscribers", "1")
    area.ok("set-var", "x", "0")
    with Raw(area) as first:
        assert first.request("watch-stream", {})["ok"] is True
        second = area.run("watch", "--count", "1")
        assert second.code == 4 and "watchers already" in second.err


# -- backpressure and limits --------------------------------------------------------------------------


def hold_write_lock(area):
    """Another process takes the database's write lock, so the server's writer must wait."""
    con = sqlite3.connect(area.dir / "dbtool.db", timeout=30, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    return con


def test_busy_queue_answers_busy_ping_never_waits_and_client_exits_3(area):
    area.set_config("server", "max_queue", "1")
    area.ok("set-var", "x", "0")
    blocker = hold_write_lock(area)
    try:
        stuck = area.popen("set-var", "stuck", "1")  # fills the one queue place, waiting for the lock
        assert wait_for(lambda: area.ok("server", "status", "--json").json["queue_depth"] >= 1)
        assert area.ok("ping").code == 0  # answered at once, never behind the queue
        late = area.run("set-var", "late", "1", "--timeout", "1.5")
        assert late.code == 3 and "stayed busy" in late.err and "writes are queued" in late.err
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert stuck.wait(timeout=60) == 0
    stuck.stdout.close()
    stuck.stderr.close()
    assert area.ok("get-var", "stuck").out == "1\n"
    assert area.run("get-var", "late").code == 1  # a refused write left nothing behind


def test_busy_writes_are_retried_until_they_succeed(area):
    area.set_config("server", "max_queue", "2")
    area.ok("set-var", "x", "0")
    procs = [area.popen("inc-var", "n") for _ in range(16)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 16
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert area.ok("get-var", "n").out == "16\n"


def test_connection_limit(area):
    area.set_config("server", "max_connections", "2")
    area.ok("set-var", "x", "0")
    with Raw(area) as first, Raw(area) as second:
        assert first.request("ping")["ok"] and second.request("ping")["ok"]  # both proven: the limit is reached
        with Raw(area, authenticate=False) as third:
            assert third.hello["ok"] is False and third.hello["error"]["code"] == "busy"
            assert "connections already" in third.hello["error"]["message"]
    assert area.ok("get-var", "x").out == "0\n"


def test_idle_connections_are_closed(area):
    area.set_config("server", "connection_idle_timeout", "1")
    area.ok("set-var", "x", "0")
    with Raw(area) as idle:
        assert idle.request("ping")["ok"] is True
        time.sleep(3)
        assert idle.read() is None  # closed by the server
    assert area.ok("get-var", "x").out == "0\n"


def test_handshake_must_come_in_time(area):
    area.set_config("server", "handshake_timeout", "1")
    area.ok("set-var", "x", "0")
    with Raw(area, authenticate=False) as silent:
        assert "nonce" in silent.hello
        refused = silent.read()  # a silent client holds a connection at most handshake_timeout seconds
        assert refused["error"]["code"] == "unauthorized" and "no handshake within 1 s" in refused["error"]["message"]
        assert silent.read() is None


# -- idempotency ----------------------------------------------------------------------------------------


def test_a_retried_write_is_applied_once_even_across_a_restart(area):
    area.ok("set-var", "x", "0")
    with Raw(area) as raw:
        first = raw.request("inc-var", {"var": "n"}, idem="abc123")
        again = raw.request("inc-var", {"var": "n"}, idem="abc123")
        other = raw.request("inc-var", {"var": "n"}, idem="def456")
    assert (first["result"], again["result"], other["result"]) == (1, 1, 2)
    os.kill(area.server_info["pid"], signal.SIGKILL)
    assert wait_for(lambda: not area.server_pids())
    area.ok("set-var", "y", "0")  # a new server
    with Raw(area) as raw:
        assert raw.request("inc-var", {"var": "n"}, idem="abc123")["result"] == 1
    assert area.ok("get-var", "n").out == "2\n"
    with Raw(area) as raw:
        assert raw.request("inc-var", {"var": "n"}, idem="x" * 200)["error"]["code"] == "bad_request"


# -- version, key, restart ----------------------------------------------------------------------------------

FAKE_SERVER = r"""
import json, os, socket, sys, time
from filelock import FileLock
root, protocol = sys.argv[1], int(sys.argv[2])
lock = FileLock(os.path.join(root, ".dbtool", "server.lock")); lock.acquire()
listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(8)
port = listener.getsockname()[1]
info = {"host": "127.0.0.1", "port": port, "pid": os.getpid(), "key": "00" * 16, "version": "0.0.1",
        "protocol": protocol, "instance": "fake", "area": root, "started_at": time.time()}
with open(os.path.join(root, ".dbtool", "server.json"), "w") as f: json.dump(info, f)
print("ready", flush=True)
deadline = time.time() + 60
listener.settimeout(1)
while time.time() < deadline:
    try: conn, _ = listener.accept()
    except socket.timeout: continue
    conn.sendall((json.dumps({"hello": "dbtool", "protocol": protocol, "version": "0.0.1", "instance": "fake",
                              "nonce": "aa"}) + "\n").encode())
    conn.close()
"""


def start_fake_server(area, protocol: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", FAKE_SERVER, str(area.root), str(protocol), "dbtool-fake-server"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_version_mismatch_is_explicit_never_autostarts_and_restart_replaces(area):
    fake = start_fake_server(area, protocol=99)
    try:
        r = area.run("set-var", "x", "1")
        assert r.code == 3 and "protocol 99 (dbtool 0.0.1)" in r.err and "server restart" in r.err
        assert area.server_pids() == []  # no second server was started
        restarted = area.ok("server", "restart")
        assert fake.wait(timeout=30) == -signal.SIGTERM
        info = area.server_info
        assert info["instance"] != "fake" and f"(pid {info['pid']})" in restarted.out
        area.ok("set-var", "x", "1")
    finally:
        if fake.poll() is None:
            fake.kill()
        fake.wait()
        fake.stdout.close()


def test_unauthorized_never_autostarts(area):
    area.ok("set-var", "x", "1")
    info = area.server_info
    tampered = {**info, "key": "11" * 16}
    (area.dir / "server.json").write_text(json.dumps(tampered))
    r = area.run("--timeout", "3", "set-var", "x", "2")
    # the server cannot prove a key it does not hold: the record is as good as dead, but the area's
    # live server holds its lock, so nothing replaces it
    assert r.code == 3 and "cannot prove the area's key" in r.err and "alive but unreachable" in r.err, r
    assert area.server_pids() == [info["pid"]]
    (area.dir / "server.json").write_text(json.dumps(info))
    assert area.ok("get-var", "x").out == "1\n"


def test_restart_of_a_current_server(area):
    area.ok("set-var", "x", "1")
    old = area.server_info["pid"]
    area.ok("server", "restart")
    assert area.server_info["pid"] != old and area.server_pids() == [area.server_info["pid"]]
    assert area.ok("get-var", "x").out == "1\n"


# -- permissions, bind address, read-only and full databases, journal mode ---------------------------------------


def test_share_group_makes_area_group_readable(area):
    area.set_config("server", "share_group", "true")
    area.ok("set-var", "x", "1")
    assert stat.S_IMODE(area.dir.stat().st_mode) == 0o750
    assert stat.S_IMODE((area.dir / "server.json").stat().st_mode) == 0o640


def test_bind_and_port_options(area):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    area.ok("server", "start", "--bind", "127.0.0.1", "--port", str(port))
    assert (area.server_info["address"], area.server_info["port"]) == ("127.0.0.1", port)
    area.ok("set-var", "x", "1")


def test_read_only_area_refuses_writes_and_serves_reads(area):
    area.ok("set-var", "x", "1")
    area.ok("server", "stop")
    area.set_config("db", "read_only", "true")
    r = area.run("set-var", "x", "2")
    assert r.code == 4 and "read-only" in r.err and "db.read_only" in r.err
    assert area.ok("get-var", "x").out == "1\n"
    assert area.ok("server", "status", "--json").json["read_only"] is True


def test_full_database_refuses_writes_commits_nothing_and_stays_up(area):
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("server", "stop")
    area.set_config("db", "max_size_mb", "0.3")
    area.ok("set-var", "small", "1")
    big = "x" * 100_000  # (a command-line argument holds at most 128 KiB)
    results = [area.run("set-var", f"big{i}", big) for i in range(4)]
    refused = [r for r in results if r.code != 0]
    assert refused and all(r.code == 4 and "full" in r.err for r in refused)
    pid = area.server_info["pid"]
    assert area.ok("get-var", "small").out == "1\n" and area.server_pids() == [pid]
    stored = {i for i in range(4) if area.run("get-var", f"big{i}").code == 0}
    assert stored == {i for i, r in enumerate(results) if r.code == 0}  # acknowledged == committed
    area.ok("set-var", "small", "2")  # small writes still fit
    assert area.ok("ping", "--json").json["pid"] == pid


def test_journal_mode_auto_wal_locally_delete_on_network_filesystems(area, tmp_path):
    from dbtool.core.db.engine import journal_mode_for

    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {tmp_path} nfs4 rw 0 0\n/dev/vda / ext4 rw 0 0\n")
    assert journal_mode_for(str(tmp_path / "x" / "dbtool.db"), "auto", str(mounts)) == "DELETE"
    assert journal_mode_for("/elsewhere/dbtool.db", "auto", str(mounts)) == "WAL"
    assert journal_mode_for("/any/dbtool.db", "truncate") == "TRUNCATE"
    area.set_config("db", "journal_mode", '"delete"')
    area.ok("set-var", "x", "1")
    con = sqlite3.connect(area.dir / "dbtool.db")
    assert con.execute("pragma journal_mode").fetchone()[0] == "delete"
    con.close()
    assert area.ok("get-var", "x").out == "1\n"
    area.set_config("db", "journal_mode", '"bogus"')
    area.ok("server", "stop")
    bad = area.run("set-var", "x", "2")
    assert bad.code == 4 and "journal_mode" in bad.err and bad.err.count("\n") == 1  # a refusal naming it


@pytest.mark.parametrize("args", [["server", "stats"], ["server", "status"]])
def test_server_reports_without_server_exit_3(area, args):
    r = area.run(*args)
    assert r.code == 3 and "no server is running" in r.err


def test_cli_watch_exits_cleanly_when_interrupted(area):
    area.ok("set-var", "x", "1")
    proc = subprocess.Popen(
        dbtool_argv("--area", str(area.root), "watch"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=20) == 130
    assert b"Traceback" not in proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()


def test_restart_never_signals_a_pid_of_another_host(area):
    """A server that does not answer is signalled by its pid only on its own host: the same pid on
    another host is somebody else's process."""
    area.ok("set-var", "x", "1")
    info = area.server_info
    os.kill(info["pid"], signal.SIGSTOP)  # alive (it holds its lock) but not answering
    try:
        elsewhere = area.run("--timeout", "2", "server", "restart", env={"DBTOOL_HOSTNAME": "otherhost"})
        assert elsewhere.code == 3 and f"runs on {info['hostname']}" in elsewhere.err, elsewhere
        assert area.server_pids() == [info["pid"]] and area.server_info["instance"] == info["instance"]
    finally:
        os.kill(info["pid"], signal.SIGCONT)
    here = area.ok("--timeout", "20", "server", "restart")  # on its own host: replaced
    assert area.server_info["instance"] != info["instance"], here
