"""The results grid's page: assets/grid.html with its CSS, script, palette and data put in.

The one-file report has its data inside (a JSON block the script parses at once, and the details of
tests as lines of JSON the script decodes one at a time, when a cell is clicked); the dashboard's page
has none and fetches it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from ..rules.grid import PALETTE, css_variables

ASSETS = Path(__file__).resolve().parent / "assets"
MARKERS = ("{{CONFIG}}", "{{DATA}}", "{{DETAILS}}")


@cache
def _template() -> list[str]:
    """The page cut at its data markers, everything else filled in."""
    html = (ASSETS / "grid.html").read_text(encoding="utf-8")
    html = html.replace("{{PALETTE}}", css_variables())
    html = html.replace("{{CSS}}", (ASSETS / "grid.css").read_text(encoding="utf-8"))
    html = html.replace("{{JS}}", (ASSETS / "grid.js").read_text(encoding="utf-8"))
    parts = []
    for marker in MARKERS:
        before, found, html = html.partition(marker)
        if not found:
            raise RuntimeError(f"assets/grid.html lacks {marker}")
        parts.append(before)
    parts.append(html)
    return parts


def script_json(value: object) -> str:
    """JSON that can stand inside a <script> element: '<' only ever escaped (it can appear only
    within strings, where \\u003c means the same), so no '</script>' can end the element early."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def config(mode: str, details_note: str = "") -> dict:
    palette = {kind: list(entry) for kind, entry in PALETTE.items()}
    return {"mode": mode, "palette": palette, "detailsNote": details_note}


def write_page(write, title: str, settings: dict, data: object | None, details) -> None:
    """Write the page: ``data`` (the grid, or None for a page that fetches it) and ``details``
    (an iterable of lines "COLUMN ROW JSON\\n") inside."""
    head, after_config, after_data, tail = _template()
    escaped_title = _html_text(title)
    write(head.replace("{{TITLE}}", escaped_title))
    write(script_json(settings))
    write(after_config)
    write("null" if data is None else script_json(data))
    write(after_data)
    for line in details:
        write(line)
    write(tail)


def page_bytes(title: str, settings: dict) -> bytes:
    """The dashboard's page (no data inside)."""
    chunks: list[str] = []
    write_page(chunks.append, title, settings, None, ())
    return "".join(chunks).encode("utf-8")


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
