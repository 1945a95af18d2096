"""Find the area, name its files, read and write its config (SPEC 1, 2.2).

The client path uses ``find_area`` and the path properties only; reading config.toml happens
in the server and in ``init``.
"""

from __future__ import annotations

import os
from stat import S_ISREG

from .errors import Refused

DOT_DIR = ".dbtool"
HOSTS_DIR = "hosts"  # front-ends over a database server, one folder per host (see Area.run_dir)
SHARED_MARKER = "shared"  # .dbtool/shared: the area's data is on a database server (see Area.shared)
SHARED_TEXT = (
    "This area's data is in PostgreSQL (db.url in config.toml). Each host runs a front-end of its own,\n"
    "which keeps its server.json, locks and logs in hosts/<host>/.\n"
)

# Columns of the runs table that a key may not shadow (reference A.1, plus our own columns).
RESERVED_KEY_NAMES = frozenset(
    [
        "id",
        "runname",
        "contour",
        "state",
        "status",
        "owner",
        "event_time",
        "comment",
        "fail_count",
        "pass_count",
        "last_update",
        "locked_by",
        "locked_at",
        "deleted_at",
        "target",
    ]
)


class Area:
    """An area directory and the files dbtool keeps in its ``.dbtool/``."""

    __slots__ = ("dir", "root")

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.dir = os.path.join(self.root, DOT_DIR)

    def path(self, *parts: str) -> str:
        return os.path.join(self.dir, *parts)

    @property
    def db_path(self) -> str:
        return self.path("dbtool.db")

    @property
    def shared(self) -> bool:
        """Whether the area's data lives on a database server (PostgreSQL), where every host runs a
        front-end of its own: ``$DBTOOL_DB_URL`` is set, or init/migrate wrote ``.dbtool/shared``
        (one stat, so the client's path needs no config.toml)."""
        return bool(os.environ.get("DBTOOL_DB_URL")) or os.path.exists(self.path(SHARED_MARKER))

    @property
    def run_dir(self) -> str:
        """Where this area's server keeps its record, locks and logs: ``.dbtool/`` itself, or for a
        shared area this host's folder, ``.dbtool/hosts/<host>/`` (``$DBTOOL_HOSTNAME`` honoured; with
        ``$DBTOOL_DB_URL``, ``<host>@<crc of the URL>``, so that each database has front-ends of its own)."""
        override = os.environ.get("DBTOOL_DB_URL")
        if override:  # a front-end of that database only: its folder is named after the URL too
            import zlib

            return self.path(HOSTS_DIR, f"{host_part()}@{zlib.crc32(override.encode()):08x}")
        if self.shared:
            return self.path(HOSTS_DIR, host_part())
        return self.dir

    @property
    def config_path(self) -> str:
        return self.path("config.toml")

    @property
    def server_json(self) -> str:
        return os.path.join(self.run_dir, "server.json")

    @property
    def server_lock(self) -> str:
        return os.path.join(self.run_dir, "server.lock")

    @property
    def start_lock(self) -> str:
        return os.path.join(self.run_dir, "start.lock")

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.run_dir, "logs")

    def exists(self) -> bool:
        return os.path.isfile(self.config_path)

    def probe(self) -> bool:
        """Whether this is an area (it has ``.dbtool/config.toml``); Refused when it is one, or may
        be one, that this user cannot read (so that a permission problem is not taken for "no area")."""
        try:
            found = os.stat(self.config_path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except PermissionError:
            blocked = self.dir if os.path.lexists(self.dir) else self.root
            raise Refused(
                f"{self.root} may be a dbtool area, but this user cannot read {blocked} (permission denied); "
                "ask its owner for access (an area shared with a group needs server.share_group = true)"
            ) from None
        return S_ISREG(found.st_mode)

    def __repr__(self) -> str:
        return f"Area({self.root!r})"


def host_part() -> str:
    """This host as a file name: dbtool's name for it ($DBTOOL_HOSTNAME, else the system's), with
    anything but ASCII letters, digits, '.', '_' and '-' written '_' and no leading dot."""
    import _socket  # (the C module: ``socket`` costs milliseconds to import)

    name = os.environ.get("DBTOOL_HOSTNAME") or _socket.gethostname()
    name = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "_" for c in name)
    return name.lstrip(".")[:64] or "host"


