"""Benchmark 12: what one one-shot call costs the server, in the server process's own CPU time.

A job wrapper or a CI step opens a connection per call: connect, the handshake (the client's
challenge, the server's hello and proof, the client's proof riding with its request), one status
write (`test-set-state-status-by-id` with an idempotency key, as the CLI sends it), its answer,
close. A driver process makes a few hundred such calls, ``--concurrency`` at a time, and the
server's CPU seconds (user and system, all threads, from /proc) over them are divided by the calls.
Wall time hides nothing here: a neighbour's load does not add to this process's CPU time.

Baseline, in the same run: the same calls against an asyncio server that speaks the protocol's
framing and nothing else (`bench_throughput.echo_server`: a hello, a proof, an ok answer per line;
no key, no database) — what accepting a connection, a few lines of JSON and a close cost any Python
asyncio server here. A second dbtool server runs on asyncio's own loop (``DBTOOL_EVENT_LOOP=asyncio``)
instead of uvloop: what the loop is worth. Target: dbtool ≤ 400 µs of server CPU per call.

    python benchmarks/bench_server_oneshot.py [--calls 400] [--concurrency 1,8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_throughput import echo_server
from common import DBTOOL, check_installed, machine, percentile, report, run, temp_area

NAMES = {"dbtool": "dbtool", "asyncio": "dbtool on asyncio's loop", "echo": "echo, no key, no database"}


def proc_cpu(pid: int) -> tuple[float, float]:
    """User and system CPU seconds (all threads) process ``pid`` has spent so far."""
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / tick, int(fields[12]) / tick


def one_call(info: dict, test_id: int, tag: str, n: int) -> float:
    """One call as the CLI makes it (core/link.py): the challenge as it connects, the hello and
    proof read, the client's proof and the request in one send, the answer read, close. Its wall ms."""
    from dbtool.core.protocol import auth_line, challenge_line, encode, new_nonce

    started = time.perf_counter()
    sock = socket.create_connection((info["address"], info["port"]))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    challenge = new_nonce()
    sock.sendall(challenge_line(challenge))
    lines = sock.makefile("rb")
    hello = json.loads(lines.readline())
    lines.readline()  # the server's proof (checked by the real client; the echo server's is none)
    state, status = ("RUNNING", "n/a") if n % 2 else ("COMPLETED", "PASS")
    request = {
        "id": 1,
        "cmd": "test-set-state-status-by-id",
        "params": {"test_id": test_id, "state": state, "status": status},
        "pack": True,
        "idem": f"{tag}-{n}",
    }
    client = {"host": "bench", "pid": os.getpid(), "user": "bench", "argv0": "dbtool"}
    sock.sendall(auth_line(info["key"], hello["nonce"], challenge, client) + encode(request))
    answer = json.loads(lines.readline())
    lines.close()
    sock.close()
    if answer.get("ok") is not True:
        raise RuntimeError(answer)
    return (time.perf_counter() - started) * 1000


def driver(info: dict, ids: list[int], calls: int, worker: int, queue) -> None:
    tag = f"{os.getpid()}-{os.urandom(3).hex()}"
    queue.put([one_call(info, ids[n % len(ids)], tag, n) for n in range(worker, calls, info["workers"])])


def measure(info: dict, ids: list[int], calls: int, concurrency: int) -> dict:
    """``calls`` one-shot calls, ``concurrency`` at a time (one driver process each): the server's
    CPU per call and the calls' wall-time percentiles."""
    for n in range(10):  # warm-up: the server's caches and first-use imports
        one_call(info, ids[n % len(ids)], f"warm-{os.urandom(3).hex()}", n)
    info = {**info, "workers": concurrency}
    queue = mp.Queue()
    workers = [mp.Process(target=driver, args=(info, ids, calls, w, queue)) for w in range(concurrency)]
    before = proc_cpu(info["pid"])
    started = time.perf_counter()
    for w in workers:
        w.start()
    latencies = [ms for _ in workers for ms in queue.get(timeout=600)]
    for w in workers:
        w.join()
    seconds = time.perf_counter() - started
    after = proc_cpu(info["pid"])
    user, system = after[0] - before[0], after[1] - before[1]
    return {
        "us": (user + system) / calls * 1e6,
        "user_us": user / calls * 1e6,
        "sys_us": system / calls * 1e6,
        "calls_s": calls / seconds,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
    }


