"""An area kept in PostgreSQL (issue 14): init --db-url, $DBTOOL_DB_URL, a front-end per host, events
and roll-ups across front-ends, the dead-job scan taken in turn, migrate, bad URLs, and faults (the
database restarted under load, a front-end killed).

Every test runs real processes against the real PostgreSQL of conftest (``PG_URL``), in a schema or
a database of its own that it drops after. Two front-ends on one machine are two ``$DBTOOL_HOSTNAME``s.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import (
    PG_URL,
    Area,
    dbtool_argv,
    drop_pg_schema,
    kill_area,
    new_pg_schema,
    pg_area_url,
    query,
    require_pg,
    wait_for,
)

PY = sys.executable
HERE = os.path.dirname(__file__)


@pytest.fixture
def pg():
    require_pg()


@pytest.fixture
def schema(pg):
    """An empty schema of the test database; its URL is ``pg_area_url(schema)``."""
    name = new_pg_schema()
    yield name
    drop_pg_schema(name)


@pytest.fixture
def database(pg):
    """An empty database of its own (created and dropped here): its URL."""
    import psycopg

    name = f"dbtool_t_{os.getpid()}_{os.urandom(3).hex()}"
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def roots(tmp_path):
    made = []

    def make(name: str) -> Area:
        made.append(tmp_path / name)
        return Area(tmp_path / name)

    yield make
    for root in made:
        kill_area(str(root))


def dbtool(*args: str, host: str | None = None, env: dict | None = None, timeout: float = 120):
    environment = {**os.environ, **(env or {})}
    if host:
        environment["DBTOOL_HOSTNAME"] = host
    return subprocess.run(dbtool_argv(*args), capture_output=True, text=True, timeout=timeout, env=environment)


def pg_init(area: Area, url: str, keys: str = "RELEASE,PLATFORM", base: str | None = None) -> None:
    """init --db-url URL; ``base``: the URL of the server when it is not conftest's (for query)."""
    proc = dbtool("init", str(area.root), "--keys", keys, "--db-url", url)
    assert proc.returncode == 0, proc.stderr
    area.pg_schema = url.rsplit("%3D", 1)[-1] if "%3D" in url else None
    if base:
        area.pg_base = base
    area.set_config("server", "idle_timeout", "120")


def on(area: Area, host: str, *args: str, **kw):
    return dbtool("--area", str(area.root), *args, host=host, **kw)


def ok(area: Area, host: str, *args: str, **kw) -> str:
    proc = on(area, host, *args, **kw)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def record(area: Area, host: str) -> dict | None:
    path = area.dir / "hosts" / host / "server.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


# -- init, the URL, the database ------------------------------------------------------------------------


def test_init_creates_the_schema_and_a_second_area_with_the_same_keys_shares_it(schema, roots):
    url = pg_area_url(schema)
    first, second = roots("farm1"), roots("farm2")
    pg_init(first, url)
    config = (first.dir / "config.toml").read_text()
    assert f'url = "{url}"' in config
    assert not (first.dir / "dbtool.db").exists() and (first.dir / "hosts").is_dir()
    assert {r[0] for r in query(first, "SELECT fieldname FROM keys")} == {"RELEASE", "PLATFORM"}
    pg_init(second, url)  # the same keys: the schema is checked, and shared
    run_id = ok(first, "h1", "register-run", "--target", "v1/linux", "--runname", "r").strip()
    assert ok(second, "h2", "--json", "get-runs").count('"runname": "r"') == 1
    assert ok(second, "h2", "get-run-info", "--run-id", run_id)
    other = dbtool("init", str(roots("farm3").root), "--keys", "A,B", "--db-url", url)
    assert other.returncode == 4
    assert "holds a dbtool area with keys RELEASE,PLATFORM, not A,B" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1
    assert not (roots("farm3").dir).exists()  # nothing made


