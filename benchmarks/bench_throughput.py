"""Benchmark 3: server throughput under 8, 32 and 64 concurrent persistent clients.

Each client keeps one authenticated connection and writes test status through the protocol
(`test-set-state-status-by-id`, with an idempotency key, as the CLI sends it), one request at a
time. Baseline, in the same run: one process doing the same status update directly on the same
kind of SQLite database, one transaction (and fsync) per write, synchronous=FULL — the ceiling
without group commit. Reports acknowledged writes/s, p50/p99 latency, and the ratio.

    python benchmarks/bench_throughput.py [--seconds 5] [--clients 8,32,64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, check_installed, machine, percentile, report, run, temp_area

PROCESSES = 2  # client processes (asyncio inside), so the clients are not one CPU's worth of Python
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


async def one_client(info: dict, test_ids: list[int], start_at: float, stop_at: float, tag: str, out: list) -> int:
    from dbtool.core import PROTOCOL
    from dbtool.core.protocol import encode, sign

    reader, writer = await asyncio.open_connection(info["host"], info["port"])
    hello = json.loads(await reader.readline())
    writer.write(encode({"auth": sign(info["key"], hello["nonce"]), "protocol": PROTOCOL, "client": {"user": "bench"}}))
    n = 0
    done = 0
    while True:
        now = time.monotonic()
        if now >= stop_at:
            break
        n += 1
        test_id = test_ids[n % len(test_ids)]
        state, status = ("RUNNING", "n/a") if n % 2 else ("COMPLETED", "PASS")
        msg = {
            "id": n,
            "cmd": "test-set-state-status-by-id",
            "params": {"test_id": test_id, "state": state, "status": status},
            "idem": f"{tag}-{n}",
        }
        t0 = time.perf_counter()
        writer.write(encode(msg))
        line = await reader.readline()
        elapsed = time.perf_counter() - t0
        if not json.loads(line).get("ok"):
            raise RuntimeError(line)
        if now >= start_at:
            out.append(elapsed * 1000)
            done += 1
    writer.close()
    return done


def client_process(info: dict, ids: list[int], clients: int, start_at: float, stop_at: float, queue) -> None:
    async def main() -> None:
        latencies: list[float] = []
        share = len(ids) // clients
        tasks = [
            one_client(info, ids[c * share : (c + 1) * share], start_at, stop_at, f"{os.getpid()}-{c}", latencies)
            for c in range(clients)
        ]
        counts = await asyncio.gather(*tasks)
        queue.put((sum(counts), latencies))

    asyncio.run(main())


def protocol_load(root: Path, ids: list[int], clients: int, seconds: float) -> dict:
    info = json.loads((root / ".dbtool" / "server.json").read_text())
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
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join()
    done = sum(r[0] for r in results)
    latencies = [ms for r in results for ms in r[1]]
    return {"writes_s": done / seconds, "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="8,32,64")
    args = parser.parse_args()
    check_installed()
    before = direct_ceiling(args.seconds / 2)  # measured before and after the server's runs, averaged:
    rows: list[dict] = []  # the disk's fsync rate drifts on a shared machine
    with temp_area(**{"server.idle_timeout": "0"}) as root:
        ids = prepare(root)
        for clients in (int(c) for c in args.clients.split(",")):
            result = protocol_load(root, ids, clients, args.seconds)
            rows.append(
                {
                    "clients": clients,
                    "writes/s": f"{result['writes_s']:.0f}",
                    "p50 ms": f"{result['p50_ms']:.2f}",
                    "p99 ms": f"{result['p99_ms']:.2f}",
                }
            )
    after = direct_ceiling(args.seconds / 2)
    ceiling = {
        "writes_s": (before["writes_s"] + after["writes_s"]) / 2,
        "p50_ms": (before["p50_ms"] + after["p50_ms"]) / 2,
        "p99_ms": max(before["p99_ms"], after["p99_ms"]),
    }
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
        ["clients", "writes/s", "p50 ms", "p99 ms", "ratio"],
        {"machine": machine()},
    )
    last = rows[-1]
    print(
        f"{last['clients']} clients: {last['ratio']} x the one-commit-per-write ceiling (target >= 2.5), "
        f"p99 {last['p99 ms']} ms (target <= 20)"
    )


if __name__ == "__main__":
    main()
