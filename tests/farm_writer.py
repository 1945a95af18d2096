"""A writer for the farm tests: COUNT one-shot ``dbtool`` processes in a row, each outcome recorded.

    python farm_writer.py --area AREA --out FILE --name NAME --count N (--run-id ID | --register T/R)
                          [--go FILE] [--pause S] [--timeout S] [--max-seconds S]

Run inside a host (``ip netns exec``): every write is a complete client process (find the server,
connect, auto-start, retry), and one JSON line per write goes to FILE after its exit, so a line
with code 0 is a write the server acknowledged. Writes alternate between ``register-test`` (even
j, prints the test id) and ``set-state-status-and-roll-up-items`` (odd j, COMPLETED PASS with a
comment naming the write) on test NAME, item ``i<j>``. With ``--register``, the first write is
``register-run`` of that target/runname (racing writers all get the same id). ``--go`` waits
(at most 60 s) for FILE to exist before the first write, so that all writers start at once.
Bounded: COUNT writes and ``--max-seconds`` at most.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--area", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--run-id")
    parser.add_argument("--register")
    parser.add_argument("--go")
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--timeout", default="60")
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    host = os.environ.get("DBTOOL_HOSTNAME", "?")
    base = [sys.executable, "-m", "dbtool.cli", "--area", args.area, "--timeout", args.timeout]
    give_up = time.monotonic() + args.max_seconds
    if args.go:
        until = time.monotonic() + 60
        while not os.path.exists(args.go) and time.monotonic() < until:
            time.sleep(0.01)

    with open(args.out, "w", encoding="utf-8") as out:

        def write(record: dict, argv: list[str]) -> subprocess.CompletedProcess:
            t0 = time.time()
            try:
                proc = subprocess.run(
                    base + argv,
                    capture_output=True,
                    text=True,
                    timeout=float(args.timeout) + 60,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired:
                proc = subprocess.CompletedProcess(argv, -1, "", "farm_writer: the dbtool process hung")
            record.update(host=host, writer=args.name, code=proc.returncode, out=proc.stdout.strip())
            record.update(err=proc.stderr.strip(), t0=t0, t1=time.time())
            out.write(json.dumps(record) + "\n")
            out.flush()
            return proc

        run_id = args.run_id
        if args.register:
            target, runname = args.register.rsplit("/", 1)
            proc = write({"cmd": "register-run"}, ["register-run", "--target", target, "--runname", runname])
            if proc.returncode != 0:
                return 1
            run_id = proc.stdout.strip()
        for j in range(args.count):
            if time.monotonic() > give_up:
                break
            item = f"i{j}"
            where = ["--run-id", run_id, "--testname", args.name, "--item-path", item]
            record = {"cmd": "", "run_id": int(run_id), "testname": args.name, "item": item, "j": j}
            if j % 2 == 0:
                record["cmd"] = "register-test"
                write(record, ["register-test", *where])
            else:
                record["cmd"] = "set-state-status-and-roll-up-items"
                record["comment"] = f"{host}/{args.name}/{j}"
                argv = ["set-state-status-and-roll-up-items", *where, "--state", "COMPLETED", "--status", "PASS"]
                write(record, [*argv, "--comment", record["comment"]])
            if args.pause:
                time.sleep(args.pause)
    return 0


if __name__ == "__main__":
    sys.exit(main())
