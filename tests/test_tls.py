"""TLS off the loopback (issue 13): the server's own certificate, pinned in server.json.

Connections over the loopback stay plain unless ``server.tls = "always"``, which these tests use
to get TLS without a second host (tests/test_farm.py crosses real network namespaces). A relay
between client and server shows what travels on the wire: nothing readable, and nothing a
middleman can change without the connection failing.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading

import pytest


def _tls_area(area):
    area.set_config("server", "tls", '"always"')
    area.ok("set-var", "warm", "1")  # a server
    return area.server_info


def _rewrite_record(area, **changes) -> dict:
    """Change server.json as an attacker with write access to the area could (same owner, mode)."""
    info = {**area.server_info, **changes}
    path = area.dir / "server.json"
    tmp = area.dir / "server.json.new"
    tmp.write_text(json.dumps(info))
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return info


class Relay:
    """A TCP relay on 127.0.0.1 in front of the server that records both directions. With
    ``tamper_record`` N it passes the client's bytes on a whole TLS record at a time and flips one
    bit in the body of the client's N-th encrypted record (1: its Finished, 2: the challenge, 3: its
    proof and first request), once."""

    def __init__(self, port: int, tamper_record: int | None = None) -> None:
        self.target = port
        self.tamper_record = tamper_record
        self.tampered = False
        self.connections = 0
        self.up = bytearray()  # client -> server
        self.down = bytearray()  # server -> client
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.conns: list[socket.socket] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        for _ in range(600):  # at most 2 minutes
            try:
                client, _addr = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            server = socket.create_connection(("127.0.0.1", self.target), timeout=30)
            self.conns += [client, server]
            for src, dst, sink, up in ((client, server, self.up, True), (server, client, self.down, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, sink, up), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst, sink: bytearray, up: bool) -> None:
        src.settimeout(30)
        pending = bytearray()
        encrypted = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                sink += data
                if not (up and self.tamper_record and not self.tampered):
                    dst.sendall(data)
                    continue
                pending += data
                while len(pending) >= 5 and len(pending) >= 5 + int.from_bytes(pending[3:5], "big"):
                    size = 5 + int.from_bytes(pending[3:5], "big")
                    record = bytearray(pending[:size])
                    del pending[:size]
                    if record[0] == 0x17:  # application data: everything after the ServerHello
                        encrypted += 1
                        if encrypted == self.tamper_record and not self.tampered:
                            record[6] ^= 0x01
                            self.tampered = True
                    dst.sendall(record)
                if self.tampered and pending:
                    dst.sendall(pending)
                    pending.clear()
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for conn in self.conns:
            conn.close()
        for t in self.threads:
            t.join(timeout=5)
        self.accepting.join(timeout=5)


@pytest.fixture
def relay():
    made: list[Relay] = []

    def make(port: int, tamper_record: int | None = None) -> Relay:
        made.append(Relay(port, tamper_record))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_a_loopback_server_makes_no_certificate_by_default(area):
    area.ok("set-var", "x", "1")
    info = area.server_info
    assert "tls_fingerprint" not in info  # no connection to it could need one
    assert area.ok("server", "status", "--json").json["tls"] == "none (loopback only)"


def test_tls_everywhere_works_for_every_kind_of_call(area):
    info = _tls_area(area)
    assert len(info["tls_fingerprint"]) == 64 and info["tls"] == "always"
    assert area.ok("server", "status", "--json").json["tls"] == "every connection"
    run_id = area.ok("register-run", "--target", "v1/linux", "--runname", "r").out.strip()
    area.ok("register-test", "--run-id", run_id, "--testname", "t")
    area.ok("set-state-status-and-roll-up-items", "--run-id", run_id, "--testname", "t", "--state", "COMPLETED",
            "--status", "PASS")  # fmt: skip
    tests = area.ok("get-tests-for-run", "--run-id", run_id, "--json").json
    assert [(t["testname"], t["status"]) for t in tests] == [("t", "PASS")]
    assert area.ok("get-var", "warm").out.strip() == "1"


def test_nothing_on_the_wire_is_readable(area, relay):
    info = _tls_area(area)
    r = relay(info["port"])
    _rewrite_record(area, port=r.port)
    area.ok("set-var", "secretname", "secretvalue")
    assert area.ok("get-var", "secretname").out.strip() == "secretvalue"
    assert r.up[:1] == b"\x16" and r.down[:1] == b"\x16"  # a TLS handshake record from the first byte
    wire = bytes(r.up + r.down)
    for clear in (b"secretname", b"secretvalue", info["key"].encode(), b"challenge", b"hello", b"dbtool"):
        assert clear not in wire, clear


@pytest.mark.parametrize("record", [1, 2, 3])
def test_a_changed_bit_fails_the_connection_and_the_write_lands_once(area, relay, record):
    """A middleman that flips one bit (of the client's Finished, its challenge, or its proof and
    request) breaks that connection; the client's retry on a new one applies the write once."""
    info = _tls_area(area)
    r = relay(info["port"], tamper_record=record)
    _rewrite_record(area, port=r.port)
    area.ok("set-var", "tampered", "1")
    assert r.tampered and r.connections == 2, f"tampered {r.tampered}, connections {r.connections}"
    _rewrite_record(area, port=info["port"])
    assert area.ok("get-var", "tampered").out.strip() == "1"
    area.ok("server", "stop")  # (its request log is complete once it stopped)
    log = area.ok("server", "log", "--cmd", "set-var", "--json").json_lines
    assert len(log) == 2, log  # "warm" and "tampered": the broken connection's request never arrived


