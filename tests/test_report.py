"""``dbtool report``: the one-file HTML grid, checked in a real headless chromium (tests/conftest.py
``browser``), and the reads and encoding under it."""

from __future__ import annotations

import random
import sqlite3

import pytest
from conftest import execute, put
from dbtool.core.rules.grid import (
    ALPHABET,
    BASE,
    HALF,
    PALETTE,
    cell_kind,
    cell_label,
    code_width,
    decode_column,
    encode_column,
    encode_gap,
)

# The known run: (testname, item_path, state, status, palette entry).
KNOWN = [
    ("compile", "", "COMPLETED", "PASS", "pass"),
    ("unit", "py311", "COMPLETED", "FAIL", "fail"),
    ("unit", "py312", "COMPLETED", "PASS", "pass"),
    ("deadjob", "", "COMPLETED", "DEAD", "dead"),
    ("killed", "", "KILLED", "KILLED", "killed"),
    ("busy", "", "RUNNING", "n/a", "running"),
    ("skipped", "", "COMPLETED", "SKIP", "skip"),
]


def rgb(hex_colour: str) -> str:
    """A palette colour as getComputedStyle reports it."""
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def known_run(area, runname: str = "nightly", overrides: dict | None = None) -> str:
    """A run with one test of each kind (``overrides``: (testname, item) → status), and a waiting one."""
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", runname).out.strip()
    for name, item, state, status, _ in KNOWN:
        status = (overrides or {}).get((name, item), status)
        area.ok(
            "set-state-status-and-roll-up-items", "--run-id", run_id, "--testname", name, "--item-path", item,
            "--state", state, "--status", status, "--comment", f"{name} {status}".lower(),
        )  # fmt: skip
    area.ok("register-test", "--run-id", run_id, "--testname", "waiting")
    return run_id


def open_report(page, path, artifacts=None, name: str = "report"):
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    if artifacts is not None:
        page.screenshot(path=str(artifacts / f"{name}.png"))


def cells(page, selector: str = ".cell") -> list[dict]:
    return page.eval_on_selector_all(
        selector,
        """els => els.map(e => ({run: +e.dataset.runId, testname: e.dataset.testname, item: e.dataset.itemPath,
            state: e.dataset.state, status: e.dataset.status, kind: e.dataset.kind, text: e.textContent,
            bg: getComputedStyle(e).backgroundColor, animation: getComputedStyle(e).animationName}))""",
    )


# -- in the browser -----------------------------------------------------------------------------


def test_known_run_shows_the_right_cells_and_colours(area, page, artifacts, tmp_path):
    run_id = known_run(area)
    out = tmp_path / "report.html"
    result = area.run("report", "--run-id", run_id, "-o", str(out))
    assert result.code == 0, result
    assert result.out == ""
    html = out.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html  # nothing to fetch
    open_report(page, out)
    page.click("#expand")
    page.screenshot(path=str(artifacts / "known-run.png"))
    shown = {(c["testname"], c["item"]): c for c in cells(page)}
    for name, item, state, status, kind in KNOWN:
        cell = shown[(name, item)]
        assert (cell["run"], cell["state"], cell["status"], cell["kind"]) == (int(run_id), state, status, kind)
        assert cell["bg"] == rgb(PALETTE[kind][0]), (name, item, cell)
        assert cell["text"].startswith(PALETTE[kind][2])  # a symbol and the words, not only a colour
        assert status in cell["text"] or state in cell["text"]
    assert shown[("unit", "")]["status"] == "FAIL"  # the toplevel, rolled up from its items
    assert shown[("waiting", "")]["kind"] == "notrun"
    assert shown[("waiting", "")]["bg"] == rgb(PALETTE["notrun"][0])
    page.emulate_media(reduced_motion="no-preference")
    assert page.eval_on_selector('.cell[data-testname="busy"]', "e => getComputedStyle(e).animationName") == "pulse"
    page.emulate_media(reduced_motion="reduce")  # then striped instead of pulsing
    stripes = page.eval_on_selector('.cell[data-testname="busy"]', "e => getComputedStyle(e).backgroundImage")
    assert "repeating-linear-gradient" in stripes
    colours = {kind: rgb(PALETTE[kind][0]) for kind in ("fail", "dead", "killed")}
    assert len(set(colours.values())) == 3  # DEAD and KILLED are not FAIL
    header = page.eval_on_selector(".colhead", "e => [e.textContent, e.dataset.total, e.dataset.done]")
    assert "v1/linux" in header[0] and "nightly" in header[0]
    assert header[1:] == ["8", "6"]  # leaf tests: unit counts as its two items; all but busy and waiting final
    assert page.js_errors == []


