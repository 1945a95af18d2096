"""Fault tests: kill -9 under load, cold-start races, a protocol fuzzer, SIGTERM under load.

Bounded in count and time; all traffic on 127.0.0.1. Each prints its figures (run with -s).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import Raw, _alive, handshake, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

LOAD_CLIENT = str(Path(__file__).with_name("load_client.py"))
CLIENTS = 64


def start_load(area, tmp_path, writes: int, tag: str) -> list[tuple[subprocess.Popen, Path]]:
    procs = []
    for c in range(CLIENTS):
        out = tmp_path / f"{tag}-{c}.jsonl"
        argv = [sys.executable, LOAD_CLIENT, str(area.root), f"{tag}{c}", str(writes), str(out)]
        procs.append((subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out))
    return procs


def answered(procs) -> int:
    """How many writes of the load have been answered so far (one line each in its client's file)."""
    total = 0
    for _proc, out in procs:
        with contextlib.suppress(FileNotFoundError):
            total += out.read_bytes().count(b"\n")
    return total


def finish_load(procs) -> list[dict]:
    outcomes = []
    for proc, out in procs:
        code = proc.wait(timeout=600)
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        assert code == 0, f"load client crashed: {err}"
        outcomes += [json.loads(line) for line in out.read_text().splitlines()]
    return outcomes


def stored_vars(area) -> dict[str, str]:
    con = sqlite3.connect(area.dir / "dbtool.db")
    try:
        return dict(con.execute("select var, val from metadat"))
    finally:
        con.close()


def check_outcomes(area, outcomes: list[dict], sent: int) -> dict:
    """Every acknowledged write is stored; every failure is exit 3 with a message."""
    assert len(outcomes) == sent
    stored = stored_vars(area)
    acknowledged = [o for o in outcomes if o["code"] == 0]
    lost = [o["key"] for o in acknowledged if stored.get(o["key"]) != o["value"]]
    failed = [o for o in outcomes if o["code"] != 0]
    assert lost == [], f"acknowledged writes lost: {lost[:10]}"
    assert all(o["code"] == 3 and o["err"].startswith("dbtool: error: ") for o in failed), failed[:5]
    return {"sent": sent, "acknowledged": len(acknowledged), "failed": len(failed), "lost": len(lost)}


def test_kill_9_under_64_writing_clients_loses_no_acknowledged_write(area, tmp_path):
    area.ok("set-var", "warm", "1")
    writes = 15
    procs = start_load(area, tmp_path, writes, "k")
    kills = 0
    deadline = time.monotonic() + 120
    for share in (0.2, 0.45, 0.7):  # kills at points of the load's progress, however fast this machine is
        target = share * CLIENTS * writes
        while time.monotonic() < deadline and answered(procs) < target and any(p.poll() is None for p, _ in procs):
            time.sleep(0.02)
        info = area.server_info
        if info is None or all(p.poll() is not None for p, _ in procs):
            continue
        try:
            os.kill(info["pid"], signal.SIGKILL)
            kills += 1
        except ProcessLookupError:
            pass
    figures = check_outcomes(area, finish_load(procs), CLIENTS * writes)
    print(f"\nkill -9 under load: {figures} kills={kills}")
    assert kills >= 2
    assert len(area.server_pids()) <= 1


def test_64_clients_racing_on_a_cold_area_start_one_server(area, tmp_path):
    procs = start_load(area, tmp_path, 1, "cold")
    figures = check_outcomes(area, finish_load(procs), CLIENTS)
    log = (area.dir / "logs" / "server.log").read_text()
    print(f"\ncold start race: {figures} servers started={log.count(' serving ')}")
    assert figures["acknowledged"] == CLIENTS
    assert log.count(" serving ") == 1 and len(area.server_pids()) == 1


def test_sigterm_under_load_drains_and_the_next_start_sees_every_acknowledged_write(area, tmp_path):
    area.ok("set-var", "warm", "1")
    writes = 10
    procs = start_load(area, tmp_path, writes, "t")
    time.sleep(1.0)
    first = area.server_info["pid"]
    os.kill(first, signal.SIGTERM)
    outcomes = finish_load(procs)
    figures = check_outcomes(area, outcomes, CLIENTS * writes)
    assert wait_for(lambda: not _alive(first), timeout=60), "the first server never finished stopping"
    log = (area.dir / "logs" / "server.log").read_text()
    assert "stopping (signal SIGTERM)" in log and "request statistics at stop" in log
    # the next server (started by the clients that came after) sees every acknowledged write
    values = {o["key"]: o["value"] for o in outcomes if o["code"] == 0}
    for key in random.Random(1).sample(sorted(values), 20):
        assert area.ok("get-var", key).out.strip() == values[key]
    print(f"\nSIGTERM under load: {figures}")
    assert figures["acknowledged"] == CLIENTS * writes


# -- protocol fuzzer -----------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
command_names = st.sampled_from(
    ["ping", "get-var", "set-var", "get-runs", "csv->test-data", "watch-stream", "nope", ""]
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "cmd": command_names | json_values,
        "params": st.dictionaries(st.sampled_from(["var", "value", "run_id", "x", "since"]), json_values, max_size=3)
        | json_values,
        "trace": json_values,
        "idem": json_values,
    },
)


