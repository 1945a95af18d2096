"""Benchmark 5: a large area through the server — 10,000 runs, 1,000,000 tests.

Generates the area (generate_area.py), starts its server, and times reads on one persistent,
authenticated connection (the round trip as a client sees it: request, query, JSON both ways; a
list comes back as Records, whose dicts are built on access — timed also with every dict built):
`get-tests-for-run` of the 2,000-test run, `get-runs --target PATT`, `get-count-tests-running`.
Also the same reads as one-shot `dbtool` processes, the database size, the server's RSS, and the
query plan SQLite chose for every statement each read runs (EXPLAIN QUERY PLAN).
Targets: p50 <= 20 ms for each read through the server; server RSS <= 150 MB.

    python benchmarks/bench_scale.py [--runs 10000] [--tests 1000000] [--repeat 50] [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, check_installed, interleaved, machine, percentile, report, run, set_config
from generate_area import generate


def rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a process, in MB."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def query_plans(root: Path, reads: dict[str, tuple[str, dict]]) -> dict[str, list[tuple[str, list[str]]]]:
    """For each read, the statements its handler runs and SQLite's plan for each."""
    from dbtool.core.area import Area
    from dbtool.core.commands import COMMANDS
    from dbtool.core.direct import run_read
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen: list[str] = []

    def trace(dbapi_conn, _record):
        dbapi_conn.set_trace_callback(seen.append)

    event.listen(Engine, "connect", trace)
    plans = {}
    area = Area(str(root))
    plain = sqlite3.connect(f"file:{root / '.dbtool' / 'dbtool.db'}?mode=ro", uri=True)
    try:
        for name, (cmd, params) in reads.items():
            seen.clear()
            run_read(area, COMMANDS[cmd], params)
            statements = [s for s in seen if s.lstrip().upper().startswith(("SELECT", "WITH"))]
            plans[name] = [(s, [row[-1] for row in plain.execute("EXPLAIN QUERY PLAN " + s)]) for s in statements]
    finally:
        event.remove(Engine, "connect", trace)
        plain.close()
    return plans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tests", type=int, default=1_000_000)
    parser.add_argument("--big-run-tests", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=50, help="timed calls per read through the server")
    parser.add_argument("--oneshot-repeat", type=int, default=10, help="one-shot dbtool processes per read")
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this directory and keep it")
    args = parser.parse_args()
    check_installed()
    from dbtool.core.area import Area
    from dbtool.core.link import Connection, read_server_info
    from dbtool.core.protocol import Records, plain

    root = args.keep or Path(tempfile.mkdtemp(prefix="dbtool-scale-")) / "area"
    big_run = args.runs // 2
    if (root / ".dbtool").exists():
        made = {"reused": str(root)}
    else:
        made = generate(root, args.runs, args.tests, big_run, args.big_run_tests)
        print(f"generated: {made}")
    set_config(root, "server.idle_timeout", "0")
    db = root / ".dbtool" / "dbtool.db"
    reads = {
        f"get-tests-for-run ({args.big_run_tests} tests)": ("get-tests-for-run", {"run_id": big_run}),
        "get-runs --target v1.2/%": ("get-runs", {"target": "v1.2/%"}),
        "get-count-tests-running": ("get-count-tests-running", {}),
    }
    cli = {
        "get-tests-for-run": ["--run-id", str(big_run)],
        "get-runs": ["--target", "v1.2/%"],
        "get-count-tests-running": [],
    }
    plans = query_plans(root, reads)
    try:
        run([DBTOOL, "--area", str(root), "server", "start"])
        info = read_server_info(Area(str(root)))
        rows = []
        with Connection(info) as conn:
            for name, (cmd, params) in reads.items():
                result = conn.call(cmd, params)
                many = isinstance(result, (list, Records))
                for _ in range(3):  # warm: the first reads fault the pages in
                    conn.call(cmd, params)
                times, with_dicts = [], []
                for _ in range(args.repeat):  # the result as the client API gives it (Records: dicts on access)
                    start = time.perf_counter()
                    conn.call(cmd, params)
                    times.append((time.perf_counter() - start) * 1000)
                for _ in range(args.repeat):  # and with every record built as a dict
                    start = time.perf_counter()
                    plain(conn.call(cmd, params))
                    with_dicts.append((time.perf_counter() - start) * 1000)
                rows.append(
                    {
                        "read": name,
                        "result": f"{len(result)} rows" if many else str(result),
                        "p50 ms": f"{statistics.median(times):.1f}",
                        "p99 ms": f"{percentile(times, 99):.1f}",
                        "p50 ms, as dicts": f"{statistics.median(with_dicts):.1f}" if many else "",
                    }
                )
        oneshot = interleaved(
            {cmd: [DBTOOL, "--area", str(root), cmd, *cli[cmd], "--json"] for cmd, _ in reads.values()},
            args.oneshot_repeat,
        )
        for row, (cmd, _) in zip(rows, reads.values(), strict=True):
            row["one-shot dbtool ms"] = f"{oneshot[cmd]:.1f}"
        rss, peak = rss_mb(int(info["pid"]))
    finally:
        subprocess.run([DBTOOL, "--area", str(root), "server", "stop"], capture_output=True, timeout=120)
    size_mb = db.stat().st_size / 1e6
    report(
        f"scale: {args.runs:,} runs, {args.tests:,} tests, through the server (persistent connection)",
        rows,
        ["read", "result", "p50 ms", "p99 ms", "p50 ms, as dicts", "one-shot dbtool ms"],
        {"machine": machine(), "db_mb": size_mb, "rss_mb": rss, "rss_peak_mb": peak, "generated": made},
    )
    print(f"database {size_mb:.0f} MB; server RSS {rss:.0f} MB now, {peak:.0f} MB peak (target <= 150 MB)")
    slowest = max(rows, key=lambda r: float(r["p50 ms"]))
    print(f"slowest read: {slowest['read']}, p50 {slowest['p50 ms']} ms (target <= 20 ms)")
    print("query plans (EXPLAIN QUERY PLAN):")
    for name, statements in plans.items():
        for sql, plan in statements:
            print(f"  {name}: {' '.join(sql.split())[:110]}")
            for step in plan:
                flag = "  <-- full scan" if step.startswith("SCAN") and "INDEX" not in step else ""
                print(f"      {step}{flag}")
    if not args.keep:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
