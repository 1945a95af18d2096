"""``dbtool exec``: run a job's command and make the database tell the truth about it.

Before: everything that can be checked is (the command line, --rundir, the area, --log, which is
created then), so that bad input never touches the test. Then the test (created when missing)
becomes RUNNING with host, uname, run directory, pid, log.
During: CMD runs in the run directory in its own process group (with $DBTOOL_AREA, $DBTOOL_RUN_ID,
$DBTOOL_TEST_ID set, and with --exclusive the job's token in $DBTOOL_JOB_TOKEN, which every dbtool
it runs sends along, so that they may write to the test open for the job), its output passes through (and is
copied to ``--log``), the signals a batch system sends (INT, TERM, HUP, QUIT, USR1, USR2) are
forwarded to it, and a heartbeat every ``--heartbeat`` seconds keeps the test alive with a sample
of load, free disk and duration. After: COMPLETED PASS (exit 0) or FAIL, or KILLED by a signal,
rolled up into the toplevel and the run; exec exits with CMD's code (128+N for signal N).
A CMD that cannot be started FAILs the test with the reason (exit 127 not found, 126 not
runnable). Those signals are caught from exec's very start: one that comes before CMD started
means CMD is not started; the test (if exec-begin was recorded) is KILLED, and exec exits 128+N.

Bookkeeping never changes the job's outcome: a report the server cannot take is retried (same
idempotency key), then spooled for the server; heartbeats that fail are skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import BinaryIO

from dbtool.core import spool
from dbtool.core.area import Area, find_area
from dbtool.core.client import DEFAULT_TIMEOUT, call, new_idem, with_tokens
from dbtool.core.commands import COMMANDS, escape_bytes
from dbtool.core.errors import (
    Busy,
    DbtoolError,
    Internal,
    StorageError,
    Unauthorized,
    Unavailable,
    UsageError,
    VersionMismatch,
)
from dbtool.core.link import client_identity, hostname, start_server

from .binder import GlobalOptions, default_timeout

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
# the server could not take the report (not a refusal of the report itself): spool it
UNDELIVERED = (Unavailable, Busy, VersionMismatch, Unauthorized, StorageError, Internal)
NUDGE_TIMEOUT = 5.0  # seconds to spend starting a server for reports that wait in the spool
PERIOD = COMMANDS["exec-heartbeat"].param("heartbeat")  # the periods the server accepts: min, max, default
MAX_TIMEOUT = 86400.0  # seconds a report may wait for the server, whatever --timeout says
WAIT_SLICE = 60.0  # the longest single wait of the heartbeat thread (seconds)


def warn(message: str) -> None:
    print(f"dbtool exec: {message}", file=sys.stderr, flush=True)


class Reporter:
    """Sends a job's reports; what cannot be delivered in time is spooled, never lost.

    A report the server could not take (unreachable, busy, a storage failure, a bug) goes to the
    spool, which the server replays in order; while one waits there, the job's later reports follow
    it into the spool, so that they are applied in the order they were made. When even the spool
    cannot be written (disk full, read-only), exec says so on stderr and the job goes on.
    """

    def __init__(self, area: Area, timeout: float, extra: dict | None = None) -> None:
        self.area = area
        self.timeout = timeout
        self.extra = extra  # members of every report: the job's fields (--field), its token (--exclusive)
        self.waiting: list[str] = []  # this job's reports in the spool

    def final(self, name: str, params: dict) -> None:
        """A report after the job ran: any refusal is told, but never changes the job's exit code."""
        try:
            self.report(name, params)
        except DbtoolError as err:
            warn(f"the server refused the {name} report: {err.message}")

    def report(self, name: str, params: dict) -> object:
        """Deliver a report (raising Refused when the server refuses it); None when it was not delivered."""
        cmd = COMMANDS[name]
        idem = new_idem()
        if self.waiting and spool.waiting(self.waiting):
            self._spool(name, cmd.api, params, idem, "an earlier report of this job is still in the spool")
            start_server_quietly(self.area, min(self.timeout, NUDGE_TIMEOUT))  # so that one replays them
            return None
        try:
            return call(self.area, cmd, params, timeout=self.timeout, idem=idem, extra=self.extra).result
        except UNDELIVERED as err:
            why = err.message
        except OSError as err:  # e.g. no room for the server's lock or log file
            why = f"cannot reach the server: {err.strerror or err}"
        self._spool(name, cmd.api, params, idem, why)
        return None

    def _spool(self, name: str, api: str, params: dict, idem: str, why: str) -> None:
        try:
            path = spool.append(self.area, api, params, idem, client_identity(), with_tokens(self.extra))
        except OSError as err:
            where = spool.spool_dir(self.area)
            warn(f"{why}; the {name} report could not be recorded (cannot write to {where}: {err.strerror or err})")
            return
        self.waiting.append(path)
        warn(f"{why}; the {name} report waits in {path} for the server")

    def try_report(self, name: str, params: dict, timeout: float) -> None:
        """A report that may be lost (a heartbeat): one short attempt, failures ignored."""
        try:
            call(self.area, COMMANDS[name], params, timeout=timeout, extra=self.extra)
        except (DbtoolError, OSError):
            pass


