"""``dbtool dashboard``: the live grid, as a real process and in a real headless chromium; its token,
its event stream (resumed after the last event id), its refusals and its stop on a signal."""

from __future__ import annotations

import http.client
import select
import signal
import socket
import subprocess
from urllib.parse import urlsplit

import pytest
from dbtool.core.rules.grid import PALETTE
from test_report import known_run, rgb

BACKENDS = ("sqlite", "postgresql")


@pytest.fixture
def dashboard():
    """Start ``dbtool dashboard --no-open`` in an area: (process, the URL it printed); every one is
    stopped (SIGTERM, then SIGKILL) afterwards."""
    started: list[subprocess.Popen] = []

    def start(area, *args: str) -> tuple[subprocess.Popen, str]:
        proc = area.popen("dashboard", "--no-open", *args)
        started.append(proc)
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("http://"), (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        return proc, line.strip()

    yield start
    for proc in started:
        stop(proc)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    return proc.returncode


def get(url: str, path: str, headers: dict | None = None, method: str = "GET") -> http.client.HTTPResponse:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request(method, path, headers=headers or {})
    return conn.getresponse()


def token_cookie(url: str) -> dict:
    """The Cookie header the dashboard sets for its token."""
    answer = get(url, urlsplit(url).path + "?" + urlsplit(url).query)
    assert answer.status == 302, answer.status
    cookie = answer.getheader("Set-Cookie")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    return {"Cookie": cookie.split(";", 1)[0]}


def sse_events(answer: http.client.HTTPResponse, count: int) -> list[tuple[int, str]]:
    """The first ``count`` events of a stream: (id, data)."""
    events, event_id, data = [], None, ""
    while len(events) < count:
        line = answer.readline().decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event_id is not None:
            events.append((event_id, data))
            event_id, data = None, ""
    return events


@pytest.mark.sqlite_only("the token is the web server's, whatever the backend")
def test_every_request_needs_the_token(area, dashboard):
    known_run(area)
    _proc, url = dashboard(area)
    host = urlsplit(url)
    assert host.hostname == "127.0.0.1"  # loopback unless --bind says otherwise
    for path in ("/", "/?token=wrong", "/api/grid", "/api/events", "/api/test?run=1&testname=compile", "/nope"):
        answer = get(url, path)
        assert answer.status == 403, path
        assert b"access token" in answer.read()
    assert get(url, "/", {"Cookie": "dbtool_dashboard_1=x"}).status == 403
    assert get(url, "/api/grid", method="POST").status == 403
    cookie = token_cookie(url)
    assert cookie["Cookie"].endswith("=" + url.split("token=")[1])
    answer = get(url, "/", cookie)
    assert answer.status == 200 and b'"mode":"live"' in answer.read()
    answer = get(url, "/api/grid", cookie)
    assert answer.status == 200
    assert b'"runname":"nightly"' in answer.read()
    wrong = {"Cookie": cookie["Cookie"][:-3] + "abc"}
    assert get(url, "/api/grid", wrong).status == 403
    assert get(url, "/api/grid", cookie, method="POST").status == 405  # read-only


def test_a_status_written_from_the_cli_appears_in_the_open_dashboard(area, dashboard, page, artifacts):
    run_id = known_run(area)
    _proc, url = dashboard(area)
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#live.on")
    compile_cell = '.cell[data-testname="compile"][data-item-path=""]'
    assert page.get_attribute(compile_cell, "data-status") == "PASS"
    area.ok(
        "set-state-status-and-roll-up-items", "--run-id", run_id, "--testname", "compile",
        "--state", "COMPLETED", "--status", "FAIL", "--comment", "broke",
    )  # fmt: skip
    page.wait_for_selector(compile_cell + '[data-status="FAIL"]', timeout=2000)
    colour = page.eval_on_selector(compile_cell, "e => getComputedStyle(e).backgroundColor")
    assert colour == rgb(PALETTE["fail"][0])
    header = page.eval_on_selector(f'.colhead[data-run-id="{run_id}"]', "e => e.textContent")
    assert "✗2" in header  # the counts follow (unit/py311 and compile)
    page.screenshot(path=str(artifacts / "live.png"))
    page.click(compile_cell)
    page.wait_for_selector("#details-body table")
    assert "broke" in page.inner_text("#details-body")
    # a new run appears (the page reloads its grid), and so does a new test
    second = area.ok("register-run", "--target", "v1/linux", "--runname", "later").out.strip()
    area.ok("set-state-status-and-roll-up-items", "--run-id", second, "--testname", "fresh", "--state", "RUNNING")
    page.wait_for_selector(f'.cell[data-run-id="{second}"][data-testname="fresh"][data-state="RUNNING"]')
    assert page.eval_on_selector_all(".colhead", "els => els.map(e => e.dataset.runId)")[0] == second
    assert page.js_errors == []


@pytest.mark.sqlite_only("the event stream is the dashboard's")
def test_the_event_stream_resumes_after_the_last_event_id(area, dashboard):
    run_id = known_run(area)
    _proc, url = dashboard(area)
    cookie = token_cookie(url)
    answer = get(url, "/api/events?since=0", cookie)  # older than the dashboard: replayed from the area
    assert answer.status == 200 and answer.getheader("Content-Type") == "text/event-stream"
    replayed = sse_events(answer, 3)
    assert [seq for seq, _ in replayed] == [1, 2, 3]
    answer.close()
    for status in ("FAIL", "PASS", "WARN"):
        area.ok("set-state-status-and-roll-up-items", "--run-id", run_id, "--testname", "compile", "--status", status)
    last = int(area.ok("watch", "--since", "0", "--no-follow", "--json").json_lines[-1]["seq"])
    answer = get(url, "/api/events", {**cookie, "Last-Event-ID": str(last - 2)})
    resumed = sse_events(answer, 2)
    answer.close()
    assert [seq for seq, _ in resumed] == [last - 1, last]
    assert '"status":"WARN"' in resumed[-1][1] and '"kind":"warn"' in resumed[-1][1]


@pytest.mark.sqlite_only("the web server's port")
def test_a_port_in_use_is_one_clear_line(area):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = area.run("dashboard", "--no-open", "--port", str(port))
    assert result.code == 3, result
    assert result.err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in result.err
    assert "give another --port" in result.err


@pytest.mark.sqlite_only("signals are the web server's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_it_stops_cleanly_on_a_signal_even_while_streaming(area, dashboard, sig):
    known_run(area)
    proc, url = dashboard(area)
    stream = get(url, "/api/events?since=0", token_cookie(url))
    sse_events(stream, 1)
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == 0
    assert "Traceback" not in proc.stderr.read()
    stream.close()
