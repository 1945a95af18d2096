"""``dbtool dashboard``: the results grid served live from the area, read-only.

The web server is the standard library's (``http.server``, a thread per connection): a dashboard has
a handful of viewers on one host, each holding one event stream, and needs nothing an install might
lack. Every request must carry the access token printed with the URL — as ``?token=`` (the answer then
keeps it in an HttpOnly cookie and sends the browser to the same address without it) or as that
cookie; anything else gets 403. Both are compared with ``hmac.compare_digest``.

Data comes through the normal client (core/client.py), as for any other command, so SQLite and
PostgreSQL areas work alike:

    GET /             the page (assets/grid.html, no data inside)
    GET /api/grid     the grid (web/build.py) of ?target=PATT&last=K (default: the 50 newest runs)
    GET /api/test     one test's details: ?run=ID&testname=T&item=P
    GET /api/events   Server-Sent Events, one per change event of the area, ``id:`` its seq

One thread follows the area's event stream (``client.watch``) for the whole process and keeps the
last RING events; each browser's stream is served from there. A browser that reconnects sends
``Last-Event-ID`` and gets exactly the events after it: from the ring, or — when they are older than
the ring (e.g. the dashboard was restarted) — replayed from the area first; a gap of more than
REPLAY_MAX events makes it reload the grid instead.
"""

from __future__ import annotations

import hmac
import json
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ..area import Area
from ..errors import DbtoolError, NotFound, Unavailable
from ..rules.grid import cell_kind, cell_label, is_final
from . import build
from .page import config, page_bytes

RING = 20_000  # events kept for browsers that reconnect
REPLAY_MAX = 50_000  # a longer gap makes the browser reload the grid
KEEPALIVE = 15.0  # seconds between comments on an idle stream (a closed browser is noticed)
DEFAULT_LAST = 50
EVENT_FIELDS = ("seq", "event", "run_id", "test_id", "testname", "item_path", "state", "status")


class Feed:
    """The area's change events, followed by one thread; the last RING kept for the browsers."""

    def __init__(self, area: Area, since: int, timeout: float) -> None:
        self.area = area
        self.timeout = timeout
        self.ring: deque[tuple[int, bytes]] = deque(maxlen=RING)
        self.first = since + 1  # the oldest seq the ring can answer for
        self.latest = since
        self.changed = threading.Condition()
        self.stopping = False
        self.problem = ""

    def start(self) -> None:
        threading.Thread(target=self._follow, name="dashboard-feed", daemon=True).start()

    def stop(self) -> None:
        with self.changed:
            self.stopping = True
            self.changed.notify_all()

    def _follow(self) -> None:
        from ..client import watch

        pause = 0.5
        while not self.stopping:
            try:
                for event in watch(self.area, None, None, self.latest, self.timeout):
                    self._publish(event)
                    pause = 0.5
                    if self.stopping:
                        return
            except Unavailable as err:  # the area's server stopped: follow the next one from the same seq
                self.problem = err.message
            except DbtoolError as err:
                self.problem = err.message
            except OSError as err:
                self.problem = str(err)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _publish(self, event: dict) -> None:
        message = sse_message(event)
        with self.changed:
            seq = event.get("seq")
            if isinstance(seq, int) and seq > self.latest:
                self.ring.append((seq, message))
                self.latest = seq
                if len(self.ring) == self.ring.maxlen:
                    self.first = self.ring[0][0]
                self.changed.notify_all()

    def after(self, seq: int, wait: float) -> list[tuple[int, bytes]] | None:
        """The events after ``seq`` (waiting up to ``wait`` seconds for one); None when the ring no
        longer holds them all."""
        with self.changed:
            if seq + 1 < self.first:
                return None
            if self.latest <= seq and not self.stopping:
                self.changed.wait(wait)
            if seq + 1 < self.first:
                return None
            return [(s, m) for s, m in self.ring if s > seq] if self.latest > seq else []


