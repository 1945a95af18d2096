"""The report spool: job reports the server could not take wait in ``.dbtool/spool/`` (SPEC 2.2).

Each report is a file of its own, ``<host>-<pid>-<seq>.jsonl``: one JSON line (command, parameters,
idempotency key, client, time), written under a temporary name and fsynced, then linked to its
name, which never replaces another file (NFS too), so a reader only ever sees whole reports.

The server replays them as they appear: every second it claims the new files by renaming each to
``….ingesting`` (of two servers, one gets it), replays their reports oldest first through its
writer with their idempotency keys (a report that also arrived directly is not applied twice),
then removes them. What a crashed server had claimed is taken again at the next start.
Standard library only (the client side is on the job's path).
"""

from __future__ import annotations

import itertools
import json
import os
import time

from .area import Area, host_part

DIR = "spool"
CLAIMED = ".ingesting"
REJECTED = "rejected.jsonl"
TEMP = ".tmp-"  # a report being written
STALE_TEMP = 3600.0  # seconds after which a temporary file is left from a crash (removed at start)

_seq = itertools.count(1)  # this process's reports, in order


def spool_dir(area: Area) -> str:
    return area.path(DIR)


def append(area: Area, cmd: str, params: dict, idem: str, client: dict, extra: dict | None = None) -> str:
    """Add one report durably (its own file, fsynced, then named); returns the spool file. ``extra``:
    the request's other members (its fields, the area lock's and the job's token), replayed with it."""
    directory = spool_dir(area)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    report = {"cmd": cmd, "params": params, "idem": idem, "client": client, "time": time.time(), **(extra or {})}
    data = (json.dumps(report) + "\n").encode()
    prefix = f"{host_part()}-{os.getpid()}"
    tmp = os.path.join(directory, f"{TEMP}{prefix}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        path = _name(tmp, directory, prefix)
    finally:
        _remove(tmp)
    _sync(directory)
    return path


def _name(tmp: str, directory: str, prefix: str) -> str:
    """Give a written report the next free name ``<prefix>-<seq>.jsonl`` (a link: it never replaces a
    file another process of the same pid left; over NFS a lost reply is told by the link count)."""
    while True:
        path = os.path.join(directory, f"{prefix}-{next(_seq):06d}.jsonl")
        try:
            os.link(tmp, path)
            return path
        except FileExistsError:
            if os.stat(tmp).st_nlink > 1:  # NFS: the link was made, its reply lost
                return path
        except OSError:  # a filesystem without hard links (some SMB mounts): rename to a free name
            if not os.path.exists(path):
                os.rename(tmp, path)
                return path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _sync(directory: str) -> None:
    """Make the new name durable (where the filesystem can)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def waiting(paths: list[str]) -> bool:
    """Whether any of these spooled files is not yet replayed (still there, or claimed)."""
    return any(os.path.exists(path) or os.path.exists(path + CLAIMED) for path in paths)


def claim(area: Area, resume: bool = True) -> list[str]:
    """Take the new spool files for replay (oldest first), each renamed so no other server takes it;
    with ``resume`` (at start) also the files a crashed server had claimed."""
    directory = spool_dir(area)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    claimed = []
    for name in names:
        path = os.path.join(directory, name)
        if name.endswith(".jsonl") and name != REJECTED:
            try:
                os.rename(path, path + CLAIMED)
            except FileNotFoundError:  # another server took it
                continue
            claimed.append(path + CLAIMED)
        elif resume and name.endswith(CLAIMED):
            claimed.append(path)
        elif resume and name.startswith(TEMP) and _age(path) > STALE_TEMP:
            _remove(path)  # its writer died before naming it
    return sorted(claimed, key=_order)


def unclaim(path: str) -> None:
    """Give a claimed file back, to be replayed on a later scan (if that fails: at the next start)."""
    try:
        os.rename(path, path.removesuffix(CLAIMED))
    except OSError:
        pass


def _age(path: str) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _order(path: str) -> tuple:
    """Oldest first: by time written, then (one writer's reports) by sequence number."""
    try:
        written = os.stat(path).st_mtime_ns
    except FileNotFoundError:
        written = 0
    stem = os.path.basename(path).removesuffix(CLAIMED).removesuffix(".jsonl")
    prefix, _, seq = stem.rpartition("-")
    return (written, prefix, int(seq)) if seq.isdigit() else (written, stem, 0)


def read(path: str) -> list[dict]:
    reports = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                report = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash (spool files of older versions were appended to)
            if isinstance(report, dict) and isinstance(report.get("cmd"), str):
                reports.append(report)
    return reports


def reject(area: Area, report: dict, reason: str) -> None:
    """Keep a report the server refused, with the reason, for a person to look at."""
    with open(os.path.join(spool_dir(area), REJECTED), "a", encoding="utf-8") as f:
        f.write(json.dumps({**report, "rejected": reason}) + "\n")
