"""Real hosts on one machine: one area (one filesystem, as NFS would share it) used from three hosts,
each a network namespace with its own address and host name, joined by a bridge (tests/netns.py).

Every dbtool process of these tests runs inside a host: the farm's addresses exist only there, so
nothing here ever sends a packet from the machine's own namespace. Reads back go to SQLite directly.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import netns
import pytest
from conftest import Result, _alive, area_processes, kill_area, wait_for

PY = sys.executable
HERE = Path(__file__).resolve().parent
WRITER = str(HERE / "farm_writer.py")
ROGUE = str(HERE / "farm_rogue.py")
HOSTS = ["hostA", "hostB", "hostC"]
TIMEOUT = "60"  # --timeout of every client: generous, only so that nothing hangs


class Cluster:
    """A farm of hosts and the area they share (its server binds every address)."""

    def __init__(self, farm: netns.Farm, area, tmp: Path) -> None:
        self.farm = farm
        self.area = area
        self.root = str(area.root)
        self.tmp = tmp

    def address(self, host: str) -> str:
        return self.farm.hosts[host].address

    def dbtool(self, host: str, *args: str, timeout: float = 120) -> Result:
        argv = self.farm.dbtool_argv(host, "--area", self.root, "--timeout", TIMEOUT, *args)
        return Result(subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL))

    def ok(self, host: str, *args: str) -> Result:
        result = self.dbtool(host, *args)
        assert result.code == 0, f"{host}: dbtool {' '.join(args)}: {result}"
        return result

    # -- the server -----------------------------------------------------------------------------------
    def servers(self) -> list[tuple[int, str | None]]:
        """(pid, host) of every server process of the area, in whichever namespace it runs."""
        return [(pid, self.farm.host_of(pid)) for pid in area_processes(self.root) if _alive(pid)]

    def server_log_pids(self) -> list[int]:
        """Pids of every server process that ever got as far as serving (in logs/server.log)."""
        try:
            text = (self.area.dir / "logs" / "server.log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return sorted({int(m) for m in re.findall(r"^\S+ \S+ (\d+) INFO dbtool \S+ serving ", text, re.M)})

    def check_server(self, allowed: tuple[str, ...]) -> dict:
        """The one live server: in one of ``allowed`` hosts, its server.json naming that host and
        its address; returns server.json."""
        info = self.area.server_info
        servers = self.servers()
        assert info is not None, f"no server.json; server processes: {servers}"
        assert len(servers) == 1, f"{len(servers)} server processes (pid, host): {servers}; server.json: {_brief(info)}"
        ((pid, host),) = servers
        assert host in allowed, f"the server (pid {pid}) runs in {host}, not in {allowed}"
        assert info["pid"] == pid and info["hostname"] == host, f"server.json {_brief(info)} vs process {pid} in {host}"
        assert info["address"] == self.address(host), f"advertised {info['address']}, {host} is {self.address(host)}"
        return info

    # -- writers ----------------------------------------------------------------------------------------
    def writers(
        self,
        plan: list[tuple[str, str]],
        count: int,
        *,
        run_id: int | None = None,
        register: str | None = None,
        pause=0.0,
    ) -> Writers:
        """Start one farm_writer per (host, name), all held at a barrier until ``Writers.go()``."""
        go = self.tmp / f"go-{time.monotonic_ns()}"
        procs = []
        for host, name in plan:
            args = ["--area", self.root, "--out", str(self.tmp / f"{name}.jsonl"), "--name", name]
            args += ["--count", str(count), "--go", str(go), "--pause", str(pause), "--timeout", TIMEOUT]
            args += ["--run-id", str(run_id)] if run_id is not None else ["--register", register]
            err = open(self.tmp / f"{name}.stderr", "w")  # noqa: SIM115 - closed by Writers.wait
            procs.append((name, self.farm.popen(host, PY, WRITER, *args, stdout=err, stderr=err), err))
        return Writers(self.tmp, go, procs)

    # -- the database -----------------------------------------------------------------------------------
    def query(self, sql: str, *args: object) -> list[tuple]:
        con = sqlite3.connect(self.area.dir / "dbtool.db", timeout=30)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def missing_writes(self, records: list[dict]) -> list[dict]:
        """The acknowledged writes (exit 0) whose effect is not in the database."""
        rows = {
            (run_id, name, item): (tid, state, status, comment)
            for tid, run_id, name, item, state, status, comment in self.query(
                "select id, run_id, testname, item_path, state, status, comment from tests"
            )
        }
        missing = []
        for r in records:
            if r["code"] != 0 or r["cmd"] == "register-run":
                continue
            row = rows.get((r["run_id"], r["testname"], r["item"]))
            if r["cmd"] == "register-test":
                if row is None or str(row[0]) != r["out"]:
                    missing.append({**r, "found": row})
            elif row is None or row[1:] != ("COMPLETED", "PASS", r["comment"]):
                missing.append({**r, "found": row})
        return missing

    def requests(self, cmd: str | None = None) -> list[dict]:
        """The request log's lines (of one command)."""
        path = self.area.dir / "logs" / "requests.jsonl"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in entries if cmd is None or e.get("cmd") == cmd]


