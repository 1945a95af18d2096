"""``dbtool doctor``: check an area and say, for each thing that is wrong, what to do about it.

Each check is one line, ``ok   <check>: <detail>``, ``warn <check>: ...`` or ``FAIL <check>: <what is
wrong — what to do>``; exit 0 unless a check fails (1). It runs without a server, never starts one,
and never writes to the area: the database is read on a read-only connection.
"""

from __future__ import annotations

import os
import stat

from dbtool.core.area import Area, find_area
from dbtool.core.errors import DbtoolError

from .binder import GlobalOptions
from .output import emit, show

LOW_DISK_BYTES = 1 << 30  # warn below 1 GiB free ...
LOW_DISK_SHARE = 0.05  # ... or 5 % of the filesystem
PG_CONNECT_TIMEOUT = 3  # seconds


class Report:
    def __init__(self) -> None:
        self.checks: list[dict] = []

    def add(self, status: str, check: str, detail: str) -> None:
        self.checks.append({"status": status, "check": check, "detail": detail})

    @property
    def failed(self) -> bool:
        return any(c["status"] == "FAIL" for c in self.checks)


def doctor(opts: GlobalOptions) -> int:
    report = Report()
    try:
        area = find_area(opts.area)
    except DbtoolError as err:
        report.add("FAIL", "area", err.message)
        return _finish(report, opts)
    report.add("ok", "area", area.root)
    config = _check_config(report, area)
    _check_server(report, area)
    _check_permissions(report, area, config)
    url = (config or {}).get("db", {}).get("url") or ""
    if url:
        _check_postgres(report, url)
    else:
        _check_filesystem(report, area, config)
        _check_integrity(report, area)
    _check_disk(report, area)
    return _finish(report, opts)


def _finish(report: Report, opts: GlobalOptions) -> int:
    if opts.output == "table":
        emit("".join(f"{c['status']:<4} {c['check']}: {c['detail']}\n" for c in report.checks))
    else:
        show(report.checks, opts, name="doctor")
    return 1 if report.failed else 0


def _check_config(report: Report, area: Area) -> dict | None:
    import tomllib

    from dbtool.core.area import SETTINGS, check_setting, load_config, unknown_settings

    try:
        with open(area.config_path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        report.add("FAIL", "config", f"cannot read {area.config_path}: {err} — fix the file (TOML)")
        return None
    problems = []
    unknown = unknown_settings(data)
    if unknown:
        problems.append(
            f"unknown setting{'s' * (len(unknown) > 1)} {', '.join(unknown)} — remove or correct "
            "(`dbtool config list` shows the settings)"
        )
    for (section, name), _rule in SETTINGS.items():
        values = data.get(section)
        if isinstance(values, dict) and name in values:
            try:
                check_setting(area.config_path, section, name, values[name])
            except DbtoolError as err:
                problems.append(err.message)
    config = None
    if not problems:
        try:
            config = load_config(area)
        except DbtoolError as err:
            problems.append(err.message)
    if problems:
        report.add("FAIL", "config", "; ".join(problems))
        return None
    report.add("ok", "config", f"{area.config_path} (keys: {', '.join(config['area'].get('keys') or [])})")
    return config


def _check_server(report: Report, area: Area) -> None:
    from dbtool.core import PROTOCOL, __version__
    from dbtool.core.errors import VersionMismatch
    from dbtool.core.link import Connection, Unreachable, address, read_server_info, server_lock_free

    try:
        info = read_server_info(area)
    except DbtoolError as err:
        report.add("FAIL", "server", err.message)
        return
    if info is None:
        report.add("ok", "server", "none running (reads are answered directly; a write starts one)")
        return
    where = f"{address(info)}:{info.get('port')}"
    try:
        with Connection(info, 2.0) as conn:
            pong = conn.call("ping", timeout=2.0)
    except VersionMismatch as err:
        report.add("FAIL", "server", f"{err.message}")
        return
    except (Unreachable, DbtoolError, OSError) as err:
        if server_lock_free(area):
            report.add(
                "FAIL",
                "server",
                f"stale {area.server_json}: nothing answers at {where} (pid {info.get('pid')}) and no server holds "
                f"{os.path.basename(area.server_lock)} — its server is gone; remove the file, or run any write "
                "(or `dbtool server start`), which replaces it",
            )
        else:
            report.add(
                "FAIL",
                "server",
                f"the server at {where} (pid {info.get('pid')}) is alive but does not answer from here ({err}) — "
                "check the network/firewall to that host, or `dbtool server restart` on its host",
            )
        return
    version = pong.get("version") if isinstance(pong, dict) else None
    protocol = pong.get("protocol") if isinstance(pong, dict) else None
    detail = f"pid {info.get('pid')} at {where}, dbtool {version} protocol {protocol}"
    if protocol != PROTOCOL:
        report.add("FAIL", "server", f"{detail}; this client speaks {PROTOCOL} — run `dbtool server restart`")
    elif version != __version__:
        report.add("warn", "server", f"{detail}; this client is dbtool {__version__} — `dbtool server restart`")
    else:
        report.add("ok", "server", detail)


def _check_permissions(report: Report, area: Area, config: dict | None) -> None:
    share = bool((config or {}).get("server", {}).get("share_group"))
    problems = []
    try:
        st = os.stat(area.dir)
    except OSError as err:
        report.add("FAIL", "permissions", f"cannot stat {area.dir}: {err.strerror}")
        return
    mode = stat.S_IMODE(st.st_mode)
    allowed = 0o750 if share else 0o700
    if mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not share):
        problems.append(
            f"{area.dir} is writable by {'others' if mode & stat.S_IWOTH else 'its group'} "
            f"(mode {mode:o}) — chmod {allowed:o} {area.dir}"
        )
    elif mode & ~allowed & 0o777:
        problems.append(f"{area.dir} is mode {mode:o}, more open than {allowed:o} — chmod {allowed:o} {area.dir}")
    for path in (area.server_json, os.path.join(area.logs_dir, "requests.jsonl")):
        try:
            fmode = stat.S_IMODE(os.lstat(path).st_mode)
        except OSError:
            continue
        if fmode & stat.S_IROTH or fmode & (stat.S_IWGRP | stat.S_IWOTH):
            private = 0o640 if share else 0o600
            problems.append(f"{path} is mode {fmode:o} (readable or writable by others) — chmod {private:o} {path}")
    if problems:
        report.add("FAIL", "permissions", "; ".join(problems))
        return
    import pwd

    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = f"uid {st.st_uid}"
    who = f"{owner}{' and its group' if share else ''} may write (mode {mode:o})"
    if not os.access(area.dir, os.W_OK):
        report.add("warn", "permissions", f"{who}; you cannot write to it: reads only, and no server from you")
    else:
        report.add("ok", "permissions", who)


