"""Benchmark 3: server throughput under 8, 32 and 64 concurrent persistent clients.

Each client keeps one authenticated connection and writes test status through the protocol
(`test-set-state-status-by-id`, with an idempotency key, as the CLI sends it), one request at a
time. Baseline, in the same run: one process doing the same status update directly on the same
kind of SQLite database, one transaction (and fsync) per write, synchronous=FULL — the ceiling
without group commit. Reports acknowledged writes/s, p50/p99 latency, the ratio, and the CPU the
server and the load generator spend per write.

A second reference row: the same clients against an asyncio server that answers every line at
once, with no database (`echo_server`) — the floor of any Python asyncio server on this machine,
what its event loop, sockets and JSON cost before the first line of dbtool runs. A third: the same
writes handed straight to dbtool's writer in one process (`writer_alone`), as many in flight as
there are clients — no sockets, no JSON: what the writer costs without the protocol.

`--split-bound` instead runs the echo load and the writer alone at the same time, three times: the
rate a server split into a protocol process and a writer process could reach at most here (the
smaller of the two, with no cost for passing requests between them).

    python benchmarks/bench_throughput.py [--seconds 5] [--clients 8,32,64] [--split-bound]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import select
import socket
import sqlite3
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, check_installed, drive_writer, machine, percentile, report, run, temp_area

PROCESSES = 2  # client processes (one epoll loop each), so the clients are not one CPU's worth of Python
TESTS = 2000


def prepare(root: Path) -> list[int]:
    run([DBTOOL, "--area", str(root), "register-run", "--target", "v1/linux", "--runname", "bench"])
    run([DBTOOL, "--area", str(root), "server", "stop"])
    con = sqlite3.connect(root / ".dbtool" / "dbtool.db")
    con.executemany(
        "insert into tests (run_id, testname, item_path, state, status, uname) "
        "values (1, ?, '', 'NOT_STARTED', 'n/a', 'h')",
        [(f"t{i}",) for i in range(TESTS)],
    )
    con.commit()
    ids = [r[0] for r in con.execute("select id from tests order by id")]
    con.close()
    run([DBTOOL, "--area", str(root), "server", "start"])
    return ids


class Client:
    """One persistent, authenticated connection writing one status at a time (non-blocking socket)."""

    def __init__(self, info: dict, test_ids: list[int], tag: str) -> None:
        from dbtool.core.protocol import auth_line, challenge_line, new_nonce

        self.sock = socket.create_connection((info["address"], info["port"]))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        challenge = new_nonce()
        self.sock.sendall(challenge_line(challenge))
        lines = self.sock.makefile("rb")  # the server sends nothing more unasked
        hello = json.loads(lines.readline())
        lines.readline()  # the server's proof (the echo server's is none: it holds no key)
        self.sock.sendall(auth_line(info["key"], hello["nonce"], challenge, {"user": "bench"}))
        self.sock.setblocking(False)
        self.test_ids = test_ids
        self.tag = tag
        self.n = 0
        self.sent_at = 0.0
        self.pending = b""

    def send_next(self) -> None:
        """The next write, as the CLI sends it: command, parameters and an idempotency key."""
        self.n = n = self.n + 1
        state, status = ("RUNNING", "n/a") if n % 2 else ("COMPLETED", "PASS")
        line = (
            f'{{"id":{n},"cmd":"test-set-state-status-by-id","params":{{"test_id":'
            f'{self.test_ids[n % len(self.test_ids)]},"state":"{state}","status":"{status}"}},'
            f'"idem":"{self.tag}-{n}"}}\n'
        )
        self.sent_at = time.perf_counter()
        self.sock.send(line.encode())  # a few dozen bytes into an empty socket buffer: all sent

    def answer(self) -> bool:
        """Read what arrived; True when the answer to the last write is complete (and was ok)."""
        data = self.pending + self.sock.recv(65536)
        end = data.find(b"\n")
        if end < 0:
            self.pending = data
            return False
        self.pending = data[end + 1 :]
        if json.loads(data[:end]).get("ok") is not True:
            raise RuntimeError(data[:end])
        return True


def client_process(info: dict, ids: list[int], clients: int, start_at: float, stop_at: float, queue) -> None:
    """``clients`` connections in one process, driven by one epoll loop: the load generator should
    spend as little CPU as it can, since it shares the machine with the server it measures."""
    share = len(ids) // clients
    conns = {}
    poll = select.epoll()
    for c in range(clients):
        client = Client(info, ids[c * share : (c + 1) * share], f"{os.getpid()}-{c}")
        conns[client.sock.fileno()] = client
        poll.register(client.sock.fileno(), select.EPOLLIN)
    latencies: list[float] = []
    for client in conns.values():
        client.send_next()
    cpu_at_start = None
    while conns:
        for fd, _ in poll.poll(1.0):
            client = conns[fd]
            if not client.answer():
                continue
            now = time.monotonic()
            if now >= start_at:
                if cpu_at_start is None:
                    cpu_at_start = time.process_time()
                latencies.append((time.perf_counter() - client.sent_at) * 1000)
            if now < stop_at:
                client.send_next()
            else:
                poll.unregister(fd)
                client.sock.close()
                del conns[fd]
    spent = time.process_time() - cpu_at_start if cpu_at_start is not None else 0.0
    queue.put((len(latencies), latencies, spent))


def protocol_load(info: dict, ids: list[int], clients: int, seconds: float) -> dict:
    """Drive the server that ``info`` (its server.json) describes with ``clients`` connections."""
    procs = min(PROCESSES, clients)
    start_at = time.monotonic() + 1.0  # a second of warm-up: connections made, caches warm
    stop_at = start_at + seconds
    queue = mp.Queue()
    share = len(ids) // procs
    workers = [
        mp.Process(
            target=client_process,
            args=(info, ids[p * share : (p + 1) * share], clients // procs, start_at, stop_at, queue),
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    server_cpu = cpu_seconds(info["pid"], start_at, stop_at)
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join()
    done = sum(r[0] for r in results)
    latencies = [ms for r in results for ms in r[1]]
    return {
        "writes_s": done / seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "server_us": sum(server_cpu) / done * 1e6,
        "server_sys_us": server_cpu[1] / done * 1e6,
        "clients_us": sum(r[2] for r in results) / done * 1e6,
    }


def cpu_seconds(pid: int, start_at: float, stop_at: float) -> tuple[float, float]:
    """User and system CPU time (all threads) process ``pid`` spends between two monotonic instants."""
    tick = os.sysconf("SC_CLK_TCK")

    def now() -> tuple[float, float]:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) / tick, int(fields[12]) / tick

    time.sleep(max(0.0, start_at - time.monotonic()))
    before = now()
    time.sleep(max(0.0, stop_at - time.monotonic()))
    after = now()
    return after[0] - before[0], after[1] - before[1]


def echo_server(ready) -> None:
    """An asyncio server speaking the protocol's framing and nothing else: a hello, then for each
    line a JSON parse and an ok answer (with the encoder dbtool's server uses). Runs until killed."""
    import asyncio

    from dbtool.core.server.session import server_encoder

    encode = server_encoder()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport) -> None:
            self.transport = transport
            self.buffer = b""
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport.write(encode({"hello": "echo", "nonce": "0" * 32}))
            self.handshake = 2  # the challenge (answered with a proof), then the auth line

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while (end := self.buffer.find(b"\n")) >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
                if self.handshake:
                    self.handshake -= 1
                    if self.handshake:
                        self.transport.write(encode({"proof": "0" * 64}))
                    continue
                msg = json.loads(line)
                self.transport.write(encode({"id": msg.get("id"), "request_id": "echo", "ok": True, "result": None}))

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        ready.put(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()

    asyncio.run(serve())


def echo_floor(ids: list[int], clients: int, seconds: float) -> dict:
    ready = mp.Queue()
    server = mp.Process(target=echo_server, args=(ready,), daemon=True)
    server.start()
    try:
        info = {"address": "127.0.0.1", "port": ready.get(timeout=60), "key": "00" * 32, "pid": server.pid}
        return protocol_load(info, ids, clients, seconds)
    finally:
        server.kill()
        server.join(10)


def writer_alone(root: Path, ids: list[int], clients: int, seconds: float, queue) -> None:
    """``drive_writer`` (common.py) in this process: dbtool's Writer alone, as Session feeds it;
    puts the result (writes/s, latency, this process's CPU per write) on ``queue``."""
    result = drive_writer(root, ids, clients, seconds)
    result["server_us"] = result.pop("cpu_us")
    queue.put(result)


def writer_floor(root: Path, ids: list[int], clients: int, seconds: float, meanwhile=None) -> tuple[dict, object]:
    """``writer_alone`` in a process of its own, on the area's database (its server stopped), and
    what ``meanwhile()`` returns when given (it runs here while the writer does)."""
    run([DBTOOL, "--area", str(root), "server", "stop"])
    queue = mp.Queue()
    proc = mp.Process(target=writer_alone, args=(root, ids, clients, seconds, queue), daemon=True)
    proc.start()
    try:
        other = meanwhile() if meanwhile is not None else None
        return queue.get(timeout=seconds + 120), other
    finally:
        proc.join(30)


def split_bound(seconds: float, clients: int = 64, repeats: int = 3) -> None:
    """Print, per repeat, the one-commit ceiling and the echo and writer-alone rates run together."""
    for _ in range(repeats):
        ceiling = direct_ceiling(seconds / 2)["writes_s"]
        with temp_area(**{"server.idle_timeout": "0"}) as root:
            ids = prepare(root)
            alone, echo = writer_floor(root, ids, clients, seconds, partial(echo_floor, ids, clients, seconds))
        bound = min(alone["writes_s"], echo["writes_s"])
        print(
            f"one commit per write {ceiling:.0f}/s; together: the writer alone {alone['writes_s']:.0f}/s "
            f"({alone['server_us']:.0f} us CPU/write), echo {echo['writes_s']:.0f}/s ({echo['server_us']:.0f} us) "
            f"-> a split server at most {bound / ceiling:.2f} x"
        )


def direct_ceiling(seconds: float) -> dict:
    """One process, one transaction per write, synchronous=FULL, on a database like the area's."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, temp_area() as root:
        path = Path(tmp) / "direct.db"
        import shutil

        shutil.copy(root / ".dbtool" / "dbtool.db", path)
        con = sqlite3.connect(path, isolation_level=None)
        con.execute("pragma journal_mode=wal")
        con.execute("pragma synchronous=full")
        con.execute("insert into runs (id, RELEASE, PLATFORM, runname) values (1, 'v1', 'linux', 'bench')")
        con.executemany("insert into tests (run_id, testname) values (1, ?)", [(f"t{i}",) for i in range(TESTS)])
        latencies = []
        n = 0
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            n += 1
            state, status = ("RUNNING", "n/a") if n % 2 else ("COMPLETED", "PASS")
            t0 = time.perf_counter()
            con.execute("begin")
            con.execute("update tests set state = ?, status = ? where id = ?", (state, status, 1 + n % TESTS))
            con.execute("commit")
            latencies.append((time.perf_counter() - t0) * 1000)
        con.close()
    return {"writes_s": n / seconds, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def cells(result: dict) -> dict:
    """A result as table cells; the split of CPU into system time, and the clients' CPU, where measured."""
    sys_part = f" ({result['server_sys_us']:.0f} sys)" if "server_sys_us" in result else ""
    return {
        "writes/s": f"{result['writes_s']:.0f}",
        "p50 ms": f"{result['p50_ms']:.2f}",
        "p99 ms": f"{result['p99_ms']:.2f}",
        "server CPU us/write": f"{result['server_us']:.0f}{sys_part}",
        "clients CPU us/write": f"{result['clients_us']:.0f}" if "clients_us" in result else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="8,32,64")
    parser.add_argument("--split-bound", action="store_true", help="see the module's docstring")
    args = parser.parse_args()
    check_installed()
    if args.split_bound:
        return split_bound(args.seconds)
    before = direct_ceiling(args.seconds / 2)  # measured before and after the server's runs, averaged:
    rows: list[dict] = []  # the disk's fsync rate drifts on a shared machine
    with temp_area(**{"server.idle_timeout": "0"}) as root:
        ids = prepare(root)
        info = json.loads((root / ".dbtool" / "server.json").read_text())
        for clients in (int(c) for c in args.clients.split(",")):
            rows.append({"clients": clients, **cells(protocol_load(info, ids, clients, args.seconds))})
        alone = {
            "clients": f"the writer alone, in-process ({clients} in flight)",
            **cells(writer_floor(root, ids, clients, args.seconds)[0]),
        }
    floor = {
        "clients": f"echo, no database ({rows[-1]['clients']} clients)",
        **cells(echo_floor(ids, clients, args.seconds)),
    }
    after = direct_ceiling(args.seconds / 2)
    ceiling = {
        "writes_s": (before["writes_s"] + after["writes_s"]) / 2,
        "p50_ms": (before["p50_ms"] + after["p50_ms"]) / 2,
        "p99_ms": max(before["p99_ms"], after["p99_ms"]),
    }
    rows.append(floor)
    rows.append(alone)
    for row in rows:
        row["ratio"] = f"{float(row['writes/s']) / ceiling['writes_s']:.2f}"
    rows.insert(
        0,
        {
            "clients": "direct (one commit per write)",
            "writes/s": f"{ceiling['writes_s']:.0f}",
            "p50 ms": f"{ceiling['p50_ms']:.2f}",
            "p99 ms": f"{ceiling['p99_ms']:.2f}",
            "ratio": "1.00",
        },
    )
    report(
        "server throughput: test-set-state-status-by-id over persistent connections, synchronous=FULL",
        rows,
        ["clients", "writes/s", "p50 ms", "p99 ms", "ratio", "server CPU us/write", "clients CPU us/write"],
        {"machine": machine()},
    )
    last = rows[-3]
    print(
        f"{last['clients']} clients: {last['ratio']} x the one-commit-per-write ceiling (target >= 2.5), "
        f"p99 {last['p99 ms']} ms (target <= 20); {float(last['writes/s']) / float(floor['writes/s']):.0%} of the "
        f"echo server's rate (no database); the writer alone, no protocol: {alone['writes/s']} writes/s at "
        f"{alone['server CPU us/write']} us of CPU per write"
    )


if __name__ == "__main__":
    main()
