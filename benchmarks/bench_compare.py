"""Benchmark 10: the CI loop's reads — `compare` of two 100,000-test runs, `history` over 10,000 runs.

Generates an area (created by `dbtool init`, filled with plain SQLite inserts): a baseline run and a
run of --tests tests each (toplevels with 9 items; 2 % of the leaves regress, 1 % are fixed, some new,
missing and DEAD), an incomplete run between them that the auto baseline must skip, and --runs runs
of another target that all have the test `h0` (with 19 other tests each) for `history`.
Times, through the server on one persistent connection and as one-shot `dbtool ... --json`
processes (a CI script's call): `compare --run-id N` (auto baseline), `compare --baseline ID`,
`history --testname h0` (every run) and `--limit 20`, `flaky --target PATT`. Baseline, same run: the
same rows read with Python's sqlite3 and compared in plain Python (no classes beyond the four
statuses), and the same history join.
Targets (p50 through the server, as benchmark 5's): compare <= 1 s, history <= 100 ms.

    python benchmarks/bench_compare.py [--tests 100000] [--runs 10000] [--repeat 10] [--oneshot-repeat 5]
"""

from __future__ import annotations

import argparse
import random
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

ITEMS = 9  # items per toplevel of the compared runs
HISTORY_TESTS = 20  # tests per run of the history target
EPOCH = 1_700_000_000


def compared_rows(run_id: int, count: int, baseline: bool, rng: random.Random):
    """``count`` rows of a compared run: toplevels t0, t1, ... each with items i0..i8."""
    made = name = 0
    while made < count:
        for item in range(ITEMS + 1):
            if made == count:
                break
            item_path = "" if item == 0 else f"i{item - 1}"
            made += 1
            roll = rng.random()
            if baseline:
                status = "FAIL" if roll < 0.02 else "PASS"
                if roll > 0.995:  # only in the baseline: missing from the run
                    item_path += "-old"
            else:
                status = "FAIL" if roll < 0.03 else "DEAD" if roll > 0.998 else "PASS"
                if 0.99 < roll <= 0.995:  # only in the run: new
                    item_path += "-new"
            yield (run_id, f"t{name}", item_path, "COMPLETED", status, EPOCH + run_id)
        name += 1


def generate(root: Path, tests: int, runs: int) -> dict:
    """The area at ``root``; returns the ids of the compared runs and what was made."""
    started = time.monotonic()
    run([DBTOOL, "init", str(root), "--keys", "RELEASE,PLATFORM"])
    db = root / ".dbtool" / "dbtool.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    insert_run = (
        "insert into runs (id, RELEASE, PLATFORM, runname, state, status, owner, event_time) "
        "values (?, ?, ?, ?, 'done', 'n/a', 'ci', ?)"
    )
    insert_test = "insert into tests (run_id, testname, item_path, state, status, event_time) values (?, ?, ?, ?, ?, ?)"
    con.executemany(insert_run, ((i, "v1", "linux", f"nightly.{i}", EPOCH + i * 600) for i in range(1, runs + 1)))
    rng = random.Random(10)
    con.executemany(
        insert_test,
        (
            (i, f"h{n}", "", "COMPLETED", "FAIL" if rng.random() < 0.05 else "PASS", EPOCH + i * 600)
            for i in range(1, runs + 1)
            for n in range(HISTORY_TESTS)
        ),
    )
    base, incomplete, current = runs + 1, runs + 2, runs + 3
    late = EPOCH + runs * 600
    for run_id, name in ((base, "ci.1"), (incomplete, "ci.2"), (current, "ci.3")):
        con.execute(insert_run, (run_id, "v2", "linux", name, late + run_id))
    con.executemany(insert_test, compared_rows(base, tests, True, rng))
    con.execute(insert_test, (incomplete, "t0", "", "RUNNING", "n/a", late))
    con.executemany(insert_test, compared_rows(current, tests, False, rng))
    # what the server's writer keeps for runs whose tests are all final (handlers/completion.py)
    con.execute(
        "update runs set completed_at = event_time where not exists (select 1 from tests "
        "where tests.run_id = runs.id and tests.state not in ('COMPLETED', 'KILLED', 'DEAD'))"
    )
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()
    made = {"runs": runs + 3, "tests": runs * HISTORY_TESTS + 2 * tests + 1}
    made["seconds"] = round(time.monotonic() - started, 1)
    return {"base": base, "current": current, "made": made}


def plain_compare(con: sqlite3.Connection, run_id: int, base_id: int) -> int:
    """The baseline: both runs' leaf rows through sqlite3, classified in plain Python."""

    def leaves(rid: int) -> dict:
        rows = con.execute("select testname, item_path, state, status from tests where run_id = ?", (rid,)).fetchall()
        with_items = {name for name, item, _, _ in rows if item}
        return {(n, i): (s, st) for n, i, s, st in rows if i or n not in with_items}

    now, before = leaves(run_id), leaves(base_id)
    listed = 0
    for key, (_, status) in now.items():
        was = before.get(key)
        listed += was is None or status in ("DEAD", "KILLED") or (status == "FAIL") or was[1] == "FAIL"
    return listed + len(before.keys() - now.keys())