def start_server_quietly(area: Area, timeout: float) -> None:
    """Make sure a server runs for the area, if that can be done within ``timeout`` seconds."""
    try:
        start_server(area, time.monotonic() + timeout)
    except (DbtoolError, OSError):
        pass


def run(
    opts: GlobalOptions,
    *,
    run_id: int,
    testname: str,
    item_path: str = "",
    log: str | None = None,
    heartbeat: float = 30.0,
    rundir: str | None = None,
    step: str | None = None,
    exclusive: bool = False,
    command: list[str] | None = None,
) -> int:
    with Signals() as signals:  # from the very start: a batch system may signal a wrapper still starting
        if not command:
            raise UsageError("give the command to run after --, e.g. dbtool exec --run-id 1 --testname t -- make test")
        if exclusive and step:
            raise UsageError("--exclusive opens the test for a whole job; it does not go with --step")
        rundir = rundir or os.getcwd()
        if not os.path.isdir(rundir):
            raise UsageError(f"--rundir {rundir} is not a directory")
        area = find_area(opts.area)
        output = _open_log(log)  # before the test is touched: a log that cannot be written refuses the job
        extra = opts.extra() or {}
        if exclusive:  # this job's token: its reports and its command's processes carry it
            extra["job_token"] = os.urandom(16).hex()
        reporter = Reporter(area, bounded_timeout(default_timeout(opts)), extra or None)
        where = {"run_id": run_id, "testname": testname, "item_path": item_path}
        job = Job(command, rundir, output, signals, job_env(area, run_id, extra.get("job_token")))
        try:
            if step:
                return _run_step(reporter, where, step, log, job)
            return _run_test(reporter, where, log, heartbeat, rundir, job, exclusive)
        finally:
            job.close_log()


def job_env(area: Area, run_id: int, token: str | None) -> dict:
    """CMD's environment: exec's own, with the area (by its path: a $DBTOOL_PROJECT of the caller's
    would not outrank it), the run, the test once known, and the job's token (--exclusive)."""
    env = {**os.environ, "DBTOOL_AREA": area.root, "DBTOOL_RUN_ID": str(run_id)}
    env.pop("DBTOOL_PROJECT", None)
    env.pop("DBTOOL_TEST_ID", None)  # (an enclosing job's test is not this one)
    if token:
        env["DBTOOL_JOB_TOKEN"] = token
    return env


