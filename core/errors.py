"""Errors that cross the wire: each has a protocol code and a CLI exit code (SPEC 2.4)."""

from __future__ import annotations


class DbtoolError(Exception):
    """Base of every error dbtool reports to a user; ``str(err)`` is the one-line message."""

    code = "internal"
    exit_code = 5

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_wire(self) -> dict:
        return {"code": self.code, "message": self.message, **self.extra}


class UsageError(DbtoolError):
    """The command line itself is wrong (unknown option, missing argument)."""

    code = "usage"
    exit_code = 2


class BadRequest(DbtoolError):
    """A protocol message that is malformed or does not match the command's parameters."""

    code = "bad_request"
    exit_code = 2


class NotFound(DbtoolError):
    """A lookup found nothing."""

    code = "not_found"
    exit_code = 1


class Refused(DbtoolError):
    """A well-formed request the database will not carry out (invalid value, unknown id, locked run)."""

    code = "refused"
    exit_code = 4


class Held(Refused):
    """A write refused because the area is locked, or its test is open for another job: it may be
    taken once the lock is released (a spooled report waits for that instead of being rejected)."""


class Outdated(Refused):
    """The area's database was made by an older dbtool; a server (which upgrades it) must open it first."""


class StorageError(DbtoolError):
    """The storage failed the request (disk full, read-only filesystem, damaged database, lost
    WAL files): not the request's fault, and nothing of it was changed."""

    code = "storage"
    exit_code = 4


class Unavailable(DbtoolError):
    """No server could be reached or started."""

    code = "unavailable"
    exit_code = 3


class Busy(DbtoolError):
    """The server's queue is full; retry after ``retry_after`` seconds."""

    code = "busy"
    exit_code = 3


class Unauthorized(DbtoolError):
    """The client could not prove it holds the area's key."""

    code = "unauthorized"
    exit_code = 3


class VersionMismatch(DbtoolError):
    """Client and server speak different protocol versions."""

    code = "version_mismatch"
    exit_code = 3


class Internal(DbtoolError):
    """A bug: the message names the request id and the log to read."""


_BY_CODE = {
    cls.code: cls
    for cls in (
        UsageError,
        BadRequest,
        NotFound,
        Refused,
        StorageError,
        Unavailable,
        Busy,
        Unauthorized,
        VersionMismatch,
        Internal,
    )
}


def from_wire(error: dict) -> DbtoolError:
    """Rebuild the error a server sent; unknown codes become internal errors."""
    extra = {k: v for k, v in error.items() if k not in ("code", "message")}
    cls = _BY_CODE.get(error.get("code"), Internal)
    return cls(str(error.get("message", "unknown error")), **extra)
