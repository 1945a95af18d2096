"""B13 (init): impossible paths and too many keys are refused with one line (exit 4) before anything
is created; init builds .dbtool aside and renames it into place, so nothing is ever half-made."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import Area, dbtool_argv, kill_area


def init(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(dbtool_argv("init", *args), capture_output=True, text=True, timeout=120)


def refused(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 4, proc
    assert proc.stderr.startswith("dbtool: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert what in proc.stderr, proc.stderr
    assert "internal error" not in proc.stderr


def leftovers(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.startswith(".dbtool"))


def test_a_parent_that_cannot_be_created_is_refused():
    refused(
        init("/proc/dbtool-no-such-dir/area", "--keys", "A"), "cannot create the directory /proc/dbtool-no-such-dir"
    )


def test_a_file_is_not_an_area(make_area, tmp_path):
    area = make_area()
    config = area.dir / "config.toml"
    before = config.read_text()
    refused(init(str(config), "--keys", "A"), f"{config} is not a directory")
    assert config.read_text() == before
    plain_file = tmp_path / "plain"
    plain_file.write_text("x")
    refused(init(str(plain_file), "--keys", "A"), "is not a directory")


def test_a_dot_dbtool_that_is_not_an_area_is_left_alone(tmp_path):
    root = tmp_path / "half"
    (root / ".dbtool").mkdir(parents=True)
    (root / ".dbtool" / "mine.txt").write_text("keep me")
    refused(init(str(root), "--keys", "A"), "exists but is not a dbtool area")
    assert os.listdir(root / ".dbtool") == ["mine.txt"]
    (root / ".dbtool" / "mine.txt").unlink()  # an empty one is simply used
    assert init(str(root), "--keys", "A").returncode == 0
    assert (root / ".dbtool" / "config.toml").exists()


def test_too_many_keys_are_refused_before_anything_is_made(tmp_path):
    root = tmp_path / "new" / "x13"
    keys = ",".join(f"K{i}" for i in range(3000))
    refused(init(str(root), "--keys", keys), "--keys takes at most 64 values, not 3000")
    assert not (tmp_path / "new").exists()
    assert "at most 64" in " ".join(
        subprocess.run(dbtool_argv("init", "--help"), capture_output=True, text=True).stdout.split()
    )


def test_sixty_four_keys_make_an_area(tmp_path):
    root = tmp_path / "wide"
    keys = [f"K{i}" for i in range(64)]
    made = init(str(root), "--keys", ",".join(keys))
    assert made.returncode == 0, made.stderr
    area = Area(root)
    try:
        assert area.ok("get-keys", "--json").json == keys
        target = "/".join(str(i) for i in range(64))
        assert area.ok("register-run", "--target", target, "--runname", "r").out == "1\n"
    finally:
        kill_area(str(root))


def test_a_new_area_leaves_no_temporary_directory(tmp_path):
    root = tmp_path / "fresh"
    assert init(str(root), "--keys", "A,B").returncode == 0
    assert leftovers(root) == [".dbtool"]
    assert sorted(os.listdir(root / ".dbtool")) == ["config.toml", "dbtool.db", "logs"]
    assert oct((root / ".dbtool").stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize("same_keys", [True, False])
def test_racing_inits_make_one_area(tmp_path, same_keys):
    root = tmp_path / "race"
    keys = ["A,B"] * 8 if same_keys else ["A,B", "C"] * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda k: init(str(root), "--keys", k), keys))
    created = [r for r in results if r.stdout.startswith("created dbtool area")]
    assert len(created) == 1, results
    winner = keys[results.index(created[0])]
    for r, k in zip(results, keys, strict=True):
        if k == winner:
            assert r.returncode == 0, r
        else:
            refused(r, "is already a dbtool area")
    assert leftovers(root) == [".dbtool"]
    assert Area(root).ok("get-keys").out.split() == winner.split(",")


def test_a_database_url_that_is_not_postgresql_is_refused_rather_than_ignored(area):
    """A db.url (or $DBTOOL_DB_URL) of another kind of database is refused with the reason, its
    password never shown: never a write to the SQLite file while the user means another database."""
    url = "mysql://someone:secret@dbhost/results"
    result = area.run("set-var", "x", "1", env={"DBTOOL_DB_URL": url})
    assert result.code == 4 and "$DBTOOL_DB_URL" in result.err and "secret" not in result.err, result
    assert "is not a PostgreSQL URL" in result.err
    assert area.run("get-var", "x", env={"DBTOOL_DB_URL": url}).code == 4  # the direct read too
    config = area.dir / "config.toml"
    config.write_text(config.read_text().replace('url = ""', f'url = "{url}"', 1))
    result = area.run("set-var", "x", "1")
    assert result.code == 4 and "db.url in" in result.err and "secret" not in result.err, result
    assert not (area.dir / "server.json").exists()
