"""Make the README's picture of the results grid (docs/grid.png): a throw-away area with a few nightly
runs written through the CLI, `dbtool report` of them, and the report in headless Chromium (Debian's,
driven by Playwright) with two tests expanded and a failing item's details open.

    python benchmarks/screenshot.py [--out docs/grid.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DBTOOL = [sys.executable, "-m", "dbtool.cli"]
TESTS = {"build": [""], "lint": [""], "unit": ["py310", "py311", "py312"], "integration": ["api", "db", "ui"]}
TESTS.update({"perf": [""], "docs": [""], "packaging": ["deb", "rpm", "wheel"]})


def dbtool(area: Path, *args: str) -> str:
    # (run in the area: an output file's path is then stored relative to it)
    cwd = area if area.exists() else None
    proc = subprocess.run([*DBTOOL, "--area", str(area), *args], capture_output=True, text=True, check=False, cwd=cwd)
    if proc.returncode != 0:
        sys.exit(f"dbtool {' '.join(args[:3])}... failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def result(run: int, name: str, item: str) -> tuple[str, str]:
    """The story the picture tells: py311 breaks in run 4, integration/db dies once, the newest run
    is still going."""
    if run == 6 and name in ("perf", "docs", "packaging"):
        return ("RUNNING", "n/a") if name == "perf" else ("NOT_STARTED", "n/a")
    if (name, item) == ("unit", "py311") and run >= 4:
        return "COMPLETED", "FAIL"
    if (name, item) == ("integration", "db") and run == 3:
        return "COMPLETED", "DEAD"
    if (name, item) == ("packaging", "rpm") and run == 2:
        return "KILLED", "KILLED"
    if name == "lint" and run == 5:
        return "COMPLETED", "WARN"
    return "COMPLETED", "PASS"


def build(area: Path) -> None:
    dbtool(area.parent, "init", str(area), "--keys", "RELEASE,PLATFORM")
    for run in range(1, 7):
        run_id = dbtool(area, "register-run", "--target", "v2.1/linux", "--runname", f"nightly.{run}")
        for name, items in TESTS.items():
            for item in items:
                state, status = result(run, name, item)
                comment = "AssertionError: 3 != 4 in test_parse" if status == "FAIL" else ""
                dbtool(area, "set-state-status-and-roll-up-items", "--run-id", run_id, "--testname", name,
                       "--item-path", item, "--state", state, "--status", status, "--comment", comment)  # fmt: skip
        test_id = dbtool(area, "get-test-id", "--run-id", run_id, "--testname", "unit", "--item-path", "py311")
        dbtool(area, "teststep-set-status", "--test-id", test_id, "--stepname", "pytest", "--state", "start")
        dbtool(area, "teststep-set-status", "--test-id", test_id, "--stepname", "pytest", "--state", "end",
               "--status", result(run, "unit", "py311")[1])  # fmt: skip
        dbtool(area, "csv-to-test-data", "--test-id", test_id, "--csv", f"perf,parse_ms,{9 + run},10,2,ms")
        dbtool(area, "test-add-output-file", "--test-id", test_id, "--path", f"logs/nightly.{run}/py311.log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "grid.png")
    args = parser.parse_args()
    chromium = os.environ.get("DBTOOL_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on PATH (apt-get install chromium, or set DBTOOL_TEST_CHROMIUM)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="dbtool-screenshot-"))
    area = tmp / "area"
    try:
        build(area)
        html = tmp / "report.html"
        dbtool(area, "report", "--target", "v2.1/%", "-o", str(html))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-background-networking"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 560}, device_scale_factor=1)
            page.emulate_media(reduced_motion="reduce")  # the same picture every time
            page.goto(html.as_uri())
            page.wait_for_selector("body[data-ready='1']")
            for name in ("unit", "integration", "packaging"):
                page.click(f'.rowhead[data-testname="{name}"] .tog')
            page.click('.cell[data-testname="unit"][data-item-path="py311"][data-status="FAIL"]')
            page.wait_for_selector("#details:not([hidden])")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out))
            browser.close()
    finally:
        subprocess.run([*DBTOOL, "--area", str(area), "server", "stop"], capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
