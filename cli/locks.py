"""The area lock's client side: ``lock-area`` prints its token, ``unlock-area`` says what it did.

Standard library only (client path).
"""

from __future__ import annotations

import sys

from dbtool.core.commands import Command

from .binder import GlobalOptions


def _holder(lock: dict) -> str:
    import time

    since = lock.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, int) else "?"
    reason = f", reason: {lock['reason']}" if lock.get("reason") else ""
    return f"{lock.get('holder')} on {lock.get('host')} (since {when}{reason})"


def lock_area(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """The token alone (the whole record for --json and the other formats); a lock taken over says
    from whom on stderr."""
    answer = send(params)
    if answer.get("grabbed_from"):
        print(f"dbtool: took the area lock over from {_holder(answer['grabbed_from'])}", file=sys.stderr)
    return answer["token"] if opts.output == "table" else answer


def unlock_area(cmd: Command, params: dict, opts: GlobalOptions, send) -> object:
    """Nothing on stdout; a note on stderr when there was no lock, or when --force broke another's."""
    answer = send(params)
    if not answer.get("unlocked"):
        print("dbtool: the area was not locked", file=sys.stderr)
    elif params.get("force"):
        print(f"dbtool: released the area lock of {_holder(answer['was'])}", file=sys.stderr)
    return answer if opts.output != "table" else None
