"""Benchmark 8: an area kept in PostgreSQL beside one in its SQLite file, measured in the same run.

(a) Writes: 64 persistent clients writing test status as benchmark 3 does (its Client, one status
    at a time, with an idempotency key), through one PostgreSQL front-end and through the SQLite
    server: acknowledged writes/s, p50/p99, and the CPU per write of the server process (utime +
    stime from /proc/<pid>/stat, before and after) — and, for PostgreSQL, of its backends serving
    the benchmark's database too, since there part of the work leaves the server's process.
(b) The same clients split over two front-ends (two $DBTOOL_HOSTNAMEs) on the one database: total
    writes/s, CPU per write summed over both servers.
(c) The reads of benchmark 5 on a large area (10,000 runs, 1,000,000 tests, made as benchmark 5
    makes it, then copied and moved to PostgreSQL with `dbtool migrate --to`), through each server
    on one persistent connection, the two interleaved: `get-tests-for-run` of the 2,000-test run,
    `get-runs --target v1.2/%`, `get-count-tests-running`; p50 per read. On PostgreSQL once as
    `migrate` leaves the database and once more after an ANALYZE.
(d) `dbtool --json migrate --to URL` of that area: rows/s (beside the rate the plain SQLite inserts
    that generated it reached).

The write loads run in ``--rounds`` rounds (SQLite, one front-end, two front-ends, in turn), so a
noisy neighbour weighs on each alike; the tables give medians over the rounds. Every database the
benchmark uses is one it creates (dbtool_bench_<pid>...) on the PostgreSQL of ``--pg-url``, and
drops (WITH (FORCE)) when it ends; every server it starts is stopped (killed when a stop fails).

    python benchmarks/bench_postgres.py [--seconds 5] [--clients 64] [--rounds 2] [--runs 10000]
        [--tests 1000000] [--repeat 30] [--pg-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import PROCESSES, TESTS, client_process, prepare
from common import DBTOOL, check_installed, machine, percentile, report, run, set_config, temp_area
from generate_area import generate

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOST_A, HOST_B, HOST_SCALE = "bench-a", "bench-b", "bench-scale"  # front-ends' $DBTOOL_HOSTNAMEs


# -- PostgreSQL: databases of our own ------------------------------------------------------------------
def libpq_url(url: str) -> str:
    """A URL as psycopg takes it (no '+driver' in the scheme)."""
    return "postgresql://" + url.partition("://")[2]


def database_url(admin_url: str, name: str) -> str:
    """``admin_url`` naming the database ``name`` instead."""
    return urlunsplit(urlsplit(libpq_url(admin_url))._replace(path=f"/{name}"))


def pg_unreachable(admin_url: str) -> str:
    """Why the PostgreSQL at ``admin_url`` cannot be used ('' when it can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'dbtool[postgres]')"
    try:
        psycopg.connect(libpq_url(admin_url), connect_timeout=5).close()
    except psycopg.Error as err:
        return f"PostgreSQL at {admin_url} does not answer: {' '.join(str(err).split())}"
    return ""


@contextmanager
def fresh_database(admin_url: str, name: str):
    """A new, empty database ``name`` (its URL), dropped afterwards with every connection to it."""
    import psycopg

    with psycopg.connect(libpq_url(admin_url), autocommit=True) as con:
        for attempt in range(10):
            try:
                con.execute(f'CREATE DATABASE "{name}"')
                break
            except psycopg.errors.ObjectInUse:  # template1 in use by someone else for a moment
                if attempt == 9:
                    raise
                time.sleep(0.5)
    try:
        yield database_url(admin_url, name)
    finally:
        with psycopg.connect(libpq_url(admin_url), autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def backend_pids(admin_url: str, dbname: str) -> list[int]:
    """The PostgreSQL backends connected to ``dbname`` (the front-ends' pools, their event tails)."""
    import psycopg

    with psycopg.connect(libpq_url(admin_url), autocommit=True) as con:
        rows = con.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)
        ).fetchall()
    return [r[0] for r in rows]


# -- servers: started, found, stopped ------------------------------------------------------------------
def host_env(host: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "DBTOOL_DB_URL"}
    if host:
        env["DBTOOL_HOSTNAME"] = host
    return env