def _check_filesystem(report: Report, area: Area, config: dict | None) -> None:
    import sqlite3

    from dbtool.core.db.engine import NETWORK_FILESYSTEMS, filesystem_type, journal_mode_for

    fstype = filesystem_type(area.dir) or "unknown"
    configured = (config or {}).get("db", {}).get("journal_mode", "auto")
    expected = journal_mode_for(area.db_path, configured)
    try:
        con = sqlite3.connect(f"file:{area.db_path}?mode=ro", uri=True, timeout=5)
        try:
            actual = str(con.execute("PRAGMA journal_mode").fetchone()[0]).upper()
        finally:
            con.close()
    except sqlite3.Error as err:
        actual = f"unknown ({err})"
    detail = f"{fstype}, journal mode {actual}"
    if fstype in NETWORK_FILESYSTEMS:
        advice = (
            f"{area.dir} is on a network filesystem ({fstype}): SQLite's WAL needs shared memory that hosts "
            "cannot share, and its file locks are only as good as the server's lock manager"
        )
        if actual == "WAL":
            report.add(
                "FAIL",
                "filesystem",
                f"{advice}, and this database is in WAL mode — set db.journal_mode = "
                '"auto" (or "delete") and restart the server, or move the area to a local disk',
            )
        else:
            report.add(
                "warn",
                "filesystem",
                f"{detail}; {advice} — keep one server per area (dbtool does), "
                "or move the area to a local disk or PostgreSQL (`dbtool migrate`)",
            )
        return
    if actual in ("WAL", "DELETE", "TRUNCATE", "PERSIST") and actual != expected and configured != "auto":
        report.add("warn", "filesystem", f"{detail}; config wants {expected} — a server start sets it")
        return
    report.add("ok", "filesystem", detail)


def _check_integrity(report: Report, area: Area) -> None:
    import sqlite3

    from dbtool.core.db.engine import header_problem, quick_check

    if not os.path.exists(area.db_path):
        report.add("FAIL", "integrity", f"{area.db_path} does not exist — re-create the area with `dbtool init`")
        return
    problem = header_problem(area.db_path)
    if not problem:
        try:
            problem = quick_check(area.db_path)
        except sqlite3.Error as err:
            problem = str(err)
    if problem:
        report.add(
            "FAIL",
            "integrity",
            f"{area.db_path}: {problem} — restore it from a backup (sqlite3 .recover can salvage rows)",
        )
    else:
        report.add("ok", "integrity", f"quick_check of {area.db_path} passed")


def _check_postgres(report: Report, url: str) -> None:
    from dbtool.core.db.engine import redact_url

    shown = redact_url(url)
    try:
        import psycopg
    except ImportError:
        report.add("FAIL", "postgresql", f"{shown}: psycopg is not installed — pip install 'dbtool[postgres]'")
        return
    try:
        with psycopg.connect(url, connect_timeout=PG_CONNECT_TIMEOUT) as con:
            version = con.execute("SHOW server_version").fetchone()[0]
    except psycopg.Error as err:
        reason = " ".join(str(err).split())[:300]
        report.add(
            "FAIL",
            "postgresql",
            f"cannot connect to {shown}: {reason} — check that the server runs and the URL (db.url) is right",
        )
        return
    report.add("ok", "postgresql", f"{shown} answers (PostgreSQL {version})")


def _check_disk(report: Report, area: Area) -> None:
    try:
        vfs = os.statvfs(area.dir)
    except OSError as err:
        report.add("FAIL", "disk", f"cannot stat the filesystem of {area.dir}: {err.strerror}")
        return
    free = vfs.f_bavail * vfs.f_frsize
    total = vfs.f_blocks * vfs.f_frsize
    detail = f"{free / (1 << 30):.1f} GiB free of {total / (1 << 30):.1f} GiB"
    if free < LOW_DISK_BYTES or (total and free / total < LOW_DISK_SHARE):
        report.add("warn", "disk", f"{detail} — low: writes are refused when the disk is full; free some space")
    else:
        report.add("ok", "disk", detail)