def test_bad_urls_get_one_line_without_the_password(schema, roots, pg):
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True, options=f"-csearch_path={schema}") as con:
        con.execute("CREATE TABLE customers (id int)")
    cases = [
        ("postgresql://postgres:s3cret@127.0.0.1:1/test", 3, "cannot reach PostgreSQL at postgresql://postgres:***@"),
        (PG_URL.rsplit("/", 1)[0] + "/no_such_database_here", 4, 'database "no_such_database_here" does not exist'),
        ("postgresql://no_such_role:s3cret@" + PG_URL.split("@", 1)[1], 4, "no_such_role"),
        (pg_area_url(schema), 4, "holds tables of another application (customers)"),
        ("mysql://root:s3cret@localhost/x", 4, "is not a PostgreSQL URL"),
    ]
    for i, (url, code, words) in enumerate(cases):
        proc = dbtool("init", str(roots(f"a{i}").root), "--keys", "A", "--db-url", url, timeout=60)
        assert proc.returncode == code, (url, proc.stderr)
        assert words in proc.stderr, proc.stderr
        assert "s3cret" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not roots(f"a{i}").dir.exists()


def test_the_url_in_the_environment_wins_for_one_command_and_is_never_written(make_area, schema):
    area = make_area()  # an SQLite area
    url = pg_area_url(schema)
    env = {"DBTOOL_DB_URL": url}
    assert area.run("register-run", "--target", "pg/only", "--runname", "r", env=env).code == 0
    assert query(Area(area.root, schema), "SELECT runname FROM runs") == [("r",)]
    assert query(area, "SELECT count(*) FROM runs") == [(0,)]  # the SQLite file was not touched
    assert url not in (area.dir / "config.toml").read_text()
    assert "pg/only" in area.run("get-runs", env=env).out
    assert "pg/only" not in area.run("get-runs").out
    bad = area.run("get-runs", env={"DBTOOL_DB_URL": "postgresql://postgres:pw@127.0.0.1:1/x"})
    assert bad.code == 3 and "postgresql://postgres:***@127.0.0.1:1/x" in bad.err and "pw@" not in bad.err
    kill_area(str(area.root))


def test_a_url_set_by_hand_makes_the_area_shared_and_init_names_the_database_it_has(make_area, schema):
    area = make_area()  # an SQLite area whose config.toml is then edited
    url = pg_area_url(schema)
    area.set_config("db", "url", json.dumps(url))
    area.ok("register-run", "--target", "v1/x", "--runname", "r")  # the front-end creates the schema
    assert (area.dir / "shared").exists() and (area.dir / "hosts").is_dir()
    assert not (area.dir / "server.json").exists() and area.server_info is not None
    assert query(Area(area.root, schema), "SELECT runname FROM runs") == [("r",)]
    again = dbtool("init", str(area.root), "--keys", "RELEASE,PLATFORM", "--db-url", pg_area_url(schema + "x"))
    assert again.returncode == 4 and "dbtool migrate --to" in again.stderr
    assert dbtool("init", str(area.root), "--keys", "RELEASE,PLATFORM", "--db-url", url).returncode == 0
    area.ok("server", "stop")
    area.set_config("db", "url", '""')  # the marker stays: no SQLite server behind the front-ends' backs
    proc = area.run("set-var", "x", "1")
    assert proc.code == 4 and "has no db.url" in proc.err


# -- a front-end per host -------------------------------------------------------------------------------


def test_each_host_runs_and_stops_its_own_front_end(schema, roots):
    area = roots("area")
    pg_init(area, pg_area_url(schema))
    ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", "r")
    assert record(area, "hosta") is not None and record(area, "hostb") is None
    ok(area, "hostb", "register-test", "--run-id", "1", "--testname", "t")
    a, b = record(area, "hosta"), record(area, "hostb")
    assert a["pid"] != b["pid"] and a["hostname"] == "hosta" and b["hostname"] == "hostb"
    status = json.loads(ok(area, "hostb", "--json", "server", "status"))
    assert status["hostname"] == "hostb" and status["database"].endswith(schema)
    ok(area, "hosta", "server", "stop")
    assert record(area, "hosta") is None and record(area, "hostb") is not None
    assert on(area, "hosta", "server", "status").returncode == 3
    # a read with no front-end on this host goes to PostgreSQL directly, read-only
    proc = on(area, "hostc", "--trace", "get-tests-for-run", "--run-id", "1")
    assert proc.returncode == 0 and "read-only (no server running)" in proc.stderr
    assert record(area, "hostc") is None