def find_area(explicit: str | None = None, cwd: str | None = None) -> Area:
    """The area from ``--area`` (or ``--project``, which the CLI turns into it), else the project
    ``$DBTOOL_PROJECT`` names (core/projects.py), else ``$DBTOOL_AREA``, else the nearest ancestor
    holding ``.dbtool/``."""
    if not explicit and os.environ.get("DBTOOL_PROJECT"):
        from .projects import area_of

        explicit = area_of(os.environ["DBTOOL_PROJECT"], "$DBTOOL_PROJECT")
    given = explicit or os.environ.get("DBTOOL_AREA")
    if given:
        area = Area(given)
        if not area.probe():
            raise Refused(
                f"{area.root} is not a dbtool area (no {DOT_DIR}/config.toml); "
                f"create it with `dbtool init {given} --keys K1,K2`"
            )
        return area
    start = os.path.abspath(cwd or os.getcwd())
    here = start
    while True:
        if Area(here).probe():
            return Area(here)
        parent = os.path.dirname(here)
        if parent == here:
            raise Refused(
                f"no dbtool area at or above {start}; create one with `dbtool init --keys K1,K2`, "
                "or pass --area PATH (or set DBTOOL_AREA)"
            )
        here = parent


# --------------------------------------------------------------------------------------------
# config.toml

DEFAULT_CONFIG: dict[str, dict] = {
    "area": {"keys": []},
    "server": {
        "bind": "127.0.0.1",
        "advertise": "",
        "tls": "auto",
        "port": 0,
        "idle_timeout": 300.0,
        "start_on_read": True,
        "share_group": False,
        "max_connections": 512,
        "max_pending": 64,
        "handshake_timeout": 5.0,
        "max_queue": 10_000,
        "max_subscribers": 64,
        "watch_queue": 10_000,
        "watch_stall_timeout": 30.0,
        "connection_idle_timeout": 600.0,
        "dead_peer_timeout": 60.0,
        "log_max_bytes": 16 * 1024 * 1024,
    },
    "db": {
        "synchronous": "FULL",
        "journal_mode": "auto",
        "url": "",
        "read_only": False,
        "max_size_mb": 0,
        "check_on_start": "auto",
    },
    "tests": {"deadtime": 7200, "dead_check_interval": 30.0},
}

# What each setting must be: (kind, lowest value or the allowed words). A value of another kind is
# refused when config.toml is read, naming the setting, instead of failing somewhere later.
SETTINGS: dict[tuple[str, str], tuple[str, object]] = {
    ("server", "bind"): ("text", None),
    ("server", "advertise"): ("text", None),
    ("server", "tls"): ("word", ("auto", "always")),
    ("server", "port"): ("port", None),
    ("server", "idle_timeout"): ("seconds", 0),
    ("server", "start_on_read"): ("bool", None),
    ("server", "share_group"): ("bool", None),
    ("server", "max_connections"): ("count", 1),
    ("server", "max_queue"): ("count", 1),
    ("server", "max_subscribers"): ("count", 0),
    ("server", "watch_queue"): ("count", 1),
    ("server", "connection_idle_timeout"): ("seconds", 1),
    ("server", "max_pending"): ("count", 1),
    ("server", "handshake_timeout"): ("seconds", 0.1),
    ("server", "watch_stall_timeout"): ("seconds", 0.1),
    ("server", "dead_peer_timeout"): ("seconds", 0),
    ("server", "log_max_bytes"): ("count", 4096),
    ("db", "synchronous"): ("word", ("off", "normal", "full", "extra")),
    ("db", "journal_mode"): ("word", ("auto", "wal", "delete", "truncate", "persist")),
    ("db", "url"): ("text", None),
    ("db", "read_only"): ("bool", None),
    ("db", "max_size_mb"): ("seconds", 0),  # (a number, like seconds)
    ("db", "check_on_start"): ("word", ("auto", "always", "never")),
    ("tests", "deadtime"): ("seconds", 1),
    ("tests", "dead_check_interval"): ("seconds", 0.1),
}

