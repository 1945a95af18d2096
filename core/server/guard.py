"""What the writer keeps of the area's state: the area lock and the tests open for one job.

Both are in the database (handlers/arealock.py); the writer checks every write against its copy,
so the check costs nothing while the area is not locked and no test is open:

* SQLite: one server writes the area, so its copy is exact. It is loaded at start and again after
  each group that may have changed the state — such a request runs in a group of its own
  (``changes_state``), so that no request after it in its group sees the old state.
* PostgreSQL: other front-ends change the state too. Every group takes the advisory lock
  ``AREA_STATE_LOCK`` shared, as its first statement, and reads the state row (version and lock);
  a group that changes the state takes it exclusively. So a group never runs while another
  changes the state, and what it read holds until it commits. The open tests are read again only
  when the version moved. All of that rides on the group's BEGIN: no round trip more.
"""

from __future__ import annotations

from ..db.postgres import AREA_STATE_LOCK
from ..handlers.arealock import locked_refusal
from ..request import token_hash

STATE_SQL = (
    "SELECT version, lock_token, lock_holder, lock_host, lock_pid, lock_reason, locked_at FROM area_state WHERE id = 1"
)
OPEN_SQL = (
    "SELECT j.test_id, j.token, j.holder, j.host, j.pid, j.opened, t.testname, t.item_path "
    "FROM test_jobs j LEFT JOIN tests t ON t.id = j.test_id"
)
OPEN_COLUMNS = ("token", "holder", "host", "pid", "opened", "testname", "item_path")

LOCK_COMMANDS = frozenset({"lock-area", "unlock-area"})  # they judge the lock themselves
# may change the state (they close open tests: dead ones, those of a deleted run, purged ones)
STATE_COMMANDS = frozenset({*LOCK_COMMANDS, "mark-incomplete", "delete-run", "delete-old-deleted-test-records"})
JOB_COMMANDS = frozenset({"exec-begin", "exec-end"})  # ... when they carry a job's token


def changes_state(cmd_name: str, ctx) -> bool:
    """Whether a request may change the area lock or the open tests (it then runs alone)."""
    return cmd_name in STATE_COMMANDS or (ctx.job_token is not None and cmd_name in JOB_COMMANDS)


class AreaGuard:
    __slots__ = ("lock", "lock_token", "open_tests", "proven", "version")

    def __init__(self) -> None:
        self.version: int | None = None  # of the state this copy holds (None: not read yet)
        self.lock: dict | None = None  # the area lock (None: not locked)
        self.lock_token: str | None = None  # its token's SHA-256
        self.proven: str | None = None  # the token last found to match it (the holder's writes hash nothing)
        self.open_tests: dict[int, dict] = {}  # test id -> the job that has it open

    # -- reading the state ----------------------------------------------------------------------------
    def take_state(self, row: tuple | None) -> bool:
        """An area_state row (STATE_SQL); True when its version is not the one of the open tests kept."""
        if row is None:  # (an area whose schema an older dbtool made: nothing is locked or open)
            self.lock = self.lock_token = self.proven = None
            changed, self.version = self.version != -1, -1
            if changed:
                self.open_tests = {}
            return False
        version, token, holder, host, pid, reason, since = row
        if token != self.lock_token:
            self.proven = None
        self.lock_token = token
        self.lock = (
            None
            if token is None
            else {"holder": holder, "host": host, "pid": pid, "since": since, "reason": reason or ""}
        )
        changed = version != self.version
        self.version = version
        return changed

    def take_open(self, rows: list[tuple]) -> None:
        self.open_tests = {row[0]: dict(zip(OPEN_COLUMNS, row[1:], strict=True)) for row in rows}

    def load(self, execute) -> None:
        """Read the whole state with ``execute(sql) -> cursor`` (SQLite: outside a transaction)."""
        self.version = None
        if self.take_state(execute(STATE_SQL).fetchone()):
            self.take_open(execute(OPEN_SQL).fetchall())

    def begin_postgres(self, raw, exclusive: bool) -> None:
        """PostgreSQL: begin a group's transaction holding the state's lock, and read the state."""
        kind = "" if exclusive else "_shared"
        cursor = raw.execute(f"BEGIN; SELECT pg_advisory_xact_lock{kind}({AREA_STATE_LOCK}); {STATE_SQL}")
        cursor.nextset()
        cursor.nextset()
        if self.take_state(cursor.fetchone()):
            self.take_open(raw.execute(OPEN_SQL).fetchall())

    # -- judging a request ---------------------------------------------------------------------------
    def refusal(self, cmd_name: str, ctx):
        """The Held error of a write the area lock keeps out (None when it may run)."""
        if self.lock is None or ctx.internal or cmd_name in LOCK_COMMANDS:
            return None
        given = ctx.lock_token
        if given is not None and (given == self.proven or token_hash(given) == self.lock_token):
            self.proven = given
            return None
        return locked_refusal(self.lock)
