"""Client-side drivers: commands that do work around their request(s), such as reading a file.

A driver is ``driver(cmd, params, opts, send)``; ``send(params)`` routes one request. This module
is on the client path: standard library only (no SQLAlchemy).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from itertools import accumulate

from dbtool.core.commands import COMMANDS, Command
from dbtool.core.errors import NotFound, Refused, UsageError
from dbtool.core.rules.testdata import record_ends

from .binder import GlobalOptions

CHUNK_ROWS = 5000  # rows per request: short enough not to hold the server's writer for long
# Parts of an upload: every row but the final part's is written twice (staged, then copied), so
# fewer, larger parts cost less; one holds the writer about as long as the final copy of 100,000 rows.
PART_ROWS = 50_000
PART_CHARS = 4 << 20
CHUNK_CHARS = 1 << 20  # and about 1 MiB of CSV at most, far below the 16 MiB request line limit
PROGRESS_MIN_ROWS = 2 * CHUNK_ROWS  # smaller inputs finish before a bar would be worth showing


def csv_to_test_data(cmd: Command, params: dict, opts: GlobalOptions, send) -> None:
    """Read the CSV (``--csv``, ``--file F`` or ``--file -``), check every line, then send it.

    A bad line anywhere refuses the whole input before anything is sent. An input that fits one
    request is one csv-to-test-data (an empty one too, so an unknown test id is reported). A larger
    one goes in parts of one upload (test-data-upload-part), staged by the server until the last
    part makes all of them visible at once: a client killed mid-way leaves nothing stored.
    """
    text, source = _csv_source(params)
    try:
        lines, ends = record_ends(text)
    except ValueError as err:
        raise Refused(f"bad CSV in {source}: {err}; nothing was stored") from None
    base = {name: params[name] for name in ("test_id", "run_id") if params.get(name) is not None}
    total = len(ends)
    parts = _chunks(lines, ends) if ends else iter([(0, "")])
    first = next(parts)
    second = next(parts, None)
    if second is None:
        send({**base, "csv": first[1]})
        return
    progress = Progress("csv-to-test-data", total) if _show_progress(total) else None
    try:
        from .dispatch import sender

        send_part = sender(COMMANDS["test-data-upload-part"], opts)
        _upload(send_part, base, lambda: _chunks(lines, ends, PART_ROWS, PART_CHARS), progress)
    finally:
        if progress is not None:
            progress.done()


def _upload(send, base: dict, chunks, progress: Progress | None) -> None:
    """Send the chunks as the parts of one upload, the last one final. When the server no longer
    knows the upload (pruned, or its database replaced meanwhile), start over once."""
    for attempt in (1, 2):
        upload = os.urandom(12).hex()
        sent = 0
        try:
            for part, (rows, chunk, last) in enumerate(_marking_last(chunks())):
                send({**base, "upload": upload, "part": part, "csv": chunk, "final": last})
                sent += rows
                if progress is not None:
                    progress.show(sent)
            return
        except NotFound as err:
            if attempt == 2:
                raise Refused(f"the server lost the upload twice ({err.message}); nothing was stored") from None


def _marking_last(chunks: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str, bool]]:
    """Each chunk with whether it is the last one."""
    previous = next(chunks)
    for chunk in chunks:
        yield (*previous, False)
        previous = chunk
    yield (*previous, True)


def _csv_source(params: dict) -> tuple[str, str]:
    """The CSV text and where it came from; exactly one of --csv and --file."""
    text, path = params.get("csv"), params.get("file")
    if (text is None) == (path is None):
        raise UsageError(
            "give the CSV with exactly one of --csv TEXT, --file F or --file - (standard input)"
            + ("" if text is None else ", not both --csv and --file")
        )
    if text is not None:
        return text, "--csv"
    if path == "-":
        return _decode(sys.stdin.buffer.read(), "standard input"), "standard input"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UsageError(f"cannot read --file {path}: {err.strerror}") from None
    return _decode(data, path), path


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")  # a byte-order mark (spreadsheet exports) is not data
    except UnicodeDecodeError as err:
        raise UsageError(f"{source} is not UTF-8 text (byte {err.start}); convert it, e.g. with iconv") from None


def _chunks(
    lines: list[str], ends: list[int], max_rows: int = CHUNK_ROWS, max_chars: int = CHUNK_CHARS
) -> Iterator[tuple[int, str]]:
    """(number of records, CSV text) per request: the input's own lines, cut at record ends, at most
    ``max_rows`` records and about ``max_chars`` characters (one longer record is sent alone)."""
    offsets = [0, *accumulate(map(len, lines))]  # characters before each line
    done = 0  # records sent
    first = 0  # the first line not sent
    while done < len(ends):
        count = min(max_rows, len(ends) - done)
        while count > 1 and offsets[ends[done + count - 1]] - offsets[first] > max_chars:
            count //= 2
        last = ends[done + count - 1] if done + count < len(ends) else len(lines)  # the tail's blank lines too
        yield count, "".join(lines[first:last])
        done, first = done + count, last


def _watched() -> bool:
    """A person watches: stderr, where progress is drawn, is a terminal."""
    from .progress import on_terminal

    return on_terminal()


def _show_progress(total: int) -> bool:
    """A bar for a large input, only when a person watches."""
    return total >= PROGRESS_MIN_ROWS and _watched()


DELETE_BATCH = 2000  # tests per transaction when delete-run shows progress


def delete_run(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """delete-run: one transaction, unless a person watches: then batches with a progress bar.

    The first batch deletes the run itself (the server marks it and its tests deleted at once), so
    an interrupted client leaves a deleted run whose removal the next delete-run finishes."""
    if params.get("batch") is not None or not _watched():
        return send(params)
    from .progress import phases

    first_step = phases("delete-run", "deleting the run and its first tests")
    try:
        first = send({**params, "batch": DELETE_BATCH})
    finally:
        first_step.done()
    done, remaining = first["tests"], first["remaining"]
    if not remaining:
        return None
    progress = Progress("delete-run", done + remaining, unit="tests")
    try:
        while remaining:
            progress.show(done)
            step = send({**params, "batch": DELETE_BATCH})
            done, remaining = done + step["tests"], step["remaining"]
        progress.total = done
        progress.show(done)
    finally:
        progress.done()
    return None


def Progress(label: str, total: int, unit: str = "rows"):
    """A progress bar on stderr with rate and time left (cli/progress.py; only used on a terminal)."""
    from .progress import Bar

    return Bar(label, total, unit)


def exit_by_answer(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """A yes/no question answered by the exit code (``test-has-item``): 0 yes, 1 no; nothing printed
    for people, true or false with --json (or another format); nothing at all with --check."""
    from .output import ExitWith

    check = params.pop("check", False)
    answer = bool(send(params))
    return ExitWith(answer if opts.output != "table" and not check else None, 0 if answer else 1)


def answer_check(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """A query whose answer is yes or no (``have-incompletes``: true/false; ``get-run-completion``:
    its ``complete``): printed as usual, or with --check nothing printed and the exit code the answer
    (0 yes, 1 no), for ``if dbtool ... --check; then``."""
    from .output import ExitWith

    check = params.pop("check", False)
    result = send(params)
    if not check:
        return result
    answer = result.get("complete") is True if isinstance(result, dict) else result is True
    return ExitWith(None, 0 if answer else 1)