PLAIN_HISTORY = (
    "select r.id, r.runname, r.RELEASE || '/' || r.PLATFORM, r.event_time, t.state, t.status, t.comment, t.id "
    "from tests t join runs r on r.id = t.run_id where t.testname = ? and t.item_path = '' "
    "and coalesce(t.state, '') != 'DELETED' and r.deleted_at is null order by r.event_time desc, r.id desc"
)


def timed(call, repeat: int) -> list[float]:
    call()  # warm: the first call faults the pages in
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=100_000, help="tests (rows) of each compared run")
    parser.add_argument("--runs", type=int, default=10_000, help="runs that have the test `history` lists")
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per read through the server")
    parser.add_argument("--oneshot-repeat", type=int, default=5, help="one-shot dbtool processes per read")
    args = parser.parse_args()
    check_installed()
    from dbtool.core.area import Area
    from dbtool.core.link import Connection, read_server_info
    from dbtool.core.protocol import plain

    root = Path(tempfile.mkdtemp(prefix="dbtool-compare-")) / "area"
    made = generate(root, args.tests, args.runs)
    base, current = made["base"], made["current"]
    print(f"generated: {made['made']}")
    set_config(root, "server.idle_timeout", "0")
    reads = {
        "compare (auto baseline)": ("compare", {"run_id": current}, ["--run-id", str(current)]),
        "compare --baseline ID": (
            "compare",
            {"run_id": current, "baseline": str(base)},
            ["--run-id", str(current), "--baseline", str(base)],
        ),
        f"history ({args.runs:,} runs)": ("history", {"testname": "h0"}, ["--testname", "h0"]),
        "history --limit 20": ("history", {"testname": "h0", "limit": 20}, ["--testname", "h0", "--limit", "20"]),
        "flaky --target v1/linux": ("flaky", {"target": "v1/linux"}, ["--target", "v1/linux"]),
    }
    con = sqlite3.connect(f"file:{root / '.dbtool' / 'dbtool.db'}?mode=ro", uri=True)
    baselines = {
        "compare (auto baseline)": lambda: plain_compare(con, current, base),
        "compare --baseline ID": lambda: plain_compare(con, current, base),
        f"history ({args.runs:,} runs)": lambda: con.execute(PLAIN_HISTORY, ("h0",)).fetchall(),
        "history --limit 20": lambda: con.execute(PLAIN_HISTORY + " limit 20", ("h0",)).fetchall(),
    }
    rows = []
    try:
        run([DBTOOL, "--area", str(root), "server", "start"])
        info = read_server_info(Area(str(root)))
        with Connection(info) as conn:
            for name, (cmd, params, _) in reads.items():
                result = plain(conn.call(cmd, params))
                if cmd == "compare":
                    assert result["baseline"] == base, result["baseline"]
                    size = ", ".join(f"{len(result[c])} {c}" for c in ("regressions", "fixed", "new", "infrastructure"))
                else:
                    size = f"{len(result)} rows"
                times = timed(lambda cmd=cmd, params=params: plain(conn.call(cmd, params)), args.repeat)
                row = {"read": name, "result": size, "p50 ms": f"{statistics.median(times):.1f}"}
                row["max ms"] = f"{percentile(times, 100):.1f}"
                if name in baselines:
                    base_ms = statistics.median(timed(baselines[name], args.repeat))
                    row["sqlite3 + Python ms"] = f"{base_ms:.1f}"
                    row["ratio"] = f"{statistics.median(times) / base_ms:.2f}x"
                rows.append(row)
        oneshot = interleaved(
            {name: [DBTOOL, "--area", str(root), cmd, *cli, "--json"] for name, (cmd, _, cli) in reads.items()},
            args.oneshot_repeat,
        )
        for row in rows:
            row["one-shot dbtool ms"] = f"{oneshot[row['read']]:.1f}"
    finally:
        con.close()
        subprocess.run([DBTOOL, "--area", str(root), "server", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root.parent, ignore_errors=True)
    report(
        f"the CI loop's reads: compare of two {args.tests:,}-test runs, history over {args.runs:,} runs",
        rows,
        ["read", "result", "p50 ms", "max ms", "sqlite3 + Python ms", "ratio", "one-shot dbtool ms"],
        {"machine": machine(), "generated": made["made"]},
    )
    compare_ms = max(float(r["p50 ms"]) for r in rows if r["read"].startswith("compare"))
    history_ms = float(rows[2]["p50 ms"])
    print(f"compare of two {args.tests:,}-test runs: p50 {compare_ms:.0f} ms through the server (target <= 1000 ms)")
    print(f"history over {args.runs:,} runs: p50 {history_ms:.0f} ms through the server (target <= 100 ms)")


if __name__ == "__main__":
    main()