def prepare(root: Path, loop: str = "") -> tuple[dict, list[int]]:
    """A run of 8 tests in the area, its server started (on asyncio's own loop when ``loop`` says so)."""
    area = ["--area", str(root)]
    env = {**os.environ, "DBTOOL_EVENT_LOOP": loop} if loop else None
    run([DBTOOL, *area, "register-run", "--target", "v1/linux", "--runname", "bench"], env=env)
    ids = [int(run([DBTOOL, *area, "register-test", "--run-id", "1", "--testname", f"t{i}"])) for i in range(8)]
    return json.loads((root / ".dbtool" / "server.json").read_text()), ids


def times(value: float, base: float) -> str:
    """``value / base`` for a table cell ('-' when too few calls left the base below a clock tick)."""
    return f"{value / base:.2f}" if base else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds per case; medians reported")
    args = parser.parse_args()
    check_installed()
    try:
        from dbtool.core.server.eventloop import loop_factory
    except ImportError:  # (a dbtool from before the choice of loop)
        loop_factory = lambda: None  # noqa: E731
    NAMES["dbtool"] = f"dbtool ({'uvloop' if loop_factory() else 'asyncio'})"
    levels = [int(c) for c in args.concurrency.split(",")]
    ready = mp.Queue()
    echo = mp.Process(target=echo_server, args=(ready,), daemon=True)
    echo.start()
    samples: dict[tuple[str, int], list[dict]] = {}
    try:
        echo_info = {"address": "127.0.0.1", "port": ready.get(timeout=60), "key": "00" * 32, "pid": echo.pid}
        with temp_area(**{"server.idle_timeout": "0"}) as root, temp_area(**{"server.idle_timeout": "0"}) as plain:
            info, ids = prepare(root)
            plain_info, plain_ids = prepare(plain, "asyncio")
            servers = {"dbtool": (info, ids), "asyncio": (plain_info, plain_ids), "echo": (echo_info, ids)}
            for _ in range(args.repeat):  # the servers take turns, so a noisy moment hits all of them
                for level in levels:
                    for name, (where, tests) in servers.items():
                        samples.setdefault((name, level), []).append(measure(where, tests, args.calls, level))
    finally:
        echo.kill()
        echo.join(10)

    def med(key: tuple[str, int], field: str) -> float:
        return statistics.median(s[field] for s in samples[key])

    rows = []
    for (name, level), _ in samples.items():
        key = (name, level)
        rows.append(
            {
                "server": NAMES[name],
                "concurrent": level,
                "server CPU us/call": f"{med(key, 'us'):.0f}",
                "user / sys us": f"{med(key, 'user_us'):.0f} / {med(key, 'sys_us'):.0f}",
                "calls/s": f"{med(key, 'calls_s'):.0f}",
                "p50 ms": f"{med(key, 'p50'):.2f}",
                "p99 ms": f"{med(key, 'p99'):.2f}",
                "x echo": times(med(key, "us"), med(("echo", level), "us")),
            }
        )
    report(
        f"server CPU per one-shot call (connect, handshake, one status write, close), {args.calls} calls, "
        f"medians of {args.repeat} rounds",
        rows,
        ["server", "concurrent", "server CPU us/call", "user / sys us", "calls/s", "p50 ms", "p99 ms", "x echo"],
        {"machine": machine()},
    )
    verdict = "; ".join(
        f"{level} at a time: {med(('dbtool', level), 'us'):.0f} us "
        f"({times(med(('dbtool', level), 'us'), med(('echo', level), 'us'))} x echo)"
        for level in levels
    )
    print(f"server CPU per one-shot write: {verdict} (target <= 400 us)")


if __name__ == "__main__":
    main()