def _run_test(
    reporter: Reporter, where: dict, log: str | None, heartbeat: float, rundir: str, job: Job, exclusive: bool
) -> int:
    if job.signals.caught:
        return job.not_started()  # nothing was recorded, nothing is
    started = time.time()
    begin = {
        **where,
        "host": hostname(),
        "uname": " ".join(os.uname()[:3]),
        "rundir": escape_bytes(rundir),  # a file name that is not UTF-8 travels as \xNN
        "pid": os.getpid(),
        "heartbeat": heartbeat,
        "log": escape_bytes(log or ""),
    }
    if exclusive:
        begin["exclusive"] = True
    test_id = reporter.report("exec-begin", begin)  # (a refusal, e.g. a test open for another job: CMD is not run)
    if isinstance(test_id, int):
        job.env["DBTOOL_TEST_ID"] = str(test_id)
    end = {**where}
    if job.start():
        beats = Heartbeats(reporter, where, job.pid, heartbeat, started, rundir)
        beats.start()
        try:
            code = job.wait()
        finally:
            beats.stop()
        end.update(exit_code=code, signal=job.signal_name)
    elif job.signals.caught:
        code = job.not_started()
        end.update(exit_code=code, signal=job.signal_name)
    else:
        code = job.cannot_start()
        end.update(exit_code=code, error=escape_bytes(job.failure))
    reporter.final("exec-end", {**end, "run_duration": int(time.time() - started)})
    return code


def _run_step(reporter: Reporter, where: dict, step: str, log: str | None, job: Job) -> int:
    if job.signals.caught:
        return job.not_started()
    common = {**where, "stepname": step, "logfile": escape_bytes(log or "")}
    reporter.report("exec-step", {**common, "state": "start", "status": "-"})
    if job.start():
        code = job.wait()
    else:
        code = job.not_started() if job.signals.caught else job.cannot_start()
    reporter.final("exec-step", {**common, "state": "end", "status": job.signal_name or str(code)})
    return code


def _open_log(path: str | None) -> BinaryIO | None:
    if path is None:
        return None
    try:
        return open(path, "wb")  # the Job closes it
    except OSError as err:
        raise UsageError(f"cannot write --log {path}: {err.strerror}") from None