def test_a_certificate_other_than_the_pinned_one_gets_no_request(area):
    """A listener with a certificate of its own (a middleman, a server the record does not name)
    sees the TLS handshake and nothing else; the client says which certificate was wrong."""
    info = _tls_area(area)
    requests_before = area.ok("server", "status", "--json").json["requests"]
    _rewrite_record(area, tls_fingerprint="0" * 64)
    result = area.run("--timeout", "2", "set-var", "x", "2")
    assert result.code == 3 and "another TLS certificate" in result.err, result
    _rewrite_record(area, tls_fingerprint=info["tls_fingerprint"])
    status = area.ok("server", "status", "--json").json
    # only the status requests: the one before it also read the area lock; this one counts itself
    assert status["requests"] == requests_before + 2
    assert area.run("get-var", "x").code == 1  # never applied
    area.ok("server", "stop")  # (its request log is complete once it stopped)
    log = area.ok("server", "log", "--cmd", "set-var", "--json").json_lines
    assert len(log) == 1, log  # _tls_area's "warm": the write to the wrong certificate never arrived


def test_plain_text_to_a_tls_port_is_dropped_and_the_server_carries_on(area):
    info = _tls_area(area)
    with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as s:
        s.sendall(b'{"protocol": 2, "challenge": "00"}\n')
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except OSError:
            pass
    assert b"hello" not in got and b"proof" not in got  # not a word of the protocol in the clear
    area.ok("set-var", "y", "1")


def test_a_record_that_pins_no_certificate_is_not_used_off_tls(area):
    """A record without a fingerprint for a server that wants TLS: the client will not speak in
    the clear to it; it says so (and a plain hello is never waited for)."""
    info = _tls_area(area)
    stripped = {k: v for k, v in info.items() if k != "tls_fingerprint"}
    path = area.dir / "server.json"
    path.write_text(json.dumps(stripped))
    result = area.run("--timeout", "2", "set-var", "x", "3")
    assert result.code == 3 and "pins no TLS certificate" in result.err, result


def test_tls_1_3_only(area):
    info = _tls_area(area)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", info["port"]), timeout=10) as s, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(s).do_handshake()
    area.ok("set-var", "z", "1")


def test_an_unknown_tls_setting_is_refused(area):
    area.set_config("server", "tls", '"sometimes"')
    result = area.run("set-var", "x", "1")
    assert result.code == 4 and "server.tls" in result.err and '"always"' in result.err, result


def test_the_client_uses_the_public_ssl_module_when_the_c_one_lacks_what_it_needs(area, monkeypatch):
    """The client speaks TLS through ``_ssl`` (cheaper to load); without the parts it uses, it
    falls back on ``ssl``, with the same checks."""
    from dbtool.core import link, tls

    info = _tls_area(area)
    with link.Connection(info) as conn:
        assert isinstance(conn.sock, tls._Secured) and conn.call("ping")["instance"] == info["instance"]

    def missing(sock):
        raise tls._NoCModule(sock)

    monkeypatch.setattr(tls, "_Secured", missing)
    with link.Connection(info) as conn:
        assert isinstance(conn.sock, ssl.SSLSocket) and conn.call("ping")["instance"] == info["instance"]
    with pytest.raises(link.Stale, match="another TLS certificate"):
        link.Connection({**info, "tls_fingerprint": "1" * 64})
