"""The wire protocol (SPEC 4): JSON lines over TCP, an HMAC handshake, request/response shapes.

Shared by the client and the server; standard library only.

    server → {"hello": "dbtool", "protocol": P, "version": V, "instance": I, "nonce": N}   (at accept*)
    client → {"challenge": C, "protocol": P}                                            (at connect)
    server → {"proof": HMAC-SHA256(key, "dbtool server N C")}
    client → {"auth": HMAC-SHA256(key, "dbtool client N C"), "protocol": P, "client": {...}}
    client → {"id": ..., "cmd": ..., "params": {...}, "trace": false, "idem": ..., "pack": true}
    server → {"id": ..., "request_id": ..., "ok": true, "result": ...}
           | {"id": ..., "request_id": ..., "ok": true, "records": {"columns": [...], "rows": [...]}}
           | {"id": ..., "request_id": ..., "ok": false, "error": {"code": ..., "message": ...}}

Each side proves the key over both nonces, with its role in the message, so neither proof can be
replayed or reflected; the client sends nothing of value before the server's proof checks out.
A server at its connection limit answers the connection with a busy error instead of the hello.
(*) The server holds the hello back for up to 2 ms for the client's challenge, so that hello and
proof leave in one write; a client may wait for the hello before it sends its challenge.
"""

from __future__ import annotations

from _operator import _compare_digest  # hmac.compare_digest without loading OpenSSL
from itertools import repeat

from . import wirejson

try:  # the built-in SHA-256: OpenSSL's (hashlib, hmac) costs milliseconds to load, on every call
    from _sha256 import sha256
except ImportError:  # Python 3.12 renamed it
    try:
        from _sha2 import sha256
    except ImportError:
        from hashlib import sha256

MAX_LINE = 16 * 1024 * 1024  # bytes; a longer request line is refused and the connection closed
MAX_HANDSHAKE_LINE = 8192  # bytes; a handshake line is a few hundred (before the key is proven)


def encode(message: dict) -> bytes:
    """One message as one UTF-8 line."""
    return (wirejson.dumps(message) + "\n").encode("utf-8")


def decode(line: bytes) -> object:
    """Parse one line; raises ValueError (a JSON or UTF-8 error) if malformed."""
    try:
        return wirejson.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


_BLOCK = 64  # SHA-256's block size in bytes
_INNER = bytes(x ^ 0x36 for x in range(256))
_OUTER = bytes(x ^ 0x5C for x in range(256))


def hmac_sha256(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 (RFC 2104) in hex."""
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = sha256(key.translate(_INNER) + message).digest()
    return sha256(key.translate(_OUTER) + inner).hexdigest()


def new_nonce() -> str:
    """A fresh random nonce (128 bits, hex)."""
    import os

    return os.urandom(16).hex()


def is_nonce(value: object) -> bool:
    """A nonce as the handshake carries it: 16 to 64 hex digits."""
    return isinstance(value, str) and 16 <= len(value) <= 64 and not value.strip("0123456789abcdef")


def prove(key_hex: str, role: str, server_nonce: str, client_nonce: str) -> str:
    """The proof that ``role`` ("server" or "client") holds the area key, for this connection's
    two nonces: HMAC-SHA256(key, "dbtool ROLE SERVER_NONCE CLIENT_NONCE") in hex."""
    message = f"dbtool {role} {server_nonce} {client_nonce}".encode("ascii")
    return hmac_sha256(bytes.fromhex(key_hex), message)


def challenge_line(challenge: str) -> bytes:
    """The client's first line: its nonce, which the server's proof must cover."""
    from . import PROTOCOL

    return encode({"challenge": challenge, "protocol": PROTOCOL})


def auth_line(key_hex: str, server_nonce: str, challenge: str, client: dict) -> bytes:
    """The client's proof (sent once the server's proof checked out), with its identity."""
    from . import PROTOCOL

    return encode({"auth": prove(key_hex, "client", server_nonce, challenge), "protocol": PROTOCOL, "client": client})


def proof_ok(key_hex: str, role: str, server_nonce: str, client_nonce: str, proof: object) -> bool:
    """Constant-time check of a proof (False for anything that is not one)."""
    if not (isinstance(proof, str) and proof.isascii() and is_nonce(server_nonce) and is_nonce(client_nonce)):
        return False
    try:
        expected = prove(key_hex, role, server_nonce, client_nonce)
    except ValueError:  # a key that is not hex
        return False
    return _compare_digest(expected, proof)


class Records:
    """The rows of a query as a handler returns them: column names and row tuples, the way the
    database driver gives them. Read as a sequence of dicts (built on access). The server sends
    them packed to a client that asked (``pack_records``), as a list of dicts otherwise
    (``plain``): no dict per row on the way out, and none at all for a packing client.
    """

    __slots__ = ("columns", "rows")

    def __init__(self, columns: tuple[str, ...], rows: list[tuple]) -> None:
        self.columns = columns
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return map(dict, map(zip, repeat(self.columns), self.rows))

    def __getitem__(self, index: int | slice) -> dict | list[dict]:
        if isinstance(index, slice):
            return [dict(zip(self.columns, row, strict=True)) for row in self.rows[index]]
        return dict(zip(self.columns, self.rows[index], strict=True))

    def __eq__(self, other: object) -> bool:
        return list(self) == (list(other) if isinstance(other, Records) else other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Records({list(self)!r})"

    def to_list(self) -> list[dict]:
        return list(self)


def plain(result: object) -> object:
    """A handler's result as JSON can carry it: Records become a list of dicts."""
    return result.to_list() if type(result) is Records else result