def sse_message(event: dict) -> bytes:
    """One change event as a Server-Sent Event: ``id`` its seq, ``data`` its fields (and, when it
    names both, the palette entry and the word of its state and status)."""
    fields = {name: event.get(name) for name in EVENT_FIELDS}
    if fields["state"] is not None and fields["status"] is not None:
        fields["kind"] = cell_kind(fields["state"], fields["status"])
        fields["label"] = cell_label(fields["state"], fields["status"])
        fields["final"] = is_final(fields["state"])
    data = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.get('seq')}\nevent: change\ndata: {data}\n\n".encode()


class Dashboard:
    def __init__(self, area: Area, send, timeout: float) -> None:
        self.area = area
        self.send = send
        self.timeout = timeout
        self.token = secrets.token_urlsafe(24)
        self.cookie = "dbtool_dashboard"  # (its port is added once it listens: cookies are per host, not port)
        self.page = page_bytes(f"dbtool: {area.root}", config("live"))
        _runs, seq = build.select_runs(send, None, None, 1)  # (the area answers, and the events start here)
        self.feed = Feed(area, seq, timeout)

    def authorised(self, query: dict, cookies: dict) -> tuple[bool, bool]:
        """(the request carries the token, it came in the query)."""
        given = (query.get("token") or [""])[0]
        if given:
            return _same(given, self.token), True
        return _same(cookies.get(self.cookie, ""), self.token), False

    def grid(self, query: dict) -> dict:
        target = (query.get("target") or [None])[0] or None
        last = _int((query.get("last") or [""])[0], DEFAULT_LAST) or DEFAULT_LAST
        runs, seq = build.select_runs(self.send, None, target, last)
        return build.collect(self.send, runs, seq).finish()

    def test(self, query: dict) -> dict:
        run_id = _int((query.get("run") or [""])[0], None)
        testname = (query.get("testname") or [""])[0]
        if run_id is None or not testname:
            raise NotFound("give ?run=ID&testname=T[&item=P]")
        item = (query.get("item") or [""])[0]
        found = self.send("grid-details", {"run_ids": [str(run_id)], "testname": testname, "item_path": item})
        if not found:
            raise NotFound(f"run {run_id} has no test {testname}{'/' + item if item else ''}")
        return build.detail_record(found[0])


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def _int(text: str, default):
    """A non-negative integer parameter (``default`` when it is missing or not one)."""
    try:
        value = int(text)
    except ValueError:
        return default
    return value if value >= 0 else default


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dbtool-dashboard"
    dashboard: Dashboard  # set on the subclass made by serve()

    def log_message(self, format: str, *args: object) -> None:  # quiet: the terminal shows the URL only
        return

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        ok, in_query = self.dashboard.authorised(query, _cookies(self.headers.get("Cookie", "")))
        if not ok:
            return self._text(
                HTTPStatus.FORBIDDEN,
                "403 Forbidden: this dashboard needs its access token; open the URL `dbtool dashboard` printed "
                "(…/?token=...)\n",
            )
        if in_query:  # keep the token in a cookie, and take it out of the address bar
            rest = "&".join(f"{k}={v}" for k, v in _pairs(parts.query) if k != "token")
            self.send_response(HTTPStatus.FOUND)
            self.send_header(
                "Set-Cookie", f"{self.dashboard.cookie}={self.dashboard.token}; HttpOnly; SameSite=Strict; Path=/"
            )
            self.send_header("Location", parts.path + ("?" + rest if rest else ""))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        try:
            if parts.path == "/":
                return self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.dashboard.page)
            if parts.path == "/api/grid":
                return self._json(self.dashboard.grid(query))
            if parts.path == "/api/test":
                return self._json(self.dashboard.test(query))
            if parts.path == "/api/events":
                return self._events(query)
        except NotFound as err:
            return self._text(HTTPStatus.NOT_FOUND, err.message + "\n")
        except DbtoolError as err:
            return self._text(HTTPStatus.SERVICE_UNAVAILABLE, err.message + "\n")
        return self._text(HTTPStatus.NOT_FOUND, f"no such page: {parts.path}\n")

    def _read_only(self) -> None:
        """Any other method: 403 without the token (as every request), else 405 (nothing can be changed)."""
        parts = urlsplit(self.path)
        ok, _ = self.dashboard.authorised(parse_qs(parts.query), _cookies(self.headers.get("Cookie", "")))
        if not ok:
            return self._text(HTTPStatus.FORBIDDEN, "403 Forbidden: this dashboard needs its access token\n")
        return self._text(HTTPStatus.METHOD_NOT_ALLOWED, "the dashboard is read-only: GET only\n")

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _read_only

    def _json(self, value: object) -> None:
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self._send(HTTPStatus.OK, "application/json", body)

    def _text(self, status: HTTPStatus, text: str) -> None:
        self._send(status, "text/plain; charset=utf-8", text.encode("utf-8"))

    def _send(self, status: HTTPStatus, kind: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)

    def _events(self, query: dict) -> None:
        """The event stream: from Last-Event-ID (a reconnect), else ?since=SEQ, else from now."""
        feed = self.dashboard.feed
        last = _int(self.headers.get("Last-Event-ID", "") or (query.get("since") or [""])[0], None)
        last = feed.latest if last is None else last
        self.close_connection = True
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self.wfile.write(b"retry: 1000\n\n")
            self.wfile.flush()
            while not feed.stopping:
                events = feed.after(last, KEEPALIVE)
                if events is None:
                    last = self._replay(last)
                    if last is None:
                        return
                    continue
                for seq, message in events:
                    self.wfile.write(message)
                    last = seq
                self.wfile.write(b": keep-alive\n\n" if not events else b"")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return

    def _replay(self, last: int) -> int | None:
        """The events after ``last`` that the ring no longer holds, read from the area (at most
        REPLAY_MAX, else the browser is told to reload the grid: None)."""
        from ..client import watch

        feed = self.dashboard.feed
        sent = 0
        events = watch(feed.area, None, None, last, feed.timeout, follow=False)
        try:
            for event in events:
                if event.get("seq", 0) >= feed.first or sent >= REPLAY_MAX:
                    break
                self.wfile.write(sse_message(event))
                last = event["seq"]
                sent += 1
        finally:
            events.close()
        if sent >= REPLAY_MAX:
            self.wfile.write(b"event: reload\ndata: {}\n\n")
            self.wfile.flush()
            return None
        self.wfile.flush()
        return max(last, feed.first - 1)


