"""dbtool's own commands that run in the CLI process: init and the server group."""

from __future__ import annotations

import json
import os
import sys
import time

from dbtool.core import __version__
from dbtool.core.area import (
    Area,
    ensure_private_dir,
    find_area,
    load_config,
    mark_shared,
    remove_file,
    render_config,
    validate_keys,
)
from dbtool.core.commands import COMMANDS, Command
from dbtool.core.errors import Refused, Unavailable

from .binder import GlobalOptions, default_timeout
from .output import emit, log_entry_text, one_line, render, show


def run_local(cmd: Command, params: dict, opts: GlobalOptions) -> int:
    module, _, name = cmd.handler.partition(":")
    if module == "local":
        fn = globals()[name]
    else:
        import importlib

        fn = getattr(importlib.import_module(f"dbtool.cli.{module}"), name)
    return fn(opts, **params)


def _public(info: dict) -> dict:
    """server.json without the key (never printed)."""
    return {k: v for k, v in info.items() if k != "key"}


# -- init ------------------------------------------------------------------------------------------


def init(opts: GlobalOptions, *, path: str = ".", keys: list[str], db_url: str | None = None) -> int:
    """Create the area atomically: everything is checked first, .dbtool is built in a temporary
    sibling and renamed into place, so a failure (or a racing init) leaves nothing half-made.
    With ``db_url`` the data goes to PostgreSQL: its schema is made (or checked) first."""
    keys = validate_keys(list(keys))
    area = Area(path)
    if db_url is not None and not db_url.strip():
        raise Refused("--db-url is empty; give postgresql://USER@HOST:PORT/DBNAME, or leave it out for SQLite")
    if not area.exists():
        _check_new_area(area)
        if db_url:
            prepare_postgres(db_url, keys)
        made = _make_dirs(area.root)
        try:
            created = _build_dot_dir(area, keys, db_url or "")
        except BaseException:
            _remove_dirs(made)
            raise
        if created:
            where = f" in {redacted(db_url)}" if db_url else ""
            emit(f"created dbtool area {area.root} (keys: {', '.join(keys)}){where}\n")
            return 0
    config = load_config(area)  # an area (perhaps a racing init's)
    existing = list(config["area"].get("keys") or [])
    if existing != keys:
        raise Refused(
            f"{area.root} is already a dbtool area with keys {','.join(existing)}; "
            f"it cannot change to {','.join(keys)} (use another directory)"
        )
    url = config["db"].get("url") or ""
    if db_url and db_url != url:
        raise Refused(
            f"{area.root} is already a dbtool area, kept in {redacted(url) if url else area.db_path}; "
            f"to move it to {redacted(db_url)}, run `dbtool migrate --to URL`"
        )
    if url:
        prepare_postgres(url, keys)
    else:
        _create_database(area.db_path, keys)  # same keys: a no-op (tables added since are created)
    return 0


def redacted(url: str) -> str:
    from dbtool.core.db.engine import redact_url

    return redact_url(url)


def prepare_postgres(url: str, keys: list[str]) -> None:
    """Create the area's schema in a PostgreSQL database, or check the one there (the same keys)."""
    from dbtool.core.area import check_db_url
    from dbtool.core.db import postgres
    from dbtool.core.db.engine import ADMIN, postgres_engine
    from sqlalchemy.exc import DBAPIError

    check_db_url(url, "--db-url")
    try:
        engine = postgres_engine(url, ADMIN)
    except ImportError:
        raise Refused("PostgreSQL needs the driver psycopg: pip install 'dbtool[postgres]'") from None
    try:
        with engine.connect() as conn, conn.begin():
            postgres.prepare(conn, url, keys, __version__)
    except DBAPIError as err:
        raise postgres.failure(err, url) from None
    finally:
        engine.dispose()


def _check_new_area(area: Area) -> None:
    """Refuse a path that cannot become an area, before anything is created."""
    if os.path.exists(area.root) and not os.path.isdir(area.root):
        raise Refused(f"{area.root} is not a directory; give the directory that is to hold .dbtool/")
    if os.path.lexists(area.dir) and (not os.path.isdir(area.dir) or os.listdir(area.dir)):
        raise Refused(
            f"{area.dir} exists but is not a dbtool area (it has no config.toml); move it away, then run init again"
        )


