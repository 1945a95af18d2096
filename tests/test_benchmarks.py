"""The benchmark scripts still run: each once, tiny, against the installed dbtool.

No figure is checked (timings belong to the benchmarks, not to the suite): a script must finish,
exit 0 and print its verdict line, so the README's commands keep working as the code changes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# (script, tiny arguments, text its verdict line starts with)
RUNS = [
    ("bench_client.py", ["--repeat", "2"], "slowest dbtool call:"),
    ("bench_direct_read.py", ["--repeat", "1"], "dbtool direct read:"),
    ("bench_throughput.py", ["--seconds", "0.5", "--clients", "2,4"], "4 clients:"),
    ("bench_oneshot.py", ["--rounds", "1", "--processes", "4"], "throughput ratio dbtool/direct:"),
    (
        "bench_scale.py",
        ["--runs", "20", "--tests", "2000", "--big-run-tests", "100", "--repeat", "2", "--oneshot-repeat", "1"],
        "slowest read:",
    ),
    ("bench_bulk.py", ["--rows", "1000", "--repeat", "1"], "dbtool / executemany:"),
    ("bench_match.py", ["--tests", "2000", "--pings", "20", "--matchers", "1"], "ping p99 during matches:"),
    ("bench_junit.py", ["--cases", "1000", "--repeat", "1"], "import-junit:"),
    ("bench_compare.py", ["--tests", "2000", "--runs", "50", "--repeat", "2", "--oneshot-repeat", "1"], "history over"),
    ("bench_report.py", ["--runs", "3", "--tests", "200", "--repeat", "1", "--updates", "2"], "report of"),
    ("bench_server_oneshot.py", ["--calls", "20", "--concurrency", "1,2", "--repeat", "1"], "server CPU per one-shot"),
    ("bench_seeds.py", ["--seconds", "0.3", "--rounds", "1", "--clients", "2"], "seeds' checks:"),
    ("bench_completion.py", ["--repeat", "2", "--runs", "50"], "slowest completion:"),
]


def installed() -> bool:
    import dbtool.core

    return "site-packages" in Path(dbtool.core.__file__).resolve().parts


@pytest.mark.skipif(not installed(), reason="the benchmarks measure an installed dbtool; CI installs the package")
@pytest.mark.parametrize(("script", "args", "verdict"), RUNS, ids=[r[0] for r in RUNS])
def test_benchmark_script_runs(script: str, args: list[str], verdict: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert any(line.startswith(verdict) for line in proc.stdout.splitlines()), proc.stdout[-2000:]


@pytest.mark.skipif(not installed(), reason="the benchmarks measure an installed dbtool; CI installs the package")
def test_split_bound_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_throughput.py"), "--split-bound", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.count("-> a split server at most") == 3, proc.stdout[-2000:]


@pytest.mark.skipif(not installed(), reason="the benchmarks measure an installed dbtool; CI installs the package")
def test_postgres_benchmark_runs() -> None:
    """Benchmark 8, tiny, on the tests' PostgreSQL (it creates and drops databases of its own there)."""
    from conftest import PG_URL, require_pg

    require_pg()  # skipped where PostgreSQL cannot be reached; under CI=true, a failure
    args = ["--seconds", "0.5", "--clients", "4", "--rounds", "1", "--runs", "20", "--tests", "2000"]
    args += ["--big-run-tests", "100", "--repeat", "2", "--pg-url", PG_URL]
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_postgres.py"), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert any(line.startswith("PostgreSQL/SQLite:") for line in proc.stdout.splitlines()), proc.stdout[-2000:]
