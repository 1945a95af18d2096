"""Shared fixtures: temp areas, a ``dbtool`` runner (real processes), and cleanup of every server."""

from __future__ import annotations

import functools
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PYTHON = sys.executable
TEST_IDLE_TIMEOUT = 120  # a safety net: a server a test forgot stops by itself


def wait_for(predicate, timeout: float = 30.0) -> bool:
    """Poll ``predicate`` every 50 ms until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def dbtool_argv(*args: str) -> list[str]:
    return [PYTHON, "-m", "dbtool.cli", *args]


def run_in_pty(argv: list[str], timeout: float = 120, env: dict | None = None) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal; (exit code, everything it wrote)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env)
    finally:
        os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                break
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the writer is gone
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=timeout)
    finally:
        os.close(master)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


class Result:
    def __init__(self, proc: subprocess.CompletedProcess) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def json(self) -> object:
        return json.loads(self.out)

    @property
    def json_lines(self) -> list:
        return [json.loads(line) for line in self.out.splitlines()]

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


def area_processes(root: str) -> list[int]:
    """Pids of processes whose command line names this area (servers, stuck clients)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if root.encode() in argv and b"dbtool.core.server" in argv:
            pids.append(int(entry))
    return pids


def wait_starts(root: str, timeout: float = 30.0) -> None:
    """Wait until no client is starting a server for this area (a read starts one in the
    background, SPEC 3.2, holding start.lock until it answers), so that none comes up after."""
    from filelock import FileLock, Timeout

    dot = Path(root) / ".dbtool"
    for lock in [dot / "start.lock", *dot.glob("hosts/*/start.lock")]:
        if not lock.exists():
            continue
        try:
            FileLock(str(lock)).acquire(timeout=timeout).lock.release()
        except (Timeout, OSError):
            pass


