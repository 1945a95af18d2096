"""Trust between a client and the area's server: who may answer, which records count, and what
peers without the key can (not) do to the server (reliability report F1, F4, F9, F11, F12; audit
B3, B4, B5)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import PYTHON, Raw, wait_for

ROGUE = r"""
import json, socket, sys, threading
port, log = int(sys.argv[1]), sys.argv[2]
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(128)
print("listening", flush=True)
def serve(c):
    f = c.makefile("rwb")
    hello = {"hello": "dbtool", "protocol": 2, "version": "9", "instance": "rogue", "nonce": "00" * 16}
    f.write(json.dumps(hello).encode() + b"\n")
    f.flush()
    for line in f:
        with open(log, "a") as out:
            out.write(line.decode(errors="replace"))
        m = json.loads(line)
        if "challenge" in m:
            f.write(b'{"proof": "' + b"ab" * 32 + b'"}\n')  # it cannot prove a key it does not hold
        else:
            f.write(json.dumps({"id": m.get("id"), "request_id": "x", "ok": True, "result": None}).encode() + b"\n")
        f.flush()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def kill_server(area) -> dict:
    info = area.server_info
    os.kill(info["pid"], signal.SIGKILL)
    assert wait_for(lambda: not area.server_pids())
    return info


def test_a_listener_on_a_dead_servers_port_gets_no_request_and_writes_land(area, tmp_path):
    """F1: a process that took a dead server's port cannot prove the area's key: it receives a
    random challenge and nothing else, and every write goes to a new, real server."""
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    info = kill_server(area)
    log = tmp_path / "rogue.log"
    rogue = subprocess.Popen([PYTHON, "-c", ROGUE, str(info["port"]), str(log)], stdout=subprocess.PIPE, text=True)
    try:
        assert rogue.stdout.readline().strip() == "listening"
        for i in range(5):
            area.ok("set-var", f"k{i}", f"v{i}")
        job = area.run("exec", "--run-id", "1", "--testname", "job", "--", PYTHON, "-c", "pass")
        assert job.code == 0, job
        lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        assert lines and all(set(m) == {"challenge", "protocol"} for m in lines), lines  # no auth, no request
        assert area.server_info["instance"] != info["instance"]  # a new server took over
    finally:
        rogue.kill()
        rogue.wait()
        rogue.stdout.close()
    assert [area.ok("get-var", f"k{i}").out for i in range(5)] == [f"v{i}\n" for i in range(5)]
    test = area.ok("get-tests-for-run", "--run-id", "1", "--json").json[0]
    assert (test["testname"], test["state"], test["status"]) == ("job", "COMPLETED", "PASS")


def test_another_areas_live_server_behind_a_stale_record_is_recovered_from(make_area):
    """B3: the record of a killed server names a port that another area's server now owns: reads go
    to the database, writes start this area's own server, server stop clears the record."""
    a, b = make_area("a"), make_area("b")
    a.ok("set-var", "x", "1")
    stale = kill_server(a)
    b.ok("set-var", "y", "2")
    (a.dir / "server.json").write_text(json.dumps({**stale, "port": b.server_info["port"]}))
    os.chmod(a.dir / "server.json", 0o600)
    assert a.ok("get-var", "x").out == "1\n"  # direct read, not "unauthorized"
    assert a.ok("server", "stop").err.startswith("dbtool: no server is running")
    assert a.server_info is None
    (a.dir / "server.json").write_text(json.dumps({**stale, "port": b.server_info["port"]}))
    os.chmod(a.dir / "server.json", 0o600)
    a.ok("set-var", "x", "3")  # recovered: a server of its own
    assert a.server_info["port"] != b.server_info["port"] and len(a.server_pids()) == 1
    assert a.ok("get-var", "x").out == "3\n" and b.ok("get-var", "y").out == "2\n"


@pytest.mark.parametrize("how", ["owner", "mode", "symlink", "directory-owner"])
def test_a_server_record_anyone_else_could_have_written_is_refused(area, tmp_path, how):
    """F1: whoever writes server.json chooses where writes go: a record (or .dbtool/) owned by
    someone else than the area's owner or the caller, or writable by others, or a symlink, is
    refused with the reason (exit 4) instead of trusted."""
    area.ok("set-var", "x", "1")
    record = area.dir / "server.json"
    if how == "owner":
        os.chown(record, 65534, -1)
    elif how == "mode":
        os.chmod(record, 0o666)
    elif how == "symlink":
        target = tmp_path / "elsewhere.json"
        target.write_text(record.read_text())
        record.unlink()
        record.symlink_to(target)
    else:
        os.chown(area.dir, 65534, -1)
    try:
        for args in (("set-var", "x", "2"), ("get-var", "x"), ("ping",)):
            r = area.run(*args)
            assert r.code == 4 and r.err.startswith("dbtool: error: refusing ") and r.err.count("\n") == 1, r
    finally:
        os.chown(area.dir, 0, -1)
    record.unlink()
    assert area.ok("get-var", "x").out == "1\n"


