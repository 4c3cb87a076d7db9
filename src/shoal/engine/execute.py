"""Running user SQL on a connection and collecting one Result per statement.

APSW runs a string of several statements lazily as its cursor is consumed, so the
cursor is always drained. A tracer on the cursor marks where one statement ends
and the next begins; it runs after each statement is prepared and before it
steps, the only moment its column names are known for a result with no rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import apsw

from shoal.engine.policy import Policy
from shoal.engine.sqltext import is_single_statement, leading_keyword
from shoal.errors import (
    Error,
    ProgrammingError,
    Refused,
    ResultTooLarge,
    StatementTimeout,
    from_apsw,
)

__all__ = ["USER_PREPARE_FLAGS", "Deadline", "Limits", "Params", "Result", "run"]

Params = Sequence[Any] | Mapping[str, Any] | None

# APSW's statement cache is keyed by text *and* prepare flags, and the authorizer
# runs only when a statement is prepared. User statements are prepared with this
# (harmless) hint so that they never reuse a statement the engine prepared while
# trusted: a user's "COMMIT" must not find the engine's cached COMMIT.
USER_PREPARE_FLAGS = apsw.SQLITE_PREPARE_PERSISTENT
BeforeStatement = Callable[[str], None]


@dataclass(frozen=True)
class Limits:
    """Per-statement limits; None means unlimited."""

    statement_seconds: float | None = None
    max_rows: int | None = None
    max_bytes: int | None = None


@dataclass(slots=True)
class Result:
    """What one statement returned."""

    columns: list[str] = field(default_factory=list)
    types: list[str | None] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rows_affected: int = 0
    last_insert_id: int | None = None


class Deadline:
    """A connection's progress handler: interrupts a statement past its deadline."""

    CHECK_EVERY = 1000  # SQLite virtual machine steps between checks

    def __init__(self) -> None:
        self.at = float("inf")

    def __call__(self) -> bool:
        return time.monotonic() > self.at

    def install(self, conn: apsw.Connection) -> None:
        conn.set_progress_handler(self, self.CHECK_EVERY)


class _Collector:
    """Splits a cursor's rows into per-statement Results as statements begin."""

    def __init__(self, conn: apsw.Connection, limits: Limits, before: BeforeStatement | None):
        self._conn = conn
        self._limits = limits
        self._before = before
        self.results: list[Result] = []
        self.current: Result | None = None
        self._changes_at_start = 0
        self._rowid_at_start = 0
        self._inserting = False
        self._bytes = 0

    def trace(self, cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        self.end_statement()
        self.begin_statement(cursor, sql)
        return True

    def begin_statement(self, cursor: apsw.Cursor, sql: str) -> None:
        if self._before is not None:
            self._before(sql)
        description = cursor.get_description()
        self.current = Result(
            columns=[column[0] for column in description],
            types=[column[1] for column in description],
        )
        self._changes_at_start = self._conn.total_changes()
        self._rowid_at_start = self._conn.last_insert_rowid()
        self._inserting = leading_keyword(sql) in ("INSERT", "REPLACE")
        self._bytes = 0

    def end_statement(self) -> None:
        result = self.current
        if result is None:
            return
        if self._conn.total_changes() != self._changes_at_start:
            result.rows_affected = self._conn.changes()
            rowid = self._conn.last_insert_rowid()
            # SQLite keeps the last insert's rowid across statements (and the log's
            # own insert sets it), so only a statement that inserted reports one.
            if self._inserting or rowid != self._rowid_at_start:
                result.last_insert_id = rowid
        self.results.append(result)
        self.current = None

    def add(self, row: tuple[Any, ...]) -> None:
        assert self.current is not None
        rows = self.current.rows
        rows.append(row)
        limits = self._limits
        if limits.max_rows is not None and len(rows) > limits.max_rows:
            raise ResultTooLarge(f"result has more than {limits.max_rows} rows (the row limit)")
        if limits.max_bytes is not None:
            self._bytes += sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in row)
            if self._bytes > limits.max_bytes:
                raise ResultTooLarge(
                    f"result is larger than {limits.max_bytes} bytes (the result size limit)"
                )


def run(
    conn: apsw.Connection,
    policy: Policy,
    deadline: Deadline,
    sql: str,
    params: Params,
    limits: Limits,
    before: BeforeStatement | None = None,
) -> list[Result]:
    """Runs every statement in `sql`; `before` sees each statement's text before it runs."""
    cursor = conn.cursor()
    seconds = limits.statement_seconds
    if seconds is not None:
        deadline.at = time.monotonic() + seconds
    fast = before is None and limits.max_rows is None and limits.max_bytes is None
    collector = None if fast and is_single_statement(sql) else _Collector(conn, limits, before)
    try:
        if collector is None:
            return [_read_one(cursor, sql, params)]
        cursor.exec_trace = collector.trace
        cursor.execute(sql, params, prepare_flags=USER_PREPARE_FLAGS)
        for row in cursor:
            collector.add(row)
        collector.end_statement()
    except apsw.InterruptError:
        if seconds is not None and time.monotonic() > deadline.at:
            raise StatementTimeout(seconds) from None
        raise from_apsw(apsw.InterruptError("interrupted")) from None
    except apsw.AuthError as exc:
        raise policy.take_refusal() or Refused(str(exc)) from None
    except Error:
        raise
    except KeyError as exc:
        raise ProgrammingError(f"no value supplied for parameter :{exc.args[0]}") from None
    except (apsw.Error, TypeError, ValueError, OverflowError) as exc:
        refusal = policy.take_refusal()
        if refusal is not None:
            raise refusal from None
        raise from_apsw(exc) from None
    finally:
        if seconds is not None:
            deadline.at = float("inf")
        cursor.close(force=True)
    return collector.results


def _read_one(cursor: apsw.Cursor, sql: str, params: Params) -> Result:
    """The fast path for the commonest request: one statement that only reads (its
    text has no ';'), with no result limits, fetched in one call."""
    descriptions: list[tuple[tuple[str, str | None], ...]] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        descriptions.append(cursor.get_description())
        return True

    cursor.exec_trace = trace
    cursor.execute(sql, params, prepare_flags=USER_PREPARE_FLAGS)
    rows = cursor.fetchall()
    columns, types = zip(*descriptions[0], strict=True) if descriptions[0] else ((), ())
    return Result(list(columns), list(types), rows)
