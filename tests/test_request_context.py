"""RequestContext (Kno's request model), the request log file, and statistics — as units."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from dbtool.core import reqlog
from dbtool.core.request import MAX_LOG_ENTRIES, RequestContext, activate, current, log, run_with
from dbtool.core.server.stats import Stats, percentile


def test_fields_get_store_add_drop_data():
    ctx = RequestContext("r1", "set-var", {"var": "x"}, {"user": "u"})
    assert ctx.get("missing", 5) == 5
    ctx.store("a", 1)
    ctx.add("tags", "x")
    ctx.add("tags", "y")
    assert ctx.data() == {"a": 1, "tags": ["x", "y"]}
    ctx.drop("a")
    ctx.drop("never")
    assert ctx.data() == {"tags": ["x", "y"]}
    assert ctx.id == "r1" and ctx.cmd == "set-var" and ctx.params == {"var": "x"} and ctx.client == {"user": "u"}
    assert ctx.arrived_ns > 0 and ctx.now == ctx.arrived_ns // 10**9


def test_log_entries_are_bounded_and_carry_level_condition_context_time():
    ctx = RequestContext("r", "c", {})
    ctx.note("warn", "slow", "took long", context={"ms": 3})
    entry = ctx.log[0]
    assert entry["level"] == "warn" and entry["condition"] == "slow" and entry["context"] == {"ms": 3}
    assert entry["message"] == "took long" and entry["tick"] > 0 and 0 <= entry["nsecs"] < 10**9
    for i in range(MAX_LOG_ENTRIES + 10):
        ctx.note("debug", "n", str(i))
    assert len(ctx.log) == MAX_LOG_ENTRIES and ctx.dropped == 11
    assert ctx.log[-1]["message"] == str(MAX_LOG_ENTRIES + 9)
    assert ctx.max_level() == 10  # the warn entry was dropped as the oldest


def test_nested_contexts_restore_the_outer_one():
    outer, inner = RequestContext("o", "c", {}), RequestContext("i", "c", {})
    assert current.get() is None
    with activate(outer):
        log("info", "x", "to outer")
        with activate(inner):
            assert current.get() is inner
            log("info", "x", "to inner")
        assert current.get() is outer
    assert current.get() is None
    assert [e["message"] for e in outer.log] == ["to outer"]
    assert [e["message"] for e in inner.log] == ["to inner"]
    log("info", "x", "no request: ignored")


def test_run_with_carries_the_context_into_worker_threads():
    ctx = RequestContext("t", "c", {})

    def work(n: int) -> tuple[str, str]:
        log("info", "worker", f"item {n}")
        return current.get().id, threading.current_thread().name

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: run_with(ctx, work, n), range(4)))
    assert {r[0] for r in results} == {"t"}
    assert all(r[1] != threading.current_thread().name for r in results)
    assert sorted(e["message"] for e in ctx.log) == [f"item {n}" for n in range(4)]


def test_request_log_rotates_by_size(tmp_path):
    rl = reqlog.RequestLog(str(tmp_path), max_bytes=400, keep=2)
    for i in range(40):
        rl.write({"ts": i, "id": f"r{i}", "cmd": "set-var", "ok": True})
    rl.close()
    files = reqlog.log_files(str(tmp_path), keep=2)
    assert [f.rsplit("/", 1)[1] for f in files] == ["requests.jsonl.2", "requests.jsonl.1", "requests.jsonl"]
    ids = [e["id"] for e in reqlog.read_entries(str(tmp_path), reqlog.matcher(None, None, None))]
    assert ids == sorted(ids, key=lambda s: int(s[1:]))  # oldest file first, in order
    assert ids[-1] == "r39" and len(ids) < 40  # the oldest generation was dropped


def test_request_log_filters_and_since(tmp_path):
    rl = reqlog.RequestLog(str(tmp_path))
    rl.write({"ts": 100.0, "id": "a", "cmd": "set-var", "ok": True})
    rl.write({"ts": 200.0, "id": "b", "cmd": "get-var", "ok": False})
    rl.close()
    (tmp_path / "requests.jsonl").open("a").write('{"cut short\n')  # a crash mid-line is skipped

    def ids(**kw):
        keep = reqlog.matcher(kw.get("request"), kw.get("cmd"), kw.get("since"))
        return [e["id"] for e in reqlog.read_entries(str(tmp_path), keep)]

    assert ids() == ["a", "b"]
    assert ids(request="b") == ["b"]
    assert ids(cmd={"set-var"}) == ["a"]
    assert ids(since=150.0) == ["b"]
    assert reqlog.parse_since("10m", now=1000.0) == 400.0
    assert reqlog.parse_since("1700000000") == 1700000000.0
    assert reqlog.parse_since("2026-01-02T03:04:05+00:00") == 1767323045.0
    with pytest.raises(ValueError, match="not a time"):
        reqlog.parse_since("yesterday")


def test_follow_sees_new_lines_across_rotation(tmp_path):
    rl = reqlog.RequestLog(str(tmp_path), max_bytes=200, keep=1)
    rl.write({"ts": 1, "id": "old", "cmd": "x", "ok": True})
    rl.flush()
    seen: list[str] = []
    done = threading.Event()

    def tail():
        for entry in reqlog.follow(str(tmp_path), reqlog.matcher(None, None, None), poll=0.01, stop=done.is_set):
            seen.append(entry["id"])
            if len(seen) == 6:
                done.set()

    thread = threading.Thread(target=tail)
    thread.start()
    import time

    time.sleep(0.2)
    for i in range(6):
        rl.write({"ts": 2, "id": f"new{i}", "cmd": "x", "ok": True, "pad": "x" * 60})  # rotates on the way
        rl.flush()
        time.sleep(0.05)
    done.wait(10)
    done.set()
    thread.join(10)
    rl.close()
    assert seen == [f"new{i}" for i in range(6)]


def test_stats_percentiles():
    assert percentile([], 50) == 0.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (50.0, 95.0, 100.0)
    stats = Stats()
    for ms in (1.0, 2.0, 3.0, 100.0):
        stats.record("set-var", ms, ok=True)
    stats.record("get-var", 1.0, ok=False)
    summary = stats.summary()
    assert list(summary) == ["set-var", "get-var"]  # busiest first
    s = summary["set-var"]
    assert (s["count"], s["errors"], s["mean_ms"], s["p50_ms"], s["max_ms"]) == (4, 0, 26.5, 2.0, 100.0)
    assert summary["get-var"]["errors"] == 1 and stats.requests == 5
    json.dumps(summary)
