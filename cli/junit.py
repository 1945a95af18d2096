"""import-junit and export-junit on the client: a JUnit file streamed to the server in parts, and a
run's tests streamed out as JUnit XML (the mapping is in core/rules/junit.py).

import-junit reads each file twice, both times in bounded memory. First it checks the whole file
(defusedxml: entity declarations and external references are refused; malformed XML is refused)
and computes its SHA-256 — before anything is stored, so a bad file stores nothing. Then it
asks the server how far an import of that digest got (nothing, part of it, all of it), and
parses the file with iterparse, dropping each testcase once read, in a thread of its own that
hands parts of up to CASES_PER_PART cases to the sender, so parsing and storing overlap. Standard
input is copied to a temporary file first (it cannot be read twice).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import sys
import tempfile
import threading

from dbtool.core.commands import COMMANDS, Command
from dbtool.core.errors import Refused, UsageError
from dbtool.core.rules import junit as rules

from .binder import GlobalOptions
from .drivers import Progress, _watched

CASES_PER_PART = 10000  # cases per request (one transaction each, ~0.1-0.2 s): few commits, the writer not held long
# The first part is small and each next one twice as big, up to CASES_PER_PART: the server begins
# storing as soon as a few cases are parsed instead of waiting for a whole part, and as parsing is
# faster than storing, every part after it is ready before the server is.
FIRST_PART = 1000
PART_CHARS = 4 << 20  # and about 4 MiB of JSON at most, far below the 16 MiB request line limit
PROGRESS_MIN_CASES = 10000
BLOCK = 1 << 20


# -- import ---------------------------------------------------------------------------------------


def import_junit(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """Import each file (or ``-``, standard input) into the run; print one summary line."""
    files = params.get("files") or []
    if not files:
        raise UsageError("give one or more JUnit XML files (or - for standard input) after --run-id N")
    if files.count("-") > 1:
        raise UsageError("standard input (-) can be read only once")
    from .dispatch import sender

    send_part = sender(COMMANDS["junit-import-part"], opts)
    run_id = params["run_id"]
    reports = []
    for name in files:
        with _Source(name) as (path, label):
            reports.append(_import_file(send_part, run_id, path, label))
    summary = _summary(reports)
    from .output import emit

    emit(json.dumps(summary, indent=2) + "\n" if opts.output == "json" else summary["line"] + "\n")
    if summary["refused"]:
        total = summary["stored"] + summary["refused"]
        raise Refused(
            f"{summary['refused']} of {total} cases were refused (the line above says why); the rest are stored"
        )
    return None


class _Source:
    """A file to import as a path and a label for messages; standard input copied to a temporary file."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.temp: str | None = None

    def __enter__(self) -> tuple[str, str]:
        if self.name != "-":
            if not os.path.isfile(self.name):
                why = "no such file" if not os.path.exists(self.name) else "not a regular file"
                raise UsageError(f"cannot read {self.name}: {why}")
            return self.name, self.name
        fd, self.temp = tempfile.mkstemp(prefix="dbtool-junit-", suffix=".xml")
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, BLOCK)
        return self.temp, "standard input"

    def __exit__(self, *exc: object) -> None:
        if self.temp is not None:
            os.unlink(self.temp)


def check_file(path: str, label: str) -> tuple[str, int]:
    """The file's SHA-256 and about how many testcases it has; Refused when it is no safe,
    well-formed XML (nothing has been sent yet).

    The check is expat itself with defusedxml's three refusals as its only handlers (an entity
    declaration, parsed or unparsed, and an external reference): no Python call per element or
    text, about half the time of defusedxml's parser, which also passes every text through Python.
    The parse that follows is defusedxml's."""
    from xml.parsers.expat import ExpatError, ParserCreate

    from defusedxml import DefusedXmlException, EntitiesForbidden, ExternalReferenceForbidden

    def entity(name, *rest):
        raise EntitiesForbidden(name, None, None, None, None, None)

    def external(context, base, sysid, pubid):
        raise ExternalReferenceForbidden(context, base, sysid, pubid)

    digest = hashlib.sha256()
    parser = ParserCreate()
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = external
    cases = 0
    try:
        with open(path, "rb") as f:
            while block := f.read(BLOCK):
                digest.update(block)
                cases += block.count(b"<testcase")
                parser.Parse(block, False)
        parser.Parse(b"", True)
    except OSError as err:
        raise UsageError(f"cannot read {label}: {err.strerror}") from None
    except DefusedXmlException as err:
        raise Refused(
            f"{label} declares XML entities or external references ({type(err).__name__}), which dbtool "
            "never expands (entity expansion and external entity attacks); nothing was stored"
        ) from None
    except ExpatError as err:
        raise Refused(f"{label} is not well-formed XML ({err}); nothing was stored — fix or regenerate it") from None
    return digest.hexdigest(), cases


def _import_file(send_part, run_id: int, path: str, label: str) -> dict:
    digest, estimate = check_file(path, label)
    base = {"run_id": run_id, "digest": digest, "source": label}
    begin = send_part({**base, "first": 0, "cases": "[]"})
    if begin["already"]:
        return {"file": label, "digest": digest, "already": True, "stored": 0, "refused": 0, "reasons": {}}
    progress = (
        Progress("import-junit", estimate, unit="cases") if estimate >= PROGRESS_MIN_CASES and _watched() else None
    )
    try:
        end = _stream(send_part, base, path, label, begin["next"], digest, progress)
    finally:
        if progress is not None:
            progress.done()
    reasons = {
        reason: [count - begin["reasons"].get(reason, [0])[0], example]
        for reason, (count, example) in end["reasons"].items()
        if count > begin["reasons"].get(reason, [0])[0]
    }
    return {
        "file": label,
        "digest": digest,
        "already": False,
        "stored": end["stored"] - begin["stored"],
        "refused": end["refused"] - begin["refused"],
        "reasons": reasons,
    }


