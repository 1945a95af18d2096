"""Storage faults (reliability report F2, F5-F8, F12): a full disk, WAL files deleted under a live
server, damaged databases, read-only areas, file-descriptor exhaustion, a bad config.toml.

Everything is real: a small tmpfs is a full disk, a read-only bind mount a read-only area, the
server a real process started as the CLI starts it. Mounts are removed and every server stopped
when a test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from conftest import TEST_IDLE_TIMEOUT, Area, Raw, dbtool_argv, kill_area, wait_for
from dbtool.core.errors import from_wire


def init_area(root: Path, keys: str = "K") -> Area:
    proc = subprocess.run(dbtool_argv("init", str(root), "--keys", keys), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    area = Area(root)
    area.set_config("server", "idle_timeout", str(TEST_IDLE_TIMEOUT))
    return area


def unmount(path: Path) -> None:
    for _ in range(50):  # a server that was just killed may hold the mount for a moment
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["umount", "-l", str(path)], check=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of ``size`` at ``path``, unmounted afterwards (its servers stopped first)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        for child in path.iterdir():
            kill_area(str(child))
        unmount(path)


def server_log(area: Area) -> str:
    return (area.dir / "logs" / "server.log").read_text(errors="replace")


def sql(area: Area, query: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{area.dir / 'dbtool.db'}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def start_directly(area: Area) -> subprocess.CompletedProcess:
    """The server as the client starts it (``python -m dbtool.core.server``), its stderr captured."""
    argv = [dbtool_argv()[0], "-m", "dbtool.core.server", "--area", str(area.root)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- F2: a full disk ------------------------------------------------------------------------------------------


def test_disk_full_refuses_writes_at_once_and_the_request_log_recovers(tmp_path):
    with tmpfs(tmp_path / "m", "3m") as mnt:
        area = init_area(mnt / "a")
        area.ok("register-run", "--target", "v1", "--runname", "r")
        pid = area.server_info["pid"]
        filler = mnt / "filler"
        filler.write_bytes(bytes(400_000))
        value = "x" * 20_000
        results = []
        for i in range(200):  # (about 35 fit)
            results.append(area.run("--timeout", "30", "set-var", f"k{i}", value))
            if results[-1].code != 0:
                break
        refused = results[-1]
        # a hang until --timeout would be exit 3 "no answer from the server"
        assert refused.code == 4 and "full" in refused.err, refused
        for i in range(3):  # the server is not wedged: each further write is refused at once too
            again = area.run("--timeout", "30", "set-var", f"more{i}", value)
            assert again.code == 4 and "full" in again.err, again
        acknowledged = [f"k{i}" for i, r in enumerate(results) if r.code == 0]
        assert len(acknowledged) >= 5
        assert area.ok("get-var", acknowledged[-1]).out == value + "\n"  # reads keep working
        assert area.server_info["pid"] == pid

        filler.unlink()  # space again: writes work, and the request log is written again by itself
        since = time.time()
        for i in range(3):
            area.ok("set-var", f"after{i}", "1")

        def logged_after() -> int:
            lines = area.ok("server", "log", "--cmd", "set-var", "--since", str(since), "--json").out.splitlines()
            return sum(1 for line in lines if json.loads(line)["ok"])

        assert wait_for(lambda: logged_after() >= 3, timeout=20)
        assert area.server_info["pid"] == pid
        assert area.ok("get-var", "after2").out == "1\n"
        stored = {row[0] for row in sql(area, "select var from metadat")}
        assert set(acknowledged) <= stored and not {f"more{i}" for i in range(3)} & stored
        assert sql(area, "pragma integrity_check") == [("ok",)]
        # (read before the stop, whose checkpoint may fill the disk again: a few KiB of schema decide it)
        log = server_log(area)
        if "cannot write the request log" in log:  # (when the disk filled up under it, too)
            assert log.count("cannot write the request log") == 1 and "is written again" in log
        area.ok("server", "stop")
        assert "Traceback" not in server_log(area)


# -- F8: a read-only area ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def read_only_view(source: Path, view: Path):
    """``view``: a read-only bind mount of ``source``, unmounted afterwards."""
    view.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(view)], check=True)
        yield view
    finally:
        kill_area(str(view))
        unmount(view)


def test_a_read_only_area_that_was_stopped_cleanly_can_be_read(area, tmp_path):
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "r").out.strip()
    area.ok("set-var", "v", "1")
    area.ok("server", "stop")
    assert area.wait_no_server()
    with read_only_view(area.root, tmp_path / "ro") as ro:
        view = Area(ro)
        assert view.ok("get-var", "v").out == "1\n"
        assert view.ok("get-runs", "--json").json[0]["id"] == int(run_id)
        assert not (view.dir / "dbtool.db-shm").exists()


def test_a_read_only_area_with_writes_still_in_its_wal_is_refused_clearly(area, tmp_path):
    area.ok("set-var", "v", "1")
    os.kill(area.server_info["pid"], signal.SIGKILL)  # the WAL keeps what no checkpoint moved yet
    assert area.wait_no_server()
    assert (area.dir / "dbtool.db-wal").stat().st_size > 0
    (area.dir / "dbtool.db-shm").unlink()  # (SQLite reads a WAL through an existing -shm even when read-only)
    with read_only_view(area.root, tmp_path / "ro") as ro:
        r = Area(ro).run("get-var", "v")
        assert r.code == 4, r
        assert "not stopped cleanly" in r.err and r.err.startswith("dbtool: error: ") and r.err.count("\n") == 1
    assert area.ok("get-var", "v").out == "1\n"  # where it is writable, nothing is lost


def test_a_database_the_server_cannot_write_is_served_read_only(area):
    area.ok("set-var", "v", "1")
    area.ok("server", "stop")
    assert area.wait_no_server()
    db = area.dir / "dbtool.db"
    subprocess.run(["chattr", "+i", str(db)], check=True)  # not even root may write it
    try:
        r = area.run("set-var", "w", "2")
        assert r.code == 4 and "read-only" in r.err, r
        assert area.ok("get-var", "v").out == "1\n"
        status = area.ok("server", "status", "--json").json
        assert status["read_only"] is True
        with Raw(area) as raw:  # the read went through that server
            assert raw.request("get-var", {"var": "v"})["result"] in ("1", 1)
    finally:
        kill_area(str(area.root))
        subprocess.run(["chattr", "-i", str(db)], check=True)


# -- config.toml values, an area this user cannot read ---------------------------------------------------


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("server", "max_connections", '"x"'),
        ("server", "idle_timeout", "-5"),
        ("tests", "deadtime", '"abc"'),
        ("db", "read_only", '"yes"'),
        ("server", "port", "70000"),
    ],
)
def test_a_bad_setting_is_one_clean_error_naming_it(area, section, name, value):
    area.set_config(section, name, value)
    key = f"{section}.{name} = {value}"
    direct = start_directly(area)
    assert direct.returncode == 4, direct
    assert last_line(direct.stderr).startswith("dbtool: error: ") and key in direct.stderr, direct.stderr
    assert "Traceback" not in direct.stderr
    foreground = area.run("server", "start", "--foreground")
    assert foreground.code == 4 and foreground.err.count("\n") == 1 and key in foreground.err, foreground
    read = area.run("get-var", "x")
    assert read.code == 4 and key in read.err and read.err.count("\n") == 1, read
    write = area.run("set-var", "x", "1")
    assert write.code != 0 and key in write.err, write
    assert key in last_line(server_log(area))
    assert key in json.loads((area.dir / "logs" / "start-failure.json").read_text())["message"]
    area.set_config(section, name, "1" if name != "read_only" else "false")
    area.ok("set-var", "x", "1")  # a server that starts removes the record of the failed start
    assert not (area.dir / "logs" / "start-failure.json").exists()


def test_an_area_this_user_cannot_read_is_not_called_missing(tmp_path):
    import shutil
    import tempfile

    from dbtool.core.area import find_area
    from dbtool.core.errors import Refused

    shared = Path(tempfile.mkdtemp(prefix="dbtool-perm-", dir="/tmp"))  # traversable by anyone
    try:
        shared.chmod(0o755)
        inside = init_area(shared / "open")  # its .dbtool/ is 0700: only its owner reads it
        (shared / "closed").mkdir(mode=0o700)
        closed = init_area(shared / "closed" / "a")
        messages = {}
        for name, root in (("dot", inside.root), ("root", closed.root)):
            read, write = os.pipe()
            child = os.fork()
            if child == 0:  # pragma: no cover - the child, as user nobody
                try:
                    os.close(read)
                    os.setgid(65534)
                    os.setuid(65534)
                    try:
                        find_area(str(root))
                        os.write(write, b"found")
                    except Refused as err:
                        os.write(write, err.message.encode())
                finally:
                    os._exit(0)
            os.close(write)
            with os.fdopen(read, "rb") as f:
                messages[name] = f.read().decode()
            os.waitpid(child, 0)
        assert "permission denied" in messages["dot"] and str(inside.dir) in messages["dot"], messages
        assert "permission denied" in messages["root"] and str(closed.root) in messages["root"], messages
        assert all("not a dbtool area" not in m for m in messages.values())
        assert find_area(str(inside.root)).root == str(inside.root)  # its owner still finds it
    finally:
        for child in shared.iterdir():
            kill_area(str(child))
        kill_area(str(shared / "closed" / "a"))
        shutil.rmtree(shared)


# -- F6: -wal and -shm deleted under a live server ---------------------------------------------------------


def raw_writes(area: Area, prefix: str, count: int) -> list[str]:
    """``count`` set-var requests on one connection; the names of those acknowledged."""
    acknowledged = []
    with Raw(area) as raw:
        for i in range(count):
            answer = raw.request("set-var", {"var": f"{prefix}{i}", "value": str(i)}, idem=f"{prefix}-{i}")
            if answer.get("ok"):
                acknowledged.append(f"{prefix}{i}")
    return acknowledged


def test_wal_and_shm_deleted_under_a_live_server_lose_no_acknowledged_write(area):
    area.ok("set-var", "warm", "1")
    pid = area.server_info["pid"]
    assert len(raw_writes(area, "pre", 50)) == 50
    (area.dir / "dbtool.db-wal").unlink()  # a cleanup script, an rsync
    (area.dir / "dbtool.db-shm").unlink()
    read = area.run("get-var", "pre7")  # through the server: answered, or refused with the reason; never a bug
    assert read.code == 0 and read.out == "7\n", read
    acknowledged = raw_writes(area, "post", 100)
    assert len(acknowledged) == 100
    assert area.ok("get-var", "post99").out == "99\n"
    assert area.server_info["pid"] == pid
    os.kill(pid, signal.SIGKILL)
    assert area.wait_no_server()
    stored = {row[0] for row in sql(area, "select var from metadat where var like 'p%'")}
    lost = [name for name in [f"pre{i}" for i in range(50)] + acknowledged if name not in stored]
    assert lost == [], f"{len(lost)} acknowledged writes lost: {lost[:10]}"
    log = server_log(area)
    assert "dbtool.db-wal and dbtool.db-shm were deleted or replaced under the server" in log
    assert "recovered:" in log
    assert area.ok("get-var", "post42").out == "42\n"  # and the next server reads and writes as ever
    area.ok("set-var", "after", "1")
    assert sql(area, "pragma integrity_check") == [("ok",)]


def test_reads_meeting_lost_wal_files_recover_them_without_any_write(area):
    area.ok("set-var", "v", "1")
    with Raw(area) as raw:  # enough readers at once that fresh connections are opened after the rm
        (area.dir / "dbtool.db-wal").unlink()
        (area.dir / "dbtool.db-shm").unlink()
        answers = [raw.request("get-var", {"var": "v"}) for _ in range(20)]
    assert all(a.get("ok") or a["error"]["code"] == "storage" for a in answers), answers
    procs = [area.popen("get-var", "v") for _ in range(8)]
    outcomes = [(p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert all(code == 0 and out == "1\n" for code, out, _ in outcomes), outcomes
    assert wait_for(lambda: "recovered:" in server_log(area), timeout=30)
    assert (area.dir / "dbtool.db-shm").exists()


# -- F7: a damaged database; F12: the reason a server gives when it cannot start ---------------------------


def fill_tests(area: Area, count: int = 20_000) -> None:
    """Rows enough for a multi-megabyte file, written straight into SQLite (the server is stopped)."""
    con = sqlite3.connect(area.dir / "dbtool.db", isolation_level=None)
    try:
        con.execute("begin")
        con.executemany(
            "insert into tests (run_id, testname, item_path, state, status, event_time, last_update)"
            " values (1, ?, '', 'COMPLETED', 'PASS', 1, 1)",
            ((f"t{i}",) for i in range(count)),
        )
        con.execute("commit")
        con.execute("pragma wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def scribble(path: Path, offset: int, size: int = 4096) -> None:
    """Overwrite ``size`` bytes at ``offset`` with noise (a bad disk, a stray write)."""
    import random

    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, random.Random(1).randbytes(size), offset)
    finally:
        os.close(fd)


def assert_refused_start(area: Area, *words: str) -> str:
    """The server will not start: exit 4 and one clean last line, in its stderr and in server.log
    when a client started it; nothing written."""
    direct = start_directly(area)
    line = last_line(direct.stderr)
    assert direct.returncode == 4, direct
    assert line.startswith("dbtool: error: ") and all(w in line for w in words), direct.stderr
    assert "Traceback" not in direct.stderr and "sqlalche.me" not in direct.stderr
    write = area.run("--timeout", "30", "set-var", "x", "1")
    assert write.code != 0 and area.server_pids() == []
    logged = last_line(server_log(area))
    assert logged.startswith("dbtool: error: ") and all(w in logged for w in words), logged
    assert "sqlalche.me" not in server_log(area)
    failure = json.loads((area.dir / "logs" / "start-failure.json").read_text())  # for the client
    assert failure["message"] == logged.removeprefix("dbtool: error: ") and failure["code"] in ("storage", "refused")
    assert from_wire(failure).exit_code == 4 and failure["pid"] > 0
    return line


@pytest.mark.parametrize("where", ["middle", "page 2"])
def test_a_damaged_database_is_not_served(area, where):
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "r").out.strip()
    area.ok("server", "stop")
    assert area.wait_no_server()
    fill_tests(area)
    db = area.dir / "dbtool.db"
    scribble(db, db.stat().st_size // 2 if where == "middle" else 4096)  # page 2: a table's root
    line = assert_refused_start(area, f"the database {db} is damaged: ", "restore it from a backup")
    print(f"\n{where}: {line}")
    assert ("x",) not in sql_safe(area, "select var from metadat")
    read = area.run("get-tests-for-run", "--run-id", run_id)  # direct: the reason, exit 4 (never 5)
    if where == "middle":
        assert read.code == 4 and "damaged" in read.err and "malformed" in read.err, read


def sql_safe(area: Area, query: str) -> list[tuple]:
    try:
        return sql(area, query)
    except sqlite3.DatabaseError:
        return []


@pytest.mark.parametrize("damage", ["truncated to 100 bytes", "truncated to half", "header zeroed"])
def test_a_server_that_cannot_open_its_database_says_why_in_its_last_line(area, damage):
    area.ok("set-var", "v", "1")
    area.ok("server", "stop")
    assert area.wait_no_server()
    fill_tests(area, 2000)
    db = area.dir / "dbtool.db"
    if damage == "header zeroed":
        with open(db, "r+b") as f:
            f.write(bytes(100))
    else:
        os.truncate(db, 100 if "100" in damage else db.stat().st_size // 2)
    assert_refused_start(area, "is damaged: ")
    read = area.run("get-var", "v")
    assert read.code == 4 and read.err.startswith("dbtool: error: ") and read.err.count("\n") == 1, read


def test_a_server_that_cannot_write_its_area_says_why_in_its_last_line(area):
    area.ok("set-var", "v", "1")
    area.ok("server", "stop")
    assert area.wait_no_server()
    subprocess.run(["chattr", "+i", str(area.dir)], check=True)  # .dbtool/ not writable, even for root
    try:
        direct = start_directly(area)  # the server itself says why, in one clean last line
        assert direct.returncode == 4 and last_line(direct.stderr).startswith("dbtool: error: "), direct
        assert "not writable" in last_line(direct.stderr) and "Traceback" not in direct.stderr
        write = area.run("--timeout", "30", "set-var", "x", "1")  # a client sees it before starting one
        assert write.code == 4 and "not writable" in write.err and write.err.count("\n") == 1, write
        assert area.server_pids() == []
        assert area.ok("get-var", "v").out == "1\n"  # reads need no server
    finally:
        subprocess.run(["chattr", "-i", str(area.dir)], check=True)


@pytest.mark.parametrize("first", ["a read", "a write"])
def test_damage_met_at_run_time_is_reported_and_stops_writes(area, first):
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "r").out.strip()
    area.ok("server", "stop")
    assert area.wait_no_server()
    fill_tests(area)
    area.ok("set-var", "before", "1")  # a server on a sound database
    pid = area.server_info["pid"]
    db = area.dir / "dbtool.db"
    scribble(db, db.stat().st_size // 2)
    if first == "a write":  # one that goes through every test of the run
        met = area.run("delete-run", "--run-id", run_id)
    else:
        met = area.run("get-tests-for-run", "--run-id", run_id)
    # SQLite's words for the damage ("malformed"), or quick_check's findings (where the scribble lands decides)
    assert met.code == 4 and "is damaged: " in met.err and "restore it from a backup" in met.err, met
    assert "Traceback" not in server_log(area)  # a storage failure, not a bug
    write = area.run("set-var", "after", "1")
    assert write.code == 4 and "is damaged" in write.err and "restore it from a backup" in write.err, write
    assert area.ok("get-var", "before").out == "1\n"  # what can still be read is
    status = area.ok("server", "status", "--json").json
    assert status["pid"] == pid and "damaged" in status["writes_refused"]
    assert "quick_check" in server_log(area)


def test_no_server_starts_on_a_read_only_area_and_it_says_why(area, tmp_path):
    area.ok("set-var", "v", "1")
    area.ok("server", "stop")
    assert area.wait_no_server()
    with read_only_view(area.root, tmp_path / "ro") as ro:
        # a server could not even write server.json there: one clean line, exit 4
        foreground = Area(ro).run("server", "start", "--foreground")
        assert foreground.code == 4, foreground
        assert foreground.err.startswith("dbtool: error: ") and "read-only filesystem" in foreground.err
        assert foreground.err.count("\n") == 1 and "Traceback" not in foreground.err
        direct = start_directly(Area(ro))
        assert direct.returncode == 4 and "read-only filesystem" in last_line(direct.stderr), direct


# -- F5: out of file descriptors; the server log's size ---------------------------------------------------


def low_fd_limit(limit: int):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_out_of_file_descriptors_the_log_stays_small_and_the_server_goes_on(area):
    """F5: under a batch node's small descriptor limit, connections are capped below it (those
    still in their handshake included), so a flood of connections never makes accept() fail, nor
    the log grow; the server goes on serving."""
    import socket

    area.ok("set-var", "warm", "1")
    area.ok("server", "stop")
    assert area.wait_no_server()
    started = subprocess.run(  # the client starts the server, which inherits the limit (a batch node's)
        dbtool_argv("--area", str(area.root), "set-var", "x", "1"),
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_fd_limit(64),
    )
    assert started.returncode == 0, started.stderr
    info = area.server_info
    assert "Max open files            64                   64" in Path(f"/proc/{info['pid']}/limits").read_text()
    assert "max_connections 14 (configured 512), max_pending 4, accept burst 6" in server_log(area)
    log_path = area.dir / "logs" / "server.log"
    before = log_path.stat().st_size
    held = []
    steady = Raw(area)  # a client connected before the flood
    try:
        for _ in range(200):  # far more connections than descriptors: the oldest unproven are dropped
            try:
                held.append(socket.create_connection((info["address"], info["port"]), timeout=0.2))
            except OSError:
                pass  # the listen queue is full for a moment
        time.sleep(3)  # asyncio would retry a failed accept every second, and log a traceback each time
        grown = log_path.stat().st_size - before
        assert grown < 8192, server_log(area)[-3000:]
        assert server_log(area).count("cannot accept connections") <= 2  # one line a minute, if any
        for i in range(20):  # meanwhile the server goes on serving the connections it has
            assert steady.request("set-var", {"var": f"during{i}", "value": "1"}, idem=f"during-{i}")["ok"]
        assert area.ok("get-var", "during19").out == "1\n"  # and new clients get through
    finally:
        steady.close()
        for s in held:
            s.close()
    assert area.server_info["pid"] == info["pid"]
    assert "socket.accept() out of system resource" not in server_log(area)  # asyncio's own report


def test_failed_accepts_are_reported_once_a_minute(caplog):
    """F5's last resort: should accept() fail anyway, asyncio's report (up to 100 a tick, each with
    a traceback) becomes one line a minute with a count."""
    import asyncio
    import logging

    from dbtool.core.server.resources import AcceptErrors

    handler = AcceptErrors(every=60.0)
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="dbtool.server"):
            for _ in range(1000):
                handler(loop, {"message": "socket.accept() out of system resource", "exception": OSError(24, "x")})
    finally:
        loop.close()
    lines = [r for r in caplog.records if "cannot accept connections" in r.getMessage()]
    assert len(lines) == 1 and "(1 time(s) since the last report)" in lines[0].getMessage()


def test_the_server_log_rotates_by_size_and_the_servers_output_follows(area):
    area.set_config("server", "log_max_bytes", "4096")
    area.set_config("db", "max_size_mb", "0.3")  # each refused write logs two warnings
    area.ok("set-var", "small", "1")
    pid = area.server_info["pid"]
    logs = area.dir / "logs"
    big = "x" * 100_000
    for i in range(200):
        area.run("set-var", f"big{i}", big)
        if (logs / "server.log.3").exists() and (logs / "server.log.1").stat().st_size > 0:
            break
    assert (logs / "server.log.3").exists() and not (logs / "server.log.4").exists()
    for name in ("server.log", "server.log.1", "server.log.2", "server.log.3"):
        assert (logs / name).stat().st_size < 4096 + 2048, name
    # the server's stdout and stderr point at the current server.log, not at a renamed one
    for fd in (1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == str(logs / "server.log")
    assert area.server_info["pid"] == pid
    area.ok("server", "stop")
    assert "request statistics at stop" in (logs / "server.log").read_text() + (logs / "server.log.1").read_text()
