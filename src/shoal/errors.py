"""Every error shoal raises, in one place.

The tree follows PEP 249 so that DB-API users can catch what they already know,
with shoal's own errors as named leaves that carry their context::

    Error
    ├── InterfaceError                 misuse of the client (closed cursor, ...)
    ├── AuthError                      the request's credentials do not allow it
    │   ├── Unauthorized               no token, or one the node does not know
    │   └── Forbidden                  a known token without the scope needed
    └── DatabaseError
        ├── DataError                  a value SQLite cannot store or return
        ├── OperationalError
        │   ├── StatementTimeout       a statement ran past its time limit
        │   ├── ResultTooLarge         a result past its row or byte limit
        │   ├── Busy                   the database is locked by another writer
        │   ├── ReadOnly               this copy does not take writes (a follower)
        │   │   └── QueryWrites        a statement sent as a read tries to write
        │   ├── VersionNotReached      min_version not reached within the wait
        │   ├── OutcomeUnknown         a write whose commit was cut off: check it
        │   ├── FunctionFailed         a Python function called by SQL raised
        │   └── Unavailable            the node cannot serve now (starting, stopping)
        │       ├── NotLeader          this node does not lead the database now
        │       └── StaleReplica       an embedded replica heard nothing for too long
        ├── IntegrityError             a constraint failed
        ├── InternalError
        ├── ProgrammingError
        │   ├── SQLError               SQL that does not prepare or run
        │   ├── Refused                a statement shoal's SQL policy refuses
        │   ├── InvalidRequest         a malformed request body, parameter or name
        │   │   └── RequestTooLarge    past a size or count limit of the node
        │   ├── DatabaseNotFound       no database of that name
        │   ├── DatabaseExists         creating a name that is taken
        │   └── TransactionNotFound    an interactive transaction that ended
        ├── NotSupportedError
        ├── ReplicationError           a record cannot be applied; nothing changed
        │   ├── CorruptRecord          bad checksum or malformed bytes
        │   ├── WrongDatabase          a record of another database
        │   ├── OutOfOrder             a gap or a repeat in versions
        │   ├── ApplyConflict          the changeset does not fit the data
        │   ├── ReseedRequired         a barrier (VACUUM): seed from a snapshot
        │   └── LogTruncated           the log no longer holds it: seed from a snapshot
        └── ArchiveError               the archive cannot do what was asked
            ├── StoreUnavailable       the blob store cannot be reached now; retry
            ├── BlobNotFound           no object at that key
            ├── NotArchived            the archive holds no database of that name
            ├── PreconditionFailed     a conditional write found another version
            └── CorruptObject          an object fails its checksum or format
"""

from __future__ import annotations

import apsw

__all__ = [
    "ApplyConflict",
    "ArchiveError",
    "AuthError",
    "BlobNotFound",
    "Busy",
    "CorruptObject",
    "CorruptRecord",
    "DataError",
    "DatabaseError",
    "DatabaseExists",
    "DatabaseNotFound",
    "Error",
    "Forbidden",
    "FunctionFailed",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "InvalidRequest",
    "LogTruncated",
    "NotArchived",
    "NotLeader",
    "OutcomeUnknown",
    "NotSupportedError",
    "OperationalError",
    "OutOfOrder",
    "PreconditionFailed",
    "ProgrammingError",
    "QueryWrites",
    "ReadOnly",
    "Refused",
    "ReplicationError",
    "RequestTooLarge",
    "ReseedRequired",
    "ResultTooLarge",
    "SQLError",
    "StaleReplica",
    "StatementTimeout",
    "StoreUnavailable",
    "TransactionNotFound",
    "Unauthorized",
    "Unavailable",
    "VersionNotReached",
    "Warning",
    "WrongDatabase",
    "error_named",
    "from_apsw",
]


class Warning(Exception):  # noqa: A001 - PEP 249 names it so
    """PEP 249's warning; shoal raises none today."""


class Error(Exception):
    """Base of every shoal error."""


class InterfaceError(Error):
    """The client was used wrongly (a closed connection or cursor, ...)."""


class AuthError(Error):
    """The request's credentials do not allow it."""


class Unauthorized(AuthError):
    """No credentials, or a token this node does not know (HTTP 401)."""