def test_planted_links_at_temporary_names_are_never_followed(area, tmp_path):
    """F11: the server writes server.json through a fresh file of a random name (O_EXCL)."""
    outside = tmp_path / "outside.txt"
    outside.write_text("unrelated\n")
    os.chmod(outside, 0o644)
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last + 1, last + 200):
        os.symlink(outside, area.dir / f".server.json.{pid}.tmp")
    area.ok("set-var", "x", "1")
    assert outside.read_text() == "unrelated\n" and (outside.stat().st_mode & 0o777) == 0o644
    assert not (area.dir / "server.json").is_symlink() and area.server_info["pid"] in area.server_pids()


def test_server_stop_waits_out_a_busy_server_and_closed_connections_free_their_slot(area):
    """B4: `server stop` retries a busy answer like every command; a closed connection stops
    counting at once."""
    area.set_config("server", "max_connections", "2")
    area.ok("set-var", "x", "0")
    area.ok("get-var", "x")
    area.ok("get-var", "x")
    assert area.ok("server", "status", "--json").json["connections"] == 1  # just the status call itself
    first, second = Raw(area), Raw(area)
    assert first.request("ping")["ok"] and second.request("ping")["ok"]
    stop = area.popen("server", "stop")
    time.sleep(1.5)
    assert stop.poll() is None  # still retrying: the server is busy, not dead
    first.close()
    second.close()
    assert stop.wait(timeout=60) == 0, stop.stderr.read()
    stop.stdout.close()
    stop.stderr.close()
    assert area.wait_no_server()


def test_unproven_connections_cannot_crowd_out_real_clients(area):
    """F4: connections that never prove the key have a budget of their own (the oldest is dropped
    past it), a short deadline and a small line limit: real clients keep getting through."""
    area.set_config("server", "max_pending", "16")
    area.set_config("server", "max_connections", "100")  # fewer than the crowd: it must not count
    area.ok("set-var", "x", "0")
    info = area.server_info
    stop = threading.Event()
    held: list[socket.socket] = []

    def crowd() -> None:  # keep 200 unproven connections open, reopening those the server drops
        while not stop.is_set():
            held[:] = [s for s in held if s.fileno() >= 0]
            while len(held) < 200 and not stop.is_set():
                try:
                    held.append(socket.create_connection((info["address"], info["port"]), timeout=2))
                except OSError:
                    break
            for s in list(held):
                s.setblocking(False)
                try:
                    if s.recv(65536) == b"":
                        s.close()
                except BlockingIOError:
                    pass
                except OSError:
                    s.close()
            time.sleep(0.05)

    crowder = threading.Thread(target=crowd, daemon=True)
    crowder.start()
    try:
        time.sleep(1)
        results = [area.run("--timeout", "20", "inc-var", "n") for _ in range(10)]
    finally:
        stop.set()
        crowder.join(timeout=30)
        for s in held:
            s.close()
    assert [r.code for r in results] == [0] * 10, [r.err for r in results if r.code]
    assert area.ok("get-var", "n").out == "10\n"


def test_a_long_line_before_the_handshake_is_refused_and_costs_no_memory(area):
    """F4: before a connection proves the key, a line may be a few KiB, not 16 MiB."""
    area.ok("set-var", "x", "0")
    info = area.server_info
    pid = info["pid"]

    def rss_mb() -> int:
        with open(f"/proc/{pid}/status") as f:
            return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) // 1024

    before = rss_mb()
    socks = []
    for _ in range(32):
        s = socket.create_connection((info["address"], info["port"]), timeout=10)
        s.recv(1000)  # the hello
        try:
            s.sendall(b"x" * (1 << 20))  # 1 MiB, no newline
        except OSError:
            pass  # refused and closed before it all arrived
        socks.append(s)
    answers = []
    for s in socks:
        data = b""
        try:
            while b"handshake line" not in data and (chunk := s.recv(65536)):
                data += chunk
        except OSError:
            pass
        answers.append(data)
        s.close()
    assert all(b"handshake line is at most" in a or a == b"" for a in answers)
    assert any(b"handshake line is at most" in a for a in answers)
    assert rss_mb() - before < 100, (before, rss_mb())
    assert area.ok("get-var", "x").out == "0\n"