class Writers:
    def __init__(self, tmp: Path, go: Path, procs: list) -> None:
        self.tmp = tmp
        self.go_file = go
        self.procs = procs

    def go(self) -> None:
        self.go_file.write_text("go")

    def records(self) -> list[dict]:
        found = []
        for name, _proc, _err in self.procs:
            try:
                text = (self.tmp / f"{name}.jsonl").read_text()
            except FileNotFoundError:
                continue
            found += [json.loads(line) for line in text.splitlines() if line.endswith("}")]
        return found

    def wait(self, timeout: float = 240) -> list[dict]:
        deadline = time.monotonic() + timeout
        codes = {}
        for name, proc, err in self.procs:
            try:
                codes[name] = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait(timeout=30)
            err.close()
        bad = {name: code for name, code in codes.items() if code != 0}
        errors = {name: (self.tmp / f"{name}.stderr").read_text()[-500:] for name in bad}
        assert not bad, f"{len(bad)} of {len(codes)} writers failed: {bad} {errors}"
        return self.records()


def _brief(info: dict | None) -> dict | None:
    return None if info is None else {k: v for k, v in info.items() if k != "key"}


def _failures(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ("host", "writer", "cmd", "j", "code", "err") if k in r} for r in records if r["code"]]


def _by_host(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r["host"]] = counts.get(r["host"], 0) + 1
    return counts


@pytest.fixture
def cluster(make_area, tmp_path):
    netns.require()
    area = make_area("farm")
    area.set_config("server", "bind", '"0.0.0.0"')
    farm = netns.Farm(HOSTS)
    try:
        farm.up()
    except netns.Unsupported as err:
        problems = farm.down()
        netns.unavailable(f"{err}{'; ' + '; '.join(problems) if problems else ''}")
    except BaseException:
        farm.down()
        raise
    try:
        yield Cluster(farm, area, tmp_path)
    finally:
        problems = farm.down()
        kill_area(str(area.root))
        assert not problems, f"farm teardown: {problems}"