def test_watch_on_one_front_end_sees_every_write_through_another_in_order(schema, roots):
    area = roots("area")
    pg_init(area, pg_area_url(schema))
    ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", "r")
    watcher = subprocess.Popen(
        dbtool_argv("--area", str(area.root), "--json", "watch", "--run-id", "1"),
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DBTOOL_HOSTNAME": "hosta"},
    )
    try:
        assert wait_for(lambda: record(area, "hosta") and query(area, "SELECT 1"), 10)
        time.sleep(0.5)  # (subscribed)
        writers = [
            subprocess.Popen(
                dbtool_argv(
                    "--area", str(area.root), "set-state-status-and-roll-up-items", "--run-id", "1",
                    "--testname", f"t{host}{i}", "--state", "RUNNING", "--status", "n/a",
                ),
                env={**os.environ, "DBTOOL_HOSTNAME": host},
                stdout=subprocess.DEVNULL,
            )
            for i in range(5)
            for host in ("hostb", "hostc")
        ]  # fmt: skip
        assert all(w.wait(120) == 0 for w in writers)
        stored = [r[0] for r in query(area, "SELECT seq FROM events WHERE run_id = 1 ORDER BY seq")]
        seen: list[int] = []
        deadline = time.monotonic() + 30
        while len(seen) < len(stored) - 1 and time.monotonic() < deadline:  # (all but register-run)
            line = watcher.stdout.readline()
            if line.strip():
                seen.append(json.loads(line)["seq"])
    finally:
        watcher.send_signal(signal.SIGINT)
        watcher.wait(10)
    assert seen == stored[1:]  # every event after the subscription, gap-free, in commit order


def test_roll_ups_through_two_front_ends_at_once_equal_a_serial_order(schema, roots, tmp_path):
    """Items of the same toplevels written through two front-ends at once, and the runs rolled up
    by each: the stored toplevels and run are what rolling up the final items gives."""
    area = roots("area")
    pg_init(area, pg_area_url(schema))
    ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", "r")
    ok(area, "hostb", "server", "start")
    script = (
        "import sys; from dbtool.cli.main import main\n"
        "area, host, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "for i in range(n):\n"
        "    for top in ('ta', 'tb'):\n"
        "        status = 'FAIL' if (i == n - 1 and host == 'hostb' and top == 'tb') else 'PASS'\n"
        "        main(['--area', area, 'set-state-status-and-roll-up-items', '--run-id', '1', '--testname', top,\n"
        "              '--item-path', f'{host}/{i}', '--state', 'COMPLETED', '--status', status])\n"
        "        main(['--area', area, 'set-state-status-and-roll-up-run', '--run-id', '1'])\n"
    )
    procs = [
        subprocess.Popen([PY, "-c", script, str(area.root), host, "15"], env={**os.environ, "DBTOOL_HOSTNAME": host})
        for host in ("hosta", "hostb", "hosta", "hostb")
    ]
    assert all(p.wait(300) == 0 for p in procs)
    tops = dict(
        (name, (state, status))
        for name, state, status in query(area, "SELECT testname, state, status FROM tests WHERE item_path = ''")
    )
    assert tops == {"ta": ("COMPLETED", "PASS"), "tb": ("COMPLETED", "FAIL")}
    assert query(area, "SELECT state, status FROM runs WHERE id = 1") == [("COMPLETED", "FAIL")]
    log = "".join(p.read_text() for p in (area.dir / "hosts").glob("*/logs/server.log"))
    assert "Traceback" not in log


