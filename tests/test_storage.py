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
        area.ok("server", "stop")
        log = server_log(area)
        assert "Traceback" not in log
        if "cannot write the request log" in log:  # (when the disk filled up under it, too)
            assert log.count("cannot write the request log") == 1 and "is written again" in log


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
