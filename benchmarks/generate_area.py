"""Generate a large area for the scale benchmark: N runs, M tests, one run with a fixed test count.

The area is created by `dbtool init` (so the schema, indexes and triggers are dbtool's own) and
filled with plain SQLite inserts, which is far faster than going through the server; the data has
the shape of a real test area:

* keys RELEASE and PLATFORM: 40 releases (v1.0 .. v4.9) x 5 platforms, runs spread over them;
* each run has tests t0, t1, ... each with a toplevel row (item_path "") and items i0, i1, ...;
* old runs are COMPLETED (mostly PASS, some FAIL); the newest runs still have tests LAUNCHED,
  RUNNING and REMOTEHOSTSTART, as a live area does;
* run_stats holds the per-run state/status counts, as roll-ups keep them.

    python benchmarks/generate_area.py DIR [--runs 10000] [--tests 1000000] [--big-run-tests 2000]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL

PLATFORMS = ["linux", "centos", "ubuntu", "sles", "aix"]
RELEASES = [f"v{major}.{minor}" for major in range(1, 5) for minor in range(10)]
RUNNING_STATES = ["LAUNCHED", "RUNNING", "REMOTEHOSTSTART"]
ITEMS_PER_TEST = 9  # + 1 toplevel = 10 rows per test name
NOW = int(time.time())
EPOCH = NOW - 86_400 * 365  # the oldest run: a year ago


def target_of(run_id: int) -> tuple[str, str]:
    return RELEASES[run_id % len(RELEASES)], PLATFORMS[(run_id // len(RELEASES)) % len(PLATFORMS)]


def test_counts(runs: int, tests: int, big_run: int, big_tests: int) -> list[int]:
    """Rows per run (index 0 = run 1): the big run has big_tests, the others share the rest evenly."""
    rest, others = tests - big_tests, runs - 1
    base, extra = divmod(rest, others)
    counts = [base + (1 if i < extra else 0) for i in range(others)]
    counts.insert(big_run - 1, big_tests)
    return counts


def test_rows(run_id: int, count: int, live: bool, rng: random.Random):
    """``count`` rows of one run: toplevels and items, in id order."""
    made = 0
    name = 0
    while made < count:
        testname = f"t{name}"
        for item in range(ITEMS_PER_TEST + 1):
            if made == count:
                break
            item_path = "" if item == 0 else f"i{item - 1}"
            when = EPOCH + run_id * 600 + made
            if live and rng.random() < 0.3:
                state, status = rng.choice(RUNNING_STATES), "n/a"
                when = NOW - rng.randrange(600)  # reported lately: alive, not taken for a dead job
            else:
                state, status = "COMPLETED", ("FAIL" if rng.random() < 0.03 else "PASS")
            host = f"node{rng.randrange(200):03d}"
            rundir = f"/farm/runs/r{run_id}/{testname}/{item_path}"
            duration = rng.randrange(1, 3600)
            yield (
                run_id, testname, item_path, state, status, host, "Linux x86_64", rundir, f"r{run_id}/{testname}",
                duration, when, when,
            )  # fmt: skip
            made += 1
        name += 1


def generate(root: Path, runs: int, tests: int, big_run: int, big_tests: int, live_runs: int = 20) -> dict:
    """Create and fill the area at ``root``; returns what was made."""
    started = time.monotonic()
    subprocess.run([DBTOOL, "init", str(root), "--keys", "RELEASE,PLATFORM"], check=True, capture_output=True)
    db = root / ".dbtool" / "dbtool.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    con.executemany(
        "insert into runs (id, RELEASE, PLATFORM, runname, state, status, owner, event_time, last_update) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (i, *target_of(i), f"ww{i // 100:03d}.{i % 100}", "new" if i > runs - live_runs else "done",
             "n/a", "ci", EPOCH + i * 600, EPOCH + i * 600)
            for i in range(1, runs + 1)
        ),
    )  # fmt: skip
    rng = random.Random(6)
    counts = test_counts(runs, tests, big_run, big_tests)
    stats: dict[tuple[int, str, str], int] = {}
    insert = (
        "insert into tests (run_id, testname, item_path, state, status, host, uname, rundir, shortdir, "
        "run_duration, event_time, last_update) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    for run_id, count in enumerate(counts, start=1):
        rows = list(test_rows(run_id, count, run_id > runs - live_runs, rng))
        con.executemany(insert, rows)
        for row in rows:
            if row[2]:
                key = (run_id, row[3], row[4])
                stats[key] = stats.get(key, 0) + 1
    con.executemany(
        "insert into run_stats (run_id, state, status, count) values (?, ?, ?, ?)",
        ((run_id, state, status, n) for (run_id, state, status), n in stats.items()),
    )
    con.execute("COMMIT")
    con.close()
    return {
        "runs": runs,
        "tests": sum(counts),
        "big_run": big_run,
        "big_run_tests": big_tests,
        "seconds": round(time.monotonic() - started, 1),
        "db_bytes": db.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="where to create the area (must not exist)")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tests", type=int, default=1_000_000)
    parser.add_argument("--big-run-tests", type=int, default=2_000)
    args = parser.parse_args()
    if args.dir.exists():
        sys.exit(f"{args.dir} exists; give a new directory")
    made = generate(args.dir, args.runs, args.tests, args.runs // 2, args.big_run_tests)
    print(", ".join(f"{k} {v}" for k, v in made.items()))


if __name__ == "__main__":
    main()
