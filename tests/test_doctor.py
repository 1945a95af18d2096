"""``dbtool doctor`` and ``dbtool config``: real areas, the CLI in a subprocess."""

from __future__ import annotations

import json
import socket

from conftest import pg_area_url, require_pg


def checks(result) -> dict[str, str]:
    """check name -> its line, from doctor's output."""
    found = {}
    for line in result.out.splitlines():
        _status, _, rest = line.partition(" ")
        name = rest.strip().split(":", 1)[0]
        found[name] = line
    return found


def test_a_healthy_area_passes_every_check(area):
    r = area.run("doctor")
    assert r.code == 0, r
    lines = checks(r)
    for name in ("area", "config", "server", "permissions", "filesystem", "integrity", "disk"):
        assert name in lines, r.out
        assert not lines[name].startswith("FAIL"), lines[name]
    assert area.server_pids() == [] and area.server_info is None  # never starts one
    records = area.ok("doctor", "--format", "json").json
    assert {c["check"] for c in records} >= {"config", "integrity"} and all(c["status"] != "FAIL" for c in records)


def test_doctor_sees_a_running_server_and_its_version(area):
    area.ok("set-var", "x", "1")
    r = area.run("doctor")
    assert r.code == 0, r
    assert checks(r)["server"].startswith("ok") and "protocol 2" in checks(r)["server"]


def test_an_unknown_config_key_fails_the_config_check(area):
    path = area.dir / "config.toml"
    path.write_text(path.read_text().replace("[server]\n", "[server]\nidle_timout = 5\n", 1))
    r = area.run("doctor")
    assert r.code == 1, r
    assert checks(r)["config"].startswith("FAIL config:") and "server.idle_timout" in checks(r)["config"]


def test_a_wrong_type_fails_the_config_check(area):
    area.set_config("server", "idle_timeout", '"soon"')
    r = area.run("doctor")
    assert r.code == 1 and "server.idle_timeout" in checks(r)["config"], r


def test_a_corrupted_database_fails_the_integrity_check(area):
    db = area.dir / "dbtool.db"
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for i in range(page * 1 + 100, min(len(data), page * 3)):  # trample pages after the first
        data[i] = 0xA5
    db.write_bytes(bytes(data))
    r = area.run("doctor")
    assert r.code == 1, r
    assert checks(r)["integrity"].startswith("FAIL integrity:"), r.out


def test_a_stale_server_record_fails_the_server_check(area):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    record = {"host": "127.0.0.1", "address": "127.0.0.1", "port": port, "pid": 999999, "key": "00" * 16}
    (area.dir / "server.json").write_text(json.dumps(record))
    (area.dir / "server.json").chmod(0o600)
    r = area.run("doctor")
    assert r.code == 1, r
    line = checks(r)["server"]
    assert line.startswith("FAIL server:") and "stale" in line and "remove" in line, line
    assert area.server_pids() == []


def test_an_unreachable_postgresql_url_fails(area):
    require_pg()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nobody listens there
    area.set_config("db", "url", json.dumps(f"postgresql://postgres@127.0.0.1:{port}/test"))
    r = area.run("doctor", timeout=60)
    assert r.code == 1, r
    assert checks(r)["postgresql"].startswith("FAIL postgresql:"), r.out


def test_a_reachable_postgresql_url_passes(area):
    require_pg()
    area.set_config("db", "url", json.dumps(pg_area_url("public")))
    r = area.run("doctor")
    assert checks(r)["postgresql"].startswith("ok postgresql:") or checks(r)["postgresql"].startswith("ok "), r.out


def test_private_files_open_to_others_fail_permissions(area):
    area.dir.chmod(0o777)
    r = area.run("doctor")
    assert r.code == 1 and checks(r)["permissions"].startswith("FAIL"), r


# -- config ------------------------------------------------------------------------------------------


def test_config_set_keeps_comments_and_is_read_back(area):
    before = (area.dir / "config.toml").read_text()
    area.ok("config", "set", "server.idle_timeout", "45")
    after = (area.dir / "config.toml").read_text()
    assert "idle_timeout = 45\n" in after
    assert [ln for ln in before.splitlines() if ln.startswith("#")] == [
        ln for ln in after.splitlines() if ln.startswith("#")
    ]
    assert area.ok("config", "get", "server.idle_timeout").out == "45\n"
    area.ok("config", "set", "server.start_on_read", "false")
    assert area.ok("config", "get", "server.start_on_read").out == "false\n"
    area.ok("get-runs")  # and the area still loads
    assert area.server_pids() == []


def test_config_refuses_unknown_keys_and_wrong_types(area):
    before = (area.dir / "config.toml").read_text()
    r = area.run("config", "set", "server.idle_timout", "5")
    assert r.code == 4 and "server.idle_timeout" in r.err, r  # the known keys named
    r = area.run("config", "set", "server.idle_timeout", "soon")
    assert r.code == 4 and "a number" in r.err, r
    r = area.run("config", "set", "db.journal_mode", "fast")
    assert r.code == 4 and '"wal"' in r.err, r
    r = area.run("config", "get", "nope")
    assert r.code == 4, r
    assert (area.dir / "config.toml").read_text() == before
    assert not [p for p in area.dir.iterdir() if p.name.startswith(".config-")]  # no temporary left


def test_config_list_marks_defaults(area):
    area.ok("config", "set", "server.max_queue", "99")
    lines = area.ok("config", "list").out.splitlines()
    assert "server.max_queue = 99" in lines
    assert "server.start_on_read = true" in lines  # set in the file init wrote
    (area.dir / "config.toml").write_text(
        "\n".join(ln for ln in (area.dir / "config.toml").read_text().splitlines() if not ln.startswith("max_pending"))
    )
    assert "server.max_pending = 64  (default)" in area.ok("config", "list").out.splitlines()
    records = area.ok("config", "list", "--json").json
    assert {"key": "server.max_pending", "value": 64, "default": True} in records


def test_config_set_with_a_server_running_says_restart(area):
    area.ok("set-var", "x", "1")
    r = area.ok("config", "set", "server.idle_timeout", "30")
    assert "restart" in r.err