def test_items_expand_under_their_toplevel(area, page, tmp_path):
    run_id = known_run(area)
    out = tmp_path / "report.html"
    area.ok("report", "--run-id", run_id, "-o", str(out))
    open_report(page, out)
    rows = page.eval_on_selector_all(".rowhead", "els => els.map(e => [e.dataset.testname, e.dataset.itemPath])")
    assert ["unit", "py311"] not in rows and ["unit", ""] in rows
    page.click('.rowhead[data-testname="unit"] .tog')
    rows = page.eval_on_selector_all(".rowhead", "els => els.map(e => [e.dataset.testname, e.dataset.itemPath])")
    at = rows.index(["unit", ""])
    assert rows[at + 1 : at + 3] == [["unit", "py311"], ["unit", "py312"]]


def test_a_click_shows_the_test(area, page, artifacts, tmp_path):
    run_id = known_run(area)
    test_id = area.ok("get-test-id", "--run-id", run_id, "--testname", "unit", "--item-path", "py311").out.strip()
    area.ok("teststep-set-status", "--test-id", test_id, "--stepname", "build", "--state", "start", "--status", "n/a")
    area.ok("teststep-set-status", "--test-id", test_id, "--stepname", "build", "--state", "end", "--status", "PASS")
    area.ok("csv-to-test-data", "--test-id", test_id, "--csv", "perf,latency,12,10,1,ms\nperf,size,3,3,0,MB")
    area.ok("test-add-output-file", "--test-id", test_id, "--path", "logs/py311.log", "--role", "log")
    execute(area, "update tests set host = 'node7', run_duration = 65 where id = ?", [(int(test_id),)])
    out = tmp_path / "report.html"
    area.ok("report", "--run-id", run_id, "-o", str(out))
    open_report(page, out)
    page.click("#expand")
    page.click('.cell[data-testname="unit"][data-item-path="py311"]')
    page.wait_for_selector("#details:not([hidden])")
    page.screenshot(path=str(artifacts / "details.png"))
    text = page.inner_text("#details-body")
    for expected in ("unit/py311", "nightly", "COMPLETED", "FAIL", "unit fail", "node7", "1 min 5 s", "build"):
        assert expected in text, expected
    data = page.eval_on_selector_all("#details-body table", "ts => ts.map(t => t.innerText)")
    assert any("latency" in t and "fail" in t.lower() for t in data)
    assert any("size" in t and "pass" in t.lower() for t in data)
    assert any("logs/py311.log" in t for t in data)
    assert page.get_attribute("#details", "data-item-path") == "py311"
    page.keyboard.press("Escape")
    assert page.is_hidden("#details")


def test_changes_view_and_filters(area, page, artifacts, tmp_path):
    first = known_run(area, "n1")
    second = known_run(area, "n2", {("unit", "py311"): "PASS", ("compile", ""): "FAIL"})
    out = tmp_path / "report.html"
    area.ok("report", "--target", "v1/%", "-o", str(out))
    open_report(page, out)
    runs = page.eval_on_selector_all(".colhead", "els => els.map(e => +e.dataset.runId)")
    assert runs == [int(second), int(first)]  # newest first

    def toplevels():
        return page.eval_on_selector_all(".rowhead:not(.item)", "els => els.map(e => e.dataset.testname)")

    assert sorted(toplevels()) == sorted({name for name, *_ in KNOWN} | {"waiting"})
    page.check("#changes")  # the two newest runs by default
    assert sorted(toplevels()) == ["compile", "unit"]
    page.click("#expand")
    items = page.eval_on_selector_all(".rowhead.item", "els => els.map(e => e.dataset.itemPath)")
    assert items == ["py311"]  # py312 passed in both
    page.screenshot(path=str(artifacts / "changes.png"))
    page.uncheck("#changes")
    page.fill("#pattern", "dead")
    assert toplevels() == ["deadjob"]
    page.fill("#pattern", "u*/py31?")
    assert toplevels() == ["unit"]
    page.fill("#pattern", "")
    page.click("#statuses summary")
    page.check('#status-list input[value="KILLED"]')
    assert toplevels() == ["killed"]
    assert page.js_errors == []


def test_runs_with_different_tests(area, page, tmp_path):
    """A run that has few of the grid's rows travels as gaps and codes (sparse); the page reads both forms."""
    wide = known_run(area, "wide")
    narrow = area.ok("register-run", "--target", "v2/mac", "--runname", "narrow").out.strip()
    area.ok("set-state-status-and-roll-up-items", "--run-id", narrow, "--testname", "zonly", "--item-path", "x",
            "--state", "COMPLETED", "--status", "FAIL")  # fmt: skip
    out = tmp_path / "report.html"
    area.ok("report", "--run-id", wide, "--run-id", narrow, "-o", str(out))
    assert '"enc":"s"' in out.read_text() and '"enc":"d"' in out.read_text()
    open_report(page, out)
    page.click("#expand")
    shown = {(c["run"], c["testname"], c["item"]): c for c in cells(page)}
    assert shown[(int(narrow), "zonly", "x")]["status"] == "FAIL"
    assert shown[(int(narrow), "zonly", "")]["kind"] == "fail"  # its toplevel, rolled up
    assert shown[(int(narrow), "compile", "")]["kind"] == "absent"
    assert shown[(int(wide), "zonly", "x")]["kind"] == "absent"
    assert shown[(int(wide), "unit", "py311")]["status"] == "FAIL"
    assert page.js_errors == []