_CONFIG_TEMPLATE = """\
# dbtool area configuration (created by `dbtool init`).

[area]
# The ordered target fields of this area; fixed at init.
keys = [{keys}]

[server]
# Address the server listens on. Use a host address (not 127.0.0.1), or 0.0.0.0 for all, for a
# compute farm; every connection still has to prove it holds the area's key.
bind = "127.0.0.1"
# Address server.json tells clients to connect to; "" = the bound address, or for 0.0.0.0 this
# host's address.
advertise = ""
# Connections off the loopback are always TLS (the server's own certificate, pinned in
# server.json); "always" makes connections over the loopback TLS too.
tls = "auto"
# 0 = any free port.
port = 0
# Seconds without requests after which the server stops by itself; 0 = never.
idle_timeout = 300
# true: a read with no server (answered directly) also starts one in the background, in an area you
# may write to, so that the next call is served; false: reads never start a server.
start_on_read = true
# true: make .dbtool/ and server.json readable by the directory's group.
share_group = false
# Limits: over them a client is told to retry (busy) or refused, never left hanging.
max_connections = 512
# Connections still proving the key: at most this many (past it the oldest is dropped), each for at
# most handshake_timeout seconds.
max_pending = 64
handshake_timeout = 5
max_queue = 10000
max_subscribers = 64
# Events queued for one watcher; one that falls further behind is told to resync.
watch_queue = 10000
# Seconds a watcher may go without reading before it is dropped (it resubscribes by itself).
watch_stall_timeout = 30
# Seconds after which a connection that sends nothing is closed (watchers excepted).
connection_idle_timeout = 600
# Seconds after which a peer whose host vanished (TCP keepalive, unacknowledged data) is dropped.
dead_peer_timeout = 60
# Size at which logs/server.log is rotated (server.log.1 ... .3 are kept).
log_max_bytes = 16777216

[db]
# SQLite synchronous level: FULL (default), NORMAL or OFF.
synchronous = "FULL"
# "auto" = WAL on local disks, a rollback journal (DELETE) on network filesystems.
journal_mode = "auto"
# "" = the area's own SQLite file (.dbtool/dbtool.db); postgresql://USER@HOST:PORT/DBNAME = a
# PostgreSQL database, served by a front-end on each host (see `dbtool init --db-url`).
url = "{url}"
# true: freeze the area; the server refuses every write.
read_only = false
# Cap on the database size in MB (0 = none); writes past it are refused.
max_size_mb = 0
# SQLite's quick_check when the server starts: "auto" = unless the database is exactly as the last
# clean stop left it (so after a crash, a restore or any outside change); "always"; "never".
check_on_start = "auto"

[tests]
# Seconds after which a RUNNING test that stopped reporting counts as dead.
deadtime = 7200
# Seconds between the server's checks for dead jobs (at least once per heartbeat period of a live
# `dbtool exec` job, whose test is dead after three missed heartbeats).
dead_check_interval = 30
"""


def validate_keys(keys: list[str]) -> list[str]:
    """Check key names: identifiers, unique, not a reserved runs column (reference A.1)."""
    import re

    if not keys:
        raise Refused("an area needs at least one key, e.g. --keys RELEASE,PLATFORM")
    seen: set[str] = set()
    for key in keys:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise Refused(f"key {key!r} is not a valid name: use letters, digits and '_', not starting with a digit")
        if key.lower() in RESERVED_KEY_NAMES:
            raise Refused(f"key {key!r} clashes with a column of the runs table; choose another name")
        if key.lower() in seen:
            raise Refused(f"key {key!r} is given twice")
        seen.add(key.lower())
    return keys


def render_config(keys: list[str], url: str = "") -> str:
    import json

    return _CONFIG_TEMPLATE.format(keys=", ".join(f'"{k}"' for k in keys), url=json.dumps(url)[1:-1])