def encode_request(obj: object) -> bytes:
    return json.dumps(obj).encode()


frames = st.one_of(
    st.binary(max_size=200),
    requests.map(encode_request),
    requests.map(encode_request).flatmap(lambda b: st.integers(0, len(b)).map(lambda n: b[:n])),
    st.integers(1, 400).map(lambda depth: b"[" * depth + b"]" * depth),
    st.just(b'{"id": 1, "cmd": "get-var", "params": {"var": "\xff\xfe"}}'),
    st.just(b'{"id": 1, "cmd": "get-test-id", "params": {"run_id": 123456789012345678901234567890, "testname": "t"}}'),
)


class Steady(threading.Thread):
    """A well-formed client that keeps pinging and writing while the fuzzer runs."""

    def __init__(self, area) -> None:
        super().__init__(daemon=True)
        self.area = area
        self.stop = threading.Event()
        self.done = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop.is_set():
            r = self.area.run("inc-var", "steady")
            if r.code != 0:
                self.failures.append(r.err)
            self.done += 1


def fuzz_once(area, authenticate: bool, frames_: list[bytes], newline_last: bool) -> None:
    info = area.server_info
    with socket.create_connection((info["address"], info["port"]), timeout=10) as sock:
        f = sock.makefile("rwb")
        if authenticate:
            handshake(f, info)
        else:
            json.loads(f.readline())
        for i, frame in enumerate(frames_):
            last = i == len(frames_) - 1
            f.write(frame + (b"\n" if newline_last or not last else b""))
        f.flush()
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(5)
        deadline = time.monotonic() + 20
        while True:  # every answer is a JSON object; then the server closes
            assert time.monotonic() < deadline, f"the server kept a half-closed connection open: {frames_!r}"
            line = f.readline()
            if not line:
                break
            assert isinstance(json.loads(line), dict)


def test_protocol_fuzzer_never_kills_the_server(area):
    area.ok("set-var", "warm", "1")
    pid = area.server_info["pid"]
    steady = Steady(area)
    steady.start()
    examples = 0

    @settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.booleans(), st.lists(frames, min_size=1, max_size=4), st.booleans())
    def fuzz(authenticate, frames_, newline_last):
        nonlocal examples
        examples += 1
        fuzz_once(area, authenticate, frames_, newline_last)

    try:
        fuzz()
        with Raw(area) as raw:  # an oversized line: an error, a closed connection, a live server
            raw.send_line(b'{"id": 1, "cmd": "set-var", "params": {"var": "' + b"x" * (17 * 1024 * 1024) + b'"}}')
            answer = raw.read()
            assert answer is None or answer["error"]["code"] == "bad_request"
    finally:
        steady.stop.set()
        steady.join(60)
    assert steady.failures == []
    assert area.server_info["pid"] == pid and area.server_pids() == [pid]
    assert area.ok("ping", "--json").json["pid"] == pid
    print(f"\nfuzzer: {examples} connections with malformed frames; steady client made {steady.done} calls")
    assert steady.done > 0


def test_a_write_meeting_a_server_that_is_stopping_starts_the_next_one(area):
    """A server that is stopping has removed server.json but still holds its lock while it
    finishes its queue: a write that comes then waits for the lock, and when it is let go
    without anyone serving, starts a server instead of giving up."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); "
         "l.acquire(); print('held', flush=True); time.sleep(2)", str(area.dir / "server.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        result = area.run("--timeout", "30", "set-var", "x", "1")
        assert result.code == 0, result
        assert holder.wait(timeout=30) == 0
        assert area.ok("get-var", "x").out.strip() == "1" and area.server_info is not None
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