def test_a_100k_test_report_opens_and_scrolls(area, page, artifacts, tmp_path):
    """Only the visible part is in the DOM, wherever the grid is scrolled."""
    runs, tops, items = 4, 250, 99  # 4 runs x 25,000 tests
    made = generate(area, runs, tops, items)
    out = tmp_path / "big.html"
    area.ok("report", "--target", "%", "-o", str(out))
    open_report(page, out)
    assert page.inner_text("#summary").startswith(f"{runs} runs \u00d7 25,000 rows ({made:,} tests)")
    page.click("#expand")
    assert page.eval_on_selector_all(".cell", "els => els.length") < 2000
    page.eval_on_selector("#scroller", "s => { s.scrollTop = s.scrollHeight; s.dispatchEvent(new Event('scroll')); }")
    page.wait_for_function(
        f'document.querySelector(\'.rowhead[data-testname="t{tops - 1}"][data-item-path="i{items - 1}"]\') !== null'
    )
    assert page.eval_on_selector_all(".cell", "els => els.length") < 2000
    assert page.eval_on_selector_all("*", "els => els.length") < 4000
    page.screenshot(path=str(artifacts / "scrolled.png"))
    last = cells(page, f'.cell[data-testname="t{tops - 1}"][data-item-path="i{items - 1}"]')
    assert len(last) == runs and all(c["state"] == "COMPLETED" for c in last)
    page.click(f'.cell[data-testname="t{tops - 1}"][data-item-path="i{items - 2}"][data-run-id="1"]')  # a FAIL
    page.wait_for_selector("#details:not([hidden])")
    assert "did not pass" not in page.inner_text("#details-body")  # a FAIL has its details in a big report
    assert page.js_errors == []


def generate(area, runs: int, tops: int, items: int) -> int:
    """Runs of toplevels with items, written straight into the area's SQLite file (a few seconds
    instead of minutes through the server); every 7th item fails. Returns the number of tests."""
    con = sqlite3.connect(area.dir / "dbtool.db")
    rows = []
    for run_id in range(1, runs + 1):
        for t in range(tops):
            rows.append((run_id, f"t{t}", "", "COMPLETED", "FAIL"))
            for i in range(items):
                rows.append((run_id, f"t{t}", f"i{i}", "COMPLETED", "FAIL" if (i + run_id) % 7 == 0 else "PASS"))
    with con:
        con.executemany(
            "insert into runs (id, RELEASE, PLATFORM, runname, state, status) values (?, 'v1', 'linux', ?, 'done', '')",
            [(r, f"r{r}") for r in range(1, runs + 1)],
        )
        con.executemany("insert into tests (run_id, testname, item_path, state, status) values (?, ?, ?, ?, ?)", rows)
    con.close()
    return len(rows)


# -- bad input: one line, the exit codes of SPEC 2.4 --------------------------------------------------


def test_bad_input_says_what_to_do(area, tmp_path):
    run_id = known_run(area)
    out = str(tmp_path / "r.html")
    cases = [
        (["--target", "nomatch%", "-o", out], 1, "no run's target matches"),
        (["--run-id", "999", "-o", out], 4, "no run with id 999"),
        (["--run-id", "x", "-o", out], 2, "--run-id expects a run id"),
        (["--run-id", run_id, "-o", str(tmp_path)], 2, "it is a directory"),
        (["--run-id", run_id, "-o", str(tmp_path / "missing" / "r.html")], 2, "cannot write"),
        (["--run-id", run_id, "--target", "%", "-o", out], 2, "not both"),
        (["--run-id", run_id], 2, "-o FILE.html"),
        (["-o", out], 2, "give the runs"),
    ]
    for args, code, words in cases:
        result = area.run("report", *args)
        assert result.code == code, (args, result)
        assert result.err.count("\n") == 1 and result.err.startswith("dbtool: error: "), (args, result.err)
        assert words in result.err, (args, result.err)
    assert not (tmp_path / "r.html").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dbtool-report")] == []


# -- the reads under it, on both backends ------------------------------------------------------------


