"""TLS off the loopback (SPEC 7): the server's own certificate, pinned by its record.

At start the server makes a key pair and a self-signed certificate (``server_context``) and puts
the certificate's SHA-256 fingerprint in ``server.json``. The shared area is the root of trust, as
with a Jupyter connection file: whoever can read the record knows which certificate is the
server's, so no certificate authority is involved and none is consulted. A client wraps every
connection whose peer is not a loopback address in TLS 1.3 from the first byte, checks the
fingerprint before it sends anything (``wrap``), and only then proves the area's key inside it.
Connections over the loopback stay plain unless the area sets ``server.tls = "always"``.

Importing this module costs next to nothing (a plain connection needs only ``needs_tls``); the
client half imports the standard library's ``ssl`` only for a TLS connection, and the server half
imports ``cryptography`` once, at start.
"""

from __future__ import annotations

import _socket
import os
from _operator import _compare_digest  # hmac.compare_digest, without loading OpenSSL's hashlib

MODES = ("auto", "always")  # server.tls: TLS off the loopback, or on every connection


def is_loopback(ip: str) -> bool:
    """True for an address of the loopback (127.0.0.0/8, ::1, and 127.x mapped into IPv6)."""
    ip = ip.lower()
    return ip.startswith("127.") or ip == "::1" or ip.startswith("::ffff:127.")


def needs_tls(mode: str, ip: str) -> bool:
    """Whether a connection to (client) or on (server) the address ``ip`` is TLS; both ends ask
    the same question of the same address, so they always agree."""
    return mode == "always" or not is_loopback(ip)


def fingerprint(der: bytes) -> str:
    from .protocol import sha256  # (the built-in one: OpenSSL's hashlib costs ms to load)

    return sha256(der).hexdigest()


# -- the server's certificate --------------------------------------------------------------------------


def server_context(directory: str, name: str):
    """An ``ssl.SSLContext`` for the server with a new key and certificate, and the certificate's
    fingerprint. The key never stays on disk: it is written to a private file in ``directory``
    for ``load_cert_chain`` (which reads only files) and removed at once."""
    import datetime
    import ssl
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dbtool server {name}"[:64])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))  # a server's life; its record pins it anyway
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    fd, path = tempfile.mkstemp(prefix=".tls.", suffix=".pem", dir=directory)  # mode 600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        context.load_cert_chain(path)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return context, fingerprint(cert.public_bytes(serialization.Encoding.DER))


# -- the client's side ---------------------------------------------------------------------------------
#
# On the C module ``_ssl`` rather than ``ssl``, as link.py is on ``_socket``: ``import ssl`` (with
# the ``socket`` and ``enum`` modules it needs) costs a one-shot client ~8 ms, several times the
# handshake itself. What is used of it is small and has been stable since Python 3.7: a context,
# ``_wrap_socket``, and the TLS object's do_handshake/read/write/getpeercert. If it ever is not
# there, the public ``ssl`` module does the same.

_client_context = None
TLS1_3 = 0x0304  # ssl.TLSVersion.TLSv1_3
CERT_NONE = 0


def wrap(sock, expected: str, where: str):
    """``sock`` in TLS 1.3, once the server showed the certificate its record pins: an object with
    the socket methods a Connection uses. Raises ``MismatchError`` when it showed another one
    (nothing but the TLS handshake was sent), ``OSError`` (``SSLError``) when TLS failed."""
    try:
        secured = _Secured(sock)
    except _NoCModule as missing:
        secured = _public_wrap(missing.sock)
    try:
        secured.do_handshake()
        der = secured.getpeercert(True) or b""
    except BaseException:
        secured.close()
        raise
    if not _compare_digest(fingerprint(der), expected):
        secured.close()
        raise MismatchError(f"{where} showed another TLS certificate than the server record pins")
    return secured


class _Socket(_socket.socket):
    """``_socket.socket`` with a weak-reference slot, which ``_wrap_socket`` needs."""

    __slots__ = ("__weakref__",)


class _Secured:
    """A TCP socket and the TLS session on it (``_ssl``'s object), used like a socket."""

    def __init__(self, sock) -> None:
        global _client_context
        try:
            import _ssl

            if _client_context is None:
                context = _ssl._SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
                context.minimum_version = TLS1_3
                context.check_hostname = False  # the pinned fingerprint is the check, not a name
                context.verify_mode = CERT_NONE
                _client_context = context
            wrap_socket = _client_context._wrap_socket
            self._closed_tls = (_ssl.SSLZeroReturnError, _ssl.SSLEOFError)
        except (ImportError, AttributeError, TypeError, ValueError) as err:
            raise _NoCModule(sock) from err
        timeout = sock.gettimeout()
        sock = _Socket(sock.family, sock.type, sock.proto, sock.detach())  # (_ssl keeps a weak reference)
        sock.settimeout(timeout)
        self.sock = sock
        try:
            self.tls = wrap_socket(sock, False, None, owner=None, session=None)
        except (AttributeError, TypeError) as err:
            raise _NoCModule(sock) from err
        self.do_handshake = self.tls.do_handshake
        self.getpeercert = self.tls.getpeercert

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self.tls.write(view) :]

    def recv(self, size: int) -> bytes:
        try:
            return self.tls.read(size)
        except self._closed_tls:  # the server closed the session (or the connection without closing it)
            return b""

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def getpeername(self):
        return self.sock.getpeername()

    def close(self) -> None:
        self.sock.close()


class _NoCModule(Exception):
    """``_ssl`` lacks what ``_Secured`` uses; ``sock`` is the connection, untouched."""

    def __init__(self, sock) -> None:
        self.sock = sock


def _public_wrap(sock):
    import ssl

    global _client_context
    if not isinstance(_client_context, ssl.SSLContext):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _client_context = context
    import socket

    wrapped = _client_context.wrap_socket(socket.socket(fileno=sock.detach()), do_handshake_on_connect=False)
    return wrapped


class MismatchError(Exception):
    """The peer's certificate is not the one the server record names."""
