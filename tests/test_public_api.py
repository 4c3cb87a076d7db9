"""The public API is deliberate: changing what `shoal` exports must change this test."""

from __future__ import annotations

import shoal
import shoal.engine
import shoal.errors


def test_top_level_names() -> None:
    assert sorted(shoal.__all__) == sorted(
        [
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
    )
    for name in shoal.__all__:
        assert hasattr(shoal, name), name


def test_engine_names() -> None:
    assert sorted(shoal.engine.__all__) == [
        "CommitHook",
        "Database",
        "Limits",
        "Options",
        "Outcome",
        "Result",
        "Role",
        "Transaction",
        "read_file",
    ]


def test_every_error_is_a_shoal_error() -> None:
    for name in shoal.errors.__all__:
        obj = getattr(shoal.errors, name)
        if isinstance(obj, type) and issubclass(obj, Exception) and obj is not shoal.Warning:
            assert issubclass(obj, shoal.Error), name
