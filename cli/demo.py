"""``dbtool demo``: a throw-away area, its server, concurrent job wrappers, and the results."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from dbtool.core.area import Area
from dbtool.core.client import describe
from dbtool.core.commands import COMMANDS

from .binder import GlobalOptions
from .main import emit
from .output import render

# (testname, item_path, outcome): items roll up into their toplevel.
JOBS = [
    ("compile", "", "PASS"),
    ("unit", "py311", "PASS"),
    ("unit", "py312", "FAIL"),
    ("unit", "py313", "PASS"),
    ("lint", "", "PASS"),
    ("docs", "", "WARN"),
    ("integration", "db", "PASS"),
    ("integration", "net", "PASS"),
]


def _dbtool(area: Area, *args: str) -> str:
    """Run one dbtool command as a separate process, as a job wrapper would."""
    proc = subprocess.run(
        [sys.executable, "-m", "dbtool.cli", "--area", area.root, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dbtool {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def _job(area: Area, run_id: str, testname: str, item: str, outcome: str, log: list[str], lock: threading.Lock) -> None:
    where = ["--run-id", run_id, "--testname", testname, "--item-path", item]
    _dbtool(area, "set-state-status-and-roll-up-items", *where, "--state", "RUNNING", "--status", "n/a")
    time.sleep(random.uniform(0.1, 0.6))
    _dbtool(area, "set-state-status-and-roll-up-items", *where, "--state", "COMPLETED", "--status", outcome)
    with lock:
        log.append(f"  job {testname}{'/' + item if item else ''}: COMPLETED {outcome}")
        print(log[-1], flush=True)


def run(opts: GlobalOptions, *, jobs: int = 6, keep: bool = False) -> int:
    from .local import init, server_stop

    jobs = max(1, jobs)
    root = tempfile.mkdtemp(prefix="dbtool-demo-")
    area = Area(root)
    try:
        init(opts, path=root, keys=["RELEASE", "PLATFORM"])
        run_id = _dbtool(area, "register-run", "--target", "v1.2/linux", "--runname", "demo")
        server = json.loads(_dbtool(area, "server", "status", "--json"))
        print(f"run {run_id} registered; {describe(server)}", flush=True)
        print(f"{jobs} concurrent job wrappers report their tests:", flush=True)
        chosen = []
        for i in range(jobs):
            testname, item, outcome = JOBS[i % len(JOBS)]
            if i >= len(JOBS):  # more jobs than the list: more items of the same tests
                item = f"{item or 'extra'}-{i // len(JOBS)}"
            chosen.append((testname, item, outcome))
        log: list[str] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def guarded(*a: str) -> None:
            try:
                _job(area, run_id, *a, log, lock)
            except BaseException as err:  # reported below; the demo must not hang
                errors.append(err)

        threads = [threading.Thread(target=guarded, args=job) for job in chosen]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        rows = _dbtool(area, "get-tests-for-run", "--run-id", run_id, "--sort-by", "testname", "--json")
        emit("\nresults (toplevels roll up their items):\n")
        emit(render(json.loads(rows), "table", COMMANDS["get-tests-for-run"].columns))
        return 0
    finally:
        if keep:
            print(f"\nkept the demo area {root} (its server stops after its idle timeout)", flush=True)
        else:
            opts.area = root
            try:
                server_stop(opts)
            finally:
                shutil.rmtree(root, ignore_errors=True)
            if os.path.exists(root):
                print(f"dbtool: could not remove {root}", file=sys.stderr)
