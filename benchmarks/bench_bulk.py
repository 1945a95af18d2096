"""Benchmark 6: bulk test data — `csv-to-test-data --file` with 100,000 rows.

Whole-process wall time and rows/s of `dbtool csv-to-test-data --test-id N --file F` (server up,
synchronous=FULL, the rows checked by the client and again by the server, pass/fail computed),
against one process of the same interpreter that reads the same file with the csv module and
stores it with a plain `executemany` into the same test_data table of another area, one commit.
Target: dbtool >= 0.5 x the executemany rows/s.

    python benchmarks/bench_bulk.py [--rows 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, PYTHON, check_installed, machine, report, run, temp_area, timed

EXECUTEMANY = """
import csv, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("pragma synchronous=full")
with open(sys.argv[2], newline="") as f:
    rows = [(int(sys.argv[3]), *(r + [""] * 9)[:9]) for r in csv.reader(f)]
con.execute("begin immediate")
con.executemany(
    "insert into test_data (test_id, category, variable, value, expected, tol, units, comment, status, type)"
    " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    rows,
)
con.execute("commit")
"""


def write_csv(path: Path, rows: int) -> None:
    """Measurements as a test harness writes them: categories, unique variables, some judged by tolerance."""
    rng = random.Random(6)
    with open(path, "w") as f:
        for i in range(rows):
            value = round(rng.uniform(0, 100), 3)
            if i % 3 == 0:
                f.write(f"perf{i % 20},metric{i},{value},50,60,ms,,,\n")
            elif i % 3 == 1:
                f.write(f"power{i % 20},rail{i},{value},,,mW,measured on bench,PASS,\n")
            else:
                f.write(f"size{i % 20},block{i},{int(value * 1000)},100000,<=,bytes,,,\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    check_installed()
    with tempfile.TemporaryDirectory(prefix="dbtool-bulk-") as tmp:
        data = Path(tmp) / "data.csv"
        write_csv(data, args.rows)
        with temp_area(**{"server.idle_timeout": "0"}) as root, temp_area() as plain:
            area = ["--area", str(root)]
            run([DBTOOL, *area, "register-run", "--target", "v1/linux", "--runname", "bench"])
            db = str(plain / ".dbtool" / "dbtool.db")
            dbtool_s, direct_s = [], []
            for i in range(args.repeat):  # a new test each time: every row is an insert, as the baseline's
                test_id = run([DBTOOL, *area, "register-test", "--run-id", "1", "--testname", f"t{i}"]).strip()
                dbtool_s.append(timed([DBTOOL, *area, "csv-to-test-data", "--test-id", test_id, "--file", str(data)]))
                direct_s.append(timed([PYTHON, "-c", EXECUTEMANY, db, str(data), str(i + 1)]))
            stored = len(json.loads(run([DBTOOL, *area, "read-test-data", "--test-id", test_id, "--json"])))
    if stored != args.rows:
        sys.exit(f"dbtool stored {stored} rows, not {args.rows}")
    dbtool, direct = statistics.median(dbtool_s), statistics.median(direct_s)
    rows = [
        {"path": path, "median s": f"{seconds:.2f}", "rows/s": f"{args.rows / seconds:,.0f}"}
        for path, seconds in (
            ("dbtool csv-to-test-data --file", dbtool),
            ("python csv + executemany (one commit)", direct),
        )
    ]
    report(f"bulk test data: {args.rows:,} CSV rows", rows, ["path", "median s", "rows/s"], {"machine": machine()})
    print(f"dbtool / executemany: {direct / dbtool:.2f} x (target >= 0.5)")


if __name__ == "__main__":
    main()