def _make_dirs(root: str) -> list[str]:
    """Create root and its missing parents; the directories created, deepest first."""
    missing = []
    here = root
    while not os.path.exists(here):
        missing.append(here)
        here = os.path.dirname(here)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as err:
        _remove_dirs(missing)
        raise Refused(f"cannot create the directory {root}: {err.strerror or err}") from None
    return missing


def _remove_dirs(dirs: list[str]) -> None:
    for directory in dirs:
        try:
            os.rmdir(directory)
        except OSError:
            pass


def _build_dot_dir(area: Area, keys: list[str], url: str = "") -> bool:
    """Build .dbtool (logs/, the database, config.toml) in a temporary sibling and rename it into
    place; False when another init made the area meanwhile (the caller then compares keys)."""
    import shutil

    tmp = os.path.join(area.root, f"{os.path.basename(area.dir)}.init-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.mkdir(tmp, 0o700)
    except OSError as err:
        raise Refused(f"cannot create {area.dir}: {err.strerror or err}") from None
    try:
        if url:  # the data is in PostgreSQL; each host's front-end keeps its record under hosts/
            mark_shared(tmp)
        else:
            ensure_private_dir(os.path.join(tmp, "logs"))
            _create_database(os.path.join(tmp, os.path.basename(area.db_path)), keys)
        with open(os.path.join(tmp, os.path.basename(area.config_path)), "w", encoding="utf-8") as f:
            f.write(render_config(keys, url))
        try:
            os.rename(tmp, area.dir)  # replaces nothing but an empty directory
        except OSError:
            if area.exists():  # a racing init got there first
                return False
            raise
    except OSError as err:
        raise Refused(f"cannot create {area.dir}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed
    return True


def _create_database(db_path: str, keys: list[str]) -> None:
    from dbtool.core.db.engine import ADMIN, create_schema, journal_mode_for, read_keys, sqlite_engine
    from sqlalchemy.exc import DBAPIError

    engine = sqlite_engine(db_path, ADMIN, journal_mode=journal_mode_for(db_path))
    try:
        with engine.connect() as conn, conn.begin():
            existing = read_keys(conn) if _has_keys_table(conn) else []
            if existing and existing != keys:
                raise Refused(f"{db_path} already holds keys {','.join(existing)}, not {','.join(keys)}")
            create_schema(conn, keys, __version__)
    except DBAPIError as err:
        raise Refused(f"cannot create the database {db_path}: {err.orig}") from None
    finally:
        engine.dispose()


def _has_keys_table(conn) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table("keys")


# -- server start | stop | status --------------------------------------------------------------------


def server_start(
    opts: GlobalOptions,
    *,
    foreground: bool = False,
    bind: str | None = None,
    advertise: str | None = None,
    port: int | None = None,
    idle_timeout: float | None = None,
) -> int:
    area = find_area(opts.area)
    if foreground:
        import logging

        from dbtool.core.server.app import Server

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
        return Server(area, bind=bind, port=port, idle_timeout=idle_timeout, advertise=advertise).run()
    from dbtool.core.link import describe, ping_info, start_server

    info = ping_info(area)
    if info is None:
        deadline = time.monotonic() + default_timeout(opts)
        options = {"bind": bind, "advertise": advertise, "port": port, "idle_timeout": idle_timeout}
        info = start_server(area, deadline, options)
    not_applied = _not_applied(area, info, bind, advertise, port, idle_timeout, default_timeout(opts))
    if not_applied:  # a hand-off: the running server keeps its settings; say so instead of ignoring them
        restart = " ".join(option for option, _ in not_applied)
        print(
            f"dbtool: warning: a server already runs for {area.root}; not applied: "
            f"{', '.join(f'{option} ({running})' for option, running in not_applied)}; "
            f"to apply, run dbtool server restart {restart}",
            file=sys.stderr,
        )
    if opts.output == "table":
        emit(describe(info) + "\n")
    else:
        emit(render(_public(info), opts.output))
    return 0


def _not_applied(
    area: Area,
    info: dict,
    bind: str | None,
    advertise: str | None,
    port: int | None,
    idle_timeout: float | None,
    timeout: float,
) -> list[tuple[str, str]]:
    """The --bind/--advertise/--port/--idle-timeout values the running server does not have, each
    as (the option as given, what the server has)."""
    from dbtool.core.link import address

    found = []
    host = address(info)
    if bind is not None and bind not in (host, "0.0.0.0", "::") and host not in _addresses(bind):
        found.append((f"--bind {bind}", f"it listens on {host}"))
    if advertise is not None and advertise != host:
        found.append((f"--advertise {advertise}", f"it advertises {host}"))
    if port and port != info.get("port"):
        found.append((f"--port {port}", f"it listens on port {info.get('port')}"))
    if idle_timeout is not None:
        from dbtool.core.client import call

        status = call(area, COMMANDS["server-status"], {}, timeout=timeout).result
        running = status.get("idle_timeout") if isinstance(status, dict) else None
        if running != idle_timeout:
            has = f"{running:g} s" if isinstance(running, (int, float)) else "unknown"
            found.append((f"--idle-timeout {idle_timeout:g}", f"its idle timeout is {has}"))
    return found


def _addresses(host: str) -> set[str]:
    """The addresses a host name stands for ('localhost' → 127.0.0.1, ::1); empty if it has none."""
    import _socket

    try:
        return {entry[4][0] for entry in _socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):  # not a name or address (too long a label, say)
        return set()


def server_stop(opts: GlobalOptions) -> int:
    """Ask the server to stop (retrying while it is busy), then wait until its lock is free."""
    from dbtool.core.client import call

    area = find_area(opts.area)
    timeout = default_timeout(opts)
    deadline = time.monotonic() + timeout
    try:
        reply = call(area, COMMANDS["server-stop"], {}, timeout=timeout)
    except Unavailable as err:
        if "no server is running" not in err.message:
            raise
        from dbtool.core.link import server_lock_free

        note = ""
        if os.path.exists(area.server_json) and server_lock_free(area):  # a damaged record: nobody's
            remove_file(area.server_json)
            note = " (removed a damaged server.json)"
        print(f"dbtool: no server is running for {area.root}{note}", file=sys.stderr)
        return 0
    _wait_stopped(area, deadline, reply.result.get("pid"), timeout)
    return 0


def _wait_stopped(area: Area, deadline: float, pid: object, timeout: float) -> None:
    from dbtool.core.link import server_lock_free

    while not server_lock_free(area):
        if time.monotonic() > deadline:
            raise Unavailable(f"the server (pid {pid}) is still stopping after {timeout:g} s")
        time.sleep(0.05)


def server_status(opts: GlobalOptions) -> int:
    """The server's status record, with the area lock (``area_lock``: its holder, host, pid, since
    and reason, or null) read from the database, as every front-end sees it."""
    from dbtool.core.client import call
    from dbtool.core.errors import NotFound

    area = find_area(opts.area)
    status = call(area, COMMANDS["server-status"], {}, timeout=default_timeout(opts)).result
    try:
        lock = call(area, COMMANDS["get-area-lock"], {}, timeout=default_timeout(opts)).result
    except NotFound:
        lock = None
    if isinstance(status, dict):
        status["area_lock"] = lock if opts.output == "json" else _lock_line(lock) if lock else "not locked"
    show(status, opts, name="server status")
    return 0


def _lock_line(lock: dict) -> str:
    since = lock.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, int) else "?"
    reason = f" ({lock['reason']})" if lock.get("reason") else ""
    return f"locked by {lock.get('holder')} on {lock.get('host')} since {when}{reason}"


def server_stats(opts: GlobalOptions) -> int:
    from dbtool.core.client import call

    stats = call(find_area(opts.area), COMMANDS["server-stats"], {}, timeout=default_timeout(opts)).result
    if opts.output != "table":
        emit(render(stats if opts.output == "json" else _stats_rows(stats), opts.output))
        return 0
    emit(
        f"uptime {stats['uptime']:.0f} s, {stats['requests']} requests, queue depth {stats['queue_depth']}, "
        f"{stats['connections']} connections, {stats['subscribers']} watchers\n"
    )
    emit(render(_stats_rows(stats), "table"))
    return 0


def _stats_rows(stats: dict) -> list[dict]:
    return [{"command": cmd, **{k: v for k, v in s.items() if k != "total_ms"}} for cmd, s in stats["commands"].items()]


def server_restart(
    opts: GlobalOptions,
    *,
    bind: str | None = None,
    advertise: str | None = None,
    port: int | None = None,
    idle_timeout: float | None = None,
) -> int:
    from dbtool.core.link import describe, start_server

    area = find_area(opts.area)
    stop_any_server(area, default_timeout(opts))
    options = {"bind": bind, "advertise": advertise, "port": port, "idle_timeout": idle_timeout}
    info = start_server(area, time.monotonic() + default_timeout(opts), options)
    emit(describe(info) + "\n" if opts.output == "table" else render(_public(info), opts.output))
    return 0


def stop_any_server(area: Area, timeout: float) -> None:
    """Stop the area's server, whatever its version: by protocol, else by SIGTERM to its pid."""
    import signal

    from dbtool.core.client import call
    from dbtool.core.errors import DbtoolError
    from dbtool.core.link import hostname, read_server_info, server_lock_free

    if server_lock_free(area):
        remove_file(area.server_json)
        return
    deadline = time.monotonic() + timeout
    record = read_server_info(area) or {}
    pid = record.get("pid")
    try:
        call(area, COMMANDS["server-stop"], {}, timeout=timeout)
    except DbtoolError as err:  # another protocol version, or not answering: signal it
        where = record.get("hostname")
        if where and where != hostname():  # a pid means nothing on another host
            raise Unavailable(
                f"cannot stop the server of {area.root}: it runs on {where} and did not answer ({err.message}); "
                f"stop it there (dbtool server stop on {where})"
            ) from None
        if not (isinstance(pid, int) and _is_area_server(pid, area)):
            raise Unavailable(f"cannot stop the server of {area.root}: pid {pid} is not its server") from None
        os.kill(pid, signal.SIGTERM)
    _wait_stopped(area, deadline, pid, timeout)


def _is_area_server(pid: int, area: Area) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return False
    return area.root.encode() in argv and any(b"dbtool" in a for a in argv)


def server_log(
    opts: GlobalOptions,
    *,
    follow: bool = False,
    request: str | None = None,
    cmd: str | None = None,
    since: str | None = None,
    limit: int | None = None,
    field: list[str] | None = None,
) -> int:
    from collections import deque

    from dbtool.core import reqlog
    from dbtool.core.errors import UsageError

    area = find_area(opts.area)
    try:
        after = reqlog.parse_since(since) if since else None
    except ValueError as err:
        raise UsageError(f"--since: {err}") from None
    keep = reqlog.matcher(request, _spellings(cmd), after, _wanted_fields(field or []))
    entries = reqlog.read_entries(area.logs_dir, keep)
    if limit is not None:
        entries = deque(entries, maxlen=max(0, limit))
    found = False
    for entry in entries:
        found = True
        emit(_log_line(entry, opts.output, detail=request is not None))
    if request is not None and not found and not follow:
        from dbtool.core.errors import NotFound

        raise NotFound(f"request {request} is not in the request log of {area.root}")
    if follow:
        for entry in reqlog.follow(area.logs_dir, keep):
            emit(_log_line(entry, opts.output))
    return 0


def _wanted_fields(options: list[str]) -> list[tuple[str, str | None]]:
    """``server log --field`` filters: NAME=VALUE (that value, as the client typed it) or NAME (any value)."""
    from dbtool.core.errors import UsageError
    from dbtool.core.rules.fields import name_problem

    wanted = []
    for text in options:
        name, eq, value = text.partition("=")
        problem = name_problem(name)
        if problem:
            raise UsageError(f"--field {text!r}: {problem}")
        wanted.append((name, value if eq else None))
    return wanted


def _spellings(name: str | None) -> set[str] | None:
    """A command's names in the request log: its CLI name (and its Megatest spelling, which older
    servers logged); an unknown name as it is."""
    if name is None:
        return None
    from dbtool.core.commands import lookup

    cmd = lookup(name)
    return {name} if cmd is None else {cmd.name, cmd.api, *cmd.aliases}


def _log_line(entry: dict, output: str, detail: bool = False) -> str:
    """One request of the log for people (with ``detail``, for --request: how many entries its log
    had and the fields it ended with, too), or its JSON line."""
    if output == "json":
        return json.dumps(entry, ensure_ascii=False) + "\n"
    ts = entry.get("ts", 0)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts * 1000) % 1000:03d}"
    err = entry.get("error") or {}
    outcome = "ok" if entry.get("ok") else f"{err.get('code')}: {err.get('message')}"
    ms = entry.get("ms", 0)
    head = f"{stamp} {entry.get('id')} {entry.get('cmd')} {entry.get('client')} {ms:.2f} ms {outcome}"
    fields = entry.get("fields")
    if isinstance(fields, dict) and fields:
        head += " " + " ".join(f"{name}={_shown(value)}" for name, value in fields.items())
    lines = [one_line(head)]
    log = entry.get("log") or []
    if detail and isinstance(entry.get("loglen"), int):
        count = entry["loglen"]
        kept = f" ({len(log)} kept)" if len(log) != count else ""
        lines.append(f"    log: {count} entr{'y' if count == 1 else 'ies'}{kept}")
    if detail:
        data = entry.get("data", fields)  # (as the request ended; the fields it was sent with when unchanged)
        shown = " ".join(f"{name}={_shown(value)}" for name, value in data.items()) if isinstance(data, dict) else ""
        lines.append("    " + one_line(f"fields: {shown or 'none'}"))
    for e in log:
        lines.append("    " + one_line(log_entry_text(e)))
    return "\n".join(lines) + "\n"


