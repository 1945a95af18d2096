"""Benchmark 1: the cost of one client call with the server up.

Whole-process wall time (median of interleaved runs) of `dbtool set-var` and
`dbtool set-state-status-and-roll-up-items`, against the floor of any Python CLI (the same
interpreter's `python -c pass`) and against the `sqlite3` shell doing the same UPDATE directly.
Target: dbtool ≤ 3.0 x `python -c pass`. Also `dbtool set-var` to a server of an area with
`server.tls = "always"`: what TLS (as every connection off the loopback has it) adds to a call.

    python benchmarks/bench_client.py [--repeat 40]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, PYTHON, check_installed, interleaved, machine, report, run, temp_area

TLS_CASE = "dbtool set-var, TLS (server.tls = always)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    check_installed()
    with (
        temp_area(**{"server.idle_timeout": "0"}) as root,
        temp_area(**{"server.idle_timeout": "0", "server.tls": '"always"'}) as tls_root,
    ):
        area = ["--area", str(root)]
        run([DBTOOL, "--area", str(tls_root), "set-var", "x", "0"])
        run([DBTOOL, *area, "register-run", "--target", "v1/linux", "--runname", "bench"])
        run([DBTOOL, *area, "register-test", "--run-id", "1", "--testname", "t"])
        db = str(root / ".dbtool" / "dbtool.db")
        cases = {
            "python -c pass": [PYTHON, "-c", "pass"],
            "dbtool set-var": [DBTOOL, *area, "set-var", "x", "1"],
            "dbtool set-state-status-and-roll-up-items": [
                DBTOOL, *area, "set-state-status-and-roll-up-items", "--run-id", "1", "--testname", "t",
                "--state", "RUNNING", "--status", "n/a",
            ],
            TLS_CASE: [DBTOOL, "--area", str(tls_root), "set-var", "x", "1"],
        }  # fmt: skip
        if shutil.which("sqlite3"):
            cases["sqlite3 shell, same UPDATE"] = [
                "sqlite3", db, "update tests set state = 'RUNNING', status = 'n/a' where id = 1",
            ]  # fmt: skip
        medians = interleaved(cases, args.repeat)
    floor = medians["python -c pass"]
    rows = [
        {"command": name, "median ms": f"{ms:.1f}", "x python -c pass": f"{ms / floor:.2f}"}
        for name, ms in medians.items()
    ]
    report(
        "client call cost (server up), whole-process wall time",
        rows,
        ["command", "median ms", "x python -c pass"],
        {"machine": machine()},
    )
    worst = max(ms for name, ms in medians.items() if name.startswith("dbtool") and name != TLS_CASE)
    print(f"slowest dbtool call: {worst / floor:.2f} x python -c pass (target <= 3.0)")
    extra = medians[TLS_CASE] - medians["dbtool set-var"]
    print(f"TLS adds {extra:.1f} ms to a call ({medians[TLS_CASE] / floor:.2f} x python -c pass)")


if __name__ == "__main__":
    main()
