"""The command registry: one declaration per command, everything else derives from it.

The CLI (both the fast binder and the Typer app), the protocol validation in the server, the
read/write routing in the client, shell completions and man pages all read these declarations.
Adding an API command is one ``command(...)`` here plus one handler function.

This module is on the client path, so it imports nothing beyond the standard library's core.
"""

from __future__ import annotations

from .errors import BadRequest

# Command kinds.
READ = "read"  # pure query: a live server, else in-process on a read-only connection
WRITE = "write"  # changes the database: always through the server (auto-started)
SERVER = "server"  # answered by the server itself, never queued and never run without a server
LOCAL = "local"  # dbtool's own commands that run in the CLI process (init, server start, demo)

PARAM_TYPES = ("str", "int", "float", "bool", "list", "argv")

_MISSING = object()


class Param:
    """One named parameter of a command.

    ``type``: ``str``, ``int``, ``float``, ``bool`` (a flag), ``list`` (comma-separated on the
    command line, a JSON array on the wire) or ``argv`` (everything after ``--``).
    """

    __slots__ = ("choices", "default", "help", "metavar", "multiple", "name", "positional", "required", "type")

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
        self.metavar = metavar or (name.upper() if positional else _METAVARS.get(self.type, "TEXT"))

    @property
    def option(self) -> str:
        """The long option that sets this parameter on the command line."""
        return "--" + self.name.replace("_", "-")

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
            return value
        if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind == "bool" and isinstance(value, bool):
            return value
        if kind == "str" and isinstance(value, str):
            if self.choices and value not in self.choices:
                raise BadRequest(f"parameter {self.name} must be one of {', '.join(self.choices)}; got {value!r}")
            return value
        if kind in ("list", "argv"):
            if isinstance(value, str):
                return self.from_text(value) if kind == "list" else [value]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return value
        raise BadRequest(f"parameter {self.name} expects {_WIRE_TYPES[kind]}, got {type(value).__name__}")


