"""JSON for the client path: the C codec of ``_json``, without importing the ``json`` package.

``import json`` costs about 6 ms of CPU per process (it compiles regular expressions at import),
a fifth of a one-shot dbtool call. The C scanner and encoder behind it are in ``_json``; this
module drives them directly, with the same behaviour as ``json.loads`` and compact
``json.dumps(..., ensure_ascii=False)``. Where ``_json`` is missing or differs (another Python),
it falls back to the ``json`` package.
"""

from __future__ import annotations

_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _fallback() -> tuple:  # (loads, dumps); no typing import on the client path
    import json

    compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    spaced = json.JSONEncoder(ensure_ascii=False).encode

    def dumps(value: object, spaced_output: bool = False) -> str:
        return (spaced if spaced_output else compact)(value)

    return json.loads, dumps


try:
    import _json

    class _Context:
        """What the C scanner reads from a JSONDecoder."""

        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = _CONSTANTS.__getitem__

    _scan = _json.make_scanner(_Context())

    def _default(value: object) -> object:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    _encoder = _json.make_encoder(None, _default, _json.encode_basestring, None, ":", ",", False, False, True)
    _spaced = _json.make_encoder(None, _default, _json.encode_basestring, None, ": ", ", ", False, False, True)
    if "".join(_encoder({"a": [1, 2.5, None, True, "é"]}, 0)) != '{"a":[1,2.5,null,true,"é"]}':
        raise ImportError("unexpected _json encoder")

    def loads(text: str | bytes) -> object:
        """Parse one JSON document; ValueError (as json.JSONDecodeError is) when malformed."""
        if isinstance(text, (bytes, bytearray)):
            text = text.decode("utf-8")
        start = len(text) - len(text.lstrip(" \t\n\r"))
        try:
            value, end = _scan(text, start)
        except StopIteration as stop:
            raise ValueError(f"Expecting value: char {stop.value}") from None
        except SystemError:  # the C scanner reports most errors through the json package: let it
            import json

            return json.loads(text)  # raises json.JSONDecodeError, a ValueError
        if text[end:].strip(" \t\n\r"):
            raise ValueError(f"Extra data: char {end}")
        return value

    def dumps(value: object, spaced: bool = False) -> str:
        """JSON text, non-ASCII kept as is: compact, or with json.dumps's ", " and ": " spacing."""
        return "".join((_spaced if spaced else _encoder)(value, 0))

except (ImportError, AttributeError, TypeError):
    loads, dumps = _fallback()