def server_json(root: Path, host: str | None) -> Path:
    return root / ".dbtool" / ("hosts/" + host if host else "") / "server.json"


class Servers:
    """Every server the benchmark starts (an area, and a host for a PostgreSQL front-end), so that
    each one is stopped at the end, and killed when `server stop` does not end it."""

    def __init__(self) -> None:
        self.started: list[tuple[Path, str | None]] = []

    def start(self, root: Path, host: str | None = None) -> dict:
        if (root, host) not in self.started:
            self.started.append((root, host))
        run([DBTOOL, "--area", str(root), "server", "start"], env=host_env(host))
        return self.info(root, host)

    def track(self, root: Path, host: str | None = None) -> None:
        """A server that a command started on its own (the first call to an area)."""
        if (root, host) not in self.started:
            self.started.append((root, host))

    @staticmethod
    def info(root: Path, host: str | None = None) -> dict:
        return json.loads(server_json(root, host).read_text())

    def stop(self, root: Path, host: str | None = None) -> None:
        pid = None
        try:
            pid = int(self.info(root, host)["pid"])
        except (OSError, ValueError, KeyError):
            pass
        subprocess.run(
            [DBTOOL, "--area", str(root), "server", "stop"], capture_output=True, timeout=120, env=host_env(host)
        )
        if pid is not None and not gone(pid, 15.0) and is_server_of(pid, root):
            os.kill(pid, signal.SIGKILL)
            gone(pid, 5.0)

    def stop_all(self) -> None:
        for root, host in reversed(self.started):
            try:
                self.stop(root, host)
            except Exception as err:  # stop the others still
                print(f"could not stop the server of {root} ({host or 'sqlite'}): {err}", file=sys.stderr)
        self.started.clear()


def gone(pid: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def is_server_of(pid: int, root: Path) -> bool:
    """Whether ``pid`` is still a dbtool server of the area (not a process that took its number)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except OSError:
        return False
    return any("dbtool" in a for a in argv) and str(root) in argv


@contextmanager
def pg_area(url: str, servers: Servers):
    """A fresh area kept in the database at ``url`` (`dbtool init --db-url`), removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="dbtool-bench-pg-"))
    try:
        run([DBTOOL, "init", str(root), "--keys", "RELEASE,PLATFORM", "--db-url", url], env=host_env(None))
        set_config(root, "server.idle_timeout", "0")
        yield root
    finally:
        servers.stop_all()
        shutil.rmtree(root, ignore_errors=True)


def prepare_pg(root: Path, url: str, servers: Servers) -> list[int]:
    """The run and its tests of ``bench_throughput.prepare``, in the area's PostgreSQL database;
    front-end A running. The tests are inserted directly, with the front-end stopped (as there)."""
    import psycopg

    servers.track(root, HOST_A)
    run(
        [DBTOOL, "--area", str(root), "register-run", "--target", "v1/linux", "--runname", "bench"],
        env=host_env(HOST_A),
    )
    servers.stop(root, HOST_A)
    with psycopg.connect(libpq_url(url)) as con:
        run_id = con.execute("select id from runs where runname = 'bench'").fetchone()[0]
        with con.cursor() as cur:
            cur.executemany(
                "insert into tests (run_id, testname, item_path, state, status, uname) "
                "values (%s, %s, '', 'NOT_STARTED', 'n/a', 'h')",
                [(run_id, f"t{i}") for i in range(TESTS)],
            )
        ids = [r[0] for r in con.execute("select id from tests order by id")]
    servers.start(root, HOST_A)
    return ids