class Forbidden(AuthError):
    """A known token whose scope or database patterns do not cover the request (HTTP 403)."""


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


class VersionNotReached(OperationalError):
    """A read asked for a version this copy did not reach within the wait."""

    def __init__(self, wanted: int, current: int, waited: float) -> None:
        super().__init__(
            f"min_version {wanted} not reached after waiting {waited:g} s "
            f"(this copy is at version {current}); retry, or read from the leader"
        )
        self.wanted = wanted
        self.current = current


class OutcomeUnknown(OperationalError):
    """A write whose commit was cut off (the leader or the control plane went away
    while committing it): it may or may not have taken effect. Not retryable as it
    is: read what it would have written before sending it again."""


class FunctionFailed(OperationalError):
    """A Python function the application registered raised while SQL called it;
    the statement was undone. The message names the exception and its text."""


class Unavailable(OperationalError):
    """The node cannot serve the request now (it is starting or stopping); retry."""


class NotLeader(Unavailable):
    """A write reached a node that does not lead the database now (its lease is
    gone, or it is being handed over); retry, on `leader` when it is known."""

    def __init__(self, message: str, leader: str | None = None) -> None:
        super().__init__(message)
        self.leader = leader


class StaleReplica(Unavailable):
    """An embedded replica has heard from no node for longer than its max lag."""


class InvalidRequest(ProgrammingError):
    """A request that is malformed: its JSON, a parameter, a flag or a name."""


class RequestTooLarge(InvalidRequest):
    """A request past one of the node's limits (body size, statement count)."""


class DatabaseNotFound(ProgrammingError):
    """No database of that name on this node."""

    def __init__(self, name: str) -> None:
        super().__init__(f"database {name!r} does not exist")
        self.name = name


class DatabaseExists(ProgrammingError):
    """A database of that name exists already."""

    def __init__(self, name: str) -> None:
        super().__init__(f"database {name!r} already exists")
        self.name = name


class TransactionNotFound(ProgrammingError):
    """An interactive transaction that is unknown, committed, rolled back or expired."""


class QueryWrites(ReadOnly):
    """A statement sent as a read (query) tries to write; send it as a write."""


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


class LogTruncated(ReplicationError):
    """The log no longer holds the record asked for: seed from a snapshot instead."""

    def __init__(self, database: str, after: int, oldest: int) -> None:
        super().__init__(
            f"this copy of {database!r} no longer holds record {after + 1} in its log "
            f"(it starts at {oldest}): seed from a snapshot "
            f"(GET /v1/databases/{database}/snapshot), then follow from its version"
        )
        self.after = after
        self.oldest = oldest


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


def error_named(kind: str, message: str) -> Error:
    """The shoal error class named `kind`, with `message`, as an answer names it
    (OperationalError for a name shoal does not know)."""
    cls = globals().get(kind)
    if not (isinstance(cls, type) and issubclass(cls, Error)):
        return OperationalError(f"{kind}: {message}")
    exc = cls.__new__(cls)  # not cls(...): some constructors build the message themselves
    Exception.__init__(exc, message)
    return exc


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


class ArchiveError(DatabaseError):
    """The archive (a blob store of snapshots and segments) cannot do what was asked."""


class StoreUnavailable(ArchiveError):
    """The blob store cannot be reached or refused for now; retry with backoff."""


class BlobNotFound(ArchiveError):
    """No object at that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object {key!r} in the store")
        self.key = key


class NotArchived(ArchiveError):
    """The archive holds no database of that name (`held`: the names it holds,
    when they were looked up)."""

    def __init__(self, database: str, held: list[str] | None = None) -> None:
        message = f"the archive holds no database named {database!r}"
        if held is not None:
            shown = ", ".join(held[:20]) + (f" and {len(held) - 20} more" if len(held) > 20 else "")
            message += f"; it holds: {shown}" if held else "; it holds no database yet"
        super().__init__(message)
        self.database = database
        self.held = held


class PreconditionFailed(ArchiveError):
    """A conditional write (if-match, if-none-match) found the object in another state."""


class CorruptObject(ArchiveError):
    """An object fails its checksum or is not in the expected format; it is never used."""
