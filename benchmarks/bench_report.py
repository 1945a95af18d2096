"""Benchmark 11: seeing the results — `report` of 500 runs x 2,000 tests, its first paint in headless
Chromium, and the dashboard's update latency from a CLI write to the changed cell.

Generates an area (created by `dbtool init`, filled with plain SQLite inserts): --runs runs of
--tests tests each (toplevels of 20: the toplevel and 19 items), about 3 % failing with a comment,
two test-data rows and a step, a few DEAD and KILLED, the newest run still running.
Measures, against baselines of the same run:

* `dbtool report --target % -o FILE` (server up): wall time, file size and the process's peak RSS;
  baseline: the same rows read with Python's sqlite3 and written as one plain JSON list of records
  (json.dumps, the C encoder);
* the report in headless Chromium (Debian's, driven by Playwright): first contentful paint and the
  moment the grid is drawn (the page's `grid-drawn` mark), then a scroll to the bottom; baseline: the
  first paint of a page with one line of text;
* `dbtool dashboard` (its default 50 newest runs) open in Chromium: from a one-shot
  `dbtool set-state-status-and-roll-up-items` to the changed cell in the page (a MutationObserver
  stamps it), and from that write's end; baseline: the one-shot write alone.
Targets: the report opens (grid drawn) in <= 3 s; an update shows in <= 1 s.

    python benchmarks/bench_report.py [--runs 500] [--tests 2000] [--repeat 3] [--updates 20]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DBTOOL, PYTHON, check_installed, machine, report, run, set_config

EPOCH = 1_700_000_000
PER_TOPLEVEL = 20  # the toplevel and 19 items
PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n"
)


def generate(root: Path, runs: int, tests: int) -> int:
    """The area at ``root``; returns the number of tests made."""
    run([DBTOOL, "init", str(root), "--keys", "RELEASE,PLATFORM"])
    con = sqlite3.connect(root / ".dbtool" / "dbtool.db", isolation_level=None)
    con.execute("PRAGMA synchronous = OFF")
    con.execute("BEGIN")
    con.executemany(
        "insert into runs (id, RELEASE, PLATFORM, runname, state, status, owner, event_time) "
        "values (?, 'v1', ?, ?, 'COMPLETED', 'n/a', 'ci', ?)",
        ((i, "linux" if i % 2 else "mac", f"nightly.{i}", EPOCH + i * 600) for i in range(1, runs + 1)),
    )
    rng = random.Random(11)
    rows, failing = [], []
    test_id = 0
    for run_id in range(1, runs + 1):
        for n in range(tests):
            test_id += 1
            top, item = divmod(n, PER_TOPLEVEL)
            roll = rng.random()
            state, status, comment = "COMPLETED", "PASS", ""
            if roll < 0.03:
                status, comment = "FAIL", f"assert {n} == 0"
                failing.append(test_id)
            elif roll < 0.032:
                status = "DEAD"
            elif roll < 0.034:
                state = status = "KILLED"
            if run_id == runs and roll > 0.7:
                state, status = ("RUNNING", "n/a") if roll < 0.8 else ("NOT_STARTED", "n/a")
            path = "" if item == 0 else f"case{item}"
            rows.append((test_id, run_id, f"suite{top}", path, state, status, comment, f"node{n % 40}", n % 300))
    con.executemany(
        "insert into tests (id, run_id, testname, item_path, state, status, comment, host, run_duration) "
        "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    con.executemany(
        "insert into test_data (test_id, category, variable, value, expected, tol, units, status) "
        "values (?, 'perf', ?, ?, 10, 1, 'ms', ?)",
        (
            (t, v, value, "fail" if v == "latency" else "pass")
            for t in failing
            for v, value in (("latency", 14), ("size", 10))
        ),
    )
    con.executemany(
        "insert into test_steps (test_id, stepname, state, status, event_time) values (?, 'run', ?, ?, ?)",
        ((t, state, status, EPOCH) for t in failing for state, status in (("start", "n/a"), ("end", "FAIL"))),
    )
    con.execute("COMMIT")
    con.execute("ANALYZE")
    con.close()
    return len(rows)


def plain_json(db: Path, out: Path) -> None:
    """The baseline: every test of the area as one JSON list of records, with sqlite3."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    cur = con.execute(
        "select t.run_id, r.RELEASE || '/' || r.PLATFORM, r.runname, t.id, t.testname, t.item_path, t.state, "
        "t.status from tests t join runs r on r.id = t.run_id order by r.event_time desc, t.id"
    )
    names = [d[0] for d in cur.description]
    with open(out, "w") as f:
        f.write(json.dumps([dict(zip(names, row, strict=True)) for row in cur]))
    con.close()


