"""Benchmark 2: a read with no server running (the direct read-only fallback).

`dbtool get-tests-for-run --run-id N --json` on a populated area (200 runs, 101,500 tests; the run
read has 2,000 tests), against `python -c "import sqlmodel"` on the same interpreter.
Target: ≤ 150 ms above `import sqlmodel`. Also reports where the time goes (imports by package,
from `-X importtime`, and the rest: connecting, the query, printing).

    python benchmarks/bench_direct_read.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, PYTHON, check_installed, interleaved, machine, report, temp_area

RUNS, TESTS_PER_RUN, BIG_RUN, BIG_TESTS = 200, 500, 100, 2000


def populate(root: Path) -> None:
    con = sqlite3.connect(root / ".dbtool" / "dbtool.db")
    con.executemany(
        "insert into runs (id, RELEASE, PLATFORM, runname, state, status, owner, event_time) "
        "values (?, ?, ?, ?, 'new', 'n/a', 'ci', ?)",
        [(i, f"v{i % 10}", f"p{i % 7}", f"run{i}", 1_700_000_000 + i) for i in range(1, RUNS + 1)],
    )
    con.executemany(
        "insert into tests (run_id, testname, item_path, state, status, uname, host, event_time) "
        "values (?, ?, ?, 'COMPLETED', 'PASS', 'h', 'h', 1700000000)",
        [
            (run, f"t{i // 10}", f"i{i % 10}")
            for run in range(1, RUNS + 1)
            for i in range(BIG_TESTS if run == BIG_RUN else TESTS_PER_RUN)
        ],
    )
    con.commit()
    con.close()


def import_breakdown(argv: list[str]) -> dict[str, float]:
    """Cumulative import time (ms) of the top-level packages a run loads."""
    proc = subprocess.run([PYTHON, "-X", "importtime", *argv], capture_output=True, text=True, check=True)
    top: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.split(":", 1)[1].split("|"))
        if not cumulative.isdigit() or name.startswith(" "):
            continue
        package = name.split(".")[0]
        if name == package or package not in top:
            top[package] = max(top.get(package, 0.0), int(cumulative) / 1000)
    return top


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    check_installed()
    with temp_area() as root:
        populate(root)
        read = [DBTOOL, "--area", str(root), "get-tests-for-run", "--run-id", str(BIG_RUN), "--json"]
        medians = interleaved(
            {
                "python -c pass": [PYTHON, "-c", "pass"],
                "python -c 'import sqlmodel'": [PYTHON, "-c", "import sqlmodel"],
                "dbtool get-tests-for-run (no server)": read,
            },
            args.repeat,
        )
        imports = import_breakdown([DBTOOL, *read[1:]])
    base = medians["python -c 'import sqlmodel'"]
    rows = [
        {"command": name, "median ms": f"{ms:.1f}", "above import sqlmodel": f"{ms - base:+.1f}"}
        for name, ms in medians.items()
    ]
    report(
        "read without a server (direct read-only fallback): 2,000 tests of a 101,500-test area",
        rows,
        ["command", "median ms", "above import sqlmodel"],
        {"machine": machine()},
    )
    above = medians["dbtool get-tests-for-run (no server)"] - base
    print(f"dbtool direct read: {above:+.0f} ms above import sqlmodel (target <= 150)")
    heavy = sorted(imports.items(), key=lambda kv: -kv[1])[:8]
    print("where the time goes (cumulative import time under -X importtime, which inflates it):")
    for package, ms in heavy:
        print(f"  import {package:20s} {ms:8.1f} ms")


if __name__ == "__main__":
    main()