_METAVARS = {"int": "N", "float": "X", "list": "A,B", "str": "TEXT", "bool": "", "argv": "CMD..."}
_WIRE_TYPES = {
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
    for local commands. ``columns`` are the fields the human table shows (all fields when empty).
    """

    __slots__ = ("aliases", "api", "columns", "handler", "help", "hidden", "kind", "name", "params")

    def __init__(
        self,
        name: str,
        kind: str,
        handler: str,
        help: str,
        params: tuple[Param, ...],
        api: str = "",
        aliases: tuple[str, ...] = (),
        columns: tuple[str, ...] = (),
        hidden: bool = False,
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

    @property
    def summary(self) -> str:
        """The first sentence of the help: what the command does."""
        return self.help.split("\n", 1)[0]

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
        known = {p.name: p for p in self.params}
        bound: dict = {}
        for key, value in params.items():
            name = key.replace("-", "_") if isinstance(key, str) else key
            p = known.get(name)
            if p is None:
                raise BadRequest(f"{self.api}: unknown parameter {key!r}; it takes {_names(self.params)}")
            bound[name] = p.check_wire(value)
        for p in self.params:
            if bound.get(p.name) is None:
                if p.required:
                    raise BadRequest(f"{self.api}: missing required parameter {p.name} ({p.label})")
                bound[p.name] = p.default
        return bound


def _names(params: tuple[Param, ...]) -> str:
    return ", ".join(p.name for p in params) or "no parameters"


COMMANDS: dict[str, Command] = {}
_BY_ANY_NAME: dict[str, Command] = {}


def command(
    name: str,
    kind: str,
    handler: str,
    help: str,
    *params: Param,
    api: str = "",
    aliases: tuple[str, ...] = (),
    columns: tuple[str, ...] = (),
    hidden: bool = False,
) -> Command:
    """Declare a command (module-level calls below build the registry)."""
    cmd = Command(name, kind, handler, help, params, api, aliases, columns, hidden)
    for spelling in dict.fromkeys((name, cmd.api, *aliases)):
        if spelling in _BY_ANY_NAME:
            raise ValueError(f"command name {spelling!r} declared twice")
        _BY_ANY_NAME[spelling] = cmd
    COMMANDS[name] = cmd
    return cmd


def lookup(name: str) -> Command | None:
    """Find a command by its CLI name, its Megatest API spelling, or an alias."""
    return _BY_ANY_NAME.get(name)


# --------------------------------------------------------------------------------------------
# The shared vocabulary: the same concept has the same option everywhere (SPEC 2.1).

RUN_ID = Param("run_id", "int", "id of the run (printed by register-run, listed by get-runs)", required=True)
TEST_ID = Param("test_id", "int", "id of the test (printed by register-test, get-test-id)", required=True)
TESTNAME = Param("testname", "str", "name of the test", required=True)
ITEM_PATH = Param("item_path", "str", "item path of an iterated test; '' (the default) is the toplevel", default="")
STATE = Param("state", "str", "new state, e.g. RUNNING, COMPLETED (omit to leave it unchanged)")
STATUS = Param("status", "str", "new status, e.g. PASS, FAIL, n/a (omit to leave it unchanged)")
COMMENT = Param("comment", "str", "comment to store with the change (omit to leave it unchanged)")
TARGET = Param("target", "str", "the run's key values joined by '/', e.g. v1.2/linux")
RUNNAME = Param("runname", "str", "name of the run")
LIMIT = Param("limit", "int", "return at most N records")
OFFSET = Param("offset", "int", "skip the first N records", default=0)
TESTPATT = Param(
    "testpatt",
    "str",
    "comma list of test[/item] patterns: '%' makes a case-insensitive LIKE, otherwise * and ? glob; "
    "'name/' selects the toplevel only",
)
STATES = Param("states", "list", "only tests in these states (comma list)")
STATUSES = Param("statuses", "list", "only tests with these statuses (comma list)")
INCLUDE_DELETED = Param("include_deleted", "bool", "also list soft-deleted records")
VAR = Param("var", "str", "name of the variable", required=True, positional=True, metavar="NAME")


# --------------------------------------------------------------------------------------------
# dbtool's own commands (run in the CLI process).

command(
    "init",
    LOCAL,
    "local:init",
    "Create a dbtool area: PATH/.dbtool with config.toml and the database holding the full schema.\n\n"
    "Re-running with the same keys is a no-op; different keys are refused.",
    Param("path", "str", "directory of the area (default: the current directory)", positional=True, default="."),
    Param("keys", "list", "the area's ordered target fields, e.g. RELEASE,PLATFORM", required=True),
)
command(
    "server start",
    LOCAL,
    "local:server_start",
    "Start the area's server in the background and print its address; if one is already running, "
    "print where it is and exit 0 (hand-off).",
    Param("foreground", "bool", "run the server in this process instead of detaching it"),
    Param("bind", "str", "address to listen on (default: server.bind in config, else 127.0.0.1)"),
    Param("port", "int", "TCP port (default: server.port in config, else any free port)"),
    Param("idle_timeout", "float", "stop after this many idle seconds; 0 = never (default: config, else 300)"),
)
command(
    "server stop",
    LOCAL,
    "local:server_stop",
    "Stop the area's server gracefully: finish queued writes, commit, checkpoint, remove server.json.",
)
command(
    "server status",
    LOCAL,
    "local:server_status",
    "Show the running server: host, port, pid, uptime, version, requests served, queue depth. "
    "Exit 0 when it is alive, 3 when no server runs.",
)
command(
    "demo",
    LOCAL,
    "demo:run",
    "See dbtool work: create a throw-away area, start its server, let several concurrent job "
    "wrappers report a small run, and print the results.",
    Param("jobs", "int", "number of concurrent job wrappers", default=6),
    Param("keep", "bool", "keep the demo area and its server instead of removing them"),
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

# --------------------------------------------------------------------------------------------
# Keys and runs.

command("get-keys", READ, "runs.get_keys", "List the area's keys (target fields) in order.")
command(
    "get-target",
    READ,
    "runs.get_target",
    "Print a run's target: its key values joined by '/'. Exit 1 when the run does not exist.",
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
    "get-runs",
    READ,
    "runs.get_runs",
    "List runs, newest first, as records (id, runname, target, one field per key, state, status, "
    "owner, event_time, ...).",
    RUNNAME.with_(help="comma list of run-name patterns ('%' → LIKE, else glob)"),
    TARGET.with_(help="comma list of target patterns matched against KEY1/KEY2/... ('%' → LIKE, else glob)"),
    LIMIT,
    OFFSET,
    INCLUDE_DELETED,
    columns=("id", "target", "runname", "state", "status", "owner", "event_time"),
)
command(
    "get-run-info",
    READ,
    "runs.get_run_info",
    "Show one run's record (deleted runs too). Exit 1 when the run does not exist.",
    RUN_ID,
)

# --------------------------------------------------------------------------------------------
# Tests.

TEST_COLUMNS = ("id", "testname", "item_path", "state", "status", "event_time", "host", "run_duration", "comment")

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
    RUN_ID.with_(required=False, help="id of the run (accepted for compatibility; the test id decides)"),
    TEST_ID,
    STATE,
    STATUS,
    COMMENT,
)
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
    RUN_ID.with_(required=False, help="id of the run (accepted for compatibility; ignored)"),
    TEST_ID,
)
command(
    "get-tests-for-run",
    READ,
    "tests.get_tests_for_run",
    "List the tests of a run as records, filtered by test pattern, states and statuses.",
    RUN_ID,
    TESTPATT,
    STATES,
    STATUSES,
    Param("not_in", "bool", "select tests NOT in the given states/statuses"),
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
    INCLUDE_DELETED,
    columns=TEST_COLUMNS,
)

# --------------------------------------------------------------------------------------------
# Vars (the metadat table).

command(
    "set-var",
    WRITE,
    "vars.set_var",
    "Set a variable (stored as text).",
    VAR,
    Param("value", "str", "value", required=True, positional=True),
)
command(
    "get-var",
    READ,
    "vars.get_var",
    "Print a variable's value (numbers come back as numbers). Exit 1 when it is not set.",
    VAR,
)
command("del-var", WRITE, "vars.del_var", "Delete a variable (no error when it is not set).", VAR)