def test_grid_cells_come_in_pages_each_test_once(hdb):
    first = hdb("register-run", target="v1/linux", runname="a")
    second = hdb("register-run", target="v1/linux", runname="b")
    for run_id in (first, second):
        for t in range(5):
            put(hdb, run_id, f"t{t}", "", status="PASS")
            put(hdb, run_id, f"t{t}", "x", status="FAIL" if t == 2 else "PASS")
    hdb("delete-test-records", test_id=hdb("get-test-id", run_id=second, testname="t4", item_path="x"))
    runs = hdb("grid-runs", target="v1/%")
    assert [r["id"] for r in runs["runs"]] == [second, first] and runs["seq"] > 0
    ids = [str(second), str(first)]
    seen, after = [], {}
    while True:
        page = hdb("grid-cells", run_ids=ids, limit=3, **after)
        seen += page
        if len(page) < 3:
            break
        after = {"after_run": page[-1]["run_id"], "after_id": page[-1]["id"]}
    keys = [(c["run_id"], c["testname"], c["item_path"]) for c in seen]
    assert len(keys) == len(set(keys)) == 19  # 20 tests, one deleted
    assert keys[0][0] == second and keys[-1][0] == first
    failed = hdb("grid-details", run_ids=ids, not_passed=True)
    assert {(d["run_id"], d["testname"], d["item_path"]) for d in failed} == {
        (run, name, item) for run in (first, second) for name, item in (("t2", ""), ("t2", "x"))
    }
    one = hdb("grid-details", run_ids=[str(first)], testname="t2", item_path="x")
    assert [(d["status"], d["steps"], d["data"], d["outputs"]) for d in one] == [("FAIL", [], [], [])]


def test_grid_runs_refuses_unknown_and_deleted_runs(hdb):
    from dbtool.core.errors import Refused

    run_id = hdb("register-run", target="v1/linux", runname="a")
    with pytest.raises(Refused, match="no run with id 77"):
        hdb("grid-runs", run_ids=[str(run_id), "77"])
    hdb("delete-run", run_id=run_id)
    with pytest.raises(Refused, match="deleted"):
        hdb("grid-runs", run_ids=[str(run_id)])
    assert hdb("grid-runs", target="%")["runs"] == []


# -- the palette and the encoding (rules/grid.py) -------------------------------------------------------


def test_each_state_and_status_has_one_palette_entry():
    assert cell_kind("COMPLETED", "PASS") == "pass"
    assert cell_kind("COMPLETED", "FAIL") == "fail"
    assert cell_kind("COMPLETED", "DEAD") == cell_kind("DEAD", "n/a") == "dead"
    assert cell_kind("KILLED", "KILLED") == cell_kind("KILLREQ", "n/a") == "killed"
    assert cell_kind("RUNNING", "n/a") == cell_kind("LAUNCHED", "PASS") == "running"
    assert cell_kind("NOT_STARTED", "n/a") == "notrun"
    assert cell_kind("COMPLETED", "WAIVED") == "warn"
    assert cell_kind("COMPLETED", "SKIP") == "skip"
    assert cell_kind("WEIRD", "THING") == "other"
    assert [cell_label(*pair) for pair in (("KILLED", "PASS"), ("COMPLETED", "DEAD"), ("DEAD", "n/a"))] == [
        "KILLED",
        "DEAD",
        "DEAD",
    ]
    assert cell_label("RUNNING", "n/a") == "RUNNING" and cell_label("COMPLETED", "FAIL") == "FAIL"
    backgrounds = [bg for bg, *_ in PALETTE.values()]
    symbols = [symbol for _, _, symbol, _ in PALETTE.values()]
    assert len(set(backgrounds)) == len(backgrounds) and len(set(symbols)) == len(symbols)


def test_columns_round_trip_dense_and_sparse():
    rng = random.Random(3)
    assert set(ALPHABET).isdisjoint('"\\<') and len(set(ALPHABET)) == len(ALPHABET)
    assert [code_width(n) for n in (1, BASE - 1, BASE, BASE**2 - 1, BASE**2)] == [1, 1, 2, 2, 3]
    for nrows, share, pairs in ((100, 1.0, 5), (1000, 0.5, 200), (100_000, 0.001, 9000), (5000, 0.0, 3)):
        rows = sorted(rng.sample(range(nrows), int(nrows * share)))
        codes = [rng.randint(1, pairs) for _ in rows]
        width = code_width(pairs)
        kind, text = encode_column(rows, codes, nrows, width)
        assert kind == ("d" if share >= 0.5 else "s")
        assert decode_column(kind, text, nrows, width) == dict(zip(rows, codes, strict=True))
    assert [len(encode_gap(n)) for n in (0, HALF - 1, HALF, HALF**2 - 1, HALF**2)] == [1, 1, 2, 2, 3]
