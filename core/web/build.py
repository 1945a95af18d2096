"""The data of a results grid, read page by page through the area's server and encoded compactly
(rules/grid.py): the same for the one-file report and the live dashboard.

``send(command, params)`` routes one read (core/client.py ``call``, or the CLI's sender). The cells
come in pages (grid-cells) and are kept as two integer arrays per run (row, code), never as a
record per test, so a million tests cost tens of megabytes, not gigabytes.

The data (``Grid.data``), as the page's script reads it::

    pairs   [[state, status], ...]  the distinct (state, status) pairs; a cell's code is its index + 1
    kinds   [kind, ...]             each pair's palette entry (rules/grid.py cell_kind)
    labels  [word, ...]             the word each pair's cells show (rules/grid.py cell_label)
    final   [0|1, ...]              whether each pair's state is final (the progress bars)
    width, alphabet                 characters per code, and the characters codes are written with
    names   [testname, ...]         the toplevel test names, in row order
    rowName [i, ...], rowItem [item path, ...]   each row: its name's index and its item path ('' = toplevel)
    runs    [{id, target, runname, state, status, owner, event_time, completed_at, enc, cells}, ...]
            newest first; enc "d" (a code per row) or "s" (gaps and codes), cells the text
    seq     the last event stored before the read (a live view follows the events after it)
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from ..rules.grid import ALPHABET, cell_kind, cell_label, code_width, encode_column, is_final, natural_key

Send = Callable[[str, dict], object]
CELLS_PER_PAGE = 20000
DETAILS_PER_PAGE = 1000
RUN_FIELDS = ("id", "target", "runname", "state", "status", "owner", "event_time", "completed_at")


class Grid:
    """Cells as they arrive: rows numbered in order of appearance, renumbered in name order at the end."""

    def __init__(self, runs: list[dict], seq: int) -> None:
        self.runs = runs
        self.seq = seq
        self.position = {run["id"]: i for i, run in enumerate(runs)}
        self.pairs: dict[tuple[str, str], int] = {}
        self.names: dict[str, int] = {}
        self.rows: dict[tuple[int, str], int] = {}
        self.cell_rows = [array("l") for _ in runs]
        self.cell_codes = [array("l") for _ in runs]
        self.tests = 0
        self.order: list[int] | None = None  # first-seen row number → final row number

    def add_page(self, rows: list) -> tuple[int, int] | None:
        """Take one page of grid-cells rows; returns the (run_id, id) of its last test (None when empty)."""
        pairs, names, keys = self.pairs, self.names, self.rows
        for run_id, _test_id, testname, item_path, state, status in rows:
            code = pairs.get((state, status))
            if code is None:
                code = pairs[(state, status)] = len(pairs) + 1
            name = names.get(testname)
            if name is None:
                name = names[testname] = len(names)
            if item_path and (name, "") not in keys:  # an item's toplevel row, even when the run lacks one
                keys[(name, "")] = len(keys)
            row = keys.get((name, item_path or ""))
            if row is None:
                row = keys[(name, item_path or "")] = len(keys)
            position = self.position[run_id]
            self.cell_rows[position].append(row)
            self.cell_codes[position].append(code)
        self.tests += len(rows)
        return (rows[-1][0], rows[-1][1]) if rows else None

    def finish(self) -> dict:
        """The data the page reads (see the module's docstring)."""
        name_list = sorted(self.names, key=natural_key)
        name_rank = {self.names[name]: rank for rank, name in enumerate(name_list)}
        keys = sorted(self.rows, key=lambda key: (name_rank[key[0]], key[1] != "", natural_key(key[1])))
        order = [0] * len(keys)
        for final, key in enumerate(keys):
            order[self.rows[key]] = final
        self.order = order
        pair_list = sorted(self.pairs, key=self.pairs.get)
        width = code_width(len(pair_list))
        runs = []
        for position, run in enumerate(self.runs):
            cells = sorted(
                zip((order[row] for row in self.cell_rows[position]), self.cell_codes[position], strict=True)
            )
            enc, text = encode_column([row for row, _ in cells], [code for _, code in cells], len(keys), width)
            runs.append({**{f: run.get(f) for f in RUN_FIELDS}, "enc": enc, "cells": text})
            self.cell_rows[position] = self.cell_codes[position] = array("l")  # (freed as it goes)
        return {
            "pairs": [list(pair) for pair in pair_list],
            "kinds": [cell_kind(state, status) for state, status in pair_list],
            "labels": [cell_label(state, status) for state, status in pair_list],
            "final": [int(is_final(state)) for state, _ in pair_list],
            "width": width,
            "alphabet": ALPHABET,
            "names": name_list,
            "rowName": [name_rank[name] for name, _ in keys],
            "rowItem": [item for _, item in keys],
            "runs": runs,
            "tests": self.tests,
            "seq": self.seq,
        }

    def cell_of(self, run_id: int, testname: str, item_path: str) -> tuple[int, int] | None:
        """(column, final row) of a test, once ``finish`` has numbered the rows."""
        name = self.names.get(testname)
        row = None if name is None else self.rows.get((name, item_path or ""))
        if row is None or self.order is None or run_id not in self.position:
            return None
        return self.position[run_id], self.order[row]


def select_runs(send: Send, run_ids: list[int] | None, target: str | None, last: int | None) -> tuple[list, int]:
    """The grid's runs (newest first) and the seq of the last event before they were read."""
    params: dict = {"run_ids": [str(i) for i in run_ids]} if run_ids else {"target": target, "last": last}
    answer = send("grid-runs", {k: v for k, v in params.items() if v is not None})
    return list(answer["runs"]), answer["seq"]


def collect(send: Send, runs: list[dict], seq: int, page: int = CELLS_PER_PAGE, progress=None) -> Grid:
    """Every live test of the runs, page by page."""
    grid = Grid(runs, seq)
    ids = [str(run["id"]) for run in runs]
    after: tuple[int, int] | None = None
    while ids:
        params = {"run_ids": ids, "limit": page}
        if after is not None:
            params.update(after_run=after[0], after_id=after[1])
        rows = send("grid-cells", params).rows  # (Records, from the server and from a direct read alike)
        last = grid.add_page(rows)
        if progress is not None:
            progress(grid.tests)
        if last is None or len(rows) < page:
            break
        after = last
    return grid


def details(send: Send, run_ids: list[int], *, not_passed: bool, cap: int | None, page: int = DETAILS_PER_PAGE):
    """Details of the runs' tests (all, or those that did not pass), page by page, at most ``cap``."""
    ids = [str(i) for i in run_ids]
    after: tuple[int, int] | None = None
    given = 0
    while ids and (cap is None or given < cap):
        limit = page if cap is None else min(page, cap - given)
        params: dict = {"run_ids": ids, "limit": limit, "not_passed": not_passed}
        if after is not None:
            params.update(after_run=after[0], after_id=after[1])
        tests = send("grid-details", params)
        yield from tests
        given += len(tests)
        if len(tests) < limit:
            return
        after = (tests[-1]["run_id"], tests[-1]["id"])


def detail_record(test: dict) -> dict:
    """A test's details as the page shows them (defaults a job never set left out)."""
    record = {k: test[k] for k in ("state", "status", "comment", "host", "run_duration", "event_time", "last_update")}
    if test.get("rundir") and test["rundir"] != "/tmp/badname":
        record["rundir"] = test["rundir"]
    if test.get("final_logf") and test["final_logf"] != "logs/final.log":
        record["log"] = test["final_logf"]
    record["steps"] = test.get("steps") or []
    record["data"] = test.get("data") or []
    record["outputs"] = test.get("outputs") or []
    return record
