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
