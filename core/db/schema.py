"""The database schema: every table of reference section A, plus events, test_outputs, idempotency,
and the staging of test data uploaded in parts.

Static tables are SQLModel models. The ``runs`` table has one column per area key, so it is
built per key list with SQLAlchemy Core (``runs_table``). Handlers query through the
``Table`` objects (Core statements: fast, and portable to PostgreSQL); defaults live in the
database too, so rows written by other tools get the reference's defaults.

Legacy tables of reference A.15 (monitor.db, logging.db, the port logger) are not created:
server.json, the request log and the OS's port allocation replace them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    REAL,
    BigInteger,
    Column,
    DefaultClause,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.types import TypeDecorator, UserDefinedType
from sqlmodel import Field, SQLModel

from ..rules.vocab import FINAL_STATES
from .dialect import epoch_now

# 2: runs.locked_by/locked_at/deleted_at (a run's lock and deletion apart from its state; see
# runs_table). 3: runs.completed_at, the index of unfinished tests, notify_cursors (run
# completion and notifications). 4: that index's condition as a chain of <> (see UNFINISHED_SQL).
# 5: area_state (the area lock), test_jobs (tests open for an exclusive job), test_items (free-form
# data items of a test), events.fields (the fields of the request that made an event).
# engine.create_schema brings an area of an older version up to this one.
SCHEMA_VERSION = 5

# The tests a run still waits for: neither in a final state nor deleted. Written out as SQL once,
# for the partial index and for the query that must match it word for word (SQLite uses a partial
# index only when the query repeats its condition with the same literals). A chain of <>, not
# NOT IN (...): SQLite evaluates a NOT IN list of more than two values through a temporary table it
# builds each time the condition is evaluated — for every row any statement writes to tests, which
# cost a third of the time of inserting a row (schema 3 had NOT IN).
UNFINISHED_SQL = " AND ".join(f"state <> '{s}'" for s in (*FINAL_STATES, "DELETED"))


def word(value: str):
    """A state or status of the vocabulary written into a statement's text instead of bound to a
    parameter. SQLite's planner looks at the value bound to a parameter compared with a column of
    a partial index (here ``state``, the column of ``tests_unfinished``) to decide whether that
    index may serve, and then marks the statement to be compiled again whenever that parameter is
    bound — on every execution, whatever the value: a quarter of the CPU of a one-shot status write
    went to compiling one such statement again. Only for the fixed words of the vocabulary (the
    text is not quoted further)."""
    if not value.replace("_", "").isalnum():
        raise ValueError(f"not a word of the vocabulary: {value!r}")
    return literal_column(f"'{value}'")


DELETED = word("DELETED")  # ``t.state != DELETED``: the tests that are not deleted


# Defaults live in the database only (server_default): an INSERT that omits a column gets the
# reference's default there, whichever way the statement is run (see db/fast.py).


def _text(default: str | None = "", **kw: Any) -> Any:
    extra = {"server_default": default} if default is not None else {}
    return Field(default=None, sa_type=Text, sa_column_kwargs=extra, **kw)


def _int(default: int | None = 0, **kw: Any) -> Any:
    extra = {"server_default": text(str(default))} if default is not None else {}
    return Field(default=None, sa_type=INT, sa_column_kwargs=extra, **kw)


def _real(default: float | None = -1, **kw: Any) -> Any:
    extra = {"server_default": text(str(default))} if default is not None else {}
    return Field(default=None, sa_type=REAL, sa_column_kwargs=extra, **kw)


def _now() -> Any:
    """An integer Unix-time column that defaults to the time of insertion."""
    return Field(default=None, sa_type=INT, sa_column_kwargs={"server_default": DefaultClause(epoch_now())})


# Integers are 64-bit everywhere (the CLI and the wire take 64-bit values): SQLite's INTEGER is,
# PostgreSQL's is 32-bit, so there it is BIGINT. (On SQLite the type must stay INTEGER: an INTEGER
# PRIMARY KEY is the rowid.)
INT = BigInteger().with_variant(Integer(), "sqlite")


def _pk() -> Any:
    return Field(default=None, primary_key=True, sa_type=INT)


class _RealAffinity(UserDefinedType):
    """A column declared REAL with no conversion in Python: SQLite's REAL affinity stores numbers
    as numbers and keeps text that is not a number as text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "REAL"


