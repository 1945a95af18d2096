"""What the seed capabilities cost a write: the area lock's check, request fields, open tests.

The writer alone, in this process (as `bench_throughput.py`'s `writer_alone`: no sockets, no JSON,
so that a few microseconds per write show), takes status writes (`test-set-state-status-by-id`)
from N streams, each sending its next write when its last is answered. Variants, interleaved
round by round so that the machine's drift hits each alike:

* plain — no lock, no fields, no test open: what every write pays for the checks being there;
* fields — each request carries two fields (``--field``), which its events store;
* locked — the area is locked and each request carries the lock's token (hashed per request);
* open — 100 other tests are open for jobs (``exec --exclusive``): each write looks its test up.

Run it with an older dbtool installed to get its "plain" (the variants need this one):

    python benchmarks/bench_seeds.py [--seconds 3] [--rounds 5] [--clients 1,64]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, check_installed, drive_writer, machine, percentile, run, temp_area

TESTS = 2000
OPEN = 100


def prepare(root: Path) -> list[int]:
    run([DBTOOL, "--area", str(root), "register-run", "--target", "v1/linux", "--runname", "bench"])
    run([DBTOOL, "--area", str(root), "server", "stop"])
    con = sqlite3.connect(root / ".dbtool" / "dbtool.db")
    con.executemany(
        "insert into tests (run_id, testname, item_path, state, status, uname) "
        "values (1, ?, '', 'NOT_STARTED', 'n/a', 'h')",
        [(f"t{i}",) for i in range(TESTS + OPEN)],
    )
    con.commit()
    ids = [r[0] for r in con.execute("select id from tests order by id")]
    con.close()
    return ids


def seeds_supported() -> bool:
    from dbtool.core.request import RequestContext

    return hasattr(RequestContext, "give")


def set_state(root: Path, variant: str, open_ids: list[int]) -> str | None:
    """The area's lock and open tests for a variant (the server is stopped); the lock's token."""
    if not seeds_supported():
        return None
    from dbtool.core.request import token_hash

    con = sqlite3.connect(root / ".dbtool" / "dbtool.db")
    with con:
        con.execute("update area_state set lock_token = null, version = version + 1 where id = 1")
        con.execute("delete from test_jobs")
        token = None
        if variant == "locked":
            token = os.urandom(16).hex()
            con.execute(
                "update area_state set lock_token = ?, lock_holder = 'bench', lock_host = 'h', locked_at = 0 "
                "where id = 1",
                (token_hash(token),),
            )
        if variant == "open":
            con.executemany(
                "insert into test_jobs (test_id, token, holder, host, pid, opened) values (?, 'x', 'b', 'h', 1, 0)",
                [(i,) for i in open_ids],
            )
    con.close()
    return token


def writer_alone(root: Path, ids: list[int], clients: int, seconds: float, variant: str, token: str | None) -> dict:
    """``drive_writer`` (common.py) with each request's context as the variant has it."""

    def prepare(ctx) -> None:
        if variant == "fields":
            ctx.give({"ci_job": "4711", "stage": "unit"})
        elif variant == "locked":
            ctx.lock_token = token

    return drive_writer(root, ids, clients, seconds, warmup=0.3, prepare=prepare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", default="1,64")
    args = parser.parse_args()
    check_installed()
    variants = ["plain", "fields", "locked", "open"] if seeds_supported() else ["plain"]
    print(machine())
    worst = (0.0, "none")
    with temp_area() as root:
        ids = prepare(root)
        written, opened = ids[:TESTS], ids[TESTS:]
        for clients in (int(c) for c in args.clients.split(",")):
            results: dict[str, list[dict]] = {v: [] for v in variants}
            for _ in range(args.rounds):
                for variant in variants:
                    token = set_state(root, variant, opened)
                    results[variant].append(writer_alone(root, written, clients, args.seconds, variant, token))
            base = statistics.median(r["cpu_us"] for r in results["plain"])
            for variant, rows in results.items():
                rate = statistics.median(r["writes_s"] for r in rows)
                cpu = statistics.median(r["cpu_us"] for r in rows)
                spread = percentile([r["cpu_us"] for r in rows], 90) - percentile([r["cpu_us"] for r in rows], 10)
                print(
                    f"{clients:3d} in flight  {variant:7s} {rate:9.0f} writes/s  {cpu:6.1f} µs CPU per write "
                    f"({cpu - base:+5.1f} µs vs plain; spread p10-p90 {spread:4.1f} µs)"
                )
                worst = max(worst, (cpu - base, f"{variant}, {clients} in flight"))
    print(f"seeds' checks: at most {worst[0]:+.1f} µs of CPU per write over plain ({worst[1]})")


if __name__ == "__main__":
    main()
