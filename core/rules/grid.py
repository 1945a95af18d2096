"""The results grid (``report``, ``dashboard``) as data: the palette, what kind of cell a state and
status make, and the compact encoding of a run's column of cells. Pure logic, no database.

The palette is the one place colours are chosen: the page's CSS is generated from ``PALETTE`` and
the README documents it. Colour is never the only signal: every kind has a symbol, and every cell
says its state and status in text and in its ``data-*`` attributes.

A column (one run) is a string over ``ALPHABET``: cell codes (an index into the report's table of
distinct (state, status) pairs, 0 = the run has no such test), ``width`` characters each. A run that
has most of the grid's rows is *dense* (one code per row); a run with few of them is *sparse*: for
each of its rows, the distance from the previous one as a variable-length number, then its code.
"""

from __future__ import annotations

from .vocab import FINAL_STATES, RUNNING_STATES

# kind: (background, text, symbol, what it is). The browser shows them in this order (the legend).
PALETTE: dict[str, tuple[str, str, str, str]] = {
    "pass": ("#2da44e", "#ffffff", "✓", "PASS"),
    "fail": ("#cf222e", "#ffffff", "✗", "FAIL, ABORT, PREQ_FAIL"),
    "dead": ("#24292f", "#ffffff", "†", "DEAD: the job vanished (DEAD, STUCK/DEAD, STUCK, TIMED_OUT, INCOMPLETE)"),
    "killed": ("#8250df", "#ffffff", "⊘", "KILLED, KILLREQ"),
    "running": ("#0969da", "#ffffff", "▶", "RUNNING, LAUNCHED, REMOTEHOSTSTART (animated)"),
    "warn": ("#d4a72c", "#1f2328", "!", "WARN, CHECK, WAIVED"),
    "skip": ("#a5d0e3", "#1f2328", "»", "SKIP, PREQ_DISCARDED"),
    "notrun": ("#d0d7de", "#1f2328", "○", "not run yet (NOT_STARTED, n/a)"),
    "other": ("#f2e6b8", "#1f2328", "?", "any other state or status"),
    "absent": ("#f6f8fa", "#8c959f", "·", "no such test in the run"),
}

KILLED_STATES = frozenset({"KILLED", "KILLREQ"})
DEAD_STATES = frozenset({"DEAD", "STUCK", "INCOMPLETE"})
DEAD_STATUSES = frozenset({"DEAD", "STUCK/DEAD", "TIMED_OUT", "INCOMPLETE", "STUCK/INCOMPLETE", "FAILED TO KILL"})
FAIL_STATUSES = frozenset({"FAIL", "ABORT", "PREQ_FAIL"})
WARN_STATUSES = frozenset({"WARN", "CHECK", "WAIVED"})
SKIP_STATUSES = frozenset({"SKIP", "PREQ_DISCARDED"})
NOT_RUN_STATUSES = frozenset({"n/a", "na", ""})
PASS = "PASS"


def cell_kind(state: str | None, status: str | None) -> str:
    """The palette entry of a test in ``state`` with ``status``: what is happening to the job
    first (running, killed, dead), then how it ended."""
    state, status = state or "", status or ""
    if state in RUNNING_STATES:
        return "running"
    if state in KILLED_STATES or status == "KILLED":
        return "killed"
    if state in DEAD_STATES or status in DEAD_STATUSES:
        return "dead"
    if status == PASS:
        return "pass"
    if status in FAIL_STATUSES:
        return "fail"
    if status in WARN_STATUSES:
        return "warn"
    if status in SKIP_STATUSES:
        return "skip"
    if state == "NOT_STARTED" or status in NOT_RUN_STATUSES:
        return "notrun"
    return "other"


def cell_label(state: str | None, status: str | None) -> str:
    """The word a cell shows beside its symbol: the one that decided its palette entry (the state of
    a running, killed or waiting test; otherwise the status)."""
    state, status = state or "", status or ""
    kind = cell_kind(state, status)
    by_state = (
        kind == "running"
        or (kind == "killed" and state in KILLED_STATES)
        or (kind == "dead" and status not in DEAD_STATUSES)
        or (kind == "notrun" and state == "NOT_STARTED")
    )
    return state if by_state else status