def test_32_writers_on_two_hosts_write_through_a_server_on_a_third(cluster):
    run_id = int(cluster.ok("hostA", "register-run", "--target", "v1/farm", "--runname", "s1").out)
    info = cluster.check_server(("hostA",))
    plan = [(HOSTS[1 + k % 2], f"w{k:02d}") for k in range(32)]
    writers = cluster.writers(plan, count=4, run_id=run_id)
    started = time.monotonic()
    writers.go()
    records = writers.wait()
    took = time.monotonic() - started
    hosts = _by_host(records)
    assert len(records) == 128, f"{len(records)} writes recorded of 32 x 4 (by host {hosts})"
    failed = _failures(records)
    assert not failed, f"{len(failed)} of {len(records)} writes failed in {took:.1f} s: {failed[:5]}"
    missing = cluster.missing_writes(records)
    assert not missing, f"{len(missing)} of {len(records)} acknowledged writes are not in the database: {missing[:5]}"
    assert hosts == {"hostB": 64, "hostC": 64}, hosts

    # the server took them from both hosts, and stayed the one on A
    def logged():
        return len(cluster.requests("register-test")) + len(cluster.requests("set-state-status-and-roll-up-items"))

    assert wait_for(lambda: logged() >= 128), f"{logged()} of the 128 writes are in the request log"
    seen = _by_host(
        [
            {"host": e["client"].split("@", 1)[1].rsplit(":", 1)[0]}
            for e in cluster.requests()
            if e["cmd"] in ("register-test", "set-state-status-and-roll-up-items")
        ]
    )
    assert seen == {"hostB": 64, "hostC": 64}, f"request log clients by host: {seen}"
    after = cluster.check_server(("hostA",))
    assert after["instance"] == info["instance"], f"server replaced: {_brief(info)} -> {_brief(after)}"
    # off the loopback every connection was TLS, pinned by the record: in the clear, not a word
    assert len(info.get("tls_fingerprint", "")) == 64, _brief(info)
    plain = cluster.farm.run("hostB", PY, "-c", PLAIN_CLIENT, info["address"], str(info["port"]))
    assert plain.returncode == 0 and plain.stdout.strip() == "0 clear bytes", (plain.stdout, plain.stderr)
    print(f"\nfarm s1: 128 writes from {hosts} in {took:.1f} s, 0 errors, server {info['hostname']}:{info['address']}")


# A client that does not speak TLS: sends its challenge in the clear, prints how many bytes of the
# protocol came back in the clear (a hello, a proof).
PLAIN_CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b'{"protocol": 2, "challenge": "' + b"0" * 32 + b'"}\\n')
got = b""
try:
    while chunk := s.recv(4096):
        got += chunk
except OSError:
    pass
