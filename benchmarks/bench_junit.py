"""Benchmark 9: import-junit — a generated JUnit file of 100,000 cases (a tenth failing, with texts).

Whole-process wall time and cases/s of `dbtool import-junit --run-id N FILE` (server up,
synchronous=FULL: the file checked, parsed and stored in parts growing from 1,000 to 10,000 cases,
one transaction each), against two baselines of the same interpreter in the same run: parsing the same file with
defusedxml's iterparse alone (clearing each testcase), and storing the same rows with a plain
`executemany` into the tests table of another area, one commit. Target: >= 50,000 cases/s.

    python benchmarks/bench_junit.py [--cases 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, PYTHON, check_installed, machine, report, run, temp_area, timed

PARSE = """
import sys
from defusedxml.ElementTree import iterparse
cases = 0
for event, element in iterparse(sys.argv[1], events=("end",)):
    if element.tag == "testcase":
        cases += 1
        element.clear()
print(cases)
"""

EXECUTEMANY = """
import sqlite3, sys
cases = int(sys.argv[2])
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("pragma synchronous=full")
run_id = int(sys.argv[3])
rows = [(run_id, f"pkg.mod{i // 100}.TestC", f"test_{i}[p{i}]", "COMPLETED", "FAIL" if i % 10 == 3 else "PASS",
         "assert" if i % 10 == 3 else "", 0) for i in range(cases)]
con.execute("begin immediate")
con.executemany(
    "insert into tests (run_id, testname, item_path, state, status, comment, run_duration)"
    " values (?, ?, ?, ?, ?, ?, ?)",
    rows,
)
con.execute("commit")
"""


def write_junit(path: Path, cases: int) -> None:
    """pytest's shape: classes of 100 cases; every tenth fails with a message, a traceback and output."""
    with open(path, "w") as f:
        f.write(f'<?xml version="1.0" encoding="utf-8"?>\n<testsuites><testsuite name="bench" tests="{cases}">\n')
        for i in range(cases):
            attrs = f'classname="pkg.mod{i // 100}.TestC" name="test_{i}[p{i}]" time="0.{i % 1000:03d}"'
            if i % 10 == 3:
                f.write(
                    f'<testcase {attrs}><failure message="assert {i} == 0" type="AssertionError">'
                    f"def test():\n&gt;   assert {i} == 0\nE   AssertionError</failure>"
                    f"<system-out>case {i} output</system-out></testcase>\n"
                )
            else:
                f.write(f"<testcase {attrs}/>\n")
        f.write("</testsuite></testsuites>\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    check_installed()
    with tempfile.TemporaryDirectory(prefix="dbtool-junit-") as tmp:
        data = Path(tmp) / "report.xml"
        write_junit(data, args.cases)
        size = data.stat().st_size
        with temp_area(**{"server.idle_timeout": "0"}) as root, temp_area() as plain:
            area = ["--area", str(root)]
            dbtool_s, parse_s, direct_s = [], [], []
            for i in range(args.repeat):  # a new run each time: every case a new test, as in the baseline
                run_id = run([DBTOOL, *area, "register-run", "--target", "v1/linux", "--runname", f"r{i}"]).strip()
                dbtool_s.append(timed([DBTOOL, *area, "import-junit", "--run-id", run_id, str(data)]))
                parse_s.append(timed([PYTHON, "-c", PARSE, str(data)]))
                db = str(plain / ".dbtool" / "dbtool.db")
                direct_s.append(timed([PYTHON, "-c", EXECUTEMANY, db, str(args.cases), str(i + 1)]))
            again = run([DBTOOL, *area, "import-junit", "--run-id", run_id, str(data)]).strip()
            stored = json.loads(
                run([DBTOOL, *area, "get-tests-for-run", "--run-id", run_id, "--fields", "id", "--json"])
            )
    tests = args.cases + (args.cases + 99) // 100  # the cases and their toplevels
    if len(stored) != tests:
        sys.exit(f"dbtool stored {len(stored)} tests, not {tests}")
    if not again.startswith("stored 0, refused 0"):
        sys.exit(f"importing the file again said {again!r}, not stored 0")
    dbtool, parse, direct = statistics.median(dbtool_s), statistics.median(parse_s), statistics.median(direct_s)
    rows = [
        {"path": path, "median s": f"{seconds:.2f}", "cases/s": f"{args.cases / seconds:,.0f}"}
        for path, seconds in (
            ("dbtool import-junit FILE", dbtool),
            ("defusedxml iterparse alone", parse),
            ("executemany of the rows (one commit)", direct),
        )
    ]
    title = f"import-junit: {args.cases:,} cases, {size / 1e6:.0f} MB"
    report(title, rows, ["path", "median s", "cases/s"], {"machine": machine()})
    print(
        f"import-junit: {args.cases / dbtool:,.0f} cases/s (target >= 50,000); "
        f"{parse / dbtool:.2f} x parsing alone, {direct / dbtool:.2f} x executemany"
    )


if __name__ == "__main__":
    main()
