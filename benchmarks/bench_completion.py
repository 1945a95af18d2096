"""Benchmark 13: how fast dbtool answers a Tab, and `dbtool --version`.

Whole-process wall time (median of interleaved runs) of a shell completion request as the bash
script in completions/ makes it: a command name (`dbtool get-te<Tab>`) and a value, `--run-id`
of an area with 1,000 runs (read from its SQLite file; no server runs), and of `dbtool --version`,
each against the same interpreter's `python -c pass` measured in the same run. Neither imports
Typer (cli/complete.py answers from the registry). Target: a completion well under 200 ms.

    python benchmarks/bench_completion.py [--repeat 40] [--runs 1000]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, PYTHON, check_installed, machine, report, temp_area


def bash_request(line: str) -> dict:
    """The environment of one bash completion request for the last word of ``line``."""
    return {"_DBTOOL_COMPLETE": "complete_bash", "COMP_WORDS": line, "COMP_CWORD": str(len(line.split(" ")) - 1)}


def fill(root: Path, runs: int) -> None:
    """``runs`` runs straight into the area's SQLite file (as register-run leaves them)."""
    with sqlite3.connect(root / ".dbtool" / "dbtool.db") as conn:
        conn.executemany(
            'INSERT INTO runs (id, "RELEASE", "PLATFORM", runname, state, status) VALUES (?, ?, ?, ?, ?, ?)',
            [(i, f"v{i % 10}", "linux", f"nightly-{i}", "COMPLETED", "PASS") for i in range(1, runs + 1)],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--runs", type=int, default=1000)
    args = parser.parse_args()
    check_installed()
    with temp_area(**{"server.idle_timeout": "0"}) as root:
        fill(root, args.runs)
        cases = {
            "python -c pass": ([PYTHON, "-c", "pass"], {}),
            "complete a command name (get-te)": ([DBTOOL], bash_request("dbtool get-te")),
            f"complete --run-id ({args.runs} runs)": ([DBTOOL], bash_request("dbtool get-run-info --run-id ")),
            "dbtool --version": ([DBTOOL, "--version"], {}),
        }
        answers = {}
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(args.repeat):
            for name, (argv, extra) in cases.items():
                start = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, **extra}, cwd=root)
                samples[name].append((time.perf_counter() - start) * 1000)
                if proc.returncode != 0 or proc.stderr:
                    raise RuntimeError(f"{name} failed: {proc.stderr}")
                answers[name] = len(proc.stdout.splitlines())
    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor = medians["python -c pass"]
    rows = [
        {
            "command": name,
            "candidates": "" if name in ("python -c pass", "dbtool --version") else str(answers[name]),
            "median ms": f"{ms:.1f}",
            "x python -c pass": f"{ms / floor:.2f}",
        }
        for name, ms in medians.items()
    ]
    report(
        "shell completion and --version, whole-process wall time",
        rows,
        ["command", "candidates", "median ms", "x python -c pass"],
        {"machine": machine()},
    )
    worst = max(ms for name, ms in medians.items() if name.startswith("complete"))
    print(f"slowest completion: {worst:.1f} ms, {worst / floor:.2f} x python -c pass (target: well under 200 ms)")


if __name__ == "__main__":
    main()
