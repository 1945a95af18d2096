"""The command registry: one declaration per command, everything else derives from it.

The CLI (both the fast binder and the Typer app), the protocol validation in the server, the
read/write routing in the client, shell completions and man pages all read these declarations.
Adding an API command is one ``command(...)`` here plus one handler function.

This module is on the client path, so it imports nothing beyond the standard library's core.
"""

from __future__ import annotations

from .errors import BadRequest, Refused

# Command kinds.
READ = "read"  # pure query: a live server, else in-process on a read-only connection
WRITE = "write"  # changes the database: always through the server (auto-started)
SERVER = "server"  # answered by the server itself, never queued and never run without a server
LOCAL = "local"  # dbtool's own commands that run in the CLI process (init, server start, demo)

PARAM_TYPES = ("str", "int", "float", "bool", "list", "argv", "path")
INT64 = 2**63  # integers travel and are stored as signed 64-bit values


class Param:
    """One named parameter of a command.

    ``type``: ``str``, ``int``, ``float``, ``bool`` (a flag), ``list`` (comma-separated on the
    command line, a JSON array on the wire), ``argv`` (everything after ``--``) or ``path`` (a file
    name, made absolute on the command line so that the server reads it as the caller meant).

    Values are checked (``check_value``) wherever they enter: on the command line and on the wire.
    ``min``/``max`` bound a number (``max``: the number of values of a list); ``nonempty`` refuses
    ''; every float must be finite, every
    integer fit in 64 bits and every text be valid Unicode (a file name that is not UTF-8 travels
    with its stray bytes written ``\\xNN``). ``aliases`` are more spellings of the option.
    """

    __slots__ = (
        "aliases",
        "choices",
        "client_only",
        "default",
        "help",
        "max",
        "metavar",
        "min",
        "multiple",
        "name",
        "nonempty",
        "positional",
        "required",
        "type",
    )

    def __init__(
        self,
        name: str,
        type: str = "str",
        help: str = "",
        *,
        default: object = None,
        required: bool = False,
        positional: bool = False,
        multiple: bool = False,
        choices: tuple[str, ...] = (),
        metavar: str = "",
        client_only: bool = False,
        min: float | None = None,
        max: float | None = None,
        nonempty: bool = False,
        aliases: tuple[str, ...] = (),
    ) -> None:
        if type not in PARAM_TYPES:
            raise ValueError(f"parameter {name}: unknown type {type!r}")
        self.name = name
        self.type = "list" if multiple else type
        self.help = help
        self.default = False if type == "bool" and default is None else default
        self.required = required
        self.positional = positional
        self.multiple = multiple
        self.choices = choices
        self.client_only = client_only
        self.metavar = metavar or (name.upper() if positional else "TEXT" if multiple else _METAVARS[self.type])
        self.min = min
        self.max = max
        self.nonempty = nonempty
        self.aliases = aliases

    @property
    def option(self) -> str:
        """The long option that sets this parameter on the command line."""
        return "--" + self.name.replace("_", "-")

    @property
    def options(self) -> tuple[str, ...]:
        """Every spelling of the option: ``option`` first, then the aliases."""
        return (self.option, *self.aliases)

    def with_(self, **changes: object) -> Param:
        """A copy with some attributes changed (shared vocabulary, local variations)."""
        values = {slot: getattr(self, slot) for slot in self.__slots__}
        if self.multiple:
            values["type"] = "str"
        values.update(changes)
        name, type_ = values.pop("name"), values.pop("type")
        return Param(name, type_, **values)

    def from_text(self, text: str) -> object:
        """Convert one command-line word to this parameter's type; raise ValueError with a reason."""
        if self.type == "int":
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{self.label} expects an integer, got {text!r}") from None
        if self.type == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{self.label} expects a number, got {text!r}") from None
        if self.type == "list":
            return [part.strip() for part in text.split(",") if part.strip()]
        if self.type == "path":
            import os

            return os.path.abspath(os.path.expanduser(text)) if text else text
        if self.choices and text not in self.choices:
            raise ValueError(f"{self.label} must be one of {', '.join(self.choices)}; got {text!r}")
        return text

    @property
    def label(self) -> str:
        return self.metavar if self.positional else self.option

    def check_wire(self, value: object) -> object:
        """Validate (and lightly normalise) a value that arrived as JSON."""
        kind = self.type
        if value is None:
            return None
        if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
            return self.check_value(value)
        if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and not -INT64 <= value < INT64:
                raise Refused(f"{self.label} {value} is out of range")
            return self.check_value(float(value))
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind in ("str", "path") and isinstance(value, str):
            if self.choices and value not in self.choices:
                raise BadRequest(f"parameter {self.name} must be one of {', '.join(self.choices)}; got {value!r}")
            return self.check_value(value)
        if kind in ("list", "argv"):
            if isinstance(value, str):  # one value; only a comma-list parameter splits it
                value = self.from_text(value) if kind == "list" and not self.multiple else [value]
                return self.check_value(value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return self.check_value(value)
        raise BadRequest(f"parameter {self.name} expects {_WIRE_TYPES[kind]}, got {type(value).__name__}")

    def check_value(self, value: object) -> object:
        """Refuse (exit 4) a value of the right type that no command can use: out of range, not
        finite, empty where a name is needed, or text that is not valid Unicode. Returns it."""
        if isinstance(value, str):
            if not value:
                if self.nonempty:
                    raise Refused(f"{self.label} must not be empty{self._omit_hint()}")
            elif not value.isascii() and not _is_unicode(value):
                raise Refused(f"{self.label} is not valid UTF-8 text; {_UTF8_HINT}")
            return value
        if isinstance(value, list):
            if self.max is not None and len(value) > self.max:
                raise Refused(f"{self.label} {self.count_text}, not {len(value)}")
            for item in value:
                if not item.isascii() and not _is_unicode(item):
                    raise Refused(f"{self.label} is not valid UTF-8 text; {_UTF8_HINT}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value
        if isinstance(value, float) and value - value != 0.0:  # NaN or ±inf
            raise Refused(f"{self.label} must be a finite number, not {value!r}")
        if isinstance(value, int) and not -INT64 <= value < INT64:
            raise Refused(f"{self.label} {value} is out of range (64-bit integers only)")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise Refused(f"{self.label} must be {self.range_text}, not {value:g}")
        return value

    @property
    def count_text(self) -> str:
        """For a list: how many values it takes, in words ('' when unbounded)."""
        if self.type != "list" or self.max is None:
            return ""
        return f"can be given at most {self.max:g} times" if self.multiple else f"takes at most {self.max:g} values"

    @property
    def range_text(self) -> str:
        """The allowed range of a number in words ('' when unbounded; a list's ``max`` counts its values)."""
        if self.type == "list":
            return ""
        low, high = self.min, self.max
        if low is not None and high is not None:
            return f"between {low:g} and {high:g}"
        if low is not None:
            return "positive" if low > 0 and low < 1 else f"at least {low:g}"
        return f"at most {high:g}" if high is not None else ""

    def _omit_hint(self) -> str:
        if self.required or self.positional:
            return ""
        return f" (omit {self.label} to leave it unchanged)" if "unchanged" in self.help else f" (omit {self.label})"

    def wire_text(self, value: object) -> object:
        """A command-line value as it may travel: a file name that is not UTF-8 (the OS gives its
        stray bytes as surrogates) is written with each such byte as ``\\xNN``."""
        if self.type == "path" and isinstance(value, str) and not value.isascii() and not _is_unicode(value):
            return escape_bytes(value)
        return value


_UTF8_HINT = "dbtool stores text as UTF-8: convert it first (e.g. with iconv -f latin1 -t utf-8)"


def _is_unicode(text: str) -> bool:
    """Whether text encodes as UTF-8 (False for the lone surrogates of undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_bytes(text: str) -> str:
    """Text from the OS (argv, a file name) with every byte that was not UTF-8 written as ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_METAVARS = {"int": "N", "float": "X", "list": "A,B", "str": "TEXT", "bool": "", "argv": "CMD...", "path": "PATH"}
_WIRE_TYPES = {
    "path": "a string (a file name)",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list of strings",
    "argv": "a list of strings",
}


class Command:
    """One command: its names, class, parameters, help, and where its implementation lives.

    ``handler`` is ``"family.function"`` in ``dbtool.core.handlers`` for read/write commands,
    ``"function"`` of the server for server commands, and ``"module:function"`` in ``dbtool.cli``
    for local commands. Options (all keyword):

    * ``api`` — the Megatest spelling when it differs (``csv->test-data``); ``aliases`` — more names;
    * ``columns`` — the fields the human table shows (all fields when empty);
    * ``hidden`` — protocol-only, not a subcommand;
    * ``dead`` — a dead seed entry: the command is refused with this explanation, nothing runs;
    * ``driver`` — ``"module:function"`` in ``dbtool.cli`` that runs client-side around the
      request(s) (e.g. reading a file and sending it in chunks);
    * ``wire`` — for a local command, the server command its name runs when it arrives over the
      protocol (``kill-server`` → ``server-stop``);
    * ``bulk`` — a write whose work grows with the data (many rows): the server runs it off the
      event loop, in a transaction of its own.
    """

    __slots__ = (
        "_known",
        "aliases",
        "api",
        "bulk",
        "columns",
        "dead",
        "driver",
        "handler",
        "help",
        "hidden",
        "kind",
        "name",
        "params",
        "wire",
    )

    def __init__(
        self,
        name: str,
        kind: str,
        handler: str,
        help: str,
        params: tuple[Param, ...],
        *,
        api: str = "",
        aliases: tuple[str, ...] = (),
        columns: tuple[str, ...] = (),
        hidden: bool = False,
        dead: str = "",
        driver: str = "",
        wire: str = "",
        bulk: bool = False,
    ) -> None:
        self.name = name
        self.kind = kind
        self.handler = handler
        self.help = help
        self.params = params
        self.api = api or name
        self.aliases = aliases
        self.columns = columns
        self.hidden = hidden
        self.dead = dead
        self.driver = driver
        self.wire = wire
        self.bulk = bulk
        self._known: dict[str, Param] | None = None  # the wire parameters by name (built on first use)

    @property
    def summary(self) -> str:
        """The first sentence of the help: what the command does."""
        return self.help.split("\n", 1)[0]

    @property
    def wire_params(self) -> tuple[Param, ...]:
        """The parameters that travel in a request (client-only ones are consumed by the driver)."""
        return tuple(p for p in self.params if not p.client_only)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def bind_wire(self, params: object) -> dict:
        """Check parameters that arrived over the protocol; fill defaults; reject unknown names."""
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise BadRequest(f"{self.api}: params must be a JSON object")
        known = self._known
        if known is None:
            known = self._known = {p.name: p for p in self.wire_params}
        bound: dict = {}
        for key, value in params.items():
            p = known.get(key)
            if p is None:
                p = known.get(key.replace("-", "_")) if isinstance(key, str) else None
                if p is None:
                    raise BadRequest(f"{self.api}: unknown parameter {key!r}; it takes {_names(self.wire_params)}")
            bound[p.name] = p.check_wire(value)
        for p in known.values():
            if bound.get(p.name) is None:
                if p.required:
                    raise BadRequest(f"{self.api}: missing required parameter {p.name} ({p.label})")
                bound[p.name] = p.default
        return bound

    def check_cli(self, params: dict, travel: bool = True) -> dict:
        """Parameters bound from a command line, checked as the server checks them (Refused, exit 4)
        before anything is sent. File names that are not UTF-8 come back written as they travel,
        or, with ``travel=False`` (a local command opens them itself), unchanged."""
        checked = {}
        for name, value in params.items():
            p = self.param(name)
            if value is not None and p.type != "argv" and not (p.type == "path" and not travel):
                value = p.check_value(p.wire_text(value))
            checked[name] = value
        return checked


def _names(params: tuple[Param, ...]) -> str:
    return ", ".join(p.name for p in params) or "no parameters"


COMMANDS: dict[str, Command] = {}
_BY_ANY_NAME: dict[str, Command] = {}


def command(name: str, kind: str, handler: str, help: str, *params: Param, **options: object) -> Command:
    """Declare a command (module-level calls below build the registry)."""
    cmd = Command(name, kind, handler, help, params, **options)
    for spelling in dict.fromkeys((name, cmd.api, *cmd.aliases)):
        if spelling in _BY_ANY_NAME:
            raise ValueError(f"command name {spelling!r} declared twice")
        _BY_ANY_NAME[spelling] = cmd
    COMMANDS[name] = cmd
    return cmd


def lookup(name: str) -> Command | None:
    """Find a command by its CLI name, its Megatest API spelling, or an alias."""
    return _BY_ANY_NAME.get(name)


def cli_name(api: str) -> str:
    """SPEC 2.1's naming rule: ``->`` → ``-to-``, ``/`` and ``_`` → ``-``, ``!`` and ``?`` dropped."""
    return api.replace("->", "-to-").replace("/", "-").replace("_", "-").replace("!", "").replace("?", "")


# --------------------------------------------------------------------------------------------
# The shared vocabulary: the same concept has the same option everywhere (SPEC 2.1).

RUN_ID = Param("run_id", "int", "id of the run (printed by register-run, listed by get-runs)", required=True)
ANY_RUN_ID = RUN_ID.with_(required=False, help="id of the run (accepted for compatibility; the test id decides)")
TEST_RUN_ID = RUN_ID.with_(
    required=False, help="id of the test's run (optional: the test id decides; when given it must be the test's run)"
)
TEST_ID = Param("test_id", "int", "id of the test (printed by register-test, get-test-id)", required=True)
TESTNAME = Param("testname", "str", "name of the test", required=True, nonempty=True)
ITEM_PATH = Param("item_path", "str", "item path of an iterated test; '' (the default) is the toplevel", default="")
STATE = Param("state", "str", "new state, e.g. RUNNING, COMPLETED (omit to leave it unchanged)", nonempty=True)
STATUS = Param("status", "str", "new status, e.g. PASS, FAIL, n/a (omit to leave it unchanged)", nonempty=True)
COMMENT = Param("comment", "str", "comment to store with the change (omit to leave it unchanged)")
TARGET = Param("target", "str", "the run's key values joined by '/', e.g. v1.2/linux")
RUNNAME = Param("runname", "str", "name of the run", nonempty=True)
LIMIT = Param("limit", "int", "return at most N records", min=0)
OFFSET = Param("offset", "int", "skip the first N records", default=0, min=0)
PATTERNS = "('%' → case-insensitive LIKE, otherwise a case-sensitive glob with * and ?)"
TESTPATT = Param(
    "testpatt",
    "str",
    "comma list of test[/item] patterns: '%' makes a case-insensitive LIKE, otherwise * and ? glob; "
    "'name/' selects the toplevel only",
)
STATES = Param("states", "list", "only tests in these states (comma list)")
STATUSES = Param("statuses", "list", "only tests with these statuses (comma list)")
NOT_IN = Param("not_in", "bool", "select tests NOT in the given states/statuses")
INCLUDE_DELETED = Param("include_deleted", "bool", "also list soft-deleted records")
SINCE = Param("since", "int", "Unix time: only records changed after it", default=0, min=0)
VAR = Param("var", "str", "name of the variable", required=True, positional=True, metavar="NAME", nonempty=True)
VALUE = Param(
    "value",
    "str",
    "the value; a negative number is a value as it is (-3), other text that starts with '-' goes after '--' "
    "(NAME -- -x)",
    required=True,
    positional=True,
    metavar="VALUE",
)
DEADTIME = Param(
    "deadtime", "int", "seconds without progress after which a running test is dead (default: tests.deadtime)", min=0
)
RECORD = Param("record", "str", "the record as a JSON object of column: value", required=True)
IGNORED = "accepted for compatibility; ignored"

MAX_KEYS = 64  # an area's keys: each is a column of runs (and of every target), so keep it human
MAX_MATCHES = 16  # --match options of one query: each is a regular expression run on every row

TEST_COLUMNS = ("id", "testname", "item_path", "state", "status", "event_time", "host", "run_duration", "comment")
RUN_COLUMNS = ("id", "target", "runname", "state", "status", "owner", "event_time")


# --------------------------------------------------------------------------------------------
# dbtool's own commands (run in the CLI process).

command(
    "init",
    LOCAL,
    "local:init",
    "Create a dbtool area: PATH/.dbtool with config.toml and the database holding the full schema (an "
    "SQLite file in .dbtool/, or with --db-url a PostgreSQL database).\n\n"
    "Re-running with the same keys is a no-op; different keys are refused.",
    Param("path", "str", "directory of the area (default: the current directory)", positional=True, default="."),
    Param(
        "keys",
        "list",
        f"the area's ordered target fields, e.g. RELEASE,PLATFORM (at most {MAX_KEYS})",
        required=True,
        max=MAX_KEYS,
    ),
    Param(
        "db_url",
        "str",
        "keep the area's data in PostgreSQL (postgresql://USER@HOST:PORT/DBNAME) instead of its own SQLite "
        "file: the schema is created there, or checked when present (areas with the same keys may share one "
        "database); each host then runs a front-end of its own",
    ),
)
command(
    "migrate",
    LOCAL,
    "migrate:migrate",
    "Move an SQLite area into an empty PostgreSQL database: stop the area's server, copy every table "
    "(events, idempotency keys and metadata too) with ids kept, print each table's count in both, then "
    "switch config.toml's db.url to it. The SQLite file is left as it was.",
    Param("to", "str", "the PostgreSQL database: postgresql://USER@HOST:PORT/DBNAME (empty)", required=True),
)
SERVER_START_PARAMS = (
    Param("foreground", "bool", "run the server in this process instead of detaching it"),
    Param(
        "bind", "str", "address to listen on, or 0.0.0.0/:: for all (default: server.bind in config, else 127.0.0.1)"
    ),
    Param(
        "advertise",
        "str",
        "address server.json tells clients to connect to (default: server.advertise; for a wildcard bind, "
        "this host's address)",
    ),
    Param("port", "int", "TCP port (default: server.port in config, else any free port)", min=0, max=65535),
    Param("idle_timeout", "float", "stop after this many idle seconds; 0 = never (default: config, else 300)", min=0),
)
command(
    "server start",
    LOCAL,
    "local:server_start",
    "Start the area's server in the background and print its address; if one is already running, "
    "print where it is and exit 0 (hand-off).",
    *SERVER_START_PARAMS,
    wire="ping",
)
command(
    "server stop",
    LOCAL,
    "local:server_stop",
    "Stop the area's server gracefully: finish queued writes, commit, checkpoint, remove server.json.",
    wire="server-stop",
)
command(
    "server status",
    LOCAL,
    "local:server_status",
    "Show the running server: host, port, pid, uptime, version, requests served, queue depth. "
    "Exit 0 when it is alive, 3 when no server runs.",
    wire="server-status",
)
command(
    "server restart",
    LOCAL,
    "local:server_restart",
    "Stop the area's server (gracefully, or with SIGTERM when it speaks another protocol version) "
    "and start a new one; prints its address.",
    *SERVER_START_PARAMS[1:],
)
command(
    "server stats",
    LOCAL,
    "local:server_stats",
    "Per-command request statistics of the running server (count, errors, mean, p50, p95, p99, max "
    "latency in ms), with queue depth, connections and uptime.",
    wire="server-stats",
)
command(
    "server log",
    LOCAL,
    "local:server_log",
    "Show the request log (.dbtool/logs/requests.jsonl, rotated by size): one line per request with "
    "its id, command, client, duration, outcome and fields, and its log entries when it failed, logged a "
    "warning or was traced; --request ID also says how many entries its log had (REQ/LOGLEN) and the fields "
    "it ended with (REQ/DATA). Works without a server.",
    Param("follow", "bool", "keep printing requests as they are logged (until interrupted)"),
    Param("request", "str", "only the request with this id (printed in error messages)"),
    Param("cmd", "str", "only requests of this command (either spelling, e.g. csv-to-test-data)"),
    Param("since", "str", "only requests after this time: Unix seconds, an ISO time, or an age like 10m"),
    Param("limit", "int", "print only the last N matching requests (not with --follow)", min=0),
    Param(
        "field",
        "str",
        "only requests that carried this field (--field NAME=VALUE on their command line): NAME=VALUE for that "
        "value, as it was typed, or NAME for any value (repeatable: all must match)",
        multiple=True,
        max=32,
        metavar="NAME[=VALUE]",
    ),
)
command(
    "watch",
    LOCAL,
    "local:watch",
    "Print change events as they happen (one JSON object per line with --json), until interrupted "
    "or the server stops; --since SEQ first replays every event after SEQ, then goes live with no gap. "
    "Starts the server when none runs.",
    Param("run_id", "int", "only events of this run"),
    Param("testpatt", "str", "only events of tests matching this test pattern"),
    Param("since", "int", "first replay the stored events after this sequence number (0 = all)", min=0),
    Param("count", "int", "stop after this many events", min=0),
    Param("no_follow", "bool", "stop after the replay instead of waiting for new events"),
    wire="watch-stream",
)
command(
    "wait-run",
    LOCAL,
    "waitrun:wait_run",
    "Block until the run is complete (every test in a final state; see get-run-completion), then print "
    "its state and status (its record with --json). Waits on the server's event stream (a run already "
    "complete returns at once). Exit 0 when the run's status is PASS, 1 when it is complete but not "
    "PASS, 3 when --max-wait passed first (or the server stopped), 4 for an unknown or deleted run. "
    "Starts the server when none runs.",
    RUN_ID,
    Param("max_wait", "float", "give up after this many seconds (exit 3); default: wait as long as it takes", min=0),
)
command(
    "start-server",
    LOCAL,
    "local:server_start",
    "Megatest's name for `server start`: start the area's server (hand-off when one runs).",
    *SERVER_START_PARAMS,
    wire="ping",
)
command(
    "kill-server",
    LOCAL,
    "local:server_stop",
    "Megatest's name for `server stop`: stop the area's server gracefully.",
    wire="server-stop",
)
command(
    "demo",
    LOCAL,
    "demo:run",
    "See dbtool work: a throw-away area and its server, 22 concurrent `dbtool exec` jobs (some pass, "
    "some fail, one is killed) whose items roll up, a live watcher reporting each job as it ends, and "
    "the run's final table. The area is removed afterwards (unless --keep).",
    Param("jobs", "int", "number of concurrent `dbtool exec` jobs (at most 22)", default=22, min=1, max=22),
    Param("keep", "bool", "keep the demo area and its server instead of removing them"),
)
command(
    "completion",
    LOCAL,
    "guide:completion",
    "Print the shell completion script for bash, zsh or fish (pip install also installs each where "
    "the shell finds it); how to install it by hand is in this help.",
    Param(
        "shell", "str", "the shell: bash, zsh or fish", required=True, positional=True, choices=("bash", "zsh", "fish")
    ),
)
command(
    "help",
    LOCAL,
    "guide:help_command",
    "Show a command's help (`dbtool help get-runs` is `dbtool get-runs --help`); alone, dbtool's own help.",
    Param("words", "argv", "the command's name (two words for `server start`)", metavar="COMMAND"),
)
PROJECT_ALIAS = Param(
    "alias", "str", "the project's alias (letters, digits, '_', '-', '.')", required=True, positional=True
)
command(
    "projects add",
    LOCAL,
    "projects:add",
    "Register an area under an alias (CCP4i's DbOpen), so that `dbtool --project ALIAS COMMAND` (or "
    "$DBTOOL_PROJECT=ALIAS) works on it from any directory. The registry is the user's own: "
    "$XDG_CONFIG_HOME/dbtool/projects.toml (~/.config by default). Registering it again is a no-op; an alias "
    "that names another area is refused unless --replace.",
    PROJECT_ALIAS,
    Param("path", "path", "the area's directory (it must be a dbtool area)", required=True, positional=True),
    Param("replace", "bool", "point an alias that names another area at this one"),
)
command(
    "projects remove",
    LOCAL,
    "projects:remove",
    "Forget a project's alias (CCP4i's DbClose); the area itself is left as it is. An unknown alias is refused.",
    PROJECT_ALIAS,
)
command(
    "projects list",
    LOCAL,
    "projects:list_projects",
    "List the registered projects: records {alias, path, status} (status: ok, or 'not an area' for a "
    "directory that is no longer one).",
)

command(
    "doctor",
    LOCAL,
    "doctor:doctor",
    "Check the area: its config (parses, known settings, right types), the server (alive, reachable, its "
    "version and protocol), the permissions of .dbtool/, the filesystem and journal mode (network "
    "filesystems flagged), free disk, the database's integrity (PRAGMA quick_check, read-only) and, when "
    "configured, that PostgreSQL answers. One line per check: `ok`, `warn` or `FAIL <check>: what is wrong — "
    "what to do`. Exit 0 when every check passes, 1 when one fails. Never starts a server.",
)
CONFIG_KEY = Param(
    "key", "str", "the setting, dotted: SECTION.NAME, e.g. server.idle_timeout", required=True, positional=True
)
command(
    "config list",
    LOCAL,
    "config:config_list",
    "Every setting of the area's config.toml with its value; those the file does not set show their default (marked).",
)
command(
    "config get",
    LOCAL,
    "config:config_get",
    "Print one setting's value (its default when config.toml does not set it). An unknown setting exits 4.",
    CONFIG_KEY,
)
command(
    "config set",
    LOCAL,
    "config:config_set",
    "Set one setting in config.toml, keeping its comments and layout (written atomically). An unknown "
    "setting or a value of the wrong type is refused (exit 4) naming the settings or the type expected; a "
    "running server applies it when it starts again (said on stderr).",
    CONFIG_KEY,
    Param(
        "value",
        "str",
        "the new value (true/false, a number or text, as the setting wants)",
        required=True,
        positional=True,
    ),
)

# --------------------------------------------------------------------------------------------
# Server commands: answered by the server itself, without waiting behind the write queue.

command(
    "ping",
    SERVER,
    "ping",
    "Check that the area's server is alive and answering; returns its identity (area, pid, "
    "instance, version, protocol, queue depth). Exit 3 when no server runs.",
)
command("server-status", SERVER, "status", "The server's status record (used by `server status`).", hidden=True)
command("server-stop", SERVER, "stop", "Ask the server to stop gracefully (used by `server stop`).", hidden=True)
command("server-stats", SERVER, "stats", "The server's request statistics (used by `server stats`).", hidden=True)
command(
    "watch-stream",
    SERVER,
    "watch",
    "Turn the connection into a stream of change events (used by `watch`).",
    Param("run_id", "int", "only events of this run"),
    Param("testpatt", "str", "only events of tests matching this test pattern"),
    Param("since", "int", "replay the stored events after this sequence number first", min=0),
    hidden=True,
)

# --------------------------------------------------------------------------------------------
# The area lock (CCP4i's project locks and -grablock).

command(
    "lock-area",
    WRITE,
    "arealock.lock_area",
    "Lock the whole area against writes (CCP4i's project lock) and print the lock's token alone (its record "
    "with --json).\n\n"
    "Until `dbtool unlock-area`, every write without that token in $DBTOOL_LOCK_TOKEN is refused (exit 4, "
    "naming the holder, host, time and reason); reads work as ever, and so does the server's own bookkeeping. "
    "The lock is kept in the database: it holds across server restarts and on every front-end. An area "
    "locked already is refused (exit 4) unless --grab, which takes the lock over and says from whom; the "
    "holder asking again (its token set) keeps its token.",
    Param("reason", "str", "why the area is locked (shown to every write it refuses)"),
    Param("grab", "bool", "take the lock over from whoever holds it"),
    driver="locks:lock_area",
)
command(
    "unlock-area",
    WRITE,
    "arealock.unlock_area",
    "Release the area lock: with its token in $DBTOOL_LOCK_TOKEN, or --force (says whose lock it broke). "
    "An area that is not locked is left so (a note on stderr, exit 0).",
    Param("force", "bool", "release the lock without its token"),
    driver="locks:unlock_area",
)
command(
    "get-area-lock",
    READ,
    "arealock.get_area_lock",
    "Show the area lock: {holder, host, pid, since, reason}. Exit 1 when the area is not locked.",
)

# --------------------------------------------------------------------------------------------
# Jobs that report their own progress (CCP4i's database handler, SPEC 2.2).

command(
    "exec",
    LOCAL,
    "jobexec:run",
    "Run CMD as the test's job and record it: the test (created when missing) becomes RUNNING with "
    "host, pid and run directory; CMD's output passes through (and goes to --log); heartbeats keep "
    "the test alive; at the end it is COMPLETED PASS (exit 0) or FAIL, or KILLED by a signal, rolled "
    "up into its toplevel and the run. Exits with CMD's exit code (128+N for signal N). A report the "
    "server cannot take is retried, then spooled in .dbtool/spool/, which the server replays as soon as it "
    "runs: never lost. A --log that cannot be written is refused before the test is touched; a CMD that "
    "cannot be started FAILs the test with the reason (exit 127 not found, 126 not runnable).",
    RUN_ID,
    TESTNAME,
    ITEM_PATH,
    Param("log", "path", "also write CMD's output to this file (recorded as the test's log)"),
    Param("heartbeat", "float", "seconds between heartbeats", default=30.0, min=0.01, max=86400),
    Param("rundir", "path", "run directory of the test, where CMD runs (default: the current directory)"),
    Param(
        "step", "str", "record CMD as this step of the test (start/end rows) instead of the test itself", nonempty=True
    ),
    Param(
        "exclusive",
        "bool",
        "open the test for this job (CCP4i's DbRegisterJob): until it ends, or is found dead, only the job "
        "and CMD's processes (they get its token in $DBTOOL_JOB_TOKEN) write to the test; a test open for "
        "another job refuses this one (exit 4, CMD not run)",
    ),
    Param("command", "argv", "the command and its arguments, after --", required=True, metavar="CMD..."),
)
JOB_WHERE = (RUN_ID, TESTNAME, ITEM_PATH)
command(
    "exec-begin",
    WRITE,
    "jobs.exec_begin",
    "Start of a job (used by `exec`): the test (created when missing) → RUNNING with host, uname, rundir, "
    "pid, log and heartbeat period; prints the test id.",
    *JOB_WHERE,
    Param("host", "str", "host the job runs on", required=True, nonempty=True),
    Param("uname", "str", "the host's system description", default=""),
    Param("rundir", "str", "run directory", default=""),
    Param("pid", "int", "process id of the job", required=True, min=0),
    Param("heartbeat", "float", "seconds between heartbeats", default=30.0, min=0.01, max=86400),
    Param("log", "str", "the job's log file", default=""),
    Param("exclusive", "bool", "open the test for this job alone (its token in the request)"),
    hidden=True,
)
command(
    "exec-heartbeat",
    WRITE,
    "jobs.exec_heartbeat",
    "A job's heartbeat (used by `exec`): liveness, a test_rundat sample, the job's pid once known.",
    *JOB_WHERE,
    Param("pid", "int", "process id of the job's command", min=0),
    Param("heartbeat", "float", "seconds between heartbeats", default=30.0, min=0.01, max=86400),
    Param("cpuload", "float", "the host's load average", default=-1.0, min=-1),
    Param("diskfree", "int", "free space in the run directory (KiB)", default=-1, min=-1),
    Param("run_duration", "int", "seconds since the job started", default=0, min=0),
    hidden=True,
)
command(
    "exec-end",
    WRITE,
    "jobs.exec_end",
    "End of a job (used by `exec`): COMPLETED PASS/FAIL by exit code (FAIL with the reason when the "
    "command could not run), or KILLED by a signal; roll-up into the toplevel and the run.",
    *JOB_WHERE,
    Param("exit_code", "int", "the command's exit code", required=True, min=0, max=255),
    Param("signal", "str", "the signal that killed it (e.g. SIGTERM)"),
    Param("run_duration", "int", "seconds the job ran", default=0, min=0),
    Param("error", "str", "why the command could not run: the test FAILs with this as its comment"),
    hidden=True,
)
command(
    "exec-step",
    WRITE,
    "jobs.exec_step",
    "A step of a job (used by `exec --step`): a start or end row of the step, creating the test when missing.",
    *JOB_WHERE,
    Param("stepname", "str", "name of the step", required=True, nonempty=True),
    Param("state", "str", "start or end", required=True, choices=("start", "end")),
    Param("status", "str", "step status: - at start, the exit code at the end", default="-"),
    Param("logfile", "str", "the step's log file", default=""),
    hidden=True,
)
command(
    "test-add-output-file",
    WRITE,
    "outputs.test_add_output_file",
    "Attach an output file to a test (CCP4i's AddOutputFile); a path inside the area is stored relative "
    "to it. Attaching the same path again updates its role.",
    TEST_ID,
    Param("path", "path", "the file", required=True),
    Param("role", "str", "what the file is", default="artifact", choices=("log", "artifact")),
)
command(
    "test-get-output-files",
    READ,
    "outputs.test_get_output_files",
    "List a test's output files: records {id, test_id, path, role, created, abs_path}.",
    TEST_ID,
    columns=("id", "path", "role", "created"),
)

# Free-form data items of a test (CCP4i's DbSetData, DbGetData, DbItemExists).
MAX_ITEM_NAME = 256
MAX_ITEM_VALUE = 1 << 20
ITEM_NAME = Param(
    "item",
    "str",
    f"the item's name (any text, at most {MAX_ITEM_NAME} characters)",
    required=True,
    positional=True,
    nonempty=True,
    metavar="NAME",
)
command(
    "test-set-item",
    WRITE,
    "items.test_set_item",
    "Set a free-form data item of a test (CCP4i's DbSetData): NAME → VALUE, any text up to 1 MiB; setting "
    "a name again overwrites its value. Emits an event like any write.",
    TEST_ID,
    ITEM_NAME,
    VALUE.with_(help=f"the value (any text, at most {MAX_ITEM_VALUE // 1024} KiB); {VALUE.help}"),
)
command(
    "test-get-item",
    READ,
    "items.test_get_item",
    "Print the value of a test's data item (CCP4i's DbGetData). Exit 1 when the test has no item of that name.",
    TEST_ID,
    ITEM_NAME,
)
command(
    "test-has-item",
    READ,
    "items.test_has_item",
    "Whether a test has a data item of that name (CCP4i's DbItemExists): exit 0 when it has, 1 when not "
    "(nothing printed; --json prints true or false).",
    TEST_ID,
    ITEM_NAME,
    Param("check", "bool", "print nothing even with --json; the exit status is the answer", client_only=True),
    driver="drivers:exit_by_answer",
)
command(
    "test-get-items",
    READ,
    "items.test_get_items",
    "A test's data items: one line of name and value each (--json: an object of name → value), by name.",
    TEST_ID,
)

# --------------------------------------------------------------------------------------------
# Misc (reference D.1).

command(
    "login",
    READ,
    "misc.login",
    "Check that this is the area (and dbtool version) a client expects; returns the area and version. "
    "A mismatch is refused (exit 4).",
    Param("area_path", "str", "the area directory the client expects (default: no check)"),
    Param("client_version", "str", "the dbtool version the client expects (default: no check)"),
    Param("signature", "str", "the client's signature (recorded in the server log)"),
)
command(
    "get-keys-write",
    WRITE,
    "runs.get_keys",
    "List the area's keys through the server (a write: it starts the server when none runs).",
)
# The named statements of general-call (reference D.9), in the reference's order; the handler
# (handlers/misc.py STATEMENTS) implements exactly these.
GENERAL_CALL_STATEMENTS = (
    "register-test",
    "update-run-duration",
    "set-test-state",
    "set-test-status",
    "state-status",
    "state-status-msg",
    "set-test-comment",
    "set-test-start-time",
    "pass-fail-counts",
    "test_data-pf-rollup",
    "test-set-log",
    "test-set-rundir-shortdir",
    "delete-tests-in-state",
    "tests:test-set-toplog",
    "update-cpuload-diskfree",
    "update-uname-host",
    "update-test-rundat",
    "update-test-state",
    "update-test-status",
    "update-pass-fail-counts",
    "top-test-set-running",
    "top-test-set-per-pf-counts",
    "delete-test-step-records",
    "delete-test-data-records",
)
command(
    "general-call",
    WRITE,
    "misc.general_call",
    "Run one of Megatest's named statements (reference D.9) with its arguments in order, e.g. "
    "`general-call state-status COMPLETED PASS 12`. Only these names are accepted: "
    f"{', '.join(GENERAL_CALL_STATEMENTS)}. Returns true.",
    Param("stmt", "str", "the statement name", required=True, positional=True, metavar="STMT"),
    Param("args", "argv", "the statement's arguments, in the order of reference D.9", metavar="ARG..."),
    RUN_ID.with_(required=False, help="id of the run (used by statements that take one)"),
    bulk=True,
)
command(
    "sdb-qry",
    WRITE,
    "misc.dead",
    "Dead Megatest entry (the legacy string-interning database); refused.",
    Param("qry", "str", IGNORED),
    Param("val", "str", IGNORED),
    dead="sdb-qry is a dead Megatest entry (the legacy string-interning database) and is not part of dbtool",
)
command(
    "sync-cachedb-to-db",
    WRITE,
    "misc.sync_cachedb_to_db",
    "Flush the write-ahead log into the database file (a WAL checkpoint); with one database per "
    "area this is what syncing the cache to the persistent database means.",
    ANY_RUN_ID.with_(help=f"id of the run ({IGNORED})"),
    api="sync-cachedb->db",
    bulk=True,
)
command(
    "create-all-triggers",
    WRITE,
    "misc.create_all_triggers",
    "Create (again) the triggers that refresh last_update on every update of runs, run_stats, tests, "
    "test_steps and test_data.",
    bulk=True,
)
command(
    "drop-all-triggers",
    WRITE,
    "misc.drop_all_triggers",
    "Drop the last_update triggers (for a bulk load that must not touch last_update; restore them "
    "with create-all-triggers).",
    bulk=True,
)
command(
    "update-tesdata-on-repilcate-db",
    WRITE,
    "misc.update_tesdata_on_repilcate_db",
    "After an area was replicated, move the rundir and shortdir of every test that lie under the "
    "path OLD (OLD itself or OLD/..., not OLDX; compared exactly, case-sensitive) to the same place "
    "under NEW; prints how many tests changed. (The name keeps Megatest's spelling.)",
    Param("old_linktree", "str", "the old prefix, e.g. /old/links", required=True, nonempty=True),
    Param("new_linktree", "str", "the new prefix, e.g. /new/links", required=True),
    bulk=True,
)
command(
    "get-latest-host-load",
    READ,
    "misc.get_latest_host_load",
    "The newest CPU load sample recorded for tests on a host (domain part ignored): "
    "{cpuload, update_time}; (-1, 0) when there is none.",
    Param("hostname", "str", "the host name", required=True, nonempty=True),
)

# --------------------------------------------------------------------------------------------
# Keys and runs (reference A.17, C.6, C.7, C.19, D.3, D.5, D.7).

command("get-keys", READ, "runs.get_keys", "List the area's keys (target fields) in order.")
command(
    "get-target",
    READ,
    "runs.get_target",
    "Print a run's target: its key values joined by '/'. Exit 1 when the run does not exist.",
    RUN_ID,
)
command(
    "get-targets",
    READ,
    "runs.get_targets",
    "List the distinct targets of the runs (deleted runs excluded): records of the key values and target.",
    INCLUDE_DELETED,
)
command(
    "get-key-vals",
    READ,
    "runs.get_key_vals",
    "List a run's key values in key order. Exit 1 when the run does not exist.",
    RUN_ID,
)
command(
    "get-key-val-pairs",
    READ,
    "runs.get_key_val_pairs",
    "A run's key values as one record {KEY: value, ...}. Exit 1 when the run does not exist.",
    RUN_ID,
)
command(
    "register-run",
    WRITE,
    "runs.register_run",
    "Register a run for a target and print its id. An existing run with the same target and "
    "name keeps its id and its state; a deleted one is revived.",
    TARGET.with_(required=True),
    RUNNAME.with_(required=True),
    Param("state", "str", "initial state", default="new"),
    Param("status", "str", "initial status", default="n/a"),
    Param("owner", "str", "owner of the run (default: the calling user)"),
    Param("contour", "str", "contour label (does not distinguish runs)", default=""),
)
command(
    "insert-run",
    WRITE,
    "runs.insert_run",
    'Insert a complete run record (replication): --record \'{"runname": ..., "KEY": ..., ...}\' with '
    "any columns of the runs table except id; prints the new id. A run with the same name and key "
    "values is refused.",
    RECORD,
    bulk=True,
)
command(
    "get-runs",
    READ,
    "runs.get_runs",
    "List runs, newest first, as records (id, runname, target, one field per key, state, status, "
    "owner, event_time, ...).",
    RUNNAME.with_(help=f"comma list of run-name patterns {PATTERNS}"),
    TARGET.with_(help=f"comma list of target patterns matched against KEY1/KEY2/... {PATTERNS}"),
    LIMIT,
    OFFSET,
    INCLUDE_DELETED,
    columns=RUN_COLUMNS,
)
command(
    "simple-get-runs",
    READ,
    "runs.simple_get_runs",
    "List runs, newest first, as short records (target, id, runname, state, status, owner, event_time).",
    RUNNAME.with_(help=f"comma list of run-name patterns {PATTERNS}"),
    TARGET.with_(help="target LIKE pattern, e.g. v1.2/% (case-insensitive)"),
    LIMIT,
    OFFSET,
    INCLUDE_DELETED,
    columns=RUN_COLUMNS,
)
command(
    "get-runs-by-patt",
    READ,
    "runs.get_runs_by_patt",
    "List runs whose name matches one pattern and whose key values match a target pattern split per "
    "key (a missing part matches only ''), oldest first; --fields selects the columns.",
    RUNNAME.with_(help=f"run-name pattern {PATTERNS}"),
    TARGET.with_(help="target pattern KEY1PATT/KEY2PATT/..., each part a pattern"),
    LIMIT,
    OFFSET,
    Param("fields", "list", "columns to return (default: id,runname,state,status,owner,event_time)"),
    Param("last_update", "int", "only runs changed at or after this Unix time"),
    INCLUDE_DELETED,
    columns=RUN_COLUMNS,
)
command(
    "get-runs-cnt-by-patt",
    READ,
    "runs.get_runs_cnt_by_patt",
    "Count the runs get-runs-by-patt would list.",
    RUNNAME.with_(help=f"run-name pattern {PATTERNS}"),
    TARGET.with_(help="target pattern KEY1PATT/KEY2PATT/..., each part a pattern"),
)
command(
    "get-num-runs",
    READ,
    "runs.get_num_runs",
    "Count the runs (deleted runs excluded) whose name is LIKE a pattern.",
    RUNNAME.with_(help="run-name LIKE pattern (default: all)", default="%"),
)
command(
    "get-all-run-ids",
    READ,
    "runs.get_all_run_ids",
    "List the ids of all runs that are not deleted, newest first.",
    INCLUDE_DELETED,
)
command(
    "get-all-runids",
    READ,
    "runs.get_all_runids",
    "List the ids of the runs in id order (oldest first).",
    INCLUDE_DELETED,
)
command(
    "get-prev-run-ids",
    READ,
    "runs.get_prev_run_ids",
    "List the ids of the other runs (deleted excluded) with the same key values as this run, newest first.",
    RUN_ID,
    INCLUDE_DELETED,
)
command(
    "get-run-ids-matching-target",
    READ,
    "runs.get_run_ids_matching_target",
    "List the ids of the runs whose key values are LIKE the parts of a target pattern and whose name "
    "is LIKE a run-name pattern.",
    TARGET.with_(help="target pattern KEY1PATT/KEY2PATT/... (LIKE per part; default: all)"),
    RUNNAME.with_(help="run-name LIKE pattern (default: all)"),
    Param("keynames", "list", IGNORED),
    TESTPATT.with_(help=IGNORED),
    Param("statepatt", "str", IGNORED, aliases=("--state-patt",)),
    Param("statuspatt", "str", IGNORED, aliases=("--status-patt",)),
    INCLUDE_DELETED,
)
command(
    "get-run-record-ids",
    READ,
    "runs.get_run_record_ids",
    "List the ids of the runs (deleted excluded) matching the target and run-name patterns that changed "
    "after --since, themselves or through a test matching --testpatt (for incremental refresh).",
    TARGET.with_(help=f"comma list of target patterns {PATTERNS}"),
    RUNNAME.with_(help=f"comma list of run-name patterns {PATTERNS}"),
    TESTPATT,
    SINCE,
)
command(
    "get-run-info",
    READ,
    "runs.get_run_info",
    "Show one run's record (deleted runs too: state deleted, deleted_at set). Exit 1 when the run does not exist.",
    RUN_ID,
)
command(
    "get-run-name-from-id",
    READ,
    "runs.get_run_name_from_id",
    "Print a run's name. Exit 1 when the run does not exist.",
    RUN_ID,
)
command(
    "get-run-status", READ, "runs.get_run_status", "Print a run's status. Exit 1 when the run does not exist.", RUN_ID
)
command("get-run-state", READ, "runs.get_run_state", "Print a run's state. Exit 1 when the run does not exist.", RUN_ID)
command(
    "get-run-state-status",
    READ,
    "runs.get_run_state_status",
    "A run's {state, status}. Exit 1 when the run does not exist.",
    RUN_ID,
)
command(
    "get-run-completion",
    READ,
    "completion.get_run_completion",
    "Whether a run is complete: {run_id, complete, completed_at, state, status, tests, final, seq}. A run "
    "is complete when it has tests and every one is in a final state (COMPLETED with any status, KILLED, "
    "ARCHIVED, INCOMPLETE; deleted tests aside); `tests` counts them, `final` those final, `seq` is the "
    "last event stored when this was read. Exit 1 when the run does not exist.",
    RUN_ID,
    Param(
        "check",
        "bool",
        "print nothing; exit 0 when the run is complete, 1 when not (scripts: `if ...; then`)",
        client_only=True,
    ),
    driver="drivers:answer_check",
)
command(
    "set-run-status",
    WRITE,
    "runs.set_run_status",
    "Set a run's status (and its comment when given).",
    RUN_ID,
    STATUS.with_(required=True, help="the new status"),
    COMMENT,
)
command(
    "set-run-state-status",
    WRITE,
    "runs.set_run_state_status",
    "Set a run's state and/or status ('deleted' and 'locked' are refused: delete-run and lock-unlock-run set those).",
    RUN_ID,
    STATE,
    STATUS,
)
command(
    "set-state-status-and-roll-up-run",
    WRITE,
    "runs.set_state_status_and_roll_up_run",
    "Roll the run's toplevel tests up into the run's state/status (the rules of the item roll-up) "
    "and store it when it differs from the current one; returns {state, status}.",
    RUN_ID,
    STATE.with_(help="the run's current state as the caller knows it (default: the stored one)"),
    STATUS.with_(help="the run's current status as the caller knows it (default: the stored one)"),
)
command(
    "update-run-event-time",
    WRITE,
    "runs.update_run_event_time",
    "Set a run's event_time to now.",
    RUN_ID,
    api="update-run-event_time",
)
command(
    "delete-run",
    WRITE,
    "runs.delete_run",
    "Delete a run: the first request marks the run deleted (hidden from lists; register-run of its "
    "target and name revives it) and its tests DELETED, all at once; its steps and test data are then "
    "removed, in batches with --batch (and on a terminal, with a progress bar). delete-run on a deleted "
    "run finishes an interrupted removal. A locked run is refused.",
    RUN_ID,
    Param(
        "batch",
        "int",
        "remove the steps and data of at most N tests per transaction and print what is left "
        "(default: everything in one transaction)",
        min=1,
    ),
    driver="drivers:delete_run",
    bulk=True,
)
command(
    "lock-unlock-run",
    WRITE,
    "runs.lock_unlock_run",
    "Lock (or unlock) a run. While locked the run reports state 'locked' (its own state is kept and "
    "comes back on unlock) and shows locked_by/locked_at; delete-run and the deletion of its tests "
    "are refused, status writes are accepted. Recorded in the access log.",
    RUN_ID,
    Param("lock", "bool", "lock the run (the default when neither is given)"),
    Param("unlock", "bool", "unlock the run"),
    Param("user", "str", "who locks it (default: the calling user)"),
    api="lock/unlock-run",
)
command(
    "update-run-stats",
    WRITE,
    "runs.update_run_stats",
    "Store state/status counts of a run in run_stats. Without --stat, the counts are taken from the "
    "run's tests (get-raw-run-stats).",
    RUN_ID,
    Param("stat", "str", "one count as STATE,STATUS,COUNT (repeatable)", multiple=True),
    bulk=True,
)
command(
    "get-run-stats",
    READ,
    "runs.get_run_stats",
    "Count the tests of every run (deleted runs excluded) by net state (the status when COMPLETED, "
    "else the state), with Totals first: records {runname, netstate, count}.",
    INCLUDE_DELETED,
)
command(
    "get-raw-run-stats",
    READ,
    "runs.get_raw_run_stats",
    "Count a run's tests (placeholder toplevels excluded) by state and status: records {state, status, count}.",
    RUN_ID,
    INCLUDE_DELETED,
)
command(
    "get-main-run-stats",
    READ,
    "runs.get_main_run_stats",
    "The counts stored in run_stats for a run: records {state, status, count}. Exit 1 when the run "
    "does not exist or is deleted.",
    RUN_ID,
)
command(
    "get-run-times",
    READ,
    "runs.get_run_times",
    "Per run (name and target LIKE the patterns): {runname, runtime_minutes, target}, the span from the "
    "first test start to the last test end.",
    RUNNAME.with_(help="run-name LIKE pattern", default="%"),
    TARGET.with_(help="target LIKE pattern", default="%"),
    INCLUDE_DELETED,
)
command(
    "get-test-times",
    READ,
    "runs.get_test_times",
    "The tests of the run with exactly this name and target: records {testname, item_path, run_duration}.",
    RUNNAME.with_(required=True),
    TARGET.with_(required=True),
    INCLUDE_DELETED,
)

# --------------------------------------------------------------------------------------------
# Tests: writes (reference C.1, C.3, C.6, C.8, D.2).

command(
    "register-test",
    WRITE,
    "tests.register_test",
    "Register a test (NOT_STARTED, n/a) in a run and print its id; an existing test keeps its id. "
    "Registering an item also registers its toplevel.",
    RUN_ID,
    TESTNAME,
    ITEM_PATH,
)
command(
    "set-state-status-and-roll-up-items",
    WRITE,
    "tests.set_state_status_and_roll_up_items",
    "Set a test's state/status (creating the test, and for an item its toplevel, when missing), "
    "roll the items up into the toplevel, and print the test id.",
    RUN_ID,
    TESTNAME,
    ITEM_PATH,
    STATE,
    STATUS,
    COMMENT,
)
command(
    "test-set-state-status-by-id",
    WRITE,
    "tests.test_set_state_status_by_id",
    "Set the state/status of the test with this id and roll its items up into the toplevel.",
    TEST_RUN_ID,
    TEST_ID,
    STATE,
    STATUS,
    COMMENT,
)
command(
    "test-set-state-status",
    WRITE,
    "tests.test_set_state_status",
    "Set the state/status/comment of the test with this id, without any roll-up.",
    TEST_RUN_ID,
    TEST_ID,
    STATE,
    STATUS,
    COMMENT,
)
command(
    "set-tests-state-status",
    WRITE,
    "tests.set_tests_state_status",
    "For each test name (LIKE) of the run, set every row (toplevel and items) that is in the current "
    "state/status to the new ones; prints the ids of the toplevels involved.",
    RUN_ID,
    Param("testnames", "list", "test names or LIKE patterns (comma list)", required=True),
    Param("curr_state", "str", "only rows in this state (default: any)"),
    Param("curr_status", "str", "only rows with this status (default: any)"),
    Param("new_state", "str", "the new state (default: the current state, else NOT_STARTED)"),
    Param("new_status", "str", "the new status (default: the current status, else UNKNOWN)"),
    bulk=True,
)
command(
    "top-test-set-per-pf-counts",
    WRITE,
    "tests.top_test_set_per_pf_counts",
    "Recompute a toplevel's state and status from its items with Megatest's legacy SQL rules "
    "(limited to this run); returns {state, status}.",
    RUN_ID,
    TESTNAME,
)
command(
    "update-pass-fail-counts",
    WRITE,
    "tests.update_pass_fail_counts",
    "Store on a toplevel the number of its items (in this run) that passed (PASS, WARN, WAIVED) and "
    "failed (FAIL, CHECK, INCOMPLETE, ABORT); returns {pass_count, fail_count}.",
    RUN_ID,
    TESTNAME,
)
command(
    "delete-test-records",
    WRITE,
    "tests.delete_test_records",
    "Soft-delete a test: its steps and data get status DELETED, the test state DELETED.",
    TEST_RUN_ID,
    TEST_ID,
)
command(
    "delete-old-deleted-test-records",
    WRITE,
    "tests.delete_old_deleted_test_records",
    "Purge (hard-delete) the tests marked DELETED longer ago than --days, with their steps and data; "
    "prints how many tests were purged.",
    Param("days", "int", "age in days", default=30, min=0),
    bulk=True,
)
command(
    "test-set-top-process-pid",
    WRITE,
    "tests.test_set_top_process_pid",
    "Record the pid of a test's top process.",
    TEST_RUN_ID,
    TEST_ID,
    Param("pid", "int", "process id", required=True, min=0),
)
command(
    "test-set-archive-block-id",
    WRITE,
    "tests.test_set_archive_block_id",
    "Record the archive block that holds a test (0 = not archived).",
    TEST_RUN_ID,
    TEST_ID,
    Param(
        "block_id", "int", "archive block id (from archive-register-block-name; 0 = not archived)", required=True, min=0
    ),
)
command(
    "insert-test",
    WRITE,
    "tests.insert_test",
    "Insert a complete test record (replication) into a run: --record '{\"testname\": ..., ...}' with any "
    "columns of the tests table except id and run_id; prints the new id. An existing test is refused.",
    RUN_ID,
    RECORD,
)
command(
    "mark-incomplete",
    WRITE,
    "deadjobs.mark_incomplete",
    "Mark dead tests COMPLETED/DEAD: RUNNING or REMOTEHOSTSTART longer than run_duration + deadtime, "
    "LAUNCHED for over a day (placeholder toplevels left alone). Prints the ids it marked.",
    RUN_ID.with_(required=False, help="only this run (default: every run)"),
    DEADTIME,
    bulk=True,
)
command(
    "get-toplevels-and-incompletes",
    READ,
    "deadjobs.get_toplevels_and_incompletes",
    "The tests mark-incomplete would mark: {incompletes, old_launched, toplevels} (toplevels: "
    "placeholder toplevels that look dead, left alone).",
    RUN_ID.with_(required=False, help="only this run (default: every run)"),
    Param("running_deadtime", "int", "deadtime for RUNNING tests (default: tests.deadtime)", min=0),
    Param("remotehoststart_deadtime", "int", "deadtime for REMOTEHOSTSTART tests (default: tests.deadtime)", min=0),
)
command(
    "have-incompletes",
    READ,
    "deadjobs.have_incompletes",
    "Print true when a run has tests mark-incomplete would mark, else false (--check: the exit status says it).",
    RUN_ID.with_(required=False, help="only this run (default: every run)"),
    DEADTIME,
    Param(
        "check",
        "bool",
        "print nothing; exit 0 when there are such tests, 1 when not (scripts: `if ...; then`)",
        client_only=True,
    ),
    api="have-incompletes?",
    driver="drivers:answer_check",
)

# --------------------------------------------------------------------------------------------
# Tests: reads (reference C.9, C.10, D.6, D.10).

command(
    "get-test-id",
    READ,
    "tests.get_test_id",
    "Print the id of a test. Exit 1 when there is no such test.",
    RUN_ID,
    TESTNAME,
    ITEM_PATH,
)
command(
    "get-test-info-by-id",
    READ,
    "tests.get_test_info_by_id",
    "Show a test's full record (deleted tests too). Exit 1 when there is no such test.",
    ANY_RUN_ID,
    TEST_ID,
)
MAX_TEST_IDS = 10_000
command(
    "get-tests-by-ids",
    READ,
    "tests.get_tests_by_ids",
    "The records of several tests at once (CCP4i's DbReturnRecord), in the order of --test-ids (deleted "
    "tests too); --fields picks the columns. Exit 1, naming them, when some ids are no test's.",
    Param(
        "test_ids",
        "list",
        f"the tests' ids, comma-separated (at most {MAX_TEST_IDS})",
        required=True,
        max=MAX_TEST_IDS,
    ),
    Param("fields", "list", "return only these columns of each record (comma list; default: all)"),
    columns=TEST_COLUMNS,
)
command(
    "get-test-state-status-by-id",
    READ,
    "tests.get_test_state_status_by_id",
    "A test's {state, status}. Exit 1 when there is no such test.",
    ANY_RUN_ID,
    TEST_ID,
)
command(
    "get-testinfo-state-status",
    READ,
    "tests.get_testinfo_state_status",
    "A test's short record {id, run_id, testname, state, status, item_path}. Exit 1 when there is no such test.",
    ANY_RUN_ID,
    TEST_ID,
)
command(
    "test-get-rundir-from-test-id",
    READ,
    "tests.test_get_rundir_from_test_id",
    "Print a test's run directory. Exit 1 when there is no such test.",
    ANY_RUN_ID,
    TEST_ID,
)
command(
    "test-get-top-process-pid",
    READ,
    "tests.test_get_top_process_pid",
    "Print the pid recorded for a test's top process. Exit 1 when there is no such test.",
    ANY_RUN_ID,
    TEST_ID,
)
command(
    "test-get-logfile-info",
    READ,
    "tests.test_get_logfile_info",
    "The toplevel's {rundir, final_logf}. Exit 1 when the run has no such test.",
    RUN_ID,
    TESTNAME,
)
command(
    "test-get-records-for-index-file",
    READ,
    "tests.test_get_records_for_index_file",
    "The items of a test: records {id, item_path, state, status, run_duration, final_logf, comment}.",
    RUN_ID,
    TESTNAME,
    INCLUDE_DELETED,
)
command(
    "test-toplevel-num-items",
    READ,
    "tests.test_toplevel_num_items",
    "Print how many items (not deleted) a test has in a run.",
    RUN_ID,
    TESTNAME,
)
command(
    "get-count-tests-running",
    READ,
    "tests.get_count_tests_running",
    "Print how many tests are LAUNCHED, RUNNING or REMOTEHOSTSTART in all runs (placeholder toplevels excluded).",
    ANY_RUN_ID.with_(help=f"id of a run ({IGNORED}: the count covers every run)"),
)
command(
    "get-count-tests-running-for-run-id",
    READ,
    "tests.get_count_tests_running_for_run_id",
    "Print how many tests of a run are LAUNCHED, RUNNING or REMOTEHOSTSTART (placeholder toplevels excluded).",
    RUN_ID,
)
command(
    "get-count-tests-running-for-testname",
    READ,
    "tests.get_count_tests_running_for_testname",
    "Print how many rows of a test in a run are running (placeholder toplevels excluded).",
    RUN_ID,
    TESTNAME,
)
command(
    "get-count-tests-running-in-jobgroup",
    READ,
    "tests.get_count_tests_running_in_jobgroup",
    "Print how many tests of a job group (test_meta.jobgroup) are running, in all runs.",
    ANY_RUN_ID.with_(help=f"id of a run ({IGNORED}: the count covers every run)"),
    Param("jobgroup", "str", "the job group", required=True),
)
command(
    "get-not-completed-cnt",
    READ,
    "tests.get_not_completed_cnt",
    "Print how many tests of a run are neither COMPLETED nor DELETED.",
    RUN_ID,
)
command(
    "get-tests-for-run",
    READ,
    "tests.get_tests_for_run",
    "List the tests of a run as records, filtered by test pattern, states and statuses, and by "
    "regular expressions on columns (--match FIELD=REGEX).",
    RUN_ID,
    TESTPATT,
    STATES,
    STATUSES,
    NOT_IN,
    Param(
        "mode",
        "str",
        "how states and statuses combine: 'normal' (both must match) or 'dashboard' (COMPLETED tests "
        "by status, the others by state)",
        default="normal",
        choices=("normal", "dashboard"),
    ),
    Param(
        "sort_by",
        "str",
        "order by: id, testname, statestatus, event_time, rundir, or any column",
        default="id",
    ),
    Param("sort_order", "str", "asc or desc", default="asc", choices=("asc", "desc")),
    LIMIT,
    OFFSET,
    Param("last_update", "int", "only tests changed at or after this Unix time (shows deleted ones too)"),
    Param("fields", "list", "return only these columns (comma list)"),
    Param(
        "match",
        "str",
        f"FIELD=REGEX: only tests whose FIELD matches the regular expression (repeatable, up to {MAX_MATCHES} "
        "times; all must match)",
        multiple=True,
        max=MAX_MATCHES,
    ),
    INCLUDE_DELETED,
    columns=TEST_COLUMNS,
)
command(
    "get-tests-for-run-mindata",
    READ,
    "tests.get_tests_for_run_mindata",
    "List a run's tests as minimal records {id, run_id, testname, state, status, event_time, item_path}.",
    RUN_ID,
    TESTPATT,
    STATES,
    STATUSES,
    NOT_IN,
    INCLUDE_DELETED,
    columns=("id", "testname", "item_path", "state", "status", "event_time"),
)
command(
    "get-tests-for-runs-mindata",
    READ,
    "tests.get_tests_for_runs_mindata",
    "get-tests-for-run-mindata over several runs (all runs when --run-ids is omitted).",
    Param("run_ids", "list", "comma list of run ids (default: every run)"),
    TESTPATT,
    STATES,
    STATUSES,
    NOT_IN,
    INCLUDE_DELETED,
    columns=("id", "run_id", "testname", "item_path", "state", "status", "event_time"),
)
command(
    "get-tests-for-run-state-status",
    READ,
    "tests.get_tests_for_run_state_status",
    "List a run's tests as short records {id, run_id, testname, state, status, item_path}.",
    RUN_ID,
    TESTPATT,
    Param("last_update", "int", "only tests changed at or after this Unix time"),
    INCLUDE_DELETED,
)
command(
    "get-previous-test-run-record",
    READ,
    "tests.get_previous_test_run_record",
    "The newest record of the same test (and item) in an earlier run with the same target. Exit 1 when there is none.",
    RUN_ID,
    TESTNAME,
    ITEM_PATH,
)
command(
    "get-matching-previous-test-run-records",
    READ,
    "tests.get_matching_previous_test_run_records",
    "For the other runs with the same key values: the youngest record of each test/item matching "
    "TESTNAME/ITEM_PATH (LIKE; deleted tests excluded).",
    RUN_ID,
    TESTNAME.with_(help="test name LIKE pattern"),
    ITEM_PATH.with_(help="item path LIKE pattern ('' = toplevels)"),
    columns=TEST_COLUMNS,
)
command(
    "test-get-paths-matching-keynames-target-new",
    READ,
    "tests.test_get_paths_matching_keynames_target_new",
    "List the run directories of a run's tests matching a test pattern and state/status LIKE patterns, newest first.",
    RUN_ID,
    TESTPATT.with_(default="%"),
    Param("statepatt", "str", "state LIKE pattern", default="%", aliases=("--state-patt",)),
    Param("statuspatt", "str", "status LIKE pattern", default="%", aliases=("--status-patt",)),
    Param("keynames", "list", IGNORED),
    TARGET.with_(help=IGNORED),
    RUNNAME.with_(help=IGNORED),
    Param("res", "list", "paths to append after the results (compatibility)"),
    INCLUDE_DELETED,
)
command(
    "get-prereqs-not-met",
    READ,
    "prereqs.get_prereqs_not_met",
    "List what blocks a test from starting: for each waiton test of the run that is not done (per "
    "--mode), its rows as short records, or its bare name when it has no rows (reference C.9).",
    RUN_ID,
    Param("waitons", "list", "the tests this one waits on (comma list)", required=True),
    Param("ref_testname", "str", "the waiting test's name", required=True),
    Param("ref_item_path", "str", "the waiting test's item path", default=""),
    Param(
        "mode",
        "list",
        "comma list of: normal, toplevel, itemmatch, itemwait (= itemmap), exclusive",
        default=["normal"],
    ),
    Param(
        "itemmap",
        "str",
        "WAITONPATT=MAP: for waiton tests whose name matches WAITONPATT, map the waiting item path to the "
        "waiton's item path; MAP is one or more lines 'regex replacement' separated by newlines (repeatable; "
        "the first matching entry wins)",
        metavar="WAITONPATT=MAP",
        multiple=True,
    ),
)
# --------------------------------------------------------------------------------------------
# Results across runs: the CI loop (compare, history, flaky).

command(
    "compare",
    READ,
    "compare.compare",
    "Compare a run's results with a baseline run's: regressions, fixed, still failing, new, missing, "
    "infrastructure.\n\n"
    "Leaf tests are compared (items, and toplevels that have no items), by (testname, item_path). "
    "regressions: FAIL now (or CHECK, INCOMPLETE, ABORT) and not failing in the baseline; fixed: PASS now "
    "(or WARN, WAIVED), failing in the baseline; still_failing: failing in both; new: not in the "
    "baseline; missing: in the baseline only; infrastructure: DEAD or KILLED now, whatever it was "
    "before (a job that died is never counted as a test failure). Unchanged tests, and tests not "
    "finished yet (counted in 'unfinished'), are not listed.\n\n"
    "--baseline auto (the default) is the most recent earlier complete run of the same target (earlier "
    "by event time, then id; complete: every test COMPLETED, KILLED or DEAD); --runname narrows it. "
    "With no such run every test is new (a note says so on stderr). --json prints {run, baseline, "
    "regressions, fixed, still_failing, new, missing, infrastructure, unfinished}, each class a list of "
    "{testname, item_path, status, baseline_status}. --exit-code exits 1 when there is a regression or "
    "an infrastructure entry, else 0 (also with no baseline); an unknown or deleted run is refused (exit 4).",
    RUN_ID,
    Param(
        "baseline",
        "str",
        "the run to compare with: its id, or 'auto' for the most recent earlier complete run of the same target",
        default="auto",
        metavar="ID|auto",
        nonempty=True,
    ),
    RUNNAME.with_(help=f"with --baseline auto: only runs whose name matches this comma list of patterns {PATTERNS}"),
    Param(
        "exit_code",
        "bool",
        "exit 1 when there is any regression or infrastructure entry, 0 otherwise (for a CI gate)",
        client_only=True,
    ),
    driver="compare:compare",
    columns=("class", "testname", "item_path", "baseline_status", "status"),
)
command(
    "history",
    READ,
    "compare.history",
    "List one test's results run by run, newest run first (by the run's event time, then id): records "
    "{run_id, runname, target, event_time (the run's), state, status, comment, test_id}. Deleted runs "
    "and tests are left out.",
    TESTNAME,
    ITEM_PATH.with_(help="item path of the test; '' (the default) is the toplevel"),
    TARGET.with_(help=f"only runs whose target matches this comma list of patterns {PATTERNS}"),
    LIMIT,
    columns=("run_id", "runname", "target", "event_time", "state", "status", "comment"),
)
command(
    "flaky",
    READ,
    "compare.flaky",
    "Rank the tests whose results flip between pass and fail within the last N runs of their target: "
    "records {testname, item_path, target, runs, flips, flip_rate, reruns}.\n\n"
    "Leaf tests (items, and toplevels that have no items) of the last --window runs of each target "
    "(deleted runs left out). runs: the runs in which the test passed (PASS, WARN, WAIVED) or failed "
    "(FAIL, CHECK, INCOMPLETE, ABORT); flips: changes between pass and fail from one such run to the "
    "next; flip_rate: flips / (runs - 1); reruns: PASS written after a FAIL for the same test within "
    "one run (from the events). Tests with no flip and no rerun are not listed; the most flips per "
    "chance first.",
    TARGET.with_(help=f"only targets matching this comma list of patterns {PATTERNS} (default: every target)"),
    Param("window", "int", "the last N runs of each target", default=20, min=1, max=10000),
)
# --------------------------------------------------------------------------------------------
# Seeing the results: the runs x tests grid, as a one-file HTML report and live in a browser.
# (The grid's data travels through grid-runs, grid-cells and grid-details; rules/grid.py has the palette.)

GRID_RUN_IDS = Param("run_ids", "list", "the grid's run ids (comma list), in column order", required=True, max=10000)
GRID_PAGE = (
    GRID_RUN_IDS,
    Param("after_run", "int", "the run of the last test of the previous page (one of --run-ids)"),
    Param("after_id", "int", "the id of the last test of the previous page", default=0, min=0),
)
command(
    "report",
    LOCAL,
    "grid:report",
    "Write the results of runs as one self-contained HTML file (no network needed; it opens from file:// "
    "and can be attached to a CI job): a grid whose columns are the runs, newest first (target, run name, "
    "counts by status, a progress bar), whose rows are the toplevel tests, each expanding to its items, and "
    "whose cells are coloured by state and status (see the README's palette) and say them in text too. A "
    "click on a cell shows the test: state, status, comment, host, duration, steps, test data with pass/fail, "
    "output files. A changes view lists only the rows whose result differs between two chosen runs; the "
    "test pattern and status filters narrow the rows. Only the visible part of the grid is drawn, so it "
    "stays quick with a million tests.\n\n"
    "The runs: --run-id (repeatable), or --target PATT with --last K (the K newest; all of them without "
    "--last). The details of a test are in the file for every test when the report has at most 20,000 "
    "tests; in a larger one only for the tests that did not pass (not COMPLETED PASS), at most 100,000 of "
    "them (the file says so). No matching run exits 1, an unknown --run-id 4, a FILE that cannot be "
    "written 2.",
    Param("run_id", "int", "a run of the report (repeatable)", multiple=True, metavar="N"),
    TARGET.with_(help=f"the runs whose target matches this comma list of patterns {PATTERNS}"),
    Param("last", "int", "with --target: only the K newest matching runs", min=1, max=10000, metavar="K"),
    Param(
        "output",
        "path",
        "the HTML file to write (replaced whole when done)",
        aliases=("-o",),
        metavar="FILE",
    ),
)
command(
    "dashboard",
    LOCAL,
    "grid:dashboard",
    "Serve the results grid of `dbtool report` live in a browser: its cells change as the area's events "
    "arrive (Server-Sent Events; a browser that reconnects resumes after the last event it saw), new runs "
    "appear as they are registered. It reads only, through the area's server (started when none runs) on "
    "SQLite and PostgreSQL areas alike. Prints its URL, which carries an access token (?token=...): the "
    "browser keeps it in a cookie, and any request without it gets 403. The page's ?target=PATT&last=K "
    "choose the runs (default: the 50 newest). Stops on Ctrl-C or SIGTERM.",
    Param(
        "bind",
        "str",
        "address to listen on (default 127.0.0.1; another one makes the dashboard reachable "
        "from other hosts, its token sent over plain HTTP)",
    ),
    Param("port", "int", "TCP port (default: any free port)", default=0, min=0, max=65535),
    Param("no_open", "bool", "do not open the URL in a web browser"),
)
command(
    "grid-runs",
    READ,
    "grid.grid_runs",
    "The runs of a results grid (used by `report` and `dashboard`), newest first: those of --run-ids, or "
    "the --last K whose target matches --target; with the seq of the last stored event.",
    GRID_RUN_IDS.with_(required=False, help="these runs (comma list of ids)"),
    TARGET.with_(help=f"runs whose target matches this comma list of patterns {PATTERNS}"),
    Param("last", "int", "only the K newest", min=1, max=10000),
    hidden=True,
)
command(
    "grid-cells",
    READ,
    "grid.grid_cells",
    "One page of a results grid's cells (used by `report` and `dashboard`): up to LIMIT tests of the runs "
    "(run by run, each in id order) after the last one of the previous page, as {run_id, id, testname, "
    "item_path, state, status}.",
    *GRID_PAGE,
    Param("limit", "int", "tests per page", default=20000, min=1, max=100000),
    hidden=True,
)
command(
    "grid-details",
    READ,
    "grid.grid_details",
    "The details of tests of a results grid (used by `report` and `dashboard`), paged as grid-cells: "
    "state, status, comment, host, duration, times, steps, test data and output files.",
    *GRID_PAGE,
    Param("limit", "int", "tests per page", default=1000, min=1, max=10000),
    Param("not_passed", "bool", "only the tests that did not pass (not COMPLETED PASS)"),
    TESTNAME.with_(required=False, help="only this test (with --item-path)"),
    ITEM_PATH,
    hidden=True,
)
# --------------------------------------------------------------------------------------------
# Steps (reference C.5, D.4, D.8).

command(
    "teststep-set-status",
    WRITE,
    "steps.teststep_set_status",
    "Record a step of a test: one row per (step, state), so a step normally has a 'start' and an "
    "'end' row; re-sending a state replaces its row (new time).",
    TEST_RUN_ID,
    TEST_ID,
    Param("stepname", "str", "name of the step", required=True, nonempty=True),
    Param("state", "str", "step state, normally start or end", required=True, nonempty=True),
    Param("status", "str", "step status (for end: the exit code or a status word)", default="n/a"),
    Param("comment", "str", "comment", default=""),
    Param("logfile", "str", "the step's log file", default=""),
    api="teststep-set-status!",
)
command(
    "delete-steps-for-test",
    WRITE,
    "steps.delete_steps_for_test",
    "Soft-delete every step of a test (status DELETED; hidden from the step readers).",
    TEST_RUN_ID,
    TEST_ID,
    api="delete-steps-for-test!",
    aliases=("delete-steps-for-test",),
)
STEP_COLUMNS = ("id", "stepname", "state", "status", "event_time", "logfile", "comment")
command(
    "get-steps-for-test",
    READ,
    "steps.get_steps_for_test",
    "List a test's steps (deleted excluded) in order: records {id, test_id, stepname, state, status, "
    "event_time, logfile, comment}.",
    ANY_RUN_ID,
    TEST_ID,
    INCLUDE_DELETED,
    columns=STEP_COLUMNS,
)
command(
    "get-steps-data",
    READ,
    "steps.get_steps_data",
    "List a test's steps (deleted excluded) in order, without comments.",
    ANY_RUN_ID,
    TEST_ID,
    INCLUDE_DELETED,
    columns=STEP_COLUMNS,
)
command(
    "get-steps-info-by-id",
    READ,
    "steps.get_steps_info_by_id",
    "One step record by id (deleted too). Exit 1 when there is no such step.",
    Param("step_id", "int", "id of the step", required=True),
)

# --------------------------------------------------------------------------------------------
# Test data (reference C.4, D.4, D.8).

DATA_COLUMNS = ("id", "category", "variable", "value", "expected", "tol", "units", "status", "comment")
command(
    "csv-to-test-data",
    WRITE,
    "testdata.csv_to_test_data",
    "Store measured values of a test from CSV lines: category,variable,value,expected,tol,units,"
    "comment,status,type. Without a status, value is compared with expected±tol (or with the "
    "comparator >, <, >=, <= in tol) to give pass/fail. A (category, variable) already stored is "
    "replaced. Any bad line refuses the whole input.",
    TEST_RUN_ID,
    TEST_ID,
    Param("csv", "str", "the CSV text (one or more lines)"),
    Param("file", "str", "read the CSV from this file ('-' = standard input)", client_only=True),
    api="csv->test-data",
    driver="drivers:csv_to_test_data",
    bulk=True,
)
command(
    "test-data-upload-part",
    WRITE,
    "uploads.test_data_upload_part",
    "One part of a csv-to-test-data input too large for one request (used by `csv-to-test-data --file`): "
    "its rows are checked and staged, invisible; the final part makes the whole upload visible at once, "
    "with csv-to-test-data's replacement rules. Parts are numbered from 0, in order; a part of an upload "
    "the server does not know (finished, or pruned a day after its last part) is refused with exit 1.",
    ANY_RUN_ID,
    TEST_ID,
    Param(
        "upload", "str", "the upload's id, chosen by the client (at most 64 characters)", required=True, nonempty=True
    ),
    Param("part", "int", "this part's number: 0, 1, 2, ...", required=True, min=0),
    Param("csv", "str", "the part's CSV text (whole records)", required=True),
    Param("final", "bool", "the last part: store the whole upload"),
    hidden=True,
    bulk=True,
)
command(
    "test-data-rollup",
    WRITE,
    "testdata.test_data_rollup",
    "Count a test's data rows that passed and failed, store the counts, and set the test's status: "
    "FAIL when any failed, else PASS when any passed (unless WARN).",
    TEST_RUN_ID,
    TEST_ID,
    Param("status", "str", IGNORED),
)
command(
    "read-test-data",
    READ,
    "testdata.read_test_data",
    "List a test's data rows whose category is LIKE a pattern, ordered by category and variable.",
    ANY_RUN_ID,
    TEST_ID,
    Param("category", "str", "category LIKE pattern", default="%"),
    INCLUDE_DELETED,
    columns=DATA_COLUMNS,
)
command(
    "read-test-data-varpatt",
    READ,
    "testdata.read_test_data_varpatt",
    "read-test-data with a variable LIKE pattern too.",
    ANY_RUN_ID,
    TEST_ID,
    Param("category", "str", "category LIKE pattern", default="%"),
    Param("variable", "str", "variable LIKE pattern", default="%", aliases=("--varpatt",)),
    INCLUDE_DELETED,
    columns=DATA_COLUMNS,
)
command(
    "get-data-info-by-id",
    READ,
    "testdata.get_data_info_by_id",
    "One test-data record by id. Exit 1 when there is no such record.",
    Param("data_id", "int", "id of the test-data row", required=True),
)

# --------------------------------------------------------------------------------------------
# JUnit XML in and out (the CI loop). The mapping is in rules/junit.py.

command(
    "import-junit",
    WRITE,
    "junit.import_junit",
    "Store the results of JUnit XML reports (pytest --junitxml, Maven Surefire, ...) in a run: each "
    "testcase becomes the item NAME of the test CLASSNAME (the testsuite's name when it has none), so a "
    "suite's cases roll up into their toplevel as items do; passed → COMPLETED/PASS, <failure> and "
    "<error> → FAIL (the message's first line, and an error's type, in the comment), <skipped> → SKIP, "
    "time → run_duration (whole seconds). The texts (failure message and traceback, system-out, "
    "system-err) go to the test's data, category junit/N for attempt N; re-runs (<flakyFailure>, "
    "<rerunFailure>, a repeated testcase) are kept as attempts, the last one the test's result. A file is "
    "streamed in parts, one transaction each, with a progress bar on a terminal; the same file imported "
    "again changes nothing (stored 0). Prints 'stored N, refused M' and why any were refused (exit 4 "
    "then). Files with XML entity declarations or external references are refused.",
    RUN_ID,
    Param(
        "files",
        "argv",
        "the JUnit XML files ('-' = standard input)",
        required=True,
        metavar="FILE...",
        client_only=True,
    ),
    Param("xml", "str", "the JUnit XML document itself (over the protocol; the command line takes FILE...)"),
    driver="junit:import_junit",
    bulk=True,
)
command(
    "junit-import-part",
    WRITE,
    "junit.junit_import_part",
    "One part of an import-junit file (used by `import-junit FILE`): the cases numbered FIRST on of the file "
    "whose SHA-256 is DIGEST, stored in one transaction; a part already stored is skipped, the final part "
    "ends the import. Answers the import's totals so far.",
    RUN_ID,
    Param("digest", "str", "the SHA-256 of the file's bytes (64 hex digits)", required=True, nonempty=True),
    Param("cases", "str", "the cases as JSON (see rules/junit.py)", default="[]"),
    Param("first", "int", "the number of the part's first case in the file (from 0)", default=0, min=0),
    Param("final", "bool", "the last part: the import is complete"),
    Param("source", "str", "the file's name, for messages"),
    hidden=True,
    bulk=True,
)
command(
    "export-junit",
    READ,
    "junit.export_junit",
    "Write a run as JUnit XML that Jenkins and GitLab read: one <testsuite> per test name, one <testcase> "
    "per item (and per toplevel without items), with <failure>, <error> or <skipped>, time, counts, the "
    "stored texts and re-runs (Surefire's <flakyFailure>/<rerunFailure>). dbtool.* properties carry what "
    "JUnit cannot say (a toplevel, a state or status other than COMPLETED PASS/FAIL/SKIP), so that "
    "import-junit of the output gives the same tests and statuses. Deleted tests are left out.",
    RUN_ID,
    Param(
        "output",
        "path",
        "write to this file (replaced whole when done) instead of standard output",
        aliases=("-o",),
        client_only=True,
        metavar="FILE",
    ),
    driver="junit:export_junit",
)
command(
    "junit-export-part",
    READ,
    "junit.junit_export_part",
    "One page of export-junit (used by `export-junit`): up to LIMIT leaf tests of the run after AFTER in "
    "(testname, item path) order, with their junit test data and their suites' counts.",
    RUN_ID,
    Param("after", "list", "the test name and item path of the last test of the previous page", max=2),
    Param("limit", "int", "tests per page", default=2000, min=1, max=10000),
    hidden=True,
)

# --------------------------------------------------------------------------------------------
# Test meta (reference C.14).

command(
    "testmeta-add-record",
    WRITE,
    "meta.testmeta_add_record",
    "Create the meta record of a test name (author, owner, description, tags ... empty; jobgroup "
    "default); an existing one is kept.",
    TESTNAME,
)
command(
    "testmeta-update-field",
    WRITE,
    "meta.testmeta_update_field",
    "Set one field of a test's meta record: author, owner, description, reviewed, iterated, "
    "avg_runtime, avg_disk, tags or jobgroup.",
    TESTNAME,
    Param("field", "str", "the field to set", required=True, nonempty=True),
    Param("value", "str", "the new value", required=True),
)
command(
    "testmeta-get-record",
    READ,
    "meta.testmeta_get_record",
    "A test's meta record. Exit 1 when there is none.",
    TESTNAME,
)
command(
    "get-tests-tags",
    READ,
    "meta.get_tests_tags",
    "Map each tag (from test_meta.tags, comma separated) to the test names that carry it.",
)

# --------------------------------------------------------------------------------------------
# Tasks (reference C.13).

TASK_COLUMNS = ("id", "action", "owner", "state", "target", "name", "testpatt", "creation_time")
command(
    "tasks-add",
    WRITE,
    "tasks.tasks_add",
    "Queue a task (state new) and print its id.",
    Param("action", "str", "what to do, e.g. run-tests", required=True, nonempty=True),
    Param("owner", "str", "who asks (default: the calling user)"),
    TARGET.with_(default=""),
    RUNNAME.with_(default=""),
    TESTPATT.with_(default=""),
    Param("params", "str", "the task key or parameters", default=""),
)
command(
    "tasks-set-state-given-param-key",
    WRITE,
    "tasks.tasks_set_state_given_param_key",
    "Set the state of every task whose params are LIKE the key; prints how many changed.",
    Param("param_key", "str", "the task key (LIKE pattern)", required=True),
    Param(
        "state",
        "str",
        "the new state, any text; the usual ones: new, waiting, reset, inprogress, running, done, killed",
        required=True,
    ),
    bulk=True,
)
command(
    "tasks-get-last",
    READ,
    "tasks.tasks_get_last",
    "The newest task for exactly this target and run name. Exit 1 when there is none.",
    TARGET.with_(required=True),
    RUNNAME.with_(required=True),
)
command(
    "find-task-queue-records",
    READ,
    "tasks.find_task_queue_records",
    "List the tasks for exactly this target and run name whose state, action and test pattern are LIKE "
    "the given patterns.",
    TARGET.with_(required=True),
    RUNNAME.with_(required=True),
    TESTPATT.with_(help="test pattern LIKE pattern", default="%"),
    Param("statepatt", "str", "state LIKE pattern", default="%", aliases=("--state-patt",)),
    Param("actionpatt", "str", "action LIKE pattern", default="%", aliases=("--action-patt",)),
    columns=TASK_COLUMNS,
)

# --------------------------------------------------------------------------------------------
# Vars (the metadat table, reference C.12).

command("set-var", WRITE, "vars.set_var", "Set a variable (stored as text).", VAR, VALUE)
command(
    "get-var",
    READ,
    "vars.get_var",
    "Print a variable's value (numbers come back as numbers). Exit 1 when it is not set.",
    VAR,
)
command("del-var", WRITE, "vars.del_var", "Delete a variable (no error when it is not set).", VAR)
command(
    "inc-var",
    WRITE,
    "vars.inc_var",
    "Add 1 to a numeric variable (a missing one counts as 0) and print the new value.",
    VAR,
)
command(
    "dec-var",
    WRITE,
    "vars.dec_var",
    "Subtract 1 from a numeric variable (a missing one counts as 0) and print the new value.",
    VAR,
)
command(
    "add-var",
    WRITE,
    "vars.add_var",
    "Add N to a numeric variable (a missing one counts as 0) and print the new value.",
    VAR,
    Param(
        "n",
        "float",
        "the number to add; a negative one subtracts (add-var cnt -3)",
        required=True,
        positional=True,
        metavar="N",
    ),
)

# --------------------------------------------------------------------------------------------
# No-sync key/value and locks (reference C.16).

command(
    "no-sync-set",
    WRITE,
    "nosync.no_sync_set",
    "Set a no-sync value (the area's key/value store for local state and faux locks).",
    VAR,
    VALUE,
)
command(
    "no-sync-get-default",
    READ,
    "nosync.no_sync_get_default",
    "Print a no-sync value (numbers as numbers), or the default when it is not set.",
    VAR,
    Param("default", "str", "printed when the value is not set (default: nothing, exit 1)"),
    api="no-sync-get/default",
)
command(
    "no-sync-del", WRITE, "nosync.no_sync_del", "Delete a no-sync value (or release a lock).", VAR, api="no-sync-del!"
)
command(
    "no-sync-get-lock",
    WRITE,
    "nosync.no_sync_get_lock",
    "Take a named lock: {acquired: true, value: <time>} when it was free, {acquired: false, value: "
    "<time it was taken>} when it is held. Release it with no-sync-del.",
    VAR,
)

# --------------------------------------------------------------------------------------------
# Processes (reference A.14, C.17).

HOST = Param("host", "str", "host name", required=True, nonempty=True)
PID = Param("pid", "int", "process id", required=True, min=0)
command(
    "register-process",
    WRITE,
    "processes.register_process",
    "Register a process (host, pid unique; re-registering replaces it) and print its id.",
    HOST,
    PID,
    Param("port", "int", "port it listens on", min=0, max=65535),
    Param("starttime", "int", "start time (default: now)", min=0),
    Param("status", "str", "status", default="starting"),
    Param("purpose", "str", "what it is for, e.g. server", default=""),
    Param("dbname", "str", "the database it serves", default=""),
    Param("version", "str", "its version", default=""),
)
command(
    "set-process-status",
    WRITE,
    "processes.set_process_status",
    "Set a registered process's status.",
    HOST,
    PID,
    Param("status", "str", "new status", required=True),
)
command(
    "set-process-done",
    WRITE,
    "processes.set_process_done",
    "Mark a registered process done (end time now, with a reason).",
    HOST,
    PID,
    Param("reason", "str", "why it ended", default=""),
)
command(
    "get-process-options",
    READ,
    "processes.get_process_options",
    "List the registered processes that are starting or running for a purpose and database.",
    Param("purpose", "str", "purpose, e.g. server", required=True),
    Param("dbname", "str", "database name", default=""),
)

# --------------------------------------------------------------------------------------------
# Archives (reference C.18).

command(
    "archive-register-disk",
    WRITE,
    "archives.archive_register_disk",
    "Register an archive disk (or update its free space) and print its id.",
    Param("disk_name", "str", "archive area name", required=True, nonempty=True),
    Param("disk_path", "str", "path of the disk", required=True, nonempty=True),
    Param("df", "int", "free space", default=-1, min=-1),
)
command(
    "archive-register-block-name",
    WRITE,
    "archives.archive_register_block_name",
    "Register an archive block on a disk (or update its usage) and print its id.",
    Param("disk_id", "int", "id of the disk (from archive-register-disk)", required=True),
    Param("archive_path", "str", "path of the block", required=True, nonempty=True),
    Param("du", "int", "disk usage of the block", min=0),
)
command(
    "test-get-archive-block-info",
    READ,
    "archives.test_get_archive_block_info",
    "One archive block record. Exit 1 when there is no such block.",
    Param("block_id", "int", "id of the block", required=True),
)
command(
    "archive-get-allocations",
    READ,
    "archives.archive_get_allocations",
    "List the archive blocks already holding a test/item (given to a test of that name and item path, "
    "in any run, by test-set-archive-block-id) on disks with more than --dneeded free.",
    TESTNAME,
    ITEM_PATH,
    Param("dneeded", "int", "space needed", default=0, min=0),
)
command(
    "archive-allocate-testsuite-area-to-block",
    WRITE,
    "misc.dead",
    "Dead Megatest entry (never implemented); refused.",
    api="archive-allocate-testsuite/area-to-block",
    dead="archive-allocate-testsuite/area-to-block was never implemented in Megatest and is not part of "
    "dbtool; use archive-register-block-name",
)

# --------------------------------------------------------------------------------------------
# Change tracking (reference C.11).

command(
    "get-changed-record-ids",
    READ,
    "changes.get_changed_record_ids",
    "The ids of the records changed after --since: {runs, tests, test_steps, test_data, run_stats}.",
    SINCE,
)
command(
    "get-changed-record-test-ids",
    READ,
    "changes.get_changed_record_test_ids",
    "The ids of the tests changed after --since.",
    SINCE,
)
command(
    "get-changed-record-run-ids",
    READ,
    "changes.get_changed_record_run_ids",
    "The ids of the runs changed after --since.",
    SINCE,
)