def pack_records(response: dict) -> dict:
    """For a client that asked ``"pack": true``: a result that is a list of records with the same
    fields, in the same order, goes as ``"records": {"columns": [...], "rows": [[...], ...]}``
    instead of ``"result"`` — the field names once instead of once per row, which halves the
    bytes and the JSON work on both sides for a few thousand rows. Anything else is unchanged."""
    result = response.get("result")
    if type(result) is Records:
        columns, rows = result.columns, result.rows
    else:
        if type(result) is not list or len(result) < 2 or type(result[0]) is not dict:
            return response
        columns = tuple(result[0])
        for record in result:
            if type(record) is not dict or tuple(record) != columns:
                return response
        rows = [list(record.values()) for record in result]
    packed = {k: v for k, v in response.items() if k != "result"}
    packed["records"] = {"columns": list(columns), "rows": rows}
    return packed


def plain_response(response: dict) -> dict:
    """For a client that did not ask to pack: the response with a Records result as a list of dicts."""
    if type(response.get("result")) is Records:
        response["result"] = response["result"].to_list()
    return response


def unpack_records(response: dict) -> object:
    """The result of a response: packed records (see pack_records) as Records — a sequence of dicts,
    each built when it is read — or the plain result."""
    packed = response.get("records")
    if type(packed) is not dict:
        return response.get("result")
    columns, rows = packed.get("columns"), packed.get("rows")
    if (
        type(columns) is not list
        or type(rows) is not list
        or not set(map(type, rows)) <= {list}
        or not set(map(len, rows)) <= {len(columns)}
    ):
        raise ValueError("malformed packed records")
    return Records(tuple(columns), rows)


def ok(req_id: object, request_id: str, result: object) -> dict:
    return {"id": req_id, "request_id": request_id, "ok": True, "result": result}


def error(req_id: object, request_id: str, code: str, message: str, **extra: object) -> dict:
    return {"id": req_id, "request_id": request_id, "ok": False, "error": {"code": code, "message": message, **extra}}


class Reply:
    """A successful answer: the result, the request's server-side log (with --trace), its id."""

    __slots__ = ("log", "request_id", "result")

    def __init__(self, result: object, log: list | None = None, request_id: str | None = None) -> None:
        self.result = result
        self.log = log or []
        self.request_id = request_id


def unwrap(response: dict) -> Reply:
    """A response as a Reply, or the server's error raised."""
    from .errors import Internal, from_wire

    if response.get("ok"):
        try:
            result = unpack_records(response)
        except ValueError as err:
            raise Internal(f"the server sent a malformed response: {err}") from None
        return Reply(result, response.get("log"), response.get("request_id"))
    err = response.get("error") if isinstance(response.get("error"), dict) else {"message": str(response)}
    exc = from_wire(err)
    exc.extra["request_id"] = response.get("request_id")
    exc.extra["log"] = response.get("log") or []
    raise exc