class Signals:
    """The signals a batch system sends (FORWARDED), handled from exec's very start.

    Before CMD runs, the first one is kept (``caught``) and CMD is not started. While it runs,
    each is forwarded to it (one that came while it was being started, too). Once it has ended,
    they are ignored while the final report is sent (that is bounded by --timeout).
    """

    def __init__(self) -> None:
        self.caught: int | None = None
        self.pid: int | None = None
        self.ended = False

    def __enter__(self) -> Signals:
        self.previous = {sig: signal.signal(sig, self._on_signal) for sig in FORWARDED}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.ended:
            return
        if self.pid is None:
            if self.caught is None:
                self.caught = signum
            return
        self._send(signum)

    def forward_to(self, pid: int) -> None:
        """CMD started: forward signals to it, starting with one that came while it was started."""
        self.pid = pid
        if self.caught is not None:
            self._send(self.caught)

    def _send(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            pass


class Job:
    """CMD in its own process group, its output passed through and copied to the log file."""

    def __init__(
        self, command: list[str], rundir: str, log: BinaryIO | None, signals: Signals, env: dict | None = None
    ) -> None:
        self.command = command
        self.rundir = rundir
        self.log = log
        self.signals = signals
        self.env = env if env is not None else dict(os.environ)
        self.signal_name: str | None = None
        self.failure = ""  # why CMD could not be started
        self.failure_code = 0  # and the exit code a shell gives for that
        self.lock = threading.Lock()
        self.log_failed = False
        self.copiers: list[threading.Thread] = []

    def start(self) -> bool:
        """Start CMD; False when a signal came first, or when it cannot be started (``failure`` says why)."""
        if self.signals.caught:
            return False
        pipe = subprocess.PIPE if self.log else None
        try:
            self.proc = subprocess.Popen(
                self.command, cwd=self.rundir, env=self.env, stdout=pipe, stderr=pipe, process_group=0
            )
        except OSError as err:
            self.failure = f"cannot run {self.command[0]}: {err.strerror or err}"
            self.failure_code = 127 if isinstance(err, FileNotFoundError) else 126
            return False
        self.signals.forward_to(self.proc.pid)
        if self.log:
            for stream, sink in ((self.proc.stdout, sys.stdout.buffer), (self.proc.stderr, sys.stderr.buffer)):
                copier = threading.Thread(target=self._copy, args=(stream, sink), daemon=True)
                copier.start()
                self.copiers.append(copier)
        return True

    def cannot_start(self) -> int:
        """Say why CMD did not start; its exit code as a shell gives it (127: not found, 126: not runnable)."""
        print(f"dbtool: error: {self.failure}", file=sys.stderr, flush=True)
        return self.failure_code

    def not_started(self) -> int:
        """A signal came before CMD started, so it never will: 128+N, as if it had killed CMD."""
        self.signal_name = signal.Signals(self.signals.caught).name
        warn(f"{self.signal_name} came before {self.command[0]} started; it was not run")
        return 128 + self.signals.caught

    def close_log(self) -> None:
        if self.log is not None:
            try:
                self.log.close()
            except OSError:  # what was left to flush could not be written: already told
                pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _copy(self, stream, sink) -> None:
        fd = stream.fileno()
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            self._to_log(data)
            try:
                sink.write(data)
                sink.flush()
            except (OSError, ValueError):
                pass  # our own output is gone (closed pipe): the log still gets everything

    def _to_log(self, data: bytes) -> None:
        """Copy output to the log; when that fails (disk full), say so once and go on without it."""
        with self.lock:
            if self.log_failed:
                return
            try:
                self.log.write(data)
                self.log.flush()
            except OSError as err:
                self.log_failed = True
                warn(f"cannot write the log {self.log.name} ({err.strerror or err}); the output still passes through")

    def wait(self) -> int:
        """CMD's exit code (128+N when signal N killed it)."""
        try:
            while True:
                try:
                    code = self.proc.wait()
                    break
                except InterruptedError:
                    continue
        finally:
            self.signals.ended = True  # CMD is gone (its pid may be reused): nothing more to forward
        for copier in self.copiers:
            copier.join()
        if code < 0:
            self.signal_name = signal.Signals(-code).name
            return 128 - code
        return code


class Heartbeats(threading.Thread):
    """Beats every ``period`` seconds (the first one at once, with the command's pid).

    The period is bounded to what the server accepts (a NaN gives the default), and each wait is
    at most ``WAIT_SLICE`` seconds: no period can make a wait overflow or return at once. A beat
    that fails in any way is skipped: bookkeeping never stops the job.
    """

    def __init__(self, reporter: Reporter, where: dict, pid: int, period: float, started: float, rundir: str):
        super().__init__(name="dbtool-heartbeat", daemon=True)
        self.reporter = reporter
        self.where = where
        self.pid = pid
        self.period = bounded_period(period)
        self.started = started
        self.rundir = rundir
        self.stopped = threading.Event()
        self.failed = False

    def run(self) -> None:
        first = True
        while not self.stopped.is_set():
            try:
                self.beat(first)
            except Exception as err:  # a bug or an OS error in a beat must not end the beats
                if not self.failed:
                    warn(f"a heartbeat failed ({type(err).__name__}: {err}); the job goes on")
                    self.failed = True
            first = False
            self.pause()

    def beat(self, first: bool) -> None:
        params = {**self.where, "heartbeat": self.period, "cpuload": _load(), "diskfree": _free_kib(self.rundir)}
        params["run_duration"] = int(time.time() - self.started)
        if first:
            params["pid"] = self.pid
        self.reporter.try_report("exec-heartbeat", params, timeout=max(1.0, min(self.period, 10.0)))

    def pause(self) -> None:
        """Wait one period, or until stopped."""
        until = time.monotonic() + self.period
        while not self.stopped.is_set():
            left = until - time.monotonic()
            if left <= 0:
                return
            self.stopped.wait(min(left, WAIT_SLICE))

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=15)


def bounded_timeout(seconds: float) -> float:
    """--timeout as exec's reports use it: at most a day (an inf would overflow a wait; NaN: the default)."""
    if seconds != seconds:
        return DEFAULT_TIMEOUT
    return min(seconds, MAX_TIMEOUT)


def bounded_period(seconds: float) -> float:
    """A heartbeat period the server accepts: within its bounds (NaN: the default)."""
    if seconds != seconds:
        return PERIOD.default
    return min(max(seconds, PERIOD.min), PERIOD.max)


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def _free_kib(path: str) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize // 1024
