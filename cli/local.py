"""dbtool's own commands that run in the CLI process: init and the server group."""

from __future__ import annotations

import os
import sys
import time

from dbtool.core import __version__
from dbtool.core.area import (
    Area,
    ensure_private_dir,
    find_area,
    load_config,
    remove_file,
    render_config,
    validate_keys,
)
from dbtool.core.commands import COMMANDS, Command
from dbtool.core.errors import Refused, Unavailable

from .binder import GlobalOptions
from .main import default_timeout, emit
from .output import render


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


def init(opts: GlobalOptions, *, path: str = ".", keys: list[str]) -> int:
    keys = validate_keys(list(keys))
    area = Area(path)
    if area.exists():
        existing = list(load_config(area)["area"].get("keys") or [])
        if existing != keys:
            raise Refused(
                f"{area.root} is already a dbtool area with keys {','.join(existing)}; "
                f"it cannot change to {','.join(keys)} (use another directory)"
            )
        _create_database(area, keys)
        return 0
    os.makedirs(area.root, exist_ok=True)
    ensure_private_dir(area.dir)
    ensure_private_dir(area.logs_dir)
    _create_database(area, keys)
    tmp = area.path(f".config.toml.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(render_config(keys))
    os.replace(tmp, area.config_path)
    emit(f"created dbtool area {area.root} (keys: {', '.join(keys)})\n")
    return 0


def _create_database(area: Area, keys: list[str]) -> None:
    from dbtool.core.db.engine import ADMIN, create_schema, journal_mode_for, read_keys, sqlite_engine

    engine = sqlite_engine(area.db_path, ADMIN, journal_mode=journal_mode_for(area.db_path))
    try:
        with engine.connect() as conn, conn.begin():
            existing = read_keys(conn) if _has_keys_table(conn) else []
            if existing and existing != keys:
                raise Refused(f"{area.db_path} already holds keys {','.join(existing)}, not {','.join(keys)}")
            create_schema(conn, keys, __version__)
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
    port: int | None = None,
    idle_timeout: float | None = None,
) -> int:
    area = find_area(opts.area)
    if foreground:
        import logging

        from dbtool.core.server.app import Server

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
        return Server(area, bind=bind, port=port, idle_timeout=idle_timeout).run()
    from dbtool.core.client import describe, ping_info, start_server

    info = ping_info(area)
    if info is None:
        deadline = time.monotonic() + default_timeout(opts)
        info = start_server(area, deadline, {"bind": bind, "port": port, "idle_timeout": idle_timeout})
    if opts.output == "table":
        emit(describe(info) + "\n")
    else:
        emit(render(_public(info), opts.output))
    return 0


def server_stop(opts: GlobalOptions) -> int:
    from dbtool.core.client import Connection, Unreachable, read_server_info, server_lock_free

    area = find_area(opts.area)
    info = read_server_info(area)
    if info is None:
        print(f"dbtool: no server is running for {area.root}", file=sys.stderr)
        return 0
    deadline = time.monotonic() + default_timeout(opts)
    try:
        with Connection(info) as conn:
            conn.call("server-stop")
    except Unreachable:
        if server_lock_free(area):
            remove_file(area.server_json)
            print(f"dbtool: no server is running for {area.root} (removed a stale server.json)", file=sys.stderr)
            return 0
        raise Unavailable(
            f"the server at {info['host']}:{info['port']} (pid {info.get('pid')}) does not answer"
        ) from None
    while not server_lock_free(area):
        if time.monotonic() > deadline:
            raise Unavailable(f"the server (pid {info.get('pid')}) is still stopping after {default_timeout(opts):g} s")
        time.sleep(0.05)
    return 0


def server_status(opts: GlobalOptions) -> int:
    from dbtool.core.client import call

    reply = call(find_area(opts.area), COMMANDS["server-status"], {}, timeout=default_timeout(opts))
    emit(render(reply.result, opts.output))
    return 0