def is_final(state: str | None) -> bool:
    """Whether a test in ``state`` is done (it counts towards its run's progress bar)."""
    return state in FINAL_STATES


def css_variables() -> str:
    """The palette as CSS custom properties (``--pass-bg``, ``--pass-fg``, ...)."""
    return ";".join(f"--{kind}-bg:{bg};--{kind}-fg:{fg}" for kind, (bg, fg, _, _) in PALETTE.items())


# -- the encoding of columns ------------------------------------------------------------------------

# Characters that need no escaping in JSON or inside an HTML <script> (no quote, backslash or '<').
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz!#$%&()*+,-./:;=?@[]^_`{|}~"
BASE = len(ALPHABET)  # 89
HALF = BASE // 2  # a gap's digits: the first HALF characters end a number, the others continue it


def code_width(pairs: int) -> int:
    """Characters per cell code for ``pairs`` distinct (state, status) pairs (code 0 is 'no test')."""
    width, capacity = 1, BASE
    while capacity <= pairs:
        width += 1
        capacity *= BASE
    return width


def encode_code(code: int, width: int) -> str:
    digits = []
    for _ in range(width):
        code, digit = divmod(code, BASE)
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


def encode_gap(gap: int) -> str:
    """A non-negative number: base-HALF digits, most significant first, all but the last one
    shifted into the upper half of the alphabet (so a reader knows where the number ends)."""
    digits = [ALPHABET[gap % HALF]]
    gap //= HALF
    while gap:
        digits.append(ALPHABET[HALF + gap % HALF])
        gap //= HALF
    return "".join(reversed(digits))


def is_dense(cells: int, rows: int) -> bool:
    """A column of ``cells`` tests among ``rows`` rows is smaller written whole than as gaps
    (a sparse cell costs about three characters: its gap and its code)."""
    return cells * 3 >= rows


def encode_column(rows: list[int], codes: list[int], nrows: int, width: int) -> tuple[str, str]:
    """One run's cells — row indexes ascending, with their codes — as ("d", dense text) or
    ("s", sparse text)."""
    written = {code: encode_code(code, width) for code in set(codes)}  # (each code's text made once)
    if is_dense(len(rows), nrows):
        cells = [ALPHABET[0] * width] * nrows
        for row, code in zip(rows, codes, strict=True):
            cells[row] = written[code]
        return "d", "".join(cells)
    parts = []
    previous = -1
    for row, code in zip(rows, codes, strict=True):
        parts.append(encode_gap(row - previous - 1))
        parts.append(written[code])
        previous = row
    return "s", "".join(parts)


def decode_column(kind: str, text: str, nrows: int, width: int) -> dict[int, int]:
    """The inverse of ``encode_column`` (row → code, rows with a test only): for tests; the browser
    has its own."""
    index = {c: i for i, c in enumerate(ALPHABET)}

    def code_at(at: int) -> int:
        value = 0
        for c in text[at : at + width]:
            value = value * BASE + index[c]
        return value

    found = {}
    if kind == "d":
        for row in range(nrows):
            code = code_at(row * width)
            if code:
                found[row] = code
        return found
    at, row = 0, -1
    while at < len(text):
        gap = 0
        while index[text[at]] >= HALF:
            gap = gap * HALF + index[text[at]] - HALF
            at += 1
        gap = gap * HALF + index[text[at]]
        at += 1
        row += gap + 1
        found[row] = code_at(at)
        at += width
    return found


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value (item i2 before i10)."""
    key = []
    number = ""
    word = ""
    for c in text:
        if c.isdigit():
            if word:
                key.append((1, word, 0))
                word = ""
            number += c
        else:
            if number:
                key.append((0, "", int(number)))
                number = ""
            word += c
    if number:
        key.append((0, "", int(number)))
    if word:
        key.append((1, word, 0))
    return tuple(key)