def kill_area(root: str) -> None:
    """Stop every server of this area: SIGTERM, then SIGKILL after a grace period (after any
    start in progress has ended)."""
    wait_starts(root)
    pids = area_processes(root)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.05)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def query(area, sql: str, *args) -> list[tuple]:
    """Rows of an area's database, read in the test process (a connection of its own): its SQLite
    file, or its PostgreSQL schema (the SQL written for SQLite, ``?`` parameters)."""
    import sqlite3

    if getattr(area, "pg_schema", None):
        import psycopg

        base = getattr(area, "pg_base", PG_URL)  # (a test's own PostgreSQL server, or the shared one)
        with psycopg.connect(base, options=f"-csearch_path={area.pg_schema}", autocommit=True) as con:
            cur = con.execute(sql.replace("%", "%%").replace("?", "%s"), args)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
    con = sqlite3.connect(area.dir / "dbtool.db", timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def execute(area, sql: str | tuple[str, ...], rows: list[tuple] | None = None) -> None:
    """Change an area's database from the test process (SQL written for SQLite, ``?`` parameters),
    once or once per row of ``rows``, in one transaction; ``sql`` may be several statements (a
    tuple, without ``rows``), run in that one transaction too."""
    import sqlite3

    statements = (sql,) if isinstance(sql, str) else tuple(sql)
    assert rows is None or len(statements) == 1
    if getattr(area, "pg_schema", None):
        import psycopg

        base = getattr(area, "pg_base", PG_URL)
        with psycopg.connect(base, options=f"-csearch_path={area.pg_schema}") as con, con.cursor() as cur:
            for statement in statements:
                statement = statement.replace("%", "%%").replace("?", "%s")
                if rows is None:
                    cur.execute(statement)
                else:
                    cur.executemany(statement, rows)
        return
    con = sqlite3.connect(area.dir / "dbtool.db", timeout=30)
    try:
        with con:
            for statement in statements:
                if rows is None:
                    con.execute(statement)
                else:
                    con.executemany(statement, rows)
    finally:
        con.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


class Area:
    """A temp area plus helpers to run dbtool in it."""

    def __init__(self, root: Path, pg_schema: str | None = None) -> None:
        self.root = root
        self.dir = root / ".dbtool"
        self.pg_schema = pg_schema  # the area's data is in this PostgreSQL schema of the test database
        self.backend = "postgresql" if pg_schema else "sqlite"

    @property
    def run_dir(self) -> Path:
        """Where the server of this host keeps server.json (a PostgreSQL area: hosts/<host>/)."""
        if self.pg_schema or (self.dir / "shared").exists():
            from dbtool.core.area import host_part

            return self.dir / "hosts" / host_part()
        return self.dir

    def run(self, *args: str, timeout: float = 120, input: str | None = None, env: dict | None = None) -> Result:
        proc = subprocess.run(
            dbtool_argv("--area", str(self.root), *args),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, **(env or {})},
        )
        return Result(proc)

    def ok(self, *args: str, **kw: object) -> Result:
        result = self.run(*args, **kw)
        assert result.code == 0, result
        return result

    def popen(self, *args: str, **kw: object) -> subprocess.Popen:
        return subprocess.Popen(
            dbtool_argv("--area", str(self.root), *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kw,
        )

    @property
    def server_info(self) -> dict | None:
        try:
            return json.loads((self.run_dir / "server.json").read_text())
        except FileNotFoundError:
            return None

    def server_pids(self) -> list[int]:
        return [p for p in area_processes(str(self.root)) if _alive(p)]

    def wait_no_server(self, timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.server_pids():
                return True
            time.sleep(0.05)
        return False

    def set_config(self, section: str, name: str, value: str) -> None:
        """Change one setting in config.toml (value as TOML text)."""
        path = self.dir / "config.toml"
        lines = path.read_text().splitlines()
        current = None
        for i, line in enumerate(lines):
            if line.startswith("["):
                current = line.strip("[]")
            elif current == section and line.split("=")[0].strip() == name:
                lines[i] = f"{name} = {value}"
                break
        else:
            raise KeyError(f"{section}.{name}")
        path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def area_template(tmp_path_factory):
    """``dbtool init`` once per key list (a real subprocess, as a user runs it); each test's area is
    a copy of its .dbtool/ — the same files, made in milliseconds instead of a process start."""
    made: dict[str, Path] = {}

    def template(keys: str) -> Path:
        if keys not in made:
            root = tmp_path_factory.mktemp("template") / "area"
            proc = subprocess.run(
                dbtool_argv("init", str(root), "--keys", keys), capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 0, proc.stderr
            made[keys] = root / ".dbtool"
        return made[keys]

    return template


def pytest_generate_tests(metafunc):
    """A module that sets ``BACKENDS = ("sqlite", "postgresql")`` runs each of its tests that make
    an area on each backend (``backend`` is then a parameter, not the fixture below)."""
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends and "backend" in metafunc.fixturenames:
        if metafunc.definition.get_closest_marker("sqlite_only"):
            backends = ("sqlite",)
        metafunc.parametrize("backend", backends)


@pytest.fixture
def backend() -> str:
    """The backend of the areas a test makes: SQLite unless its module asks for both (BACKENDS)."""
    return "sqlite"


def pg_area_url(schema: str) -> str:
    """The URL of a PostgreSQL schema of the test database (the area's tables live there)."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


def new_pg_schema(keys: list[str] | None = None) -> str:
    """A schema of the test database of its own (with an area's tables when ``keys`` are given)."""
    import psycopg

    schema = f"a_{os.getpid()}_{os.urandom(4).hex()}"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    if keys:
        from dbtool.core.db.engine import ADMIN, create_schema, postgres_engine

        engine = postgres_engine(pg_area_url(schema), ADMIN)
        with engine.connect() as conn, conn.begin():
            create_schema(conn, keys, "test")
        engine.dispose()
    return schema


def drop_pg_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def make_area(tmp_path: Path, area_template, backend):
    """Factory of initialised areas (keys RELEASE,PLATFORM by default); stops their servers after.
    On the PostgreSQL backend an area is what ``init --db-url`` makes: config.toml naming a schema
    of its own (with the area's tables), and .dbtool/hosts/ for the hosts' front-ends."""
    import shutil

    made: list[Area] = []

    def make(name: str = "area", keys: str = "RELEASE,PLATFORM") -> Area:
        root = tmp_path / name
        root.mkdir(parents=True, exist_ok=True)
        shutil.copytree(area_template(keys), root / ".dbtool")  # modes too (0700, 0600)
        schema = None
        if backend == "postgresql":
            require_pg()
            schema = new_pg_schema(keys.split(","))
            for leftover in (root / ".dbtool").glob("dbtool.db*"):
                leftover.unlink()
            from dbtool.core.area import mark_shared

            mark_shared(str(root / ".dbtool"))
        area = Area(root, schema)
        made.append(area)
        area.set_config("server", "idle_timeout", str(TEST_IDLE_TIMEOUT))
        if schema:
            area.set_config("db", "url", json.dumps(pg_area_url(schema)))
        return area

    yield make
    for area in made:
        kill_area(str(area.root))
        if area.pg_schema:
            drop_pg_schema(area.pg_schema)


@pytest.fixture
def area(make_area) -> Area:
    return make_area()


# The PostgreSQL of the tests (they make and drop schemas of their own in it): $DBTOOL_TEST_PG_URL,
# else a local server with trust authentication, as on this project's machines.
PG_URL = os.environ.get("DBTOOL_TEST_PG_URL") or "postgresql://postgres@127.0.0.1:5432/test"


@functools.cache
def pg_unavailable() -> str:
    """Why the PostgreSQL tests cannot run here ('' when they can); asked once per session."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'dbtool[postgres]')"
    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except psycopg.Error as err:
        return f"PostgreSQL at {PG_URL} does not answer (set DBTOOL_TEST_PG_URL): {str(err).strip()}"
    return ""


def require_pg() -> None:
    """Skip a PostgreSQL test where none can be reached; under CI=true that is a failure."""
    why = pg_unavailable()
    if why:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true and the PostgreSQL tests cannot run: {why}", pytrace=False)
        pytest.skip(why)


class HandlerDb:
    """Run handlers in-process on a real database, as the server's writer and readers do: an
    SQLite file, or (``pg_schema``) a PostgreSQL schema of its own in the test database."""

    def __init__(self, path: Path, keys: list[str], pg_schema: str | None = None) -> None:
        from dbtool.core.db.engine import ADMIN, create_schema, postgres_engine, sqlite_engine
        from dbtool.core.db.schema import schema_for

        self.pg_schema = pg_schema
        if pg_schema:
            self.engine = postgres_engine(PG_URL, ADMIN, search_path=pg_schema)
            with self.engine.connect() as conn, conn.begin():
                conn.exec_driver_sql(f"CREATE SCHEMA {pg_schema}")
        else:
            self.engine = sqlite_engine(str(path), ADMIN)
        with self.engine.connect() as conn, conn.begin():
            create_schema(conn, keys, "test")
        self.schema = schema_for(keys)
        self.config = {"tests": {"deadtime": 7200}}
        self.client = {"user": "tester", "host": "testhost", "pid": 1}
        self.events: list[dict] = []

    def __call__(self, name: str, **params: object) -> object:
        """Run a command's handler with its parameters checked as the server checks them."""
        from dbtool.core.commands import lookup
        from dbtool.core.db.context import Db
        from dbtool.core.handlers import resolve
        from dbtool.core.handlers.completion import settle_runs
        from dbtool.core.protocol import plain
        from dbtool.core.request import RequestContext, activate

        cmd = lookup(name)
        assert cmd is not None, name
        bound = cmd.bind_wire(params)
        ctx = RequestContext("test", cmd.name, bound, self.client)
        with activate(ctx), self.engine.connect() as conn:
            with conn.begin():
                db = Db(conn, self.schema, ctx, self.config)
                result = resolve(cmd.handler)(db, **bound)
                settle_runs(db)  # as the server's writer does after every write
            db.run_after_commit()
        self.keep_events(db.events)
        return plain(result)  # as the server sends it

    def keep_events(self, events: list[dict]) -> None:
        """Record a request's events, their data decoded (the stored form holds it as JSON text)."""
        for event in events:
            self.events.append({**event, "data": json.loads(event["data"]) if event.get("data") else None})

    def sql(self, statement: str, *args: object) -> list[tuple]:
        """Run SQL written for SQLite (``?`` parameters) on this database."""
        if self.pg_schema:
            statement = statement.replace("%", "%%").replace("?", "%s")
        with self.engine.connect() as conn, conn.begin():
            result = conn.exec_driver_sql(statement, tuple(args))
            return [tuple(r) for r in result.all()] if result.returns_rows else []

    @property
    def backend(self) -> str:
        return "postgresql" if self.pg_schema else "sqlite"

    def close(self) -> None:
        if self.pg_schema:
            with self.engine.connect() as conn, conn.begin():
                conn.exec_driver_sql(f"DROP SCHEMA {self.pg_schema} CASCADE")
        self.engine.dispose()


def put(hdb, run_id: int, testname: str, item_path: str = "", state: str = "COMPLETED", status: str = "PASS") -> int:
    """Write a test's state/status as a job would (an item also rolls up into its toplevel)."""
    return hdb(
        "set-state-status-and-roll-up-items",
        run_id=run_id,
        testname=testname,
        item_path=item_path,
        state=state,
        status=status,
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def hdb(request, tmp_path: Path):
    """The handlers on each backend: an SQLite file, and a PostgreSQL schema of the test's own."""
    schema = None
    if request.param == "postgresql":
        require_pg()
        schema = f"t_{os.getpid()}_{os.urandom(4).hex()}"
    db = HandlerDb(tmp_path / "handlers.db", ["RELEASE", "PLATFORM"], schema)
    yield db
    db.close()


def handshake(f, info: dict, key: str | None = None, client: dict | None = None) -> dict:
    """The client side of the handshake on a raw connection's file: returns the server's hello.

    Sends the challenge, checks the server's proof, then sends the client's proof (with ``key``,
    the area's key by default; a wrong one makes the server refuse)."""
    from dbtool.core.protocol import auth_line, challenge_line, new_nonce, proof_ok

    challenge = new_nonce()
    f.write(challenge_line(challenge))
    f.flush()
    hello = json.loads(f.readline())
    if "nonce" not in hello:
        return hello  # e.g. busy instead of a hello
    proof = json.loads(f.readline())
    assert proof_ok(info["key"], "server", hello["nonce"], challenge, proof.get("proof")), proof
    f.write(auth_line(key or info["key"], hello["nonce"], challenge, client or {"user": "raw"}))
    f.flush()
    return hello


class Raw:
    """A raw protocol connection to an area's server (authenticated unless told otherwise)."""

    def __init__(self, area: Area, key: str | None = None, authenticate: bool = True, rcvbuf: int = 0) -> None:
        import socket

        info = area.server_info
        self.sock = socket.socket()
        if rcvbuf:  # a small receive window: the server's writes to us back up quickly
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(30)
        self.sock.connect((info["address"], info["port"]))
        self.f = self.sock.makefile("rwb")
        if authenticate:
            self.hello = handshake(self.f, info, key)
        else:
            self.hello = json.loads(self.f.readline())

    def send_line(self, data: bytes) -> None:
        self.f.write(data + b"\n")
        self.f.flush()

    def read(self) -> dict | None:
        line = self.f.readline()
        return json.loads(line) if line else None

    def request(self, cmd: str, params: dict | None = None, **extra: object) -> dict:
        self.send_line(json.dumps({"id": 1, "cmd": cmd, "params": params or {}, **extra}).encode())
        return self.read()

    def close(self) -> None:
        self.f.close()
        self.sock.close()

    def __enter__(self) -> Raw:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- a real browser: Debian's chromium, driven by Playwright (which never downloads one of its own) ---

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking"]


def chromium_path() -> str | None:
    """The system's chromium: $DBTOOL_TEST_CHROMIUM, else chromium (or chromium-browser) on PATH."""
    import shutil

    return os.environ.get("DBTOOL_TEST_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@functools.cache
def browser_unavailable() -> str:
    """Why the browser tests cannot run here ('' when they can); asked once per session."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install 'dbtool[test]')"
    if chromium_path() is None:
        return "no chromium on PATH (apt-get install chromium, or set DBTOOL_TEST_CHROMIUM)"
    return ""


def require_browser() -> None:
    """Skip a browser test where none can run; under CI=true that is a failure."""
    why = browser_unavailable()
    if why:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true and the browser tests cannot run: {why}", pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    """One headless chromium per test module, closed at its end with Playwright's driver. (Not per
    session: while Playwright's sync API runs, its event loop counts as running in this thread, and
    the tests that call asyncio.run would fail.)"""
    require_browser()
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    except Exception:
        playwright.stop()
        raise
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture
def artifacts(tmp_path: Path, request) -> Path:
    """Where a test leaves its screenshots: $DBTOOL_TEST_ARTIFACTS/<test>, else the test's tmp_path."""
    base = os.environ.get("DBTOOL_TEST_ARTIFACTS")
    folder = Path(base) / request.node.name.replace("/", "_") if base else tmp_path / "artifacts"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser):
    """A fresh browser page (its own cookies); ``page.js_errors`` collects the page's uncaught errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    tab = context.new_page()
    tab.js_errors = []
    tab.on("pageerror", lambda err: tab.js_errors.append(str(err)))
    yield tab
    context.close()
