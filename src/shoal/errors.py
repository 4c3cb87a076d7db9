"""Every error shoal raises, in one place.

The tree follows PEP 249 so that DB-API users can catch what they already know,
with shoal's own errors as named leaves that carry their context::

    Error
    ├── InterfaceError                 misuse of the client (closed cursor, ...)
    └── DatabaseError
        ├── DataError                  a value SQLite cannot store or return
        ├── OperationalError
        │   ├── StatementTimeout       a statement ran past its time limit
        │   ├── ResultTooLarge         a result past its row or byte limit
        │   ├── Busy                   the database is locked by another writer
        │   └── ReadOnly               this copy does not take writes (a follower)
        ├── IntegrityError             a constraint failed
        ├── InternalError
        ├── ProgrammingError
        │   ├── SQLError               SQL that does not prepare or run
        │   └── Refused                a statement shoal's SQL policy refuses
        ├── NotSupportedError
        └── ReplicationError           a record cannot be applied; nothing changed
            ├── CorruptRecord          bad checksum or malformed bytes
            ├── WrongDatabase          a record of another database
            ├── OutOfOrder             a gap or a repeat in versions
            ├── ApplyConflict          the changeset does not fit the data
            └── ReseedRequired         a barrier (VACUUM): seed from a snapshot
"""

from __future__ import annotations

import apsw

__all__ = [
    "ApplyConflict",
    "Busy",
    "CorruptRecord",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "OutOfOrder",
    "ProgrammingError",
    "ReadOnly",
    "Refused",
    "ReplicationError",
    "ReseedRequired",
    "ResultTooLarge",
    "SQLError",
    "StatementTimeout",
    "Warning",
    "WrongDatabase",
    "from_apsw",
]


class Warning(Exception):  # noqa: A001 - PEP 249 names it so
    """PEP 249's warning; shoal raises none today."""


class Error(Exception):
    """Base of every shoal error."""


class InterfaceError(Error):
    """The client was used wrongly (a closed connection or cursor, ...)."""


class DatabaseError(Error):
    """An error in the database rather than in the client."""


class DataError(DatabaseError):
    """A value that cannot be stored or returned (too big, wrong type)."""


class OperationalError(DatabaseError):
    """The database could not do the work now (locked, interrupted, I/O)."""


class IntegrityError(DatabaseError):
    """A constraint failed (UNIQUE, NOT NULL, CHECK, FOREIGN KEY)."""


class InternalError(DatabaseError):
    """Something inside shoal or SQLite that should not happen."""


class ProgrammingError(DatabaseError):
    """The request is wrong: bad SQL, wrong number of parameters."""


class NotSupportedError(DatabaseError):
    """A feature shoal or SQLite does not offer."""


class SQLError(ProgrammingError):
    """SQL that does not prepare or run; the message is SQLite's."""


class Refused(ProgrammingError):
    """A statement shoal's SQL policy does not allow (ATTACH, some pragmas)."""


class StatementTimeout(OperationalError):
    """A statement ran past its time limit and was interrupted."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"statement interrupted after {seconds:g} s (the statement time limit)")
        self.seconds = seconds


class ResultTooLarge(OperationalError):
    """A result grew past the row or byte limit and was abandoned."""


class Busy(OperationalError):
    """The database file is locked by another writer and the wait ran out."""


class ReadOnly(OperationalError):
    """This copy does not take writes; `leader` says where to go when known."""

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class ReplicationError(DatabaseError):
    """A record could not be applied; the follower is unchanged."""


class CorruptRecord(ReplicationError):
    """A record's bytes are malformed or fail their checksum."""


class WrongDatabase(ReplicationError):
    """A record belongs to another database."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"record is for database {got!r}, this is {expected!r}")
        self.expected = expected
        self.got = got


class OutOfOrder(ReplicationError):
    """A record's version is not the next one (a gap or a repeat)."""

    def __init__(self, expected: int, got: int) -> None:
        kind = "repeat" if got < expected else "gap"
        super().__init__(f"record version {got} is a {kind}: expected {expected}")
        self.expected = expected
        self.got = got


class ApplyConflict(ReplicationError):
    """A changeset does not fit the follower's rows: the copies have diverged."""


class ReseedRequired(ReplicationError):
    """The record is a barrier (VACUUM): seed from a snapshot at or after it."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"record {version} is a VACUUM barrier: seed this copy from a snapshot "
            f"at version {version} or later"
        )
        self.version = version


_APSW_TO_SHOAL: list[tuple[type[BaseException], type[Error]]] = [
    (apsw.ConstraintError, IntegrityError),
    (apsw.InterruptError, OperationalError),
    (apsw.BusyError, Busy),
    (apsw.LockedError, Busy),
    (apsw.ReadOnlyError, ReadOnly),
    (apsw.TooBigError, DataError),
    (apsw.MismatchError, DataError),
    (apsw.RangeError, ProgrammingError),
    (apsw.BindingsError, ProgrammingError),
    (apsw.AuthError, Refused),
    (apsw.SQLError, SQLError),
    (apsw.ExecutionCompleteError, InterfaceError),
    (apsw.ConnectionClosedError, InterfaceError),
    (apsw.CursorClosedError, InterfaceError),
    (apsw.ThreadingViolationError, InterfaceError),
    (apsw.CorruptError, InternalError),
    (apsw.NotADBError, OperationalError),
    (apsw.CantOpenError, OperationalError),
    (apsw.IOError, OperationalError),
    (apsw.FullError, OperationalError),
    (apsw.Error, OperationalError),
]


def from_apsw(exc: BaseException) -> Error:
    """The shoal error for an APSW (or binding) exception, keeping its message."""
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, UnicodeDecodeError):
        return DataError(
            "a TEXT value is not valid UTF-8; read it as bytes with CAST(column AS BLOB)"
        )
    if isinstance(exc, (TypeError, OverflowError, ValueError)):
        return ProgrammingError(str(exc))
    for apsw_type, shoal_type in _APSW_TO_SHOAL:
        if isinstance(exc, apsw_type):
            message = str(exc)
            prefix = f"{type(exc).__name__}: "
            if message.startswith(prefix):
                message = message[len(prefix) :]
            return shoal_type(message)
    return InternalError(f"{type(exc).__name__}: {exc}")
