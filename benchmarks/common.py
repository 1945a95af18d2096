"""Shared helpers of the benchmarks: areas, timing, medians, the machine, result tables.

Benchmarks run with the interpreter of the virtual environment dbtool is installed in (not an
editable checkout: with PYTHONDONTWRITEBYTECODE a source checkout recompiles on every start), and
measure dbtool and its baseline in the same run, so ratios are meaningful on a noisy machine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

PYTHON = sys.executable
BIN = Path(PYTHON).parent
DBTOOL = str(BIN / "dbtool")


def check_installed() -> None:
    import dbtool.core

    location = Path(dbtool.core.__file__).resolve()
    if "site-packages" not in location.parts:
        sys.exit(f"benchmark an installed dbtool (pip install .), not a source checkout: {location}")
    if not Path(DBTOOL).exists():
        sys.exit(f"no dbtool script next to {PYTHON}")


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
    }


@contextmanager
def temp_area(keys: str = "RELEASE,PLATFORM", **config: str):
    """A fresh area (its server stopped and the directory removed afterwards)."""
    root = Path(tempfile.mkdtemp(prefix="dbtool-bench-"))
    try:
        run([DBTOOL, "init", str(root), "--keys", keys])
        for name, value in config.items():
            set_config(root, name, value)
        yield root
    finally:
        subprocess.run([DBTOOL, "--area", str(root), "server", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


def set_config(root: Path, dotted: str, value: str) -> None:
    section, name = dotted.split(".")
    path = root / ".dbtool" / "config.toml"
    lines = path.read_text().splitlines()
    current = None
    for i, line in enumerate(lines):
        if line.startswith("["):
            current = line.strip("[]")
        elif current == section and line.split("=")[0].strip() == name:
            lines[i] = f"{name} = {value}"
            break
    else:
        raise KeyError(dotted)
    path.write_text("\n".join(lines) + "\n")


def run(argv: list[str], **kw) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def timed(argv: list[str]) -> float:
    """Seconds one run of ``argv`` takes (to its end; it must succeed)."""
    start = time.perf_counter()
    run(argv)
    return time.perf_counter() - start


def wall_ms(argv: list[str], repeat: int, **kw) -> list[float]:
    """Whole-process wall times (ms) of a command, run ``repeat`` times."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
        times.append((time.perf_counter() - start) * 1000)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv} failed: {proc.stderr.decode()}")
    return times


def interleaved(cases: dict[str, list[str]], repeat: int, **kw) -> dict[str, float]:
    """Median wall time (ms) of each command, the runs of all commands interleaved (fair under noise)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, argv in cases.items():
            samples[name] += wall_ms(argv, 1, **kw)
    return {name: statistics.median(values) for name, values in samples.items()}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def table(rows: list[dict], columns: list[str]) -> str:
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def report(name: str, rows: list[dict], columns: list[str], extra: dict | None = None) -> None:
    print(f"\n== {name} ==")
    print(table(rows, columns))
    if os.environ.get("DBTOOL_BENCH_JSON"):
        with open(os.environ["DBTOOL_BENCH_JSON"], "a") as f:
            f.write(json.dumps({"benchmark": name, "rows": rows, **(extra or {})}) + "\n")


def drive_writer(root, ids: list[int], clients: int, seconds: float, warmup: float = 0.5, prepare=None) -> dict:
    """``clients`` streams of status writes submitted to dbtool's Writer on its own event loop in
    this process, each stream's next write sent when its last is answered (as Session does for a
    connection), on the area at ``root`` (its server stopped); ``prepare(ctx)`` may add to each
    request's context. Returns writes/s, latency p50/p99 and this process's CPU per write (µs)."""
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
        tag = os.urandom(4).hex()  # idempotency keys unique to this call
        share = len(ids) // clients
        start_at = time.monotonic() + warmup  # a warm-up, as the protocol load has its handshakes
        stop_at = start_at + seconds
        latencies: list[float] = []
        cpu_at_start = 0.0
        finished = loop.create_future()
        streams = clients  # still writing

        def send(c: int, n: int) -> None:
            state, status = ("RUNNING", "n/a") if n % 2 else ("COMPLETED", "PASS")
            params = {"test_id": ids[c * share + n % share], "state": state, "status": status}
            ctx = RequestContext(f"w-{c}-{n}", cmd.api, params, client, "bench@localhost")
            if prepare is not None:
                prepare(ctx)
            sent_at = time.perf_counter()
            future = writer.submit(cmd, cmd.bind_wire(params), ctx, f"{tag}-{c}-{n}")
            future.add_done_callback(lambda f: answered(f, c, n, sent_at))

        def answered(future: asyncio.Future, c: int, n: int, sent_at: float) -> None:
            nonlocal cpu_at_start, streams
            future.result()  # a failed write fails the benchmark
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
        return {
            "writes_s": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
            "cpu_us": spent / max(1, len(latencies)) * 1e6,
        }

    return asyncio.run(main())
