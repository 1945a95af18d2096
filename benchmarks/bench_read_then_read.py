"""Benchmark 14: a read with no server (answered directly, which starts a server in the background,
SPEC 3.2), then the next read 1 s later, which that server answers.

Each round: a fresh area's server stopped; `dbtool get-runs --json` (direct); 1 s pause; the same
read again. Baseline: the same read sent to a server that was already running, measured in the same
run (interleaved rounds). Target: the second read at most twice the baseline.

    python benchmarks/bench_read_then_read.py [--repeat 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, check_installed, machine, report, run, temp_area


def wall_ms(argv: list[str]) -> float:
    start = time.perf_counter()
    run(argv)
    return (time.perf_counter() - start) * 1000


def served_by_server(root: Path) -> bool:
    return (root / ".dbtool" / "server.json").exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    check_installed()
    first, second, baseline, served = [], [], [], 0
    with temp_area() as root, temp_area() as warm:
        read = [DBTOOL, "--area", str(root), "get-runs", "--json"]
        warm_read = [DBTOOL, "--area", str(warm), "get-runs", "--json"]
        run([DBTOOL, "--area", str(warm), "server", "start"])
        wall_ms(warm_read)
        for _ in range(args.repeat):
            run([DBTOOL, "--area", str(root), "server", "stop"])
            first.append(wall_ms(read))
            time.sleep(1.0)
            served += served_by_server(root)
            second.append(wall_ms(read))
            baseline.append(wall_ms(warm_read))
        subprocess.run([DBTOOL, "--area", str(warm), "server", "stop"], capture_output=True)
    med = {name: statistics.median(v) for name, v in (("first", first), ("second", second), ("base", baseline))}
    rows = [
        {"call": "first read, no server (direct; starts one)", "median ms": f"{med['first']:.1f}"},
        {"call": "next read 1 s later", "median ms": f"{med['second']:.1f}"},
        {"call": "a read sent to a running server (baseline)", "median ms": f"{med['base']:.1f}"},
    ]
    report(
        "a direct read, then the next read 1 s later",
        rows,
        ["call", "median ms"],
        {"machine": machine(), "rounds": args.repeat, "server up before the second read": served},
    )
    ratio = med["second"] / med["base"]
    print(
        f"next read 1 s after a direct read: {ratio:.2f}x a call to a running server, "
        f"served in {served}/{args.repeat} rounds (target <= 2x)"
    )


if __name__ == "__main__":
    main()
