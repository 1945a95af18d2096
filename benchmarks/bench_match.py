"""Benchmark 7: ping while someone matches a regular expression against a big run.

A `get-tests-for-run --match` over every test of a large run runs on a reader thread of the
server; the regular expressions are RE2 (linear time). Meanwhile a persistent connection pings
the server in a loop: its latency, against the same pings with nothing else running (same run).
The heavy matchers use the pattern that froze the server for good with a backtracking engine.
Target: ping p99 ≤ 100 ms during the matches.

    python benchmarks/bench_match.py [--tests 200000] [--pings 400] [--matchers 2]

(--pings: the idle baseline; during the matches it pings for as long as they run.)
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, check_installed, machine, percentile, report, run, temp_area

EVIL = "(a+)+$"


def pings(info: dict, count: int, busy=None) -> list[float]:
    """Ping latencies (ms): ``count`` of them, or, with ``busy``, as long as busy() holds."""
    from dbtool.core.link import Connection

    times = []
    with Connection(info) as conn:
        while (busy() and len(times) < 100_000) if busy else len(times) < count:
            start = time.perf_counter()
            conn.call("ping")
            times.append((time.perf_counter() - start) * 1000)
            time.sleep(0.002)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=200_000)
    parser.add_argument("--pings", type=int, default=400)
    parser.add_argument("--matchers", type=int, default=2)
    args = parser.parse_args()
    check_installed()
    with temp_area(**{"server.idle_timeout": "0"}) as root:
        area = ["--area", str(root)]
        run([DBTOOL, *area, "register-run", "--target", "v1/linux", "--runname", "bench"])
        run([DBTOOL, *area, "server", "stop"])
        con = sqlite3.connect(root / ".dbtool" / "dbtool.db")
        victim = "a" * 40 + "b"
        con.executemany(
            "insert into tests (run_id, testname, item_path, state, status) values (1, ?, '', 'COMPLETED', 'PASS')",
            ((f"{victim}{i}",) for i in range(args.tests)),
        )
        con.commit()
        con.close()
        run([DBTOOL, *area, "server", "start"])
        from dbtool.core.area import Area
        from dbtool.core.link import read_server_info

        info = read_server_info(Area(str(root)))
        idle = pings(info, args.pings)
        match = [DBTOOL, *area, "--timeout", "600", "get-tests-for-run", "--run-id", "1", "--fields", "id"]
        match += ["--match", f"testname={EVIL}", "--match", "testname=b[0-9]+$"]
        procs = [subprocess.Popen(match, stdout=subprocess.DEVNULL) for _ in range(args.matchers)]
        time.sleep(0.3)  # the matchers' processes start and send their requests
        start = time.perf_counter()
        busy = pings(info, 0, lambda: any(p.poll() is None for p in procs))
        for p in procs:
            p.wait(timeout=600)
        match_s = time.perf_counter() - start
    rows = [
        {"pings": "idle server", "p50 ms": f"{percentile(idle, 50):.2f}", "p99 ms": f"{percentile(idle, 99):.2f}"},
        {
            "pings": f"during {args.matchers} matches over {args.tests} tests",
            "p50 ms": f"{percentile(busy, 50):.2f}",
            "p99 ms": f"{percentile(busy, 99):.2f}",
        },
    ]
    report("ping while regular expressions run", rows, ["pings", "p50 ms", "p99 ms"], {"machine": machine()})
    print(f"{len(busy)} pings while the matches ran ({match_s:.1f} s)")
    print(f"ping p99 during matches: {percentile(busy, 99):.1f} ms (target <= 100)")


if __name__ == "__main__":
    main()
