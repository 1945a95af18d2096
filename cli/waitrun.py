"""``dbtool wait-run``: block until a run is complete, on the server's event stream.

The run's completion is read first, with the seq of the last event stored at that moment; a run
not complete yet is then watched from exactly that seq, so its ``run-complete`` event cannot slip
between the read and the subscription. The stream is read by a thread, so that ``--max-wait`` is
kept however long the server stays silent.
"""

from __future__ import annotations

import json
import queue
import threading
import time

from dbtool.core.area import find_area
from dbtool.core.commands import lookup
from dbtool.core.errors import NotFound, Refused, Unavailable

from .binder import GlobalOptions, default_timeout
from .output import emit

PASS = "PASS"
NOT_PASS, TIMED_OUT = 1, 3
COMPLETE, DELETED = "run-complete", "deleted"


def wait_run(opts: GlobalOptions, *, run_id: int, max_wait: float | None = None) -> int:
    from dbtool.core.client import call

    area = find_area(opts.area)
    timeout = default_timeout(opts)
    started = time.monotonic()
    cmd = lookup("get-run-completion")
    try:
        state = call(area, cmd, {"run_id": run_id}, timeout=timeout).result
    except NotFound:
        raise Refused(f"no run with id {run_id}; `dbtool get-runs` lists the runs") from None
    if state["state"] == DELETED:
        raise Refused(f"run {run_id} is deleted; it will never complete")
    if not state["complete"]:
        remaining = None if max_wait is None else max(0.0, max_wait - (time.monotonic() - started))
        event = _next_completion(area, run_id, state["seq"], timeout, remaining)
        if event is None:
            now = call(area, cmd, {"run_id": run_id}, timeout=timeout).result
            raise Unavailable(
                f"run {run_id} is not complete after {max_wait:g} s: {now['final']} of its {now['tests']} "
                "test(s) in a final state"
            )
        state = {**state, "complete": True, "state": event.get("state"), "status": event.get("status")}
        state["completed_at"] = int((event.get("time_ns") or 0) / 1e9) or None
        state["tests"] = state["final"] = (event.get("data") or {}).get("tests", state["tests"])
        state["seq"] = event.get("seq")
    if opts.output == "json":
        emit(json.dumps(state, ensure_ascii=False) + "\n")
    else:
        emit(f"{state['state']} {state['status']}\n")
    return 0 if state["status"] == PASS else NOT_PASS


def _next_completion(area, run_id: int, since: int, timeout: float, max_wait: float | None) -> dict | None:
    """The run's next ``run-complete`` event after ``since``; None when ``max_wait`` passes first."""
    found: queue.Queue = queue.Queue()
    threading.Thread(target=_follow, args=(area, run_id, since, timeout, found), daemon=True).start()
    try:
        kind, value = found.get(timeout=max_wait)
    except queue.Empty:
        return None
    if kind == "error":
        raise value
    return value


def _follow(area, run_id: int, since: int, timeout: float, found: queue.Queue) -> None:
    from dbtool.core.client import watch

    try:
        for event in watch(area, run_id, None, since, timeout):
            if event.get("event") == COMPLETE:
                found.put(("event", event))
                return
            if event.get("test_id") is None and event.get("state") == DELETED:
                found.put(("error", Refused(f"run {run_id} was deleted while waiting for it to complete")))
                return
    except Exception as err:  # (a DbtoolError, or a bug): reported by the waiting thread, never lost here
        found.put(("error", err))