def _shown(value: object) -> str:
    """A field's value on a log line: as it is, or quoted when it has spaces or quotes."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if (not text or any(c in text for c in ' "=')) else text


def watch(
    opts: GlobalOptions,
    *,
    run_id: int | None = None,
    testpatt: str | None = None,
    since: int | None = None,
    count: int | None = None,
    no_follow: bool = False,
) -> int:
    """Print events until --count, the end of the replay (--no-follow) or an interrupt; when the
    server stops first, say so with the --since that resumes without a gap, and exit 3."""
    from dbtool.core.client import watch as watch_events

    area = find_area(opts.area)
    if count is not None and count <= 0:
        return 0
    events = watch_events(area, run_id, testpatt, since, default_timeout(opts), follow=not no_follow)
    last: int | None = None
    try:
        for seen, event in enumerate(events, start=1):
            emit(json.dumps(event, ensure_ascii=False) + "\n" if opts.output == "json" else _event_line(event))
            last = event.get("seq", last)
            if count is not None and seen >= count:
                return 0
    except Unavailable as err:
        # core.client.watch raises Unavailable(..., last_seq=N) when the server ends the stream;
        # any other Unavailable (no server could be started) is reported as it is.
        if "last_seq" not in err.extra:
            raise
        raise Unavailable(_stopped(run_id, testpatt, last if last is not None else err.extra["last_seq"])) from None
    return 0  # the replay ended (--no-follow): following, the events end only with the server


def _stopped(run_id: int | None, testpatt: str | None, seq: object) -> str:
    """The message of a watch whose server stopped: the command that resumes it with no gap."""
    import shlex

    again = ["dbtool", "watch"]
    if run_id is not None:
        again += ["--run-id", str(run_id)]
    if testpatt is not None:
        again += ["--testpatt", shlex.quote(testpatt)]
    if isinstance(seq, int):
        again += ["--since", str(seq)]
    return f"the server stopped; resume with {' '.join(again)}"


def _event_line(event: dict) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime((event.get("time_ns") or 0) / 1e9))
    where = f"run {event.get('run_id')}" if event.get("run_id") is not None else ""
    if event.get("test_id") is not None:
        name = event.get("testname") or ""
        item = event.get("item_path") or ""
        where += f" test {event.get('test_id')} {name}{'/' + item if item else ''}"
    state = " ".join(str(v) for v in (event.get("state"), event.get("status")) if v is not None)
    extra = " " + json.dumps(event["data"], ensure_ascii=False) if event.get("data") else ""
    fields = event.get("fields")
    if isinstance(fields, dict) and fields:  # the fields of the request that made it (--field)
        extra += " [" + " ".join(f"{name}={_shown(value)}" for name, value in fields.items()) + "]"
    return one_line(f"{event.get('seq'):>7} {stamp} {event.get('event')} {where} {state}{extra}".rstrip()) + "\n"
