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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, check_installed, machine, percentile, run, temp_area

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
    import asyncio

    from dbtool.core.commands import lookup
    from dbtool.core.db.engine import WRITE, read_keys, sqlite_engine
    from dbtool.core.db.schema import schema_for
    from dbtool.core.request import RequestContext
    from dbtool.core.server.writer import Writer

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        engine = sqlite_engine(str(root / ".dbtool" / "dbtool.db"), WRITE, synchronous="FULL")
        with engine.connect() as conn:
            keys = read_keys(conn)
            last_seq = conn.exec_driver_sql("select coalesce(max(seq), 0) from events").scalar()
        writer = Writer(engine, schema_for(keys), {}, loop, lambda events: None, last_seq)
        writer.start()
        cmd = lookup("test-set-state-status-by-id")
        client = {"user": "bench", "host": "localhost", "pid": os.getpid()}
        tag = os.urandom(4).hex()
        share = len(ids) // clients
        start_at = time.monotonic() + 0.3
        stop_at = start_at + seconds
        latencies: list[float] = []
        cpu_at_start = 0.0
        finished = loop.create_future()
        streams = clients

        def send(c: int, n: int) -> None:
            state, status = ("RUNNING", "n/a") if n % 2 else ("COMPLETED", "PASS")
            params = {"test_id": ids[c * share + n % share], "state": state, "status": status}
            ctx = RequestContext(f"w-{c}-{n}", cmd.api, params, client, "bench@localhost")
            if variant == "fields":
                ctx.give({"ci_job": "4711", "stage": "unit"})
            elif variant == "locked":
                ctx.lock_token = token
            sent_at = time.perf_counter()
            future = writer.submit(cmd, cmd.bind_wire(params), ctx, f"{tag}-{c}-{n}")
            future.add_done_callback(lambda f: answered(f, c, n, sent_at))

        def answered(future, c: int, n: int, sent_at: float) -> None:
            nonlocal cpu_at_start, streams
            future.result()
            now = time.monotonic()
            if now >= start_at:
                if not latencies:
                    cpu_at_start = time.process_time()
                latencies.append((time.perf_counter() - sent_at) * 1000)
            if now < stop_at:
                return send(c, n + 1)
            streams -= 1
            if not streams:
                finished.set_result(time.process_time() - cpu_at_start)

        for c in range(clients):
            send(c, 0)
        spent = await finished
        await writer.stop()
        engine.dispose()
        return {"writes_s": len(latencies) / seconds, "cpu_us": spent / max(1, len(latencies)) * 1e6}

    return asyncio.run(main())


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