def test_refused_requests_are_logged_and_counted_under_their_cli_names(area):
    """B5: every refused request is in the request log under its id, counted in the statistics,
    and logs and statistics name commands as the CLI does."""
    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    t = area.ok("register-test", "--run-id", "1", "--testname", "t").out.strip()
    area.ok("csv-to-test-data", "--test-id", t, "--csv", "c,v,1,1")
    with Raw(area) as raw:
        raw.send_line(b"{not json")
        malformed = raw.read()
        unknown = raw.request("frobnicate")
        wrong_type = raw.request("get-run-info", {"run_id": "one"})
        missing = raw.request("get-run-info", {})
        empty_state = raw.request("test-set-state-status-by-id", {"test_id": int(t), "state": ""})
    for answer in (malformed, unknown, wrong_type, missing, empty_state):
        rid = answer["request_id"]
        logged = area.ok("server", "log", "--request", rid, "--json").json
        assert logged["ok"] is False and logged["error"]["code"] == answer["error"]["code"], (answer, logged)
    assert empty_state["error"]["code"] == "refused"
    stats = area.ok("server", "stats", "--json").json["commands"]
    assert stats["get-run-info"]["errors"] == 2 and stats["(invalid request)"]["errors"] == 2
    assert stats["test-set-state-status-by-id"]["errors"] == 1
    assert "csv-to-test-data" in stats and "csv->test-data" not in stats
    by_cli_name = area.ok("server", "log", "--cmd", "csv-to-test-data").out
    by_megatest_name = area.ok("server", "log", "--cmd", "csv->test-data").out
    assert " csv-to-test-data " in by_cli_name and by_cli_name == by_megatest_name


def test_a_wildcard_bind_advertises_an_address_clients_can_reach(area):
    """F12: server.json never says 0.0.0.0."""
    area.set_config("server", "bind", '"0.0.0.0"')
    area.ok("set-var", "x", "1")
    info = area.server_info
    assert info["address"] not in ("0.0.0.0", "", "::") and info["hostname"]
    assert area.ok("get-var", "x").out == "1\n" and area.ok("ping", "--json").json["address"] == info["address"]
    area.ok("server", "restart", "--advertise", "127.0.0.1")
    assert area.server_info["address"] == "127.0.0.1"


