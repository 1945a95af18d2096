"""The wire protocol (SPEC 4): JSON lines over TCP, an HMAC handshake, request/response shapes.

Shared by the client and the server; standard library only.

    server → {"hello": "dbtool", "protocol": P, "version": V, "instance": I, "nonce": N}
    client → {"auth": HMAC-SHA256(key, nonce), "protocol": P, "client": {...}}
    client → {"id": ..., "cmd": ..., "params": {...}, "trace": false, "idem": ...}
    server → {"id": ..., "request_id": ..., "ok": true, "result": ...}
           | {"id": ..., "request_id": ..., "ok": false, "error": {"code": ..., "message": ...}}
"""

from __future__ import annotations

import hashlib
import hmac
import json

MAX_LINE = 16 * 1024 * 1024  # bytes; a longer line is refused and the connection closed

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode(message: dict) -> bytes:
    """One message as one UTF-8 line."""
    return (_dumps(message) + "\n").encode("utf-8")


def decode(line: bytes) -> object:
    """Parse one line; raises ValueError (json.JSONDecodeError or UnicodeDecodeError) if malformed."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def sign(key_hex: str, nonce: str) -> str:
    """The proof that a client holds the area key: HMAC-SHA256(key, nonce) in hex."""
    return hmac.new(bytes.fromhex(key_hex), nonce.encode("ascii"), hashlib.sha256).hexdigest()


def verify(key_hex: str, nonce: str, proof: object) -> bool:
    """Constant-time check of a client's proof."""
    if not isinstance(proof, str):
        return False
    return hmac.compare_digest(sign(key_hex, nonce), proof)


def ok(req_id: object, request_id: str, result: object) -> dict:
    return {"id": req_id, "request_id": request_id, "ok": True, "result": result}


def error(req_id: object, request_id: str, code: str, message: str, **extra: object) -> dict:
    return {"id": req_id, "request_id": request_id, "ok": False, "error": {"code": code, "message": message, **extra}}