def chromium():
    """(playwright, browser), or None when no chromium or Playwright is there."""
    path = os.environ.get("DBTOOL_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if path is None:
        return None
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox", "--disable-background-networking"])
    return playwright, browser


def paint_times(browser, url: str, ready: str | None) -> dict:
    """First contentful paint (ms), and for the grid the `grid-drawn` mark and a scroll to the bottom."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    try:
        page.goto(url, timeout=120_000)
        if ready:
            page.wait_for_selector(ready, timeout=120_000)
        page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
        found = page.evaluate(
            "() => ({fcp: performance.getEntriesByName('first-contentful-paint')[0].startTime,"
            " drawn: (performance.getEntriesByName('grid-drawn')[0] || {}).startTime})"
        )
        if ready:
            found["scroll"] = page.evaluate(
                """() => { const s = document.getElementById('scroller'); const t = performance.now();
                s.scrollTop = s.scrollHeight; s.scrollLeft = s.scrollWidth; s.dispatchEvent(new Event('scroll'));
                return performance.now() - t; }"""
            )
            found["dom"] = page.evaluate("document.getElementsByTagName('*').length")
        return found
    finally:
        context.close()


OBSERVE = """sel => { window.__seen = new Promise(resolve => {
  const check = () => {
    if (document.querySelector(sel)) { obs.disconnect(); resolve(performance.timeOrigin + performance.now()); } };
  const obs = new MutationObserver(check);
  obs.observe(document.getElementById('cells-in'), {childList: true, subtree: true, attributes: true});
  check(); }); }"""


def update_latency(browser, root: Path, run_id: int, tests: int, updates: int) -> tuple[list, list, list]:
    """(write start → cell, write end → cell, the write alone) in ms, for ``updates`` writes."""
    proc = subprocess.Popen(
        [DBTOOL, "--area", str(root), "dashboard", "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"dashboard did not start: {proc.stderr.read()}")
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        page = context.new_page()
        page.goto(url, timeout=120_000)
        page.wait_for_selector("body[data-ready='1']", timeout=120_000)
        page.wait_for_selector("#live.on", timeout=60_000)
        from_start, from_end, alone = [], [], []
        for i in range(updates):
            name = f"suite{i % (tests // PER_TOPLEVEL)}"
            status = ("WARN", "WAIVED")[i % 2]
            page.evaluate(
                OBSERVE,
                f'.cell[data-run-id="{run_id}"][data-testname="{name}"][data-item-path=""][data-status="{status}"]',
            )
            started = time.time() * 1000
            run([DBTOOL, "--area", str(root), "set-state-status-and-roll-up-items", "--run-id", str(run_id),
                 "--testname", name, "--state", "COMPLETED", "--status", status])  # fmt: skip
            ended = time.time() * 1000
            seen = page.evaluate("window.__seen")
            from_start.append(seen - started)
            from_end.append(seen - ended)
            alone.append(ended - started)
        context.close()
        return from_start, from_end, alone
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--tests", type=int, default=2000, help="tests per run")
    parser.add_argument("--repeat", type=int, default=3, help="report writes and page loads")
    parser.add_argument("--updates", type=int, default=20, help="dashboard updates timed")
    args = parser.parse_args()
    check_installed()
    tmp = Path(tempfile.mkdtemp(prefix="dbtool-report-"))
    root = tmp / "area"
    try:
        started = time.monotonic()
        made = generate(root, args.runs, args.tests)
        print(f"generated: {args.runs} runs, {made:,} tests in {time.monotonic() - started:.0f} s")
        set_config(root, "server.idle_timeout", "0")
        run([DBTOOL, "--area", str(root), "server", "start"])
        out, plain = tmp / "report.html", tmp / "plain.json"
        write_s, rss_mb, plain_s = [], [], []
        for _ in range(args.repeat):
            begin = time.perf_counter()
            answer = run(
                [PYTHON, "-c", PEAK_RSS, DBTOOL, "--area", str(root), "report", "--target", "%", "-o", str(out)]
            )
            write_s.append(time.perf_counter() - begin)
            peak_kb, code = map(int, answer.split())
            if code != 0:
                sys.exit(f"dbtool report failed with exit code {code}")
            rss_mb.append(peak_kb / 1024)
            begin = time.perf_counter()
            plain_json(root / ".dbtool" / "dbtool.db", plain)
            plain_s.append(time.perf_counter() - begin)
        size, plain_size = out.stat().st_size, plain.stat().st_size
        rows = [
            {
                "what": f"report of {args.runs} runs x {args.tests:,} tests",
                "dbtool": f"{statistics.median(write_s):.2f} s, {size / 1e6:.1f} MB, peak RSS {max(rss_mb):.0f} MB",
                "baseline": f"sqlite3 + json.dumps of the rows: {statistics.median(plain_s):.2f} s, "
                f"{plain_size / 1e6:.1f} MB",
                "ratio": f"{statistics.median(write_s) / statistics.median(plain_s):.2f}x time, "
                f"{size / plain_size:.2f}x size",
            }
        ]
        drawn_ms = update_ms = None
        browser = chromium()
        if browser is None:
            print("note: no chromium (or no playwright): the page and dashboard figures are left out")
        else:
            playwright, chrome = browser
            try:
                blank = tmp / "blank.html"
                blank.write_text("<!DOCTYPE html><title>x</title><p>one line of text</p>")
                loads = [paint_times(chrome, out.as_uri(), "body[data-ready='1']") for _ in range(args.repeat)]
                floor = [paint_times(chrome, blank.as_uri(), None)["fcp"] for _ in range(args.repeat)]
                drawn_ms = statistics.median(x["drawn"] for x in loads)
                rows.append(
                    {
                        "what": "the report in headless Chromium: first paint · grid drawn · scroll to the end",
                        "dbtool": f"{statistics.median(x['fcp'] for x in loads):.0f} · {drawn_ms:.0f} · "
                        f"{statistics.median(x['scroll'] for x in loads):.0f} ms ({loads[0]['dom']} elements)",
                        "baseline": f"a one-line page: first paint {statistics.median(floor):.0f} ms",
                        "ratio": "",
                    }
                )
                from_start, from_end, alone = update_latency(chrome, root, args.runs, args.tests, args.updates)
                update_ms = statistics.median(from_end)
                rows.append(
                    {
                        "what": "dashboard: a CLI write to the changed cell (p50 / max)",
                        "dbtool": f"from the write's start {statistics.median(from_start):.0f} / "
                        f"{max(from_start):.0f} ms; from its end {update_ms:.0f} / {max(from_end):.0f} ms",
                        "baseline": f"the one-shot write alone {statistics.median(alone):.0f} ms",
                        "ratio": "",
                    }
                )
            finally:
                chrome.close()
                playwright.stop()
    finally:
        subprocess.run([DBTOOL, "--area", str(root), "server", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    report(
        "seeing the results: report and dashboard",
        rows,
        ["what", "dbtool", "baseline", "ratio"],
        {"machine": machine()},
    )
    verdict = f"report of {made:,} tests: {statistics.median(write_s):.2f} s, {size / 1e6:.1f} MB"
    if drawn_ms is not None:
        verdict += f"; drawn in Chromium in {drawn_ms:.0f} ms (target <= 3000 ms)"
    if update_ms is not None:
        verdict += f"; a dashboard update {update_ms:.0f} ms after the write (target <= 1000 ms)"
    print(verdict)


if __name__ == "__main__":
    main()
