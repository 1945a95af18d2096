"""Handlers: one module per family of commands; plain functions ``(db, **params) -> JSON-able``.

The same function runs in the server (writer or reader thread) and in the client's direct
read-only fallback. ``resolve`` maps a registry entry to its function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

_cache: dict[str, Callable] = {}


def resolve(handler: str) -> Callable:
    """``"family.function"`` → the function in ``dbtool.core.handlers.family``."""
    fn = _cache.get(handler)
    if fn is None:
        family, _, name = handler.partition(".")
        module = importlib.import_module(f"{__name__}.{family}")
        fn = _cache[handler] = getattr(module, name)
    return fn
