"""The wire protocol's pieces: framing and the HMAC proof (against the standard library's HMAC)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from dbtool.core.protocol import (
    Records,
    decode,
    encode,
    hmac_sha256,
    pack_records,
    plain,
    plain_response,
    proof_ok,
    prove,
    unpack_records,
)
from dbtool.core.server.session import server_encoder
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("key", "message", "expected"),
    [  # RFC 4231 test cases 1 and 2
        (b"\x0b" * 20, b"Hi There", "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (b"Jefe", b"what do ya want for nothing?", "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ],
)
def test_hmac_sha256_rfc_4231(key, message, expected):
    assert hmac_sha256(key, message) == expected


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hmac_sha256_matches_the_standard_library(key, message):
    assert hmac_sha256(key, message) == hmac.new(key, message, hashlib.sha256).hexdigest()


def test_proofs_bind_the_key_the_role_and_both_nonces():
    key, server_nonce, client_nonce = "ab" * 16, "11" * 16, "22" * 16
    proof = prove(key, "server", server_nonce, client_nonce)
    assert (
        proof
        == hmac.new(bytes.fromhex(key), f"dbtool server {server_nonce} {client_nonce}".encode(), "sha256").hexdigest()
    )
    assert proof_ok(key, "server", server_nonce, client_nonce, proof)
    assert not proof_ok(key, "client", server_nonce, client_nonce, proof)  # a server's proof is no client's
    assert not proof_ok(key, "server", client_nonce, server_nonce, proof)  # nor for swapped nonces
    assert not proof_ok(key, "server", server_nonce, "33" * 16, proof)  # nor for another connection
    assert not proof_ok("cd" * 16, "server", server_nonce, client_nonce, proof)
    for bad in (None, 7, "", "zz" * 32, proof.upper()):
        assert not proof_ok(key, "server", server_nonce, client_nonce, bad)
    assert not proof_ok(key, "server", "not hex!", client_nonce, proof)  # malformed nonces never pass
    assert not proof_ok("not a key", "server", server_nonce, client_nonce, proof)


def test_framing():
    line = encode({"a": "é", "b": [1, None, True]})
    assert line.endswith(b"\n") and b"\n" not in line[:-1]
    assert decode(line) == {"a": "é", "b": [1, None, True]}
    with pytest.raises(ValueError, match="nested too deeply"):
        decode(b"[" * 100_000 + b"]" * 100_000)


values = st.none() | st.booleans() | st.integers() | st.text(max_size=5) | st.floats(allow_nan=False)
records = st.lists(st.dictionaries(st.sampled_from(["id", "name", "state", "x"]), values), max_size=6)


@given(records | values | st.lists(values, max_size=3))
def test_packed_records_unpack_to_the_same_result_in_the_same_field_order(result):
    response = {"id": 1, "request_id": "r", "ok": True, "result": result}
    packed = decode(encode(pack_records(response)))
    back = unpack_records(packed)
    assert back == result
    if isinstance(result, list):
        assert [list(r) if isinstance(r, dict) else r for r in back] == [
            list(r) if isinstance(r, dict) else r for r in result
        ]
    uniform = isinstance(result, list) and len(result) > 1 and all(isinstance(r, dict) for r in result)
    uniform = uniform and all(list(r) == list(result[0]) for r in result)
    assert ("records" in packed) == uniform and ("result" in packed) != uniform


def test_packed_records_halve_the_bytes():
    rows = [{"id": i, "testname": f"t{i}", "item_path": "", "state": "COMPLETED", "status": "PASS"} for i in range(100)]
    response = {"id": 1, "request_id": "r", "ok": True, "result": rows}
    assert len(encode(pack_records(response))) < len(encode(response)) / 2


def test_records_read_as_dicts_and_go_out_packed_or_plain():
    table = Records(("id", "name"), [(1, "a"), (2, "b"), (3, None)])
    as_dicts = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": None}]
    assert len(table) == 3 and list(table) == as_dicts and table == as_dicts and plain(table) == as_dicts
    assert table[1] == as_dicts[1] and table[-1] == as_dicts[-1] and table[:2] == as_dicts[:2]
    assert plain([1]) == [1] and plain(None) is None
    for rows in ([], [(7, "x")], table.rows):  # packed whatever the number of rows
        response = {"id": 1, "ok": True, "result": Records(("id", "name"), rows)}
        packed = decode(encode(pack_records(dict(response))))
        assert "result" not in packed
        assert unpack_records(packed) == [dict(zip(("id", "name"), row, strict=True)) for row in rows]
        assert decode(encode(plain_response(dict(response))))["result"] == unpack_records(packed)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits too: orjson's limit
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",))),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_the_server_encoder_reads_back_as_encode_does(value):
    message = {"id": 1, "ok": True, "result": value}
    line = server_encoder()(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == decode(encode(message))


def test_the_server_encodes_with_orjson_and_falls_back_beyond_it():
    pytest.importorskip("orjson")  # a dependency; without it the server uses encode itself
    fast = server_encoder()
    assert fast is not encode
    huge = {"id": 1, "ok": True, "result": 2**70}  # beyond orjson's 64-bit ints
    assert fast(huge) == encode(huge)


class _Transport:
    """What a Session writes, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def get_extra_info(self, name: str):
        return None

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))


class _Server:
    """The little of a server a connection's handshake asks of it."""

    def __init__(self, loop) -> None:
        self.loop, self.key, self.instance = loop, "ab" * 32, "test"
        self.listener_tuned, self.tls_context = True, None
        self.limits = {"handshake_timeout": 5.0, "dead_peer_timeout": 0}

    def admit(self, session) -> bool:
        return True

    def forget(self, session) -> None:
        pass


def test_the_hello_waits_for_the_challenge_and_leaves_with_the_proof_in_one_write():
    """A client sends its challenge as it connects: the hello and the proof answering it go out in
    one write (one send and one wake-up of the client less per connection)."""
    import asyncio
    import json

    from dbtool.core.protocol import challenge_line, new_nonce
    from dbtool.core.server.session import Session

    async def scenario():
        transport = _Transport()
        session = Session(_Server(asyncio.get_running_loop()))
        session.connection_made(transport)
        assert transport.writes == []  # held for the challenge
        challenge = new_nonce()
        session.data_received(challenge_line(challenge))
        assert len(transport.writes) == 1
        hello, proof = (json.loads(line) for line in transport.writes[0].splitlines())
        assert hello["hello"] == "dbtool" and proof_ok("ab" * 32, "server", hello["nonce"], challenge, proof["proof"])
        session.handshake_timer.cancel()

    asyncio.run(scenario())


def test_a_client_that_waits_for_the_hello_gets_it_when_the_hold_ends():
    import asyncio
    import json

    from dbtool.core.protocol import challenge_line, new_nonce
    from dbtool.core.server.session import HELLO_HOLD, Session

    async def scenario():
        transport = _Transport()
        session = Session(_Server(asyncio.get_running_loop()))
        session.connection_made(transport)
        await asyncio.sleep(HELLO_HOLD + 0.05)
        assert len(transport.writes) == 1 and json.loads(transport.writes[0])["hello"] == "dbtool"
        challenge = new_nonce()
        session.data_received(challenge_line(challenge))  # then the proof, in a write of its own
        assert len(transport.writes) == 2 and "proof" in json.loads(transport.writes[1])
        assert not session.closed  # the rest of the handshake deadline still runs
        session.handshake_timer.cancel()

    asyncio.run(scenario())