def test_a_write_resent_through_another_front_end_is_applied_once(schema, roots):
    area = roots("area")
    pg_init(area, pg_area_url(schema))
    ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", "r")
    script = (
        "import os, sys, json\n"
        "from dbtool.core.area import Area\n"
        "from dbtool.core.client import call\n"
        "from dbtool.core.commands import COMMANDS\n"
        "area = Area(sys.argv[1]); results = []\n"
        "for host in ('hosta', 'hostb'):\n"
        "    os.environ['DBTOOL_HOSTNAME'] = host\n"
        "    params = {'run_id': 1, 'testname': 't', 'item_path': 'i'}\n"
        "    results.append(call(area, COMMANDS['register-test'], params, idem='resent-1').result)\n"
        "print(json.dumps(results))\n"
    )
    proc = subprocess.run([PY, "-c", script, str(area.root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = json.loads(proc.stdout)
    assert first == second
    assert record(area, "hosta") and record(area, "hostb")  # it went through both
    assert query(area, "SELECT count(*) FROM events WHERE cmd = 'register-test' AND item_path = 'i'") == [(1,)]


def test_dead_jobs_are_marked_once_by_front_ends_that_scan_together(schema, roots):
    area = roots("area")
    pg_init(area, pg_area_url(schema))
    area.set_config("tests", "dead_check_interval", "0.2")
    ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", "r")
    for i in range(6):
        ok(area, "hosta", "set-state-status-and-roll-up-items", "--run-id", "1", "--testname", f"t{i % 2}",
           "--item-path", f"i{i}", "--state", "RUNNING", "--status", "n/a")  # fmt: skip
    ok(area, "hostb", "server", "start")
    query(area, "UPDATE tests SET event_time = event_time - 100000")  # they stopped reporting long ago
    dead_items = "SELECT count(*) FROM tests WHERE status = 'DEAD' AND item_path != ''"
    assert wait_for(lambda: query(area, dead_items) == [(6,)], 30)
    time.sleep(1.0)  # more scans on both
    dead = query(
        area, "SELECT test_id, count(*) FROM events WHERE status = 'DEAD' AND item_path != '' GROUP BY test_id"
    )
    assert len(dead) == 6 and all(n == 1 for _t, n in dead)


# -- migrate ------------------------------------------------------------------------------------------


def test_migrate_copies_every_table_with_ids_and_switches_the_config(make_area, database):
    area = make_area()
    area.ok("register-run", "--target", "v1/linux", "--runname", "r1")
    area.ok("register-run", "--target", "v1/linux", "--runname", "r2")
    for i in range(4):
        area.ok("set-state-status-and-roll-up-items", "--run-id", "2", "--testname", "t", "--item-path", f"i{i}",
                "--state", "COMPLETED", "--status", "PASS" if i else "FAIL")  # fmt: skip
    area.ok("set-var", "colour", "blue")
    area.ok("test-set-top-process-pid", "--test-id", "2", "--pid", "4242")
    before = {t: query(area, f"SELECT count(*) FROM {t}")[0][0] for t in ("runs", "tests", "events", "idempotency")}
    tests_before = area.ok("--json", "get-tests-for-run", "--run-id", "2").json
    out = area.ok("migrate", "--to", database).out
    for name, count in before.items():
        assert any(line.split() == [name, str(count), str(count)] for line in out.splitlines()), (name, out)
    assert "migrated" in out and "rows/s" in out
    assert f'url = "{database}"' in (area.dir / "config.toml").read_text()
    assert (area.dir / "shared").exists() and (area.dir / "hosts").is_dir()
    assert area.ok("--json", "get-tests-for-run", "--run-id", "2").json == tests_before
    assert area.ok("get-var", "colour").out.strip() == "blue"
    assert area.ok("register-run", "--target", "v1/linux", "--runname", "r3").out.strip() == "3"  # ids go on
    events = area.ok("--json", "watch", "--since", "0", "--no-follow").json_lines
    assert [e["seq"] for e in events] == list(range(1, before["events"] + 2))
    again = area.run("migrate", "--to", database)
    assert again.code == 4 and "kept in PostgreSQL already" in again.err


def test_migrate_refuses_a_database_that_is_not_empty(make_area, database):
    area = make_area()
    area.ok("register-run", "--target", "v1/linux", "--runname", "r1")
    other = Area(area.root.parent / "other")
    assert dbtool("init", str(other.root), "--keys", "RELEASE,PLATFORM", "--db-url", database).returncode == 0
    proc = area.run("migrate", "--to", database)
    assert proc.code == 4 and "holds a dbtool area already" in proc.err
    assert 'url = ""' in (area.dir / "config.toml").read_text()
    assert "r1" in area.ok("get-runs").out  # still the SQLite area, still served


# -- faults -------------------------------------------------------------------------------------------


def _pg_bindir() -> str | None:
    """Where PostgreSQL's server programs are: on PATH, pg_config's bindir, or Debian's layout."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(found)
    if shutil.which("pg_config"):
        proc = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if proc.returncode == 0 and os.path.exists(os.path.join(proc.stdout.strip(), "initdb")):
            return proc.stdout.strip()
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return os.path.dirname(versions[-1]) if versions else None


class LocalPostgres:
    """A PostgreSQL server of the test's own: initdb into a temporary directory, on a free port of
    127.0.0.1 — so that a fault test can stop and restart it without disturbing the shared server
    the other tests (and other test processes) use. As root it runs as the postgres user (the
    server refuses root)."""

    def __init__(self, bindir: str) -> None:
        self.bindir = bindir
        # not under pytest's temporary directory: that is private to root, which the server is not
        self.dir = Path(tempfile.mkdtemp(prefix="dbtool-pg-"))
        self.data = self.dir / "data"
        with socket.socket() as sock:  # a free port (the server binds it in a moment)
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.user: list[str] = []
        if os.getuid() == 0:
            self.user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *args: str) -> None:
        argv = [*self.user, os.path.join(self.bindir, program), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def up(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg.Error:
            return False

    def new_schema(self) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            con.execute("CREATE SCHEMA area")
        return f"{self.url}?options=-csearch_path%3Darea"


@pytest.fixture
def local_pg():
    """A PostgreSQL server of this test's own, stopped (and its files removed) after."""
    bindir = _pg_bindir()
    if bindir is None or (os.getuid() == 0 and not shutil.which("runuser")):
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail("CI=true and no PostgreSQL server programs (initdb, pg_ctl) to start one of the test's own")
        pytest.skip("starting a PostgreSQL server of the test's own needs initdb and pg_ctl")
    server = LocalPostgres(bindir)
    try:
        server.start()
        yield server
    finally:
        if (server.data / "postmaster.pid").exists():
            server.stop("immediate")
        shutil.rmtree(server.dir, ignore_errors=True)


def test_postgresql_restarted_under_load_loses_no_acknowledged_write(local_pg, roots, tmp_path):
    area = roots("area")
    pg_init(area, local_pg.new_schema(), base=local_pg.url)
    area.ok("register-run", "--target", "v1/x", "--runname", "r")
    pid = area.server_info["pid"]
    outs = [tmp_path / f"load{i}.jsonl" for i in range(3)]
    loaders = [
        subprocess.Popen([PY, os.path.join(HERE, "load_client.py"), str(area.root), f"c{i}", "150", str(out)])
        for i, out in enumerate(outs)
    ]
    try:
        assert wait_for(lambda: all(o.exists() and o.read_text().count("\n") >= 10 for o in outs), 60)
        local_pg.restart()
    finally:
        assert all(p.wait(300) == 0 for p in loaders)
        assert wait_for(local_pg.up, 60)
    acked = [json.loads(line) for out in outs for line in out.read_text().splitlines()]
    done = [a for a in acked if a["code"] == 0]
    assert len(done) == 450, [a for a in acked if a["code"]][:3]  # they retried through the outage
    stored = dict(query(area, "SELECT var, val FROM metadat WHERE var LIKE 'c%'"))
    assert all(stored.get(a["key"]) == a["value"] for a in done)
    assert area.server_info["pid"] == pid  # the front-end stayed up
    log = (area.run_dir / "logs" / "server.log").read_text()
    assert "Traceback" not in log


def test_exec_spools_while_postgresql_is_down_and_the_reports_land_after(local_pg, roots):
    area = roots("area")
    pg_init(area, local_pg.new_schema(), base=local_pg.url)
    area.ok("register-run", "--target", "v1/x", "--runname", "r")
    local_pg.stop()
    try:
        proc = area.run(
            "--timeout", "2", "exec", "--run-id", "1", "--testname", "job", "--", PY, "-c", "print('hi')", timeout=120
        )
        assert proc.code == 0, proc.err
        assert "spool" in proc.err
    finally:
        local_pg.start()
        assert wait_for(local_pg.up, 60)
    assert wait_for(
        lambda: query(area, "SELECT state, status FROM tests WHERE testname = 'job'") == [("COMPLETED", "PASS")], 60
    )


def test_a_front_end_killed_with_sigkill_is_replaced_and_a_resent_write_applies_once(schema, roots):
    area = roots("area")
    pg_init(area, pg_area_url(schema))
    ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", "r")
    os.kill(record(area, "hosta")["pid"], signal.SIGKILL)
    script = (
        "import os, sys\n"
        "from dbtool.core.area import Area\n"
        "from dbtool.core.client import call\n"
        "from dbtool.core.commands import COMMANDS\n"
        "os.environ['DBTOOL_HOSTNAME'] = 'hosta'\n"
        "params = {'run_id': 1, 'testname': 't', 'state': 'COMPLETED', 'status': 'PASS'}\n"
        "cmd = COMMANDS['set-state-status-and-roll-up-items']\n"
        "for _ in range(2):\n"
        "    print(call(Area(sys.argv[1]), cmd, params, idem='after-kill').result)\n"
    )
    proc = subprocess.run([PY, "-c", script, str(area.root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(set(proc.stdout.split())) == 1
    # applied once: one event of the test; and the run it completed rolled up and complete once
    applied = "SELECT test_id IS NULL, cmd FROM events WHERE seq > 1 ORDER BY seq"
    assert query(area, applied) == [
        (False, "register-test"),
        (False, "set-state-status-and-roll-up-items"),
        (True, "set-state-status-and-roll-up-items"),
        (True, "run-complete"),
    ]


# -- run completion and notifications across front-ends ---------------------------------------------

FINISH_AT = (
    "import os, sys, time\n"
    "from dbtool.core.area import Area\n"
    "from dbtool.core.client import call\n"
    "from dbtool.core.commands import COMMANDS\n"
    "root, host, testname = sys.argv[1:4]\n"
    "start, step = float(sys.argv[4]), float(sys.argv[5])\n"
    "os.environ['DBTOOL_HOSTNAME'] = host\n"
    "area, cmd = Area(root), COMMANDS['set-state-status-and-roll-up-items']\n"
    "for n, run in enumerate(sys.argv[6:]):\n"
    "    time.sleep(max(0.0, start + n * step - time.time()))  # the other front-end's write: the same moment\n"
    "    call(area, cmd, {'run_id': int(run), 'testname': testname, 'state': 'COMPLETED', 'status': 'PASS'})\n"
)


def test_the_last_tests_of_a_run_finished_through_two_front_ends_at_once_complete_it_once(schema, roots):
    area = roots("area")
    pg_init(area, pg_area_url(schema))
    runs = []
    for n in range(20):
        runs.append(ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", f"r{n}").strip())
        for name in ("first", "a", "b"):
            ok(area, "hosta", "register-test", "--run-id", runs[-1], "--testname", name)
        ok(area, "hosta", "set-state-status-and-roll-up-items", "--run-id", runs[-1], "--testname", "first",
           "--state", "COMPLETED", "--status", "PASS")  # fmt: skip
    ok(area, "hostb", "server", "start")
    start = time.time() + 2.0  # (both writers started and connected by then)
    writers = [
        subprocess.Popen([PY, "-c", FINISH_AT, str(area.root), host, name, str(start), "0.15", *runs])
        for host, name in (("hosta", "a"), ("hostb", "b"))
    ]
    try:
        assert all(w.wait(120) == 0 for w in writers)
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
                w.wait()
    assert record(area, "hosta") and record(area, "hostb")  # each pair went through both front-ends
    complete = query(area, "SELECT run_id, count(*) FROM events WHERE cmd = 'run-complete' GROUP BY run_id")
    assert sorted(complete) == sorted((int(r), 1) for r in runs)
    assert query(area, "SELECT count(*) FROM runs WHERE completed_at IS NULL") == [(0,)]
    assert query(area, "SELECT count(*) FROM events WHERE cmd = 'run-reopened'") == [(0,)]
    log = "".join(p.read_text() for p in (area.dir / "hosts").glob("*/logs/server.log"))
    assert "Traceback" not in log


def test_notifications_are_delivered_once_with_two_front_ends_running(schema, roots):
    from dbtool.core.rules.notify import check_entries, kinds_of, wanted

    area = roots("area")
    pg_init(area, pg_area_url(schema))
    body = 'events = ["state-change", "run-complete"]\ncommand = "cat >> notified.jsonl"'
    with open(area.dir / "config.toml", "a") as f:
        f.write(f"\n[[notify]]\n{body}\n")
    [entry] = check_entries([{"events": ["state-change", "run-complete"], "command": "cat >> notified.jsonl"}], "")
    ok(area, "hosta", "server", "start")
    ok(area, "hostb", "server", "start")
    out = area.root / "notified.jsonl"

    def notified() -> list[dict]:
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    def expected() -> list[int]:
        rows = query(area, "SELECT seq, cmd, run_id, test_id, testname, item_path, state, status, data FROM events")
        names = ("seq", "cmd", "run_id", "test_id", "testname", "item_path", "state", "status", "data")
        events = [dict(zip(names, row, strict=True)) for row in rows]
        return sorted(e["seq"] for e in events if any(wanted(entry, e, k) for k in kinds_of(e)))

    def write_through_both(label: str) -> None:
        run = ok(area, "hosta", "register-run", "--target", "v1/x", "--runname", label).strip()
        procs = [
            subprocess.Popen(
                dbtool_argv("--area", str(area.root), "set-state-status-and-roll-up-items", "--run-id", run,
                            "--testname", f"t{host}{i}", "--state", "COMPLETED", "--status", "PASS"),
                env={**os.environ, "DBTOOL_HOSTNAME": host},
                stdout=subprocess.DEVNULL,
            )
            for i in range(4)
            for host in ("hosta", "hostb")
        ]  # fmt: skip
        assert all(p.wait(120) == 0 for p in procs)

    write_through_both("one")
    assert wait_for(lambda: len(notified()) >= len(expected()), 30)
    # the front-end that delivers stops; the other takes over from the cursor in the database
    logs = {h: (area.dir / "hosts" / h / "logs" / "server.log") for h in ("hosta", "hostb")}
    [deliverer] = [h for h, p in logs.items() if "this front-end delivers them" in p.read_text()]
    other = "hostb" if deliverer == "hosta" else "hosta"
    ok(area, deliverer, "server", "stop")
    write_through_both("two")  # (starts the stopped front-end again: both run)
    assert record(area, "hosta") and record(area, "hostb")
    assert wait_for(lambda: len(notified()) >= len(expected()), 30)
    time.sleep(2.0)  # more passes on both: nothing delivered twice
    seqs = [n["seq"] for n in notified()]
    want = expected()
    assert len(want) > 20 and sorted(seqs) == want, (len(seqs), len(set(seqs)), len(want))
    assert [n["run_id"] for n in notified() if n["event"] == "run-complete"] == [1, 2]  # (each run's first write)
    assert "this front-end delivers them" in logs[other].read_text()


# -- the schema made at once --------------------------------------------------------------------------


def test_an_empty_schema_made_at_once_equals_the_one_made_step_by_step(pg):
    """create_schema on an empty PostgreSQL schema sends every statement in one batch; the result
    is the schema the step-by-step path (which also upgrades older areas) makes."""
    import psycopg
    from dbtool.core.db import engine as db_engine
    from sqlalchemy import event

    def make(name: str, step_by_step: bool) -> None:
        with psycopg.connect(PG_URL, autocommit=True) as con:
            con.execute(f"CREATE SCHEMA {name}")
        engine = db_engine.postgres_engine(pg_area_url(name), db_engine.ADMIN)
        try:
            with engine.connect() as conn, conn.begin():
                if step_by_step:  # a table there already: create_schema goes step by step
                    db_engine.schema_for(["RELEASE", "PLATFORM"]).keys_t.create(conn)
            sent = []
            event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
            with engine.connect() as conn, conn.begin():
                db_engine.create_schema(conn, ["RELEASE", "PLATFORM"], "test")
            assert (len(sent) < 20) == (not step_by_step), len(sent)  # (the batch is not one of them)
        finally:
            engine.dispose()

    def catalog(name: str) -> dict:
        with psycopg.connect(PG_URL, autocommit=True) as con:
            columns = con.execute(
                "SELECT table_name, column_name, data_type, column_default, is_nullable FROM "
                "information_schema.columns WHERE table_schema = %s ORDER BY 1, 2",
                (name,),
            ).fetchall()
            indexes = con.execute(
                "SELECT indexname, replace(indexdef, %s, 'S.') FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                (name + ".", name),
            ).fetchall()
            triggers = con.execute(
                "SELECT event_object_table, trigger_name, action_timing, event_manipulation FROM "
                "information_schema.triggers WHERE trigger_schema = %s ORDER BY 1, 2",
                (name,),
            ).fetchall()
            rows = con.execute(f"SELECT fieldname FROM {name}.keys ORDER BY id").fetchall()
        defaults = [(t, c, d, (x or "").replace(name + ".", "S."), n) for t, c, d, x, n in columns]
        return {"columns": defaults, "indexes": indexes, "triggers": triggers, "keys": rows}

    at_once, steps = new_pg_schema(), new_pg_schema()
    drop_pg_schema(at_once)
    drop_pg_schema(steps)
    try:
        make(at_once, False)
        make(steps, True)
        made, expected = catalog(at_once), catalog(steps)
        assert made["keys"] == [("RELEASE",), ("PLATFORM",)]
        assert made == expected
        assert any(name == "tests_unfinished" for name, _ in made["indexes"]) and made["triggers"]
    finally:
        drop_pg_schema(at_once)
        drop_pg_schema(steps)