def _stream(send_part, base: dict, path: str, label: str, start: int, digest: str, progress) -> dict:
    """Parse the file in a thread and send its parts, the last one final; returns the import's totals."""
    parts: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for part in _parts(path, label, start, digest):
                while not stop.is_set():
                    try:
                        parts.put(part, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            parts.put(None)
        except BaseException as err:  # handed to the sender, which raises it
            parts.put(err)

    thread = threading.Thread(target=produce, name="junit-parse", daemon=True)
    thread.start()
    try:
        first, answer = start, None
        pending = parts.get()
        while True:
            if isinstance(pending, BaseException):
                raise pending
            if pending is None:  # an empty file, or a resumed import with nothing left: end it
                return send_part({**base, "first": first, "cases": "[]", "final": True})
            count, text = pending
            following = parts.get()
            final = following is None
            answer = send_part({**base, "first": first, "cases": text, "final": final})
            first += count
            if progress is not None:
                progress.total = max(progress.total, first)
                progress.show(first)
            if final:
                return answer
            pending = following
    finally:
        stop.set()
        thread.join(timeout=5)


def _parts(path: str, label: str, start: int, digest: str):
    """(number of cases, JSON text) per part, the cases from number ``start`` on."""
    from xml.etree.ElementTree import ParseError

    reader = _HashingReader(path)
    encoded: list[str] = []
    chars = 0
    limit = FIRST_PART
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    try:
        for case in rules.iter_cases(reader, start):
            text = dumps(rules.compact(case))
            if encoded and (len(encoded) >= limit or chars + len(text) > PART_CHARS):
                yield len(encoded), "[" + ",".join(encoded) + "]"
                encoded, chars, limit = [], 0, min(2 * limit, CASES_PER_PART)
            encoded.append(text)
            chars += len(text)
    except rules.NotJunit as err:
        raise Refused(f"{label} is not a JUnit report: {err}") from None
    except ParseError as err:  # the file changed since it was checked
        raise Refused(f"{label} changed while it was imported ({err}); import it again") from None
    finally:
        reader.close()
    if reader.hexdigest() != digest:
        raise Refused(f"{label} changed while it was imported; import it again (it resumes where it stopped)")
    if encoded:
        yield len(encoded), "[" + ",".join(encoded) + "]"


class _HashingReader:
    """A binary file whose reads also feed a SHA-256 (the second pass proves it read the checked file)."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.digest.update(data)
        return data

    def hexdigest(self) -> str:
        return self.digest.hexdigest()

    def close(self) -> None:
        """Read what the parser left (after the root element), then close."""
        if not self.file.closed:
            while self.read(BLOCK):
                pass
            self.file.close()


def _summary(reports: list[dict]) -> dict:
    stored = sum(r["stored"] for r in reports)
    refused = sum(r["refused"] for r in reports)
    reasons: dict[str, list] = {}
    for report in reports:
        for reason, (count, example) in report["reasons"].items():
            known = reasons.setdefault(reason, [0, example])
            known[0] += count
    line = f"stored {stored}, refused {refused}"
    if refused:
        line += f": {_reasons_text(reasons)}"
    already = [r["file"] for r in reports if r["already"]]
    if already:
        line += f"; imported into this run before, unchanged: {', '.join(already)}"
    return {
        "stored": stored,
        "refused": refused,
        "reasons": [{"reason": r, "count": c, "example": e} for r, (c, e) in reasons.items()],
        "files": [{k: r[k] for k in ("file", "digest", "already", "stored", "refused")} for r in reports],
        "line": line,
    }


def _reasons_text(reasons) -> str:
    if isinstance(reasons, list):
        reasons = {r["reason"]: (r["count"], r["example"]) for r in reasons}
    return "; ".join(f"{count} with {reason} (e.g. {example})" for reason, (count, example) in reasons.items())


# -- export ---------------------------------------------------------------------------------------


def export_junit(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """Write the run as JUnit XML to ``--output`` (atomically: a temporary file renamed) or stdout."""
    from .dispatch import sender

    send_page = sender(COMMANDS["junit-export-part"], opts)
    target = params.get("output")
    if not target or target == "-":
        rules.write_run(send_page, params["run_id"], sys.stdout.write)
        sys.stdout.flush()
        return None
    if os.path.isdir(target):
        raise UsageError(f"cannot write {target}: it is a directory; give a file name, e.g. {target}/junit.xml")
    directory = os.path.dirname(os.path.abspath(target))
    try:
        fd, temp = tempfile.mkstemp(prefix=".dbtool-junit-", dir=directory)
    except OSError as err:
        raise UsageError(f"cannot write {target}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            rules.write_run(send_page, params["run_id"], out.write)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # as a file the user wrote (mkstemp makes it private)
        os.replace(temp, target)
    except OSError as err:  # (the target changed meanwhile: a directory now, or not writable)
        os.unlink(temp)
        raise UsageError(f"cannot write {target}: {err.strerror or err}") from None
    except BaseException:
        os.unlink(temp)
        raise
    return None