def test_a_read_with_a_short_timeout_reads_directly_when_the_server_hangs(area):
    """F12: a hung server never makes a read fail: it reads the database instead."""
    area.ok("set-var", "x", "1")
    pid = area.server_info["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        r = area.run("--timeout", "3", "get-var", "x", timeout=60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r.code == 0 and r.out == "1\n", r


def test_an_answer_longer_than_a_request_line_still_comes_from_the_server(area):
    """F12: the 16 MiB limit is for requests; a server that proved the key may answer more."""
    import sqlite3

    area.ok("register-run", "--target", "v1/linux", "--runname", "r")
    area.ok("server", "stop")
    con = sqlite3.connect(area.dir / "dbtool.db")
    comment = "c" * 2000
    con.executemany(
        "insert into tests (run_id, testname, item_path, state, status, comment)"
        " values (1, ?, '', 'COMPLETED', 'PASS', ?)",
        ((f"t{i}", comment) for i in range(10_000)),
    )
    con.commit()
    con.close()
    area.ok("set-var", "x", "1")  # a server
    r = area.ok("--trace", "get-tests-for-run", "--run-id", "1", "--fields", "id,comment", "--json")
    assert len(r.json) == 10_000 and len(r.out) > 17 * 1024 * 1024
    assert "trace:" in r.err and "read: on dbtool-reader" in r.err  # answered by the server, not directly


def read_until(watch: subprocess.Popen, last: int) -> list[int]:
    """The seqs a `watch --json` process prints until it printed ``last`` (or a minute passed);
    the process is stopped after."""
    seqs: list[int] = []
    deadline = time.monotonic() + 60
    try:
        while (not seqs or seqs[-1] < last) and time.monotonic() < deadline:
            line = watch.stdout.readline()
            if not line:
                break
            seqs.append(json.loads(line)["seq"])
    finally:
        watch.terminate()
        watch.wait(timeout=30)
        watch.stdout.close()
        watch.stderr.close()
    return seqs


@contextlib.contextmanager
def _stopped(area, watch: subprocess.Popen):
    """A `dbtool watch` process, once subscribed, stopped (SIGSTOP) for the block: it reads nothing."""
    assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 1)
    os.kill(watch.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(watch.pid, signal.SIGCONT)


def _flood(area, prefix: str, count: int = 3000) -> None:
    """Events of 8 kB each: they fill the socket buffers (several MiB on loopback) quickly."""
    big = "x" * 8000
    with Raw(area) as raw:
        for i in range(count):
            assert raw.request("set-var", {"var": f"{prefix}{i}", "value": big}, idem=f"{prefix}-{i}")["ok"]


def test_a_stalled_watcher_is_dropped_then_resumes_with_no_gap_and_no_repeat(area):
    """F4 and F9: a watcher that stops reading does not hold its slot for good; when it reads
    again it resubscribes from its last event: every event once, in order."""
    area.set_config("server", "watch_queue", "50")
    area.set_config("server", "watch_stall_timeout", "2")
    area.ok("set-var", "warm", "1")
    watch = area.popen("watch", "--json", "--since", "0")
    with _stopped(area, watch):
        _flood(area, "v")
        assert wait_for(lambda: area.ok("server", "status", "--json").json["subscribers"] == 0, timeout=60)
    last = area.ok("server", "status", "--json").json["last_event_seq"]
    seqs = read_until(watch, last)
    assert seqs == list(range(1, last + 1)), (len(seqs), last, [a for a, b in pairwise(seqs) if b != a + 1][:5])


def test_resync_repeats_no_event(area):
    """F9: a watcher told to resync resubscribes exactly after the last event it got."""
    area.set_config("server", "watch_queue", "100")
    area.ok("set-var", "warm", "1")
    watch = area.popen("watch", "--json", "--since", "1")
    with _stopped(area, watch):
        _flood(area, "w")  # the watcher's queue overflows: it is told to resync
    last = area.ok("server", "status", "--json").json["last_event_seq"]
    seqs = read_until(watch, last)
    assert seqs == list(range(2, last + 1)), [a for a, b in pairwise(seqs) if b != a + 1][:5]


def test_writes_to_a_read_only_area_are_refused_with_the_reason(area, tmp_path):
    """F8 (the client's side): no lock file can be made on a read-only mount; that is a refusal
    (exit 4, saying so), not an internal error."""
    area.ok("set-var", "v", "1")
    area.ok("server", "stop")
    assert area.wait_no_server()
    mount = tmp_path / "ro"
    mount.mkdir()
    subprocess.run(["mount", "--bind", str(area.root), str(mount)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mount)], check=True)
        r = subprocess.run(
            [PYTHON, "-m", "dbtool.cli", "--area", str(mount), "set-var", "w", "2"], capture_output=True, text=True
        )
        assert r.returncode == 4 and "read-only" in r.stderr and r.stderr.count("\n") == 1, r
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_damaged_server_record_is_no_server(area):
    """B13: a damaged server.json (a crash mid-write on an old dbtool, or a stray file) is as good as
    none: reads read the database, writes start a server, server stop clears it."""
    area.ok("set-var", "x", "1")
    kill_server(area)
    area.set_config("server", "start_on_read", "false")  # the reads below stay direct: no server replaces the record
    for damage in ("{garbage", '{"a" 1}', "\x00\xff", ""):
        (area.dir / "server.json").write_text(damage, errors="surrogateescape")
        os.chmod(area.dir / "server.json", 0o600)
        assert area.ok("get-var", "x").out == "1\n"
        assert area.ok("server", "stop").err.strip().endswith("(removed a damaged server.json)")
        assert not (area.dir / "server.json").exists()
    (area.dir / "server.json").write_text("{garbage")
    os.chmod(area.dir / "server.json", 0o600)
    area.ok("set-var", "x", "2")
    assert area.ok("get-var", "x").out == "2\n" and len(area.server_pids()) == 1


def test_a_failed_connection_reads_server_json_again_before_concluding(area, monkeypatch):
    """NFS: a client may see an old copy of server.json for seconds. A connection that fails makes
    the client read the record again; a newer one is used at once (a read is not sent to the
    database directly, a write starts no server)."""
    from dbtool.core import client
    from dbtool.core.area import Area as CoreArea
    from dbtool.core.commands import COMMANDS

    area.ok("set-var", "x", "1")
    live = area.server_info
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    stale = {**live, "port": dead_port, "instance": "0123456789ab"}
    seen = []
    real = client.read_server_info

    def cached_then_fresh(a):
        seen.append(1)
        return stale if len(seen) == 1 else real(a)

    monkeypatch.setattr(client, "read_server_info", cached_then_fresh)
    core_area = CoreArea(str(area.root))
    reply = client.call(core_area, COMMANDS["get-var"], {"var": "x"}, timeout=10)
    assert reply.result == 1 and reply.request_id and reply.request_id.startswith(live["instance"])
    assert len(seen) == 3  # the stale copy, the re-read after the failure, the fresh one used
    seen.clear()
    client.call(core_area, COMMANDS["set-var"], {"var": "y", "value": "2"}, timeout=10)
    assert area.server_info["instance"] == live["instance"] and area.server_pids() == [live["pid"]]