print(sum(len(w) for w in (b"hello", b"proof", b"nonce") if w in got), "clear bytes")
"""


def test_a_cold_area_written_from_two_hosts_at_once_starts_exactly_one_server(cluster):
    assert cluster.area.server_info is None and cluster.servers() == []
    plan = [(HOSTS[1 + k % 2], f"c{k:02d}") for k in range(16)]
    writers = cluster.writers(plan, count=3, register="v1/farm/s2")
    started = time.monotonic()
    writers.go()
    records = writers.wait()
    took = time.monotonic() - started
    failed = _failures(records)
    assert len(records) == 64 and not failed, f"{len(failed)} of {len(records)} writes (of 64) failed: {failed[:5]}"
    runs = {r["out"] for r in records if r["cmd"] == "register-run"}
    assert len(runs) == 1, f"16 racing register-run got run ids {runs}"
    missing = cluster.missing_writes(records)
    assert not missing, f"{len(missing)} acknowledged writes are not in the database: {missing[:5]}"
    info = cluster.check_server(("hostB", "hostC"))
    ever = cluster.server_log_pids()
    assert ever == [info["pid"]], (
        f"server processes that served: {ever}; the live one: {info['pid']} on {info['hostname']}"
    )
    print(f"\nfarm s2: 64 writes by host {_by_host(records)} in {took:.1f} s; one server, on {info['hostname']}")


JOB = """
import sys, time
time.sleep(14)
print("cut-now", flush=True)
time.sleep(14)
print("job-done", flush=True)
sys.exit(7)
"""
CUT = 20.0  # seconds A's link is down: from the job's "cut-now", so the job ends 14 s into the cut
HEARTBEAT = "20"  # the job is dead after 3 missed periods (60 s): far more than the cut


@pytest.mark.parametrize(
    "timeout",
    [
        pytest.param("90", id="retried"),  # outlasts the cut: exec-end is retried until the link is back
        pytest.param("3", id="spooled"),  # the cut outlasts it: exec-end is spooled, the live server replays it
    ],
)
def test_an_exec_job_outlasts_a_cut_of_the_servers_link(cluster, timeout):
    """The README: a report the server cannot take is retried with the same idempotency key; one not
    delivered within --timeout goes to the spool (on the shared area), which the live server replays
    within about a second, exactly once. Either way exec exits with CMD's code."""
    spooling = timeout == "3"
    run_id = cluster.ok("hostA", "register-run", "--target", "v1/farm", "--runname", "s3").out.strip()
    info = cluster.check_server(("hostA",))
    argv = ["--area", cluster.root, "--timeout", timeout, "exec", "--run-id", run_id, "--testname", "farmjob"]
    argv += ["--heartbeat", HEARTBEAT, "--", PY, "-c", JOB]
    job = cluster.farm.popen(
        "hostB", PY, "-m", "dbtool.cli", *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: dict[str, float] = {}  # the job's output lines, each with when it came (wall clock)
    reader = threading.Thread(target=lambda: lines.update((line, time.time()) for line in job.stdout), daemon=True)
    reader.start()
    exited: list[float] = []  # when exec exited (wall clock)
    threading.Thread(target=lambda: (job.wait(), exited.append(time.time())), daemon=True).start()

    def test_row():
        rows = cluster.query(
            "select id, state, status, host, comment from tests where testname = 'farmjob' and item_path = ''"
        )
        return rows[0] if rows else None

    def ended():
        row = test_row()
        return row is not None and row[1] == "COMPLETED"

    assert wait_for(lambda: "cut-now\n" in lines or job.poll() is not None, timeout=60), lines
    assert job.poll() is None, f"the job ended before the cut: {job.returncode} {lines}"
    row = test_row()
    assert row is not None and row[1] == "RUNNING" and row[3] == "hostB", f"before the cut: {row}"
    cluster.farm.set_link("hostA", up=False)
    cut_at, cut_wall = time.monotonic(), time.time()
    try:
        probe = cluster.dbtool("hostB", "--timeout", "3", "server", "status")  # the cut is real
        exec_done_in_cut = wait_for(lambda: job.poll() is not None, timeout=max(0.0, CUT - (time.monotonic() - cut_at)))
        landed_in_cut = wait_for(ended, timeout=max(0.0, CUT - (time.monotonic() - cut_at)))
        time.sleep(max(0.0, CUT - (time.monotonic() - cut_at)))
        during = test_row()
    finally:
        cluster.farm.set_link("hostA", up=True)
    restored_wall = time.time()
    code = job.wait(timeout=120)
    assert wait_for(lambda: bool(exited), timeout=10)
    reader.join(timeout=10)
    err = job.stderr.read()
    assert probe.code == 3 and "alive but unreachable" in probe.err, f"server status from hostB during the cut: {probe}"
    assert code == 7, f"exec exited {code} (the job's own code is 7); stderr: {err!r}"
    assert "job-done\n" in lines, lines
    assert during is not None and during[1] != "DEAD" and during[2] != "DEAD", (
        f"the test at the end of the cut: {during}"
    )
    if spooling:  # exec gave up on the server after --timeout, spooled exec-end and exited, all in the cut
        assert exec_done_in_cut, f"exec --timeout {timeout} did not end in the {CUT:.0f} s cut; stderr: {err!r}"
        spooled = re.findall(r"the exec-end report waits in (\S+) for the server", err)
        assert len(spooled) == 1, f"exec's stderr: {err!r}"
        assert os.path.basename(spooled[0]).startswith("hostB-"), f"spool file {spooled[0]} is not named by its host"
    else:  # exec retried exec-end until the link was back: it could not end before
        assert not exec_done_in_cut, "exec ended while the server was cut off: its final report could not have landed"
        assert not landed_in_cut and during[1] == "RUNNING", f"the test at the end of the cut: {during}"
        assert "waits in" not in err, f"exec --timeout {timeout} spooled: {err!r}"
    assert wait_for(ended, timeout=30), f"the final status never landed: {test_row()}"
    row = test_row()
    assert row[1:3] == ("COMPLETED", "FAIL") and "exit code 7" in row[4], f"after: {row}"
    ends = cluster.query("select count(*) from events where cmd = 'exec-end' and test_id = ?", row[0])
    dead = cluster.query("select count(*) from events where test_id = ? and status = 'DEAD'", row[0])
    assert ends == [(1,)] and dead == [(0,)], f"exec-end events {ends}, DEAD events {dead} for test {row[0]}"
    spool = cluster.area.dir / "spool"
    left = lambda: sorted(p.name for p in spool.iterdir()) if spool.exists() else []  # noqa: E731
    assert wait_for(lambda: left() == []), f"left in the spool: {left()}"
    assert wait_for(lambda: len(cluster.requests("exec-end")) >= 1, timeout=10), "no exec-end in the request log"
    logged = cluster.requests("exec-end")
    clients = {e["client"].split("@", 1)[1].rsplit(":", 1)[0] for e in logged}
    assert all(e["ok"] for e in logged) and clients == {"hostB"}, logged
    after = cluster.check_server(("hostA",))
    assert after["instance"] == info["instance"], f"server replaced during the cut: {_brief(info)} -> {_brief(after)}"
    assert cluster.server_log_pids() == [info["pid"]], f"servers that served: {cluster.server_log_pids()}"
    beats = cluster.query("select count(*) from test_rundat where test_id = ?", row[0])[0][0]
    job_end = lines["job-done\n"] - cut_wall
    arrived = logged[0]["ts"] - cut_wall
    print(
        f"\nfarm s3 ({'spooled' if spooling else 'retried'}): exec exit {code}; hostA's link down "
        f"{restored_wall - cut_wall:.1f} s; after the cut began: the job ended at {job_end:.1f} s, exec "
        f"exited at {exited[0] - cut_wall:.1f} s, exec-end was applied at {arrived:.1f} s "
        f"({len(logged)} exec-end logged, 1 event); "
        f"{beats} heartbeat sample(s); probe in the cut: exit {probe.code}; same server pid {info['pid']}"
    )


def test_kill_9_of_the_server_under_load_loses_no_acknowledged_write(cluster):
    run_id = int(cluster.ok("hostA", "register-run", "--target", "v1/farm", "--runname", "s4").out)
    info = cluster.check_server(("hostA",))
    plan = [(HOSTS[1 + k % 2], f"k{k:02d}") for k in range(16)]
    writers = cluster.writers(plan, count=16, run_id=run_id, pause=0.05)
    writers.go()
    acked = lambda: sum(1 for r in writers.records() if r["code"] == 0)  # noqa: E731
    assert wait_for(lambda: acked() >= 48, timeout=120), f"only {acked()} writes acknowledged before the kill"
    os.kill(info["pid"], signal.SIGKILL)
    killed_at = time.time()
    before = acked()
    records = writers.wait()
    assert len(records) == 256, f"{len(records)} writes recorded of 16 x 16"
    acknowledged = [r for r in records if r["code"] == 0]
    missing = cluster.missing_writes(records)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged writes lost: {missing[:5]}"
    later = [r for r in records if r["t0"] > killed_at]
    failed = _failures(records)
    late_failures = _failures(later)
    assert later and not late_failures, (
        f"{len(late_failures)} of {len(later)} writes begun after the kill failed: {late_failures[:5]}"
    )
    assert not failed, f"{len(failed)} of {len(records)} writes failed (none may): {failed[:5]}"
    new = cluster.check_server(("hostB", "hostC"))
    assert new["instance"] != info["instance"] and new["pid"] != info["pid"], _brief(new)
    spanning = [r for r in records if r["t0"] <= killed_at < r["t1"]]
    worst = max((r["t1"] - r["t0"] for r in spanning), default=0.0)
    print(
        f"\nfarm s4: {before} acknowledged before kill -9 of hostA's server, {len(acknowledged)} in all of 256, "
        f"0 lost, {len(failed)} failed; {len(spanning)} writes spanned the kill (slowest {worst:.1f} s); "
        f"new server on {new['hostname']}"
    )


def test_a_rogue_listener_on_a_dead_servers_port_gets_no_request(cluster):
    cluster.ok("hostA", "set-var", "before", "1")
    info = cluster.check_server(("hostA",))
    address, port = info["address"], info["port"]
    os.kill(info["pid"], signal.SIGKILL)
    assert wait_for(lambda: cluster.servers() == [], timeout=30), cluster.servers()
    record = cluster.tmp / "rogue.json"
    rogue = cluster.farm.popen(
        "hostA",
        PY,
        ROGUE,
        address,
        str(port),
        str(record),
        "60",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert rogue.stdout.readline() == "listening\n", rogue.stderr.read()
    started = time.monotonic()
    result = cluster.dbtool("hostB", "set-var", "after", "2")
    took = time.monotonic() - started
    rogue.send_signal(signal.SIGTERM)
    assert rogue.wait(timeout=30) == 0, rogue.stderr.read()
    assert result.code == 0, f"the write from hostB with a rogue on {address}:{port}: {result}"
    new = cluster.check_server(("hostB",))
    assert new["instance"] != info["instance"], _brief(new)
    assert cluster.ok("hostC", "get-var", "after").out.strip() == "2"
    connections = json.loads(record.read_text())["connections"]
    received = [base64.b64decode(c["received"]) for c in connections]
    requests = [data for data in received if b'"cmd"' in data or any(_is_request(line) for line in data.splitlines())]
    assert connections, f"the rogue on {address}:{port} got no connection: the test proves nothing"
    assert all(data[:1] == b"\x16" and b"challenge" not in data for data in received if data), (
        "off the loopback a client's first bytes are a TLS handshake, never its challenge in the clear"
    )
    assert not requests, f"the rogue received {len(requests)} request(s) on {len(connections)} connections: {requests}"
    print(
        f"\nfarm s5: rogue on {address}:{port} got {len(connections)} connection(s), "
        f"{sum(map(len, received))} bytes, no request; the write from hostB took {took:.1f} s and started a server "
        f"on {new['hostname']}:{new['address']}:{new['port']}"
    )


def _is_request(line: bytes) -> bool:
    try:
        value = json.loads(line)
    except ValueError:
        return False
    return isinstance(value, dict) and "cmd" in value


# A watcher that subscribes and then never reads again (its host is about to vanish).
STILL_WATCHER = """
import json, sys, time
from dbtool.core.link import Connection
conn = Connection(json.loads(sys.argv[1]), 10)
print(json.dumps(conn.request("watch-stream", {})), flush=True)
time.sleep(120)
"""


def test_watchers_whose_host_vanished_give_their_slots_back(cluster):
    """F4 across hosts: watchers on a host that went away (its link cut) are dropped after about
    server.dead_peer_timeout, so dead watchers cannot lock out every new watch."""
    cluster.area.set_config("server", "dead_peer_timeout", "4")
    cluster.area.set_config("server", "max_subscribers", "2")
    cluster.ok("hostA", "set-var", "x", "0")
    info = cluster.check_server(("hostA",))

    def subscribers() -> int:
        return json.loads(cluster.ok("hostA", "server", "status", "--json").out)["subscribers"]

    watchers = [
        cluster.farm.popen("hostB", PY, "-c", STILL_WATCHER, json.dumps(info), stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for w in watchers:
        assert json.loads(w.stdout.readline())["ok"] is True
    assert subscribers() == 2
    full = cluster.dbtool("hostA", "watch", "--count", "1")
    assert full.code == 4 and "watchers already" in full.err, full
    cluster.farm.set_link("hostB", False)
    cut = time.monotonic()
    for i in range(30):  # events the vanished watchers can never acknowledge
        cluster.ok("hostA", "set-var", "y", str(i))
    assert wait_for(lambda: subscribers() == 0, timeout=60), f"{subscribers()} watchers left"
    dropped = time.monotonic() - cut
    watch = cluster.farm.popen(
        "hostC", PY, "-m", "dbtool.cli", "--area", cluster.root, "watch", "--count", "1", "--json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert wait_for(lambda: subscribers() == 1), "the new watcher on hostC never subscribed"
    cluster.ok("hostA", "set-var", "z", "1")
    assert watch.wait(timeout=60) == 0, watch.stderr.read()
    assert json.loads(watch.stdout.read())["event"] == "set-var"
    for w in watchers:
        w.stdout.close()
    watch.stdout.close()
    watch.stderr.close()
    print(f"\nfarm F4: 2 watchers on hostB dropped {dropped:.1f} s after its link was cut; a new one on hostC served")
