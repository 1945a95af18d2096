"""``dbtool demo``: a throw-away area, its server, 20+ concurrent ``dbtool exec`` jobs, a live watch.

Some jobs pass, some fail, one is killed, items roll up into their toplevels and the run; a watcher
prints each finished job as the server commits it; the run's table closes the show. The area and
its server are removed at the end unless --keep.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from dbtool.core.area import Area
from dbtool.core.client import watch
from dbtool.core.errors import DbtoolError
from dbtool.core.link import describe

from .binder import GlobalOptions
from .output import emit, render

# (testname, items, how many of them fail): each item is one job.
SUITE = [
    ("compile", [""], 0),
    ("unit", ["py310", "py311", "py312", "py313"], 1),
    ("integration", ["sqlite", "postgres", "http", "grpc", "cli"], 0),
    ("perf", ["small", "medium", "large"], 1),
    ("lint", [""], 0),
    ("docs", ["html", "pdf", "man"], 0),
    ("fuzz", ["parser", "protocol"], 0),
    ("packaging", ["wheel", "sdist"], 0),
    ("soak", [""], 0),  # the long one: the demo kills it
]
KILLED_TEST = "soak"
KILL_AFTER = 2.0  # seconds after the jobs start (at the earliest) when the demo kills the soak job


def _dbtool(area: Area, *args: str, check: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dbtool.cli", "--area", area.root, *args], capture_output=True, text=True, timeout=120
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"dbtool {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip()


def _jobs(limit: int, rng: random.Random) -> list[tuple[str, str, int, float]]:
    """(testname, item, exit code, seconds) for each job."""
    jobs = []
    for testname, items, failing in SUITE:
        bad = set(rng.sample(items, failing))
        for item in items:
            seconds = 30.0 if testname == KILLED_TEST else rng.uniform(0.5, 4.0)
            jobs.append((testname, item, 1 if item in bad else 0, seconds))
    return jobs[: max(limit, 1)]


def _start_job(area: Area, run_id: str, testname: str, item: str, code: int, seconds: float) -> subprocess.Popen:
    script = f"import sys, time; print('working on {testname}/{item}'); time.sleep({seconds:.2f}); sys.exit({code})"
    rundir = os.path.join(area.root, "runs", testname, item or "top")
    os.makedirs(rundir, exist_ok=True)
    argv = [
        sys.executable, "-m", "dbtool.cli", "--area", area.root, "exec", "--run-id", run_id, "--testname", testname,
        "--item-path", item, "--heartbeat", "1", "--rundir", rundir, "--log", os.path.join(rundir, "job.log"),
        "--", sys.executable, "-c", script,
    ]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class LiveSummary(threading.Thread):
    """Watches the run's events and prints each job as it finishes, with running totals."""

    def __init__(self, area: Area, run_id: int, expected: int, since: int) -> None:
        super().__init__(daemon=True)
        self.area, self.run_id, self.expected, self.since = area, run_id, expected, since
        self.counts = {"PASS": 0, "FAIL": 0, "KILLED": 0}
        self.started = time.monotonic()
        self.finished = threading.Event()
        self.victim_running = threading.Event()  # the job the demo kills has reported exec-begin

    def run(self) -> None:
        try:
            self._follow()
        except DbtoolError:  # the server stopped before every job was seen: the table tells the rest
            pass
        finally:
            self.finished.set()

    def _follow(self) -> None:
        done = 0
        for event in watch(self.area, self.run_id, None, self.since, 60):
            if event.get("event") == "exec-begin" and event.get("testname") == KILLED_TEST:
                self.victim_running.set()
            own = event.get("test_id") is not None and not (event.get("data") or {}).get("rollup")
            if event.get("event") != "exec-end" or not own or event.get("status") not in self.counts:
                continue  # only a job's own final state; not the roll-ups it caused
            self.counts[event["status"]] += 1
            done += 1
            name = event["testname"] + (f"/{event['item_path']}" if event.get("item_path") else "")
            totals = ", ".join(f"{n} {k.lower()}" for k, n in self.counts.items())
            elapsed = time.monotonic() - self.started
            print(f"  [{elapsed:5.1f}s] {name:24s} {event['state']} {event['status']:7s} ({totals})", flush=True)
            if done >= self.expected:
                break


def run(opts: GlobalOptions, *, jobs: int = 22, keep: bool = False) -> int:
    from .local import init, server_stop

    root = tempfile.mkdtemp(prefix="dbtool-demo-")
    area = Area(root)
    rng = random.Random(20261123)
    try:
        init(opts, path=root, keys=["RELEASE", "PLATFORM"])
        run_id = _dbtool(area, "register-run", "--target", "v1.2/linux", "--runname", "demo")
        server = json.loads(_dbtool(area, "server", "status", "--json"))
        print(f"run {run_id} registered; {describe(server)}", flush=True)
        plan = _jobs(jobs, rng)
        print(f"{len(plan)} jobs start under `dbtool exec`; a watcher reports each as it ends:", flush=True)
        summary = LiveSummary(area, int(run_id), len(plan), server["last_event_seq"])
        summary.start()
        procs = {(t, i): _start_job(area, run_id, t, i, c, s) for t, i, c, s in plan}
        soak = [p for (t, _i), p in procs.items() if t == KILLED_TEST]
        if soak:
            started = time.monotonic()
            summary.victim_running.wait(60)  # kill a job that is RUNNING, however loaded the machine
            time.sleep(max(0.0, KILL_AFTER - (time.monotonic() - started)))
            print(f"  (killing the {KILLED_TEST} job with SIGTERM, as a batch system would)", flush=True)
            soak[0].send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(timeout=120)
        summary.finished.wait(30)
        rows = json.loads(_dbtool(area, "get-tests-for-run", "--run-id", run_id, "--sort-by", "testname", "--json"))
        emit("\nthe run (toplevels roll up their items):\n")
        emit(
            render(rows, "table", ("id", "testname", "item_path", "state", "status", "host", "run_duration", "comment"))
        )
        run_row = json.loads(_dbtool(area, "get-run-state-status", "--run-id", run_id, "--json"))
        emit(f"\nrun {run_id} rolled up: {run_row['state']} {run_row['status']}\n")
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
