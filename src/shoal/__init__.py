"""shoal: SQLite that scales out.

    >>> import shoal
    >>> conn = shoal.connect(":memory:")   # doctest: +SKIP

`connect` opens a PEP 249 connection whose writes are captured and logged: to a
file in-process, or to a database on a node (`shoal.connect("http://host:4001/db")`).
`query_many` runs one read on many of a node's databases at once.
"""

from shoal.client import connect
from shoal.client.dbapi import (
    BINARY,
    DATETIME,
    NUMBER,
    ROWID,
    STRING,
    Binary,
    Cursor,
    Date,
    DateFromTicks,
    Time,
    TimeFromTicks,
    Timestamp,
    TimestampFromTicks,
    apilevel,
    paramstyle,
    sqlite_version,
    sqlite_version_info,
    threadsafety,
)
from shoal.client.embedded import Connection
from shoal.client.remote import ManyResult, query_many
from shoal.errors import (
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)

__version__ = "0.1.0"

__all__ = [
    "BINARY",
    "DATETIME",
    "NUMBER",
    "ROWID",
    "STRING",
    "Binary",
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Date",
    "DateFromTicks",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "ManyResult",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "Time",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "Warning",
    "__version__",
    "apilevel",
    "connect",
    "paramstyle",
    "query_many",
    "sqlite_version",
    "sqlite_version_info",
    "threadsafety",
]