def _cookies(header: str) -> dict:
    found = {}
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found[name] = value
    return found


def _pairs(query: str) -> list[tuple[str, str]]:
    return [(k, v) for k, _, v in (p.partition("=") for p in query.split("&") if p)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # an open event stream never holds the process at exit

    def server_bind(self) -> None:
        """As HTTPServer's, without its reverse DNS lookup of the address (seconds without DNS)."""
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


def serve(area: Area, send, bind: str, port: int, *, open_browser: bool, timeout: float) -> int:
    """Serve the dashboard until SIGINT or SIGTERM; prints its URL (with the token) first."""
    dashboard = Dashboard(area, send, timeout)
    handler = type("DashboardHandler", (Handler,), {"dashboard": dashboard})
    server_class = type("Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in bind else _Server
    try:
        server = server_class((bind, port), handler)
    except OSError as err:
        where = f"[{bind}]:{port}" if ":" in bind else f"{bind}:{port}"
        hint = "give another --port, or leave --port out for a free one" if port else "give another --bind"
        raise Unavailable(f"the dashboard cannot listen on {where}: {err.strerror or err}; {hint}") from None
    dashboard.cookie = f"dbtool_dashboard_{server.server_address[1]}"
    host = server.server_address[0]
    if bind in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{server.server_address[1]}/?token={dashboard.token}"
    print(url, flush=True)
    dashboard.feed.start()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    if open_browser:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)
        dashboard.feed.stop()
        server.shutdown()
        server.server_close()
    print("dashboard stopped", file=sys.stderr, flush=True)
    return 0
