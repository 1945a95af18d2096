"""The report spool: job reports the server could not take wait in ``.dbtool/spool/`` (SPEC 2.2).

``dbtool exec`` appends a report it could not deliver (one JSON line: command, parameters,
idempotency key, client); the next server claims the files at start and replays each report
through its writer with the original idempotency key, so a report that did arrive after all is
not applied twice. Standard library only (the client side is on the job's path).
"""

from __future__ import annotations

import json
import os
import socket
import time

from .area import Area

DIR = "spool"
CLAIMED = ".ingesting"
REJECTED = "rejected.jsonl"


def spool_dir(area: Area) -> str:
    return area.path(DIR)


def append(area: Area, cmd: str, params: dict, idem: str, client: dict) -> str:
    """Add one report durably (fsync); returns the spool file."""
    directory = spool_dir(area)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"{socket.gethostname()}-{os.getpid()}.jsonl")
    line = json.dumps({"cmd": cmd, "params": params, "idem": idem, "client": client, "time": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def waiting(paths: list[str]) -> bool:
    """Whether any of these spooled files is not yet ingested (still there, or claimed)."""
    return any(os.path.exists(path) or os.path.exists(path + CLAIMED) for path in paths)


def claim(area: Area) -> list[str]:
    """Take the spool files (oldest first) for ingestion; files a crashed server had claimed too."""
    directory = spool_dir(area)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    claimed = []
    for name in names:
        path = os.path.join(directory, name)
        if name == REJECTED or not (name.endswith(".jsonl") or name.endswith(CLAIMED)):
            continue
        if name.endswith(".jsonl"):
            target = path + CLAIMED
            try:
                os.replace(path, target)
            except FileNotFoundError:
                continue
            path = target
        claimed.append(path)
    return sorted(claimed, key=lambda p: os.stat(p).st_mtime)


def read(path: str) -> list[dict]:
    reports = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                report = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash while appending
            if isinstance(report, dict) and isinstance(report.get("cmd"), str):
                reports.append(report)
    return reports


def reject(area: Area, report: dict, reason: str) -> None:
    """Keep a report the server refused, with the reason, for a person to look at."""
    with open(os.path.join(spool_dir(area), REJECTED), "a", encoding="utf-8") as f:
        f.write(json.dumps({**report, "rejected": reason}) + "\n")
