"""Run every benchmark, one after another, and print each one's tables and its verdict lines.

Each benchmark measures dbtool and its baseline in the same run and prints their ratio; this script
only runs them in turn (never two at once: they would share the machine's cores) with the
interpreter that runs it, which must be the one of the virtual environment dbtool is installed in.
Benchmark 8 (PostgreSQL beside SQLite) needs a PostgreSQL it may create databases in: --pg-url.

    python benchmarks/run_all.py [--only 1,3] [--scale-runs 10000 --scale-tests 1000000] [--pg-url URL]
        [--json FILE]

``--json FILE`` also appends every table as one JSON line (DBTOOL_BENCH_JSON), for comparing runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PYTHON, check_installed, machine

HERE = Path(__file__).resolve().parent


def benchmarks(args: argparse.Namespace) -> dict[int, list[str]]:
    """Benchmark number → its command line (the issue's numbering)."""
    return {
        1: ["bench_client.py"],
        2: ["bench_direct_read.py"],
        3: ["bench_throughput.py"],
        4: ["bench_oneshot.py"],
        5: ["bench_scale.py", "--runs", str(args.scale_runs), "--tests", str(args.scale_tests)],
        6: ["bench_bulk.py"],
        7: ["bench_match.py"],
        8: ["bench_postgres.py", "--runs", str(args.scale_runs), "--tests", str(args.scale_tests)]
        + (["--pg-url", args.pg_url] if args.pg_url else []),
        9: ["bench_junit.py"],
        10: ["bench_compare.py"],
        11: ["bench_report.py"],
        12: ["bench_server_oneshot.py"],
        13: ["bench_completion.py"],
        14: ["bench_read_then_read.py"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9,10,11,12,13,14", help="comma-separated benchmark numbers")
    parser.add_argument("--scale-runs", type=int, default=10_000)
    parser.add_argument("--scale-tests", type=int, default=1_000_000)
    parser.add_argument("--pg-url", help="benchmark 8's PostgreSQL (default: $DBTOOL_BENCH_PG_URL, else the local one)")
    parser.add_argument("--json", type=Path, help="append every table to this file as JSON lines")
    args = parser.parse_args()
    check_installed()
    try:
        chosen = [int(n) for n in args.only.split(",") if n.strip()]
    except ValueError:
        sys.exit(f"--only {args.only!r}: give benchmark numbers, e.g. --only 1,3")
    known = benchmarks(args)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        sys.exit(f"--only: no benchmark {unknown[0]}; they are {', '.join(map(str, known))}")
    env = dict(os.environ)
    if args.json:
        env["DBTOOL_BENCH_JSON"] = str(args.json.resolve())
    print("machine:", ", ".join(f"{k} {v}" for k, v in machine().items()))
    verdicts: list[str] = []
    failed = []
    for number in chosen:
        script, *options = known[number]
        print(f"\n##### benchmark {number}: {script} {' '.join(options)}", flush=True)
        start = time.monotonic()
        proc = subprocess.run(
            [PYTHON, str(HERE / script), *options], env=env, stdout=subprocess.PIPE, text=True, check=False
        )
        print(proc.stdout, end="")
        print(f"(benchmark {number} took {time.monotonic() - start:.0f} s)")
        if proc.returncode != 0:
            failed.append(number)
        verdicts += [f"{number}: {line.strip()}" for line in proc.stdout.splitlines() if "(target" in line]
    print("\n##### verdicts")
    print("\n".join(verdicts) or "(none)")
    if failed:
        sys.exit(f"benchmark(s) {', '.join(map(str, failed))} failed; see their output above")


if __name__ == "__main__":
    main()