class NumberOrText(TypeDecorator):
    """A value that is a number when it parses as one and text otherwise (reference A.6).

    SQLite stores it in a REAL-affinity column, which keeps non-numeric text as text.
    Other databases store text and convert numbers back on read.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(_RealAffinity() if dialect.name == "sqlite" else Text())

    def binds_unchanged(self, dialect: Any) -> bool:
        """True when ``process_bind_param`` returns every value as it is (db/fast.py skips it)."""
        return dialect.name == "sqlite"

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        if dialect.name == "sqlite" or value is None:
            return value
        return repr(value) if isinstance(value, float) else str(value)

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        if dialect.name == "sqlite" or not isinstance(value, str):
            return value
        from ..rules.numbers import parse_number

        number = parse_number(value)
        return value if number is None else number


# Each table's SQLModel class is built the first time it is needed: building all of them costs
# about 100 ms (pydantic work per model), which a one-shot read that needs two tables should not pay.
_BUILDERS: dict[str, Callable[[], type[SQLModel]]] = {}
_MODELS: dict[str, type[SQLModel]] = {}


def model(name: str) -> Callable[[Callable[[], type[SQLModel]]], Callable[[], type[SQLModel]]]:
    """Register the builder of the SQLModel class of table ``name``."""

    def register(builder: Callable[[], type[SQLModel]]) -> Callable[[], type[SQLModel]]:
        _BUILDERS[name] = builder
        return builder

    return register


def model_class(name: str) -> type[SQLModel]:
    """The SQLModel class of a table (built on first use)."""
    found = _MODELS.get(name)
    if found is None:
        found = _MODELS[name] = _BUILDERS[name]()
    return found


def table(name: str) -> Table:
    """A static table of the schema (every table but runs)."""
    return model_class(name).__table__


def static_tables() -> list[Table]:
    """Every table but runs, in dependency order."""
    for name in _BUILDERS:
        model_class(name)
    return list(SQLModel.metadata.sorted_tables)


@model("keys")
def _keys() -> type[SQLModel]:
    class Key(SQLModel, table=True):
        __tablename__ = "keys"
        id: int | None = _pk()
        fieldname: str = Field(sa_type=Text, sa_column_kwargs={"unique": True})
        fieldtype: str | None = _text("TEXT")

    return Key


@model("run_stats")
def _run_stats() -> type[SQLModel]:
    class RunStat(SQLModel, table=True):
        __tablename__ = "run_stats"
        __table_args__ = (Index("run_stats_run", "run_id", "state", "status"),)
        id: int | None = _pk()
        run_id: int | None = _int(None)
        state: str | None = _text(None)
        status: str | None = _text(None)
        count: int | None = _int(None)
        last_update: int | None = _now()

    return RunStat


@model("tests")
def _tests() -> type[SQLModel]:
    class Test(SQLModel, table=True):
        __tablename__ = "tests"
        __table_args__ = (
            UniqueConstraint("run_id", "testname", "item_path", name="tests_unique"),
            Index("tests_state", "state", "run_id"),
            # a run's tests in id order (the rowid follows run_id in the index): no sort for get-tests-for-run
            Index("tests_run", "run_id"),
            Index("tests_last_update", "last_update"),
            Index("tests_testname", "testname", "item_path"),
            # the unfinished tests of a run: whether a run is complete is one probe of this index
            Index(
                "tests_unfinished",
                "run_id",
                sqlite_where=text(UNFINISHED_SQL),
                postgresql_where=text(UNFINISHED_SQL),
            ),
        )
        id: int | None = _pk()
        run_id: int | None = _int(-1)
        testname: str | None = _text("noname")
        host: str | None = _text("n/a")
        cpuload: float | None = _real(-1)
        diskfree: int | None = _int(-1)
        uname: str | None = _text("n/a")
        rundir: str | None = _text("/tmp/badname")
        shortdir: str | None = _text("/tmp/badname")
        item_path: str | None = _text("")
        state: str | None = _text("NOT_STARTED")
        status: str | None = _text("FAIL")
        attemptnum: int | None = _int(0)
        final_logf: str | None = _text("logs/final.log")
        logdat: str | None = _text("")
        run_duration: int | None = _int(0)
        comment: str | None = _text("")
        event_time: int | None = _now()
        fail_count: int | None = _int(0)
        pass_count: int | None = _int(0)
        archived: int | None = _int(0)
        last_update: int | None = _now()

    return Test


@model("test_steps")
def _test_steps() -> type[SQLModel]:
    class TestStep(SQLModel, table=True):
        __tablename__ = "test_steps"
        __table_args__ = (UniqueConstraint("test_id", "stepname", "state", name="test_steps_unique"),)
        id: int | None = _pk()
        test_id: int | None = _int(None)
        stepname: str | None = _text(None)
        state: str | None = _text("NOT_STARTED")
        status: str | None = _text("n/a")
        event_time: int | None = _now()
        comment: str | None = _text("")
        logfile: str | None = _text("")
        last_update: int | None = _now()

    return TestStep


@model("test_data")
def _test_data() -> type[SQLModel]:
    class TestData(SQLModel, table=True):
        __tablename__ = "test_data"
        __table_args__ = (UniqueConstraint("test_id", "category", "variable", name="test_data_unique"),)
        id: int | None = _pk()
        test_id: int | None = _int(None)
        category: str | None = _text("")
        variable: str | None = _text(None)
        value: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        expected: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        tol: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        units: str | None = _text(None)
        comment: str | None = _text("")
        status: str | None = _text("n/a")
        type: str | None = _text("")
        last_update: int | None = _now()

    return TestData


@model("test_data_uploads")
def _test_data_uploads() -> type[SQLModel]:
    class TestDataUpload(SQLModel, table=True):
        """A csv-to-test-data upload sent in parts (handlers/uploads.py): its rows wait in
        test_data_staged until the final part makes all of them visible at once."""

        __tablename__ = "test_data_uploads"
        __table_args__ = {"sqlite_autoincrement": True}  # an id is never reused for a later upload
        id: int | None = _pk()
        upload: str = Field(sa_type=Text, sa_column_kwargs={"unique": True})  # chosen by the client
        test_id: int | None = _int(None)
        parts: int | None = _int(0)  # parts 0 .. parts-1 are staged
        rows: int | None = _int(0)  # rows staged
        touched: int | None = _now()  # last part received (stale after a day: pruned)

    return TestDataUpload


@model("test_data_staged")
def _test_data_staged() -> type[SQLModel]:
    class TestDataStaged(SQLModel, table=True):
        """Rows of unfinished uploads, as test_data will hold them; one B-tree, in upload order."""

        __tablename__ = "test_data_staged"
        __table_args__ = {"sqlite_with_rowid": False}
        upload_id: int = Field(primary_key=True, sa_type=INT, sa_column_kwargs={"autoincrement": False})
        part: int = Field(primary_key=True, sa_type=INT, sa_column_kwargs={"autoincrement": False})
        seq: int = Field(primary_key=True, sa_type=INT, sa_column_kwargs={"autoincrement": False})
        category: str | None = Field(default=None, sa_type=Text)
        variable: str | None = Field(default=None, sa_type=Text)
        value: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        expected: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        tol: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        units: str | None = Field(default=None, sa_type=Text)
        comment: str | None = Field(default=None, sa_type=Text)
        status: str | None = Field(default=None, sa_type=Text)
        type: str | None = Field(default=None, sa_type=Text)

    return TestDataStaged


@model("test_rundat")
def _test_rundat() -> type[SQLModel]:
    class TestRundat(SQLModel, table=True):
        __tablename__ = "test_rundat"
        __table_args__ = (Index("test_rundat_test", "test_id", "update_time"),)
        id: int | None = _pk()
        test_id: int | None = _int(None)
        update_time: int | None = _now()
        cpuload: float | None = _real(-1)
        diskfree: int | None = _int(-1)
        diskusage: int | None = _int(-1)
        run_duration: int | None = _int(0)

    return TestRundat


@model("test_meta")
def _test_meta() -> type[SQLModel]:
    class TestMeta(SQLModel, table=True):
        __tablename__ = "test_meta"
        id: int | None = _pk()
        testname: str | None = Field(
            default=None, sa_type=Text, sa_column_kwargs={"server_default": "", "unique": True}
        )
        author: str | None = _text("")
        owner: str | None = _text("")
        description: str | None = _text("")
        reviewed: Any = Field(default=None, sa_type=Text, nullable=True)
        iterated: str | None = _text("")
        avg_runtime: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        avg_disk: Any = Field(default=None, sa_type=NumberOrText, nullable=True)
        tags: str | None = _text("")
        jobgroup: str | None = _text("default")

    return TestMeta


@model("tasks_queue")
def _tasks_queue() -> type[SQLModel]:
    class TaskQueue(SQLModel, table=True):
        __tablename__ = "tasks_queue"
        __table_args__ = (Index("tasks_queue_target", "target", "name"),)
        id: int | None = _pk()
        action: str | None = _text("")
        owner: str | None = _text(None)
        state: str | None = _text("new")
        target: str | None = _text("")
        name: str | None = _text("")
        testpatt: str | None = _text("")
        keylock: str | None = _text(None)
        params: str | None = _text(None)
        creation_time: int | None = _now()
        execution_time: int | None = _int(0)

    return TaskQueue


@model("metadat")
def _metadat() -> type[SQLModel]:
    class Metadat(SQLModel, table=True):
        __tablename__ = "metadat"
        id: int | None = _pk()
        var: str = Field(sa_type=Text, sa_column_kwargs={"unique": True})
        val: str | None = _text(None)

    return Metadat


@model("extradat")
def _extradat() -> type[SQLModel]:
    class Extradat(SQLModel, table=True):
        __tablename__ = "extradat"
        id: int | None = _pk()
        run_id: int | None = _int(None)
        key: str | None = _text(None)
        val: str | None = _text(None)

    return Extradat


@model("access_log")
def _access_log() -> type[SQLModel]:
    class AccessLog(SQLModel, table=True):
        __tablename__ = "access_log"
        id: int | None = _pk()
        user: str | None = _text(None)
        accessed: int | None = _now()
        args: str | None = _text(None)

    return AccessLog


@model("archives")
def _archives() -> type[SQLModel]:
    class Archive(SQLModel, table=True):
        __tablename__ = "archives"
        id: int | None = _pk()
        test_id: int | None = _int(None)
        state: str | None = _text("new")
        status: str | None = _text("n/a")
        archive_type: str | None = _text("bup")
        du: int | None = _int(None)
        archive_path: str | None = _text(None)

    return Archive


@model("archive_disks")
def _archive_disks() -> type[SQLModel]:
    class ArchiveDisk(SQLModel, table=True):
        __tablename__ = "archive_disks"
        id: int | None = _pk()
        archive_area_name: str | None = _text(None)
        disk_path: str | None = _text(None)
        last_df: int | None = _int(-1)
        last_df_time: int | None = _now()
        creation_time: int | None = _now()

    return ArchiveDisk


@model("archive_blocks")
def _archive_blocks() -> type[SQLModel]:
    class ArchiveBlock(SQLModel, table=True):
        __tablename__ = "archive_blocks"
        id: int | None = _pk()
        archive_disk_id: int | None = _int(None)
        disk_path: str | None = _text(None)
        last_du: int | None = _int(-1)
        last_du_time: int | None = _now()
        creation_time: int | None = _now()

    return ArchiveBlock


@model("archive_allocations")
def _archive_allocations() -> type[SQLModel]:
    class ArchiveAllocation(SQLModel, table=True):
        __tablename__ = "archive_allocations"
        id: int | None = _pk()
        archive_block_id: int | None = _int(None)
        testname: str | None = _text(None)
        item_path: str | None = _text(None)
        creation_time: int | None = _now()

    return ArchiveAllocation


@model("no_sync_metadat")
def _no_sync_metadat() -> type[SQLModel]:
    class NoSyncMetadat(SQLModel, table=True):
        """The no-sync key/value store (reference A.13): host-local values and faux locks."""

        __tablename__ = "no_sync_metadat"
        var: str = Field(sa_type=Text, primary_key=True)
        val: str | None = _text(None)

    return NoSyncMetadat


@model("processes")
def _processes() -> type[SQLModel]:
    class Process(SQLModel, table=True):
        """Registered processes (reference A.14)."""

        __tablename__ = "processes"
        __table_args__ = (UniqueConstraint("host", "pid", name="processes_unique"),)
        id: int | None = _pk()
        host: str | None = _text(None)
        port: int | None = _int(None)
        pid: int | None = _int(None)
        starttime: int | None = _now()
        endtime: int | None = _int(None)
        status: str | None = _text("starting")
        purpose: str | None = _text("")
        dbname: str | None = _text("")
        mtversion: str | None = _text("")
        reason: str | None = _text("")

    return Process


@model("events")
def _events() -> type[SQLModel]:
    class Event(SQLModel, table=True):
        """Change events, appended by every write in its own transaction (SPEC 4); ``seq`` is gap-free."""

        __tablename__ = "events"
        __table_args__ = (Index("events_run", "run_id", "seq"),)
        seq: int | None = Field(default=None, primary_key=True, sa_type=INT)
        time_ns: int | None = Field(default=None, sa_type=INT)
        cmd: str | None = _text(None)
        run_id: int | None = _int(None)
        test_id: int | None = _int(None)
        testname: str | None = _text(None)
        item_path: str | None = _text(None)
        state: str | None = _text(None)
        status: str | None = _text(None)
        client: str | None = _text(None)
        data: str | None = _text(None)
        fields: str | None = _text(None)  # the request's fields, JSON (added in schema 5)

    return Event


@model("test_outputs")
def _test_outputs() -> type[SQLModel]:
    class TestOutput(SQLModel, table=True):
        """Output files a job attached to its test (CCP4i's AddOutputFile)."""

        __tablename__ = "test_outputs"
        __table_args__ = (UniqueConstraint("test_id", "path", name="test_outputs_unique"),)
        id: int | None = _pk()
        test_id: int | None = _int(None)
        path: str | None = _text(None)
        role: str | None = _text("artifact")
        created: int | None = _now()

    return TestOutput


@model("heartbeats")
def _heartbeats() -> type[SQLModel]:
    class Heartbeat(SQLModel, table=True):
        """Liveness of a test run by ``dbtool exec``: it beats every ``period`` seconds (SPEC 9.8)."""

        __tablename__ = "heartbeats"
        test_id: int = Field(primary_key=True, sa_type=INT)
        host: str | None = _text(None)
        pid: int | None = _int(None)
        period: float | None = _real(30)
        started: int | None = _now()
        last_beat: int | None = _now()

    return Heartbeat


@model("area_state")
def _area_state() -> type[SQLModel]:
    class AreaState(SQLModel, table=True):
        """One row (id 1): the area lock (CCP4i's project lock) and the version of the area's
        state, which every change of the lock or of an open test (test_jobs) raises, so that a
        server (a front-end of several) knows when what it keeps of them is old. The lock's token
        is kept as its SHA-256; NULL when the area is not locked."""

        __tablename__ = "area_state"
        id: int = Field(primary_key=True, sa_type=INT)
        version: int | None = _int(0)
        lock_token: str | None = _text(None)
        lock_holder: str | None = _text(None)
        lock_host: str | None = _text(None)
        lock_pid: int | None = _int(None)
        lock_reason: str | None = _text(None)
        locked_at: int | None = _int(None)

    return AreaState


@model("test_jobs")
def _test_jobs() -> type[SQLModel]:
    class TestJob(SQLModel, table=True):
        """Tests open for one job (``exec --exclusive``, CCP4i's DbRegisterJob): until it ends or is
        found dead, only requests with its token (SHA-256 here) write to the test."""

        __tablename__ = "test_jobs"
        test_id: int = Field(primary_key=True, sa_type=INT)
        token: str | None = _text(None)
        holder: str | None = _text(None)
        host: str | None = _text(None)
        pid: int | None = _int(None)
        opened: int | None = _now()

    return TestJob


@model("test_items")
def _test_items() -> type[SQLModel]:
    class TestItem(SQLModel, table=True):
        """Free-form data items of a test, by name (CCP4i's DbSetData/DbGetData)."""

        __tablename__ = "test_items"
        test_id: int = Field(primary_key=True, sa_type=INT)
        name: str = Field(primary_key=True, sa_type=Text)
        value: str | None = _text("")
        updated: int | None = _now()

    return TestItem


@model("idempotency")
def _idempotency() -> type[SQLModel]:
    class Idempotency(SQLModel, table=True):
        """Results of acknowledged writes by idempotency key, so a retried write is applied once."""

        __tablename__ = "idempotency"
        __table_args__ = (Index("idempotency_created", "created"),)
        idem: str = Field(sa_type=Text, primary_key=True)
        response: str | None = _text(None)
        created: int | None = _now()

    return Idempotency


@model("notify_cursors")
def _notify_cursors() -> type[SQLModel]:
    class NotifyCursor(SQLModel, table=True):
        """Per ``[[notify]]`` entry of config.toml (by its name): the last event seq it has handled."""

        __tablename__ = "notify_cursors"
        name: str = Field(sa_type=Text, primary_key=True)
        seq: int | None = _int(0)
        updated: int | None = _now()

    return NotifyCursor


# Tables whose rows carry last_update, refreshed by an AFTER UPDATE trigger (reference A.16).
TRIGGER_TABLES = ("runs", "run_stats", "tests", "test_steps", "test_data")


# The run's lock and deletion live in their own columns, never in ``state``, so that no roll-up or
# status write can clear them (SPEC 9.2). NULL = not locked / not deleted:
#   locked_by   TEXT     who locked the run ('' when unknown: a lock migrated from an older area)
#   locked_at   INTEGER  when it was locked (Unix time)
#   deleted_at  INTEGER  when delete-run deleted it; register-run of its target and name clears it
INDEXED_KEYS = 16  # key columns in the runs_target index

RUN_LIFECYCLE_COLUMNS = (("locked_by", Text()), ("locked_at", INT), ("deleted_at", INT))
#   completed_at INTEGER when the run last became complete (every test in a final state); NULL while
#                        it is not (see handlers/completion.py)
RUN_COMPLETION_COLUMNS = (("completed_at", INT),)


def runs_table(keys: list[str], metadata: MetaData) -> Table:
    """The runs table for an area with these keys: one TEXT column per key, in key order."""
    return Table(
        "runs",
        metadata,
        Column("id", INT, primary_key=True),
        *(Column(key, Text) for key in keys),
        Column("runname", Text, server_default="norun"),
        Column("contour", Text, server_default=""),
        Column("state", Text, server_default=""),
        Column("status", Text, server_default=""),
        Column("owner", Text, server_default=""),
        Column("event_time", INT, server_default=DefaultClause(epoch_now())),
        Column("comment", Text, server_default=""),
        Column("fail_count", INT, server_default=text("0")),
        Column("pass_count", INT, server_default=text("0")),
        Column("last_update", INT, server_default=DefaultClause(epoch_now())),
        *(Column(name, type_, nullable=True) for name, type_ in RUN_LIFECYCLE_COLUMNS),
        *(Column(name, type_, nullable=True) for name, type_ in RUN_COMPLETION_COLUMNS),
        UniqueConstraint("runname", *keys, name="runs_unique"),
        Index("runs_event_time", "event_time"),
        Index("runs_last_update", "last_update"),
        # a target's runs newest first: compare's baseline, flaky's window (PostgreSQL indexes at
        # most 32 columns; an area's first keys narrow it enough)
        Index("runs_target", *keys[:INDEXED_KEYS], "event_time"),
    )


class Schema:
    """The tables of one area (its runs table depends on its keys); static tables resolve lazily:
    ``schema.tests``, ``schema.events``, ... (``keys_t`` is the keys table)."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = list(keys)
        self.metadata = MetaData()
        self.runs = runs_table(self.keys, self.metadata)
        self.key_columns = [self.runs.c[k] for k in self.keys]

    def __getattr__(self, name: str) -> Table:
        table_name = "keys" if name == "keys_t" else name
        if table_name not in _BUILDERS:
            raise AttributeError(name)
        found = table(table_name)
        setattr(self, name, found)
        return found

    def all_tables(self) -> list[Table]:
        return [*static_tables(), self.runs]


_SCHEMAS: dict[tuple[str, ...], Schema] = {}


def schema_for(keys: list[str]) -> Schema:
    """The (cached) Schema of an area with these keys."""
    key = tuple(keys)
    schema = _SCHEMAS.get(key)
    if schema is None:
        schema = _SCHEMAS[key] = Schema(list(keys))
    return schema