def load_config(area: Area) -> dict:
    """config.toml merged over the defaults; a broken file is refused with its path and reason."""
    import tomllib

    try:
        with open(area.config_path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise Refused(f"cannot read {area.config_path}: {err}") from None
    merged = {section: dict(values) for section, values in DEFAULT_CONFIG.items()}
    for section, values in data.items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        elif section in DEFAULT_CONFIG:
            raise Refused(f"{area.config_path}: {section} must be a table ([{section}]), not {_toml(values)}")
    if "notify" in data:  # [[notify]]: the notifications the server runs (rules/notify.py)
        from .rules.notify import NotifyError, check_entries

        try:
            merged["notify"] = check_entries(data["notify"], area.config_path)
        except NotifyError as err:
            raise Refused(str(err)) from None
    for (section, name), rule in SETTINGS.items():
        if name in merged[section]:
            merged[section][name] = _checked(area.config_path, section, name, merged[section][name], *rule)
    override = os.environ.get("DBTOOL_DB_URL")
    if override:  # for this command only: never written to config.toml
        merged["db"]["url"] = override
    if merged["db"].get("url"):
        check_db_url(merged["db"]["url"], "$DBTOOL_DB_URL" if override else f"db.url in {area.config_path}")
    merged["db"]["url_from"] = "$DBTOOL_DB_URL" if override else f"db.url in {area.config_path}"
    merged["area"]["root"] = area.root
    return merged


def check_db_url(url: str, where: str) -> None:
    """Refuse a database URL that is not PostgreSQL's (naming it without a password)."""
    scheme, sep, _rest = url.partition("://")
    if sep and scheme.split("+")[0] in ("postgresql", "postgres"):
        return
    shown = url if "@" not in url else f"{scheme}://..."
    raise Refused(
        f"{where} = {shown!r} is not a PostgreSQL URL; dbtool keeps an area in its own SQLite file "
        '(db.url = "") or in PostgreSQL (postgresql://USER@HOST:PORT/DBNAME)'
    )


def unknown_settings(data: dict) -> list[str]:
    """The dotted names in a parsed config.toml that are not settings of SETTINGS (``area.keys`` and
    ``[[notify]]`` are known too)."""
    found = []
    for section, values in data.items():
        if section == "notify":
            continue
        if not isinstance(values, dict):
            if section not in DEFAULT_CONFIG:
                found.append(section)
            continue
        for name in values:
            if (section, name) not in SETTINGS and (section, name) != ("area", "keys"):
                found.append(f"{section}.{name}")
    return found


def known_settings() -> list[str]:
    """Every setting's dotted name, in the order of SETTINGS."""
    return [f"{section}.{name}" for section, name in SETTINGS]


def check_setting(where: str, section: str, name: str, value: object) -> object:
    """``value`` of the setting ``section.name`` as its kind wants it (a whole number as int), else
    Refused naming it and what it must be; an unknown setting is refused naming the known ones."""
    rule = SETTINGS.get((section, name))
    if rule is None:
        raise Refused(f"{section}.{name} is not a setting; the settings are: {', '.join(known_settings())}")
    return _checked(where, section, name, value, *rule)


def _checked(where: str, section: str, name: str, value: object, kind: str, rule: object) -> object:
    """``value`` of the setting ``section.name`` if it is of its kind, else Refused naming it."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value  # (not nan)
    if kind == "bool":
        good, want = isinstance(value, bool), "true or false"
    elif kind == "text":
        good, want = isinstance(value, str), "a string"
    elif kind == "word":
        good = isinstance(value, str) and value.lower() in rule
        want = "one of " + ", ".join(f'"{w}"' for w in rule)
    elif kind == "port":
        good, want = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 65535, "a port, 0-65535"
    elif kind == "count":
        good = number and float(value).is_integer() and value >= rule
        want = f"a whole number, at least {rule}"
        value = int(value) if good else value
    else:  # seconds: any number from the lowest value on
        good, want = number and value >= rule and value != float("inf"), f"a number, at least {rule}"
    if not good:
        default = DEFAULT_CONFIG[section].get(name)
        raise Refused(
            f"{where}: {section}.{name} = {_toml(value)} is not {want}; correct it (the default is {_toml(default)})"
        )
    return value


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        import json

        return json.dumps(value)
    return str(value)


def set_setting(area: Area, section: str, name: str, value: str) -> None:
    """Set ``section.name`` in config.toml to a string, keeping every other line and comment (the
    file is replaced atomically)."""
    import json

    literal = f"{name} = {json.dumps(value)}"
    with open(area.config_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    current, header, placed = None, None, False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            current = stripped[1:-1].strip()
            if current == section:
                header = i
        elif current == section and stripped.split("=", 1)[0].strip() == name and "=" in stripped:
            lines[i], placed = literal, True
            break
    if not placed:
        if header is None:
            lines += ["", f"[{section}]", literal]
        else:
            lines.insert(header + 1, literal)
    tmp = f"{area.config_path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, os.stat(area.config_path).st_mode & 0o777)
    os.replace(tmp, area.config_path)


def mark_shared(area_dir: str, share_group: bool = False) -> None:
    """Record in an area's .dbtool/ that its data is on a database server (see ``Area.shared``)."""
    ensure_private_dir(os.path.join(area_dir, HOSTS_DIR), share_group)
    path = os.path.join(area_dir, SHARED_MARKER)
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(SHARED_TEXT)


def ensure_private_dir(path: str, share_group: bool = False) -> None:
    """Create a directory with mode 0700 (0750 when the group shares the area)."""
    mode = 0o750 if share_group else 0o700
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)


def remove_file(path: str) -> None:
    """Remove a file if it exists (server.json and other files a dead process may leave)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