# -- (a), (b): the write load ---------------------------------------------------------------------------
def proc_cpu(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads) so far; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(infos: list[dict], ids: list[int], clients: int, seconds: float, pg: tuple[str, str] | None = None) -> dict:
    """``clients`` persistent connections writing test status, shared evenly over the servers that
    ``infos`` (their server.json) describe, in PROCESSES load processes (one per server when there
    are more servers): acknowledged writes/s, latency, the servers' CPU per write, and with ``pg``
    (admin URL, database name) that of the PostgreSQL backends connected to the database."""
    procs = max(PROCESSES if len(infos) == 1 else len(infos), 1)
    procs = min(procs, clients)
    start_at = time.monotonic() + 1.0  # a second of warm-up: connections made, caches warm
    stop_at = start_at + seconds
    queue = mp.Queue()
    share = len(ids) // procs
    workers = [
        mp.Process(
            target=client_process,
            args=(infos[p % len(infos)], ids[p * share : (p + 1) * share], clients // procs, start_at, stop_at, queue),
        )
        for p in range(procs)
    ]
    for w in workers:
        w.start()
    try:
        servers = [int(info["pid"]) for info in infos]
        time.sleep(max(0.0, start_at - 0.3 - time.monotonic()))
        backends = backend_pids(*pg) if pg else []
        time.sleep(max(0.0, start_at - time.monotonic()))
        before = {pid: proc_cpu(pid) for pid in servers + backends}
        time.sleep(max(0.0, stop_at - time.monotonic()))
        after = {pid: proc_cpu(pid) for pid in servers + backends}
        results = [queue.get(timeout=seconds + 120) for _ in workers]
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
    spent = {pid: after[pid] - before[pid] for pid in before if before[pid] is not None and after[pid] is not None}
    done = sum(r[0] for r in results)
    latencies = [ms for r in results for ms in r[1]]
    return {
        "writes_s": done / seconds,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "server_us": sum(spent.get(pid, 0.0) for pid in servers) / max(done, 1) * 1e6,
        "pg_us": sum(spent.get(pid, 0.0) for pid in backends) / max(done, 1) * 1e6 if pg else None,
        "backends": len(backends),
    }


def write_loads(args: argparse.Namespace, servers: Servers) -> dict[str, list[dict]]:
    """(a) and (b), ``args.rounds`` times in turn: the SQLite server, one front-end, two front-ends."""
    results: dict[str, list[dict]] = {"sqlite": [], "pg1": [], "pg2": []}
    name = f"dbtool_bench_{os.getpid()}"
    with ExitStack() as stack:
        root = stack.enter_context(temp_area(**{"server.idle_timeout": "0"}))
        servers.track(root)
        ids = prepare(root)
        url = stack.enter_context(fresh_database(args.pg_url, name))
        pg_root = stack.enter_context(pg_area(url, servers))
        pg_ids = prepare_pg(pg_root, url, servers)
        for _ in range(args.rounds):
            results["sqlite"].append(drive([Servers.info(root)], ids, args.clients, args.seconds))
            info_a = Servers.info(pg_root, HOST_A)
            results["pg1"].append(drive([info_a], pg_ids, args.clients, args.seconds, (args.pg_url, name)))
            info_b = servers.start(pg_root, HOST_B)  # only for (b): an idle one would tail every event
            try:
                results["pg2"].append(drive([info_a, info_b], pg_ids, args.clients, args.seconds, (args.pg_url, name)))
            finally:
                servers.stop(pg_root, HOST_B)
        servers.stop(root)
    return results


def median_of(results: list[dict], key: str) -> float:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else float("nan")


def write_rows(results: dict[str, list[dict]], clients: int) -> tuple[list[dict], dict]:
    labels = {
        "sqlite": "SQLite server",
        "pg1": "PostgreSQL, one front-end",
        "pg2": f"PostgreSQL, two front-ends ({clients // 2} + {clients // 2} clients)",
    }
    summary = {
        key: {k: median_of(rs, k) for k in ("writes_s", "p50_ms", "p99_ms", "server_us", "pg_us")}
        for key, rs in results.items()
    }
    base = summary["sqlite"]
    rows = []
    for key, label in labels.items():
        s = summary[key]
        total = s["server_us"] + (s["pg_us"] if s["pg_us"] == s["pg_us"] else 0.0)
        rows.append(
            {
                "server": label,
                "writes/s": f"{s['writes_s']:.0f}",
                "per round": " ".join(f"{r['writes_s']:.0f}" for r in results[key]),
                "p50 ms": f"{s['p50_ms']:.2f}",
                "p99 ms": f"{s['p99_ms']:.2f}",
                "x SQLite writes/s": f"{s['writes_s'] / base['writes_s']:.2f}",
                "server CPU us/write": f"{s['server_us']:.0f}",
                "postgres CPU us/write": "" if key == "sqlite" else f"{s['pg_us']:.0f}",
                "x SQLite CPU/write": f"{s['server_us'] / base['server_us']:.2f}"
                + ("" if key == "sqlite" else f" ({total / base['server_us']:.2f} with postgres)"),
            }
        )
    return rows, summary


# -- (c), (d): the large area -----------------------------------------------------------------------------
def timed_reads(conns: dict[str, object], reads: dict[str, tuple[str, dict]], repeat: int) -> dict:
    """p50/p99 (ms) of each read on each connection, the connections' calls interleaved."""
    from dbtool.core.protocol import Records

    out: dict[tuple[str, str], dict] = {}
    for name, (cmd, params) in reads.items():
        samples: dict[str, list[float]] = {which: [] for which in conns}
        for which, conn in conns.items():
            result = conn.call(cmd, params)
            out[name, which] = {"result": f"{len(result)} rows" if isinstance(result, (list, Records)) else str(result)}
            for _ in range(3):  # warm: the first reads fault the pages in
                conn.call(cmd, params)
        for _ in range(repeat):
            for which, conn in conns.items():
                start = time.perf_counter()
                conn.call(cmd, params)
                samples[which].append((time.perf_counter() - start) * 1000)
        for which, times in samples.items():
            out[name, which].update(p50=statistics.median(times), p99=percentile(times, 99))
    return out


def large_area(args: argparse.Namespace, servers: Servers) -> tuple[list[dict], dict, dict]:
    """(c) and (d): the reads on both, the migrate's figures, what the generation made."""
    from dbtool.core.link import Connection

    big_run = args.runs // 2
    reads = {
        f"get-tests-for-run ({args.big_run_tests} tests)": ("get-tests-for-run", {"run_id": big_run}),
        "get-runs --target v1.2/%": ("get-runs", {"target": "v1.2/%"}),
        "get-count-tests-running": ("get-count-tests-running", {}),
    }
    tmp = Path(tempfile.mkdtemp(prefix="dbtool-bench-pg-scale-"))
    name = f"dbtool_bench_{os.getpid()}_scale"
    try:
        sqlite_root, pg_root = tmp / "sqlite", tmp / "postgresql"
        made = generate(sqlite_root, args.runs, args.tests, big_run, args.big_run_tests)
        print(f"generated: {made}", flush=True)
        set_config(sqlite_root, "server.idle_timeout", "0")
        shutil.copytree(sqlite_root, pg_root)  # the same area, to move to PostgreSQL
        with fresh_database(args.pg_url, name) as url:
            try:
                migrated = json.loads(
                    run([DBTOOL, "--json", "--area", str(pg_root), "migrate", "--to", url], env=host_env(None))
                )
                sqlite_info = servers.start(sqlite_root)
                pg_info = servers.start(pg_root, HOST_SCALE)
                with Connection(sqlite_info) as lite, Connection(pg_info) as pg:
                    timed = timed_reads({"sqlite": lite, "pg": pg}, reads, args.repeat)
                    analyzed_at = time.monotonic()
                    run_analyze(url)
                    analyze_s = time.monotonic() - analyzed_at
                    timed.update(
                        {(n, "pg analyzed"): t for (n, _), t in timed_reads({"pg": pg}, reads, args.repeat).items()}
                    )
            finally:
                servers.stop_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = []
    for read in reads:
        lite, pg, analyzed = timed[read, "sqlite"], timed[read, "pg"], timed[read, "pg analyzed"]
        same = lite["result"] == pg["result"] == analyzed["result"]
        rows.append(
            {
                "read": read,
                "result": lite["result"] if same else f"{lite['result']} / {pg['result']} / {analyzed['result']}",
                "SQLite p50 ms": f"{lite['p50']:.1f}",
                "PostgreSQL p50 ms": f"{pg['p50']:.1f}",
                "after ANALYZE p50 ms": f"{analyzed['p50']:.1f}",
                "x SQLite": f"{pg['p50'] / lite['p50']:.2f} ({analyzed['p50'] / lite['p50']:.2f})",
                "p99 ms SQLite / PG / analyzed": f"{lite['p99']:.1f} / {pg['p99']:.1f} / {analyzed['p99']:.1f}",
            }
        )
    migrated["analyze_s"] = analyze_s
    return rows, migrated, made


def run_analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url), autocommit=True) as con:
        con.execute("ANALYZE")


