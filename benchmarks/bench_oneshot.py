"""Benchmark 4: many one-shot callers writing the same row at once.

Rounds of 64 concurrent processes, each writing one test status and exiting: `dbtool
test-set-state-status-by-id` (server up), against 64 concurrent processes of the same interpreter
writing the same row directly to SQLite (WAL, synchronous=FULL) with a 5 s busy timeout. Reports
writes/s over the rounds, p50/p99 of the per-process wall time, and errors; also the direct path's
"database is locked" count with busy_timeout 0. Targets: throughput ratio ≥ 1.0, dbtool p99 ≤ one
third of the direct path's, no dbtool errors.

A reference row: 64 concurrent `python -c pass` of the same interpreter — the floor under any
caller that is a Python process. Where its p99 is above a third of the direct path's, the direct
path is bound by starting interpreters (CPU), not by the database lock.

    python benchmarks/bench_oneshot.py [--rounds 5] [--processes 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, PYTHON, check_installed, machine, percentile, report, run, temp_area

DIRECT = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=float(sys.argv[2]), isolation_level=None)
con.execute("pragma synchronous=full")
try:
    con.execute("begin immediate")
    con.execute("update tests set state = ?, status = ? where id = 1", (sys.argv[3], "n/a"))
    con.execute("commit")
except sqlite3.OperationalError as err:
    print(err, file=sys.stderr)
    sys.exit(1)
"""


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has spent so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def finish(started: tuple[float, subprocess.Popen]) -> tuple[float, int, bytes]:
    """Wait for one process: its wall time (ms) from just before it was started, exit code, stderr."""
    t0, proc = started
    _, err = proc.communicate()
    return (time.perf_counter() - t0) * 1000, proc.returncode, err


class Caller:
    """One kind of caller: its command line per (round, process), and what its rounds measured."""

    def __init__(self, make_argv, server_pid: int | None = None) -> None:
        self.make_argv = make_argv
        self.server_pid = server_pid  # the server whose CPU these calls cost (user + system, from /proc)
        self.server_cpu = 0.0
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.seconds = 0.0
        self.cpu = 0.0  # CPU seconds of its processes (user + system)
        self.calls = 0

    def round(self, r: int, processes: int) -> None:
        """One round: ``processes`` concurrent processes, started together, all waited for."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_before = proc_cpu(self.server_pid) if self.server_pid else 0.0
        started = time.perf_counter()
        procs = []
        for p in range(processes):
            t0 = time.perf_counter()
            proc = subprocess.Popen(self.make_argv(r, p), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append((t0, proc))
        with ThreadPoolExecutor(processes) as pool:  # each exit timed when it happens, not in start order
            for ms, returncode, err in pool.map(finish, procs):
                self.latencies.append(ms)
                if returncode != 0:
                    lines = err.decode(errors="replace").strip().splitlines()
                    self.errors.append(lines[-1] if lines else str(returncode))
        self.seconds += time.perf_counter() - started
        if self.server_pid:
            self.server_cpu += proc_cpu(self.server_pid) - server_before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        self.calls += processes

    def row(self, name: str) -> dict:
        return {
            "callers": name,
            "writes/s": f"{self.calls / self.seconds:.0f}",
            "p50 ms": f"{percentile(self.latencies, 50):.0f}",
            "p99 ms": f"{percentile(self.latencies, 99):.0f}",
            "CPU ms/process": f"{self.cpu / self.calls * 1000:.0f}",
            "server CPU us/call": f"{self.server_cpu / self.calls * 1e6:.0f}" if self.server_pid else "",
            "errors": len(self.errors),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=64)
    args = parser.parse_args()
    check_installed()
    with temp_area(**{"server.idle_timeout": "0"}) as root:
        area = ["--area", str(root)]
        run([DBTOOL, *area, "register-run", "--target", "v1/linux", "--runname", "bench"])
        test_id = run([DBTOOL, *area, "register-test", "--run-id", "1", "--testname", "t"]).strip()
        db = str(root / ".dbtool" / "dbtool.db")

        def state(r: int, p: int) -> str:
            return "RUNNING" if (r + p) % 2 else "COMPLETED"

        direct = Caller(lambda r, p: [PYTHON, "-c", DIRECT, db, "5", state(r, p)])
        locked = Caller(lambda r, p: [PYTHON, "-c", DIRECT, db, "0", state(r, p)])
        server_pid = json.loads((root / ".dbtool" / "server.json").read_text())["pid"]
        dbtool = Caller(
            lambda r, p: [DBTOOL, *area, "test-set-state-status-by-id", "--test-id", test_id, "--state", state(r, p)],
            server_pid,
        )
        floor = Caller(lambda r, p: [PYTHON, "-c", "pass"])
        for r in range(args.rounds):  # the paths take turns, so a noisy moment hits all of them
            for path in (direct, locked, dbtool, floor):
                path.round(r, args.processes)
    rows = [
        direct.row("direct sqlite3, busy_timeout 5 s"),
        locked.row("direct sqlite3, busy_timeout 0"),
        dbtool.row("dbtool (server up)"),
        floor.row("python -c pass (no write: the floor)"),
    ]
    report(
        f"{args.processes} concurrent one-shot processes writing the same row, {args.rounds} rounds",
        rows,
        ["callers", "writes/s", "p50 ms", "p99 ms", "CPU ms/process", "server CPU us/call", "errors"],
        {"machine": machine()},
    )
    ratio = (dbtool.calls / dbtool.seconds) / (direct.calls / direct.seconds)
    p99 = percentile(dbtool.latencies, 99) / percentile(direct.latencies, 99)
    over_bare = percentile(dbtool.latencies, 99) / percentile(floor.latencies, 99)
    print(
        f"throughput ratio dbtool/direct: {ratio:.2f} (target >= 1.0); p99 ratio: {p99:.2f} (target <= 0.33); "
        f"dbtool errors: {len(dbtool.errors)} (target 0); "
        f"'database is locked' at busy_timeout 0: {sum('locked' in e for e in locked.errors)}; "
        f"p99 of bare interpreters / direct: {percentile(floor.latencies, 99) / percentile(direct.latencies, 99):.2f}; "
        f"dbtool p99 / bare interpreters' p99: {over_bare:.2f} "
        f"(target <= 1.2); server CPU per call {dbtool.server_cpu / dbtool.calls * 1e6:.0f} us (target <= 400)"
    )


if __name__ == "__main__":
    main()