# -- the run ----------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds of each write load")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the three write loads")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tests", type=int, default=1_000_000)
    parser.add_argument("--big-run-tests", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per read and database")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("DBTOOL_BENCH_PG_URL") or DEFAULT_PG_URL,
        help="a PostgreSQL database to connect to while creating and dropping the benchmark's own "
        "($DBTOOL_BENCH_PG_URL)",
    )
    args = parser.parse_args()
    check_installed()
    if args.clients < 2 or args.clients % 2:
        sys.exit("--clients: give an even number, at least 2 (they are split over two front-ends)")
    why = pg_unreachable(args.pg_url)
    if why:
        sys.exit(f"benchmark 8 needs a PostgreSQL: {why} (give --pg-url)")
    servers = Servers()
    try:
        results = write_loads(args, servers)
        scale_rows, migrated, made = large_area(args, servers)
    finally:
        servers.stop_all()
    rows, summary = write_rows(results, args.clients)
    report(
        f"PostgreSQL vs SQLite: {args.clients} persistent clients writing test status "
        f"(test-set-state-status-by-id), {args.seconds:g} s x {args.rounds} rounds, medians",
        rows,
        [
            "server",
            "writes/s",
            "per round",
            "p50 ms",
            "p99 ms",
            "x SQLite writes/s",
            "server CPU us/write",
            "postgres CPU us/write",
            "x SQLite CPU/write",
        ],
        {"machine": machine(), "results": results},
    )
    lite, one, two = summary["sqlite"], summary["pg1"], summary["pg2"]
    print(
        f"CPU per write, PostgreSQL/SQLite: {one['server_us'] / lite['server_us']:.2f} x in the front-end's "
        f"process ({one['server_us']:.0f} against {lite['server_us']:.0f} us), "
        f"{(one['server_us'] + one['pg_us']) / lite['server_us']:.2f} x with PostgreSQL's backends "
        f"(+{one['pg_us']:.0f} us); two front-ends: {two['server_us'] / lite['server_us']:.2f} x "
        f"({two['server_us']:.0f} us summed over both servers, +{two['pg_us']:.0f} us in PostgreSQL)"
    )
    report(
        f"PostgreSQL vs SQLite: reads of a large area ({made['runs']:,} runs, {made['tests']:,} tests), "
        "one persistent connection each, interleaved",
        scale_rows,
        [
            "read",
            "result",
            "SQLite p50 ms",
            "PostgreSQL p50 ms",
            "after ANALYZE p50 ms",
            "x SQLite",
            "p99 ms SQLite / PG / analyzed",
        ],
        {"machine": machine(), "generated": made},
    )
    rate = migrated["rows"] / max(migrated["seconds"], 1e-9)
    generated_rows = sum(c["sqlite"] for c in migrated["tables"] if c["table"] in ("runs", "tests", "run_stats"))
    gen_rate = generated_rows / max(made["seconds"], 1e-9)
    report(
        "migrate --to of the large area",
        [
            {
                "table": c["table"],
                "sqlite rows": c["sqlite"],
                "postgresql rows": c["postgresql"],
            }
            for c in migrated["tables"]
            if c["sqlite"] or c["postgresql"]
        ],
        ["table", "sqlite rows", "postgresql rows"],
        {"machine": machine(), "migrate": migrated},
    )
    print(
        f"migrated {migrated['rows']:,} rows of {len(migrated['tables'])} tables in {migrated['seconds']:.1f} s: "
        f"{rate:,.0f} rows/s (generating the SQLite area, plain inserts: {gen_rate:,.0f} rows/s); "
        f"ANALYZE after it {migrated['analyze_s']:.1f} s"
    )
    slowest = max(scale_rows, key=lambda r: float(r["PostgreSQL p50 ms"]))
    print(
        f"PostgreSQL/SQLite: {args.clients} clients {one['writes_s'] / lite['writes_s']:.2f} x the writes/s "
        f"at {one['server_us'] / lite['server_us']:.2f} x the server CPU per write; two front-ends "
        f"{two['writes_s'] / lite['writes_s']:.2f} x; slowest read {slowest['read']} p50 "
        f"{slowest['PostgreSQL p50 ms']} ms against {slowest['SQLite p50 ms']} ms; migrate {rate:,.0f} rows/s "
        "(targets: none set yet)"
    )


if __name__ == "__main__":
    main()
