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
from itertools import islice
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

__all__ = [
    "USER_PREPARE_FLAGS",
    "CutShort",
    "Deadline",
    "Description",
    "Descriptions",
    "Limits",
    "Params",
    "Result",
    "Row",
    "described",
    "error_from",
    "read_one",
    "run",
]

Params = Sequence[Any] | Mapping[str, Any] | None

# APSW's statement cache is keyed by text *and* prepare flags, and the authorizer
# runs only when a statement is prepared. User statements are prepared with this
# (harmless) hint so that they never reuse a statement the engine prepared while
# trusted: a user's "COMMIT" must not find the engine's cached COMMIT.
USER_PREPARE_FLAGS = apsw.SQLITE_PREPARE_PERSISTENT
BeforeStatement = Callable[[str], None]
FETCH_CHUNK = 256  # rows read between checks of a result's limits


@dataclass(frozen=True)
class Limits:
    """Per-statement limits; None means unlimited."""

    statement_seconds: float | None = None
    max_rows: int | None = None
    max_bytes: int | None = None


Description = tuple[tuple[str, str | None], ...]  # (name, declared type) per column
Row = tuple[Any, ...]
# A connection's known descriptions: SQL text -> (the connection's data_version()
# when it was read, the description). See `read_one`.
Descriptions = dict[str, tuple[int, Description]]
DESCRIPTIONS_KEPT = 512  # statements whose description a connection remembers


@dataclass(slots=True)
class Result:
    """What one statement returned. Its columns are kept as SQLite described them,
    and split into names and types only when asked (most reads never ask)."""

    description: Description = ()
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rows_affected: int = 0
    last_insert_id: int | None = None

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.description]

    @property
    def types(self) -> list[str | None]:
        return [declared for _, declared in self.description]


class CutShort(Exception):
    """A statement ran past its connection's `Deadline.brief` and was interrupted.

    Not an `Error`, so that code collecting statement errors lets it through: it
    means "run this again where it may take its time", never "this failed".
    """


class Deadline:
    """A connection's progress handler: interrupts a statement past its deadline.

    `brief_until`, when set, is a moment (`time.monotonic()`) past which no statement
    `run` starts may go on, whatever its own time limit: it is cut short, raising
    `CutShort`. The event loop runs a read itself only while the whole of it, every
    statement of the request, stays brief.
    """

    CHECK_EVERY = 1000  # SQLite virtual machine steps between checks

    def __init__(self) -> None:
        self.at = float("inf")
        self.brief_until: float | None = None
        self._cut_short = False  # the statement's deadline is brief_until

    def __call__(self) -> bool:
        return time.monotonic() > self.at

    def install(self, conn: apsw.Connection) -> None:
        conn.set_progress_handler(self, self.CHECK_EVERY)

    def start(self, seconds: float) -> None:
        """Sets the deadline of a statement whose time limit is `seconds`; CutShort
        at once when a brief run has no time left for it."""
        now = time.monotonic()
        brief = self.brief_until
        self._cut_short = brief is not None and brief < now + seconds
        if brief is not None and brief < now:
            raise CutShort()
        self.at = brief if self._cut_short and brief is not None else now + seconds

    def passed(self, seconds: float) -> Exception | None:
        """What an interrupt means once a statement limited to `seconds` stopped:
        `CutShort`, `StatementTimeout`, or None (interrupted for another reason)."""
        if time.monotonic() <= self.at:
            return None
        return CutShort() if self._cut_short else StatementTimeout(seconds)


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
        self.current = Result(cursor.get_description())
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
        self._bytes = _within_limits(self._limits, len(rows), self._bytes, (row,))


def _within_limits(limits: Limits, count: int, size: int, added: Sequence[Row]) -> int:
    """The size of a result of `count` rows, `added` the last of them, that was
    `size` bytes before them; ResultTooLarge past the row or size limit."""
    if limits.max_rows is not None and count > limits.max_rows:
        raise ResultTooLarge(f"result has more than {limits.max_rows} rows (the row limit)")
    if limits.max_bytes is not None:
        size += sum(len(v) if isinstance(v, (str, bytes)) else 8 for row in added for v in row)
        if size > limits.max_bytes:
            raise ResultTooLarge(
                f"result is larger than {limits.max_bytes} bytes (the result size limit)"
            )
    return size


def fetch(cursor: apsw.Cursor, limits: Limits | None) -> list[Row]:
    """The rest of `cursor`'s rows, checked against `limits` every FETCH_CHUNK rows
    (a result past them is refused having read at most a chunk more)."""
    if limits is None or (limits.max_rows is None and limits.max_bytes is None):
        return cursor.fetchall()
    rows: list[Row] = []
    size = 0
    while chunk := list(islice(cursor, FETCH_CHUNK)):
        rows += chunk
        size = _within_limits(limits, len(rows), size, chunk)
    return rows


def run(
    conn: apsw.Connection,
    policy: Policy,
    deadline: Deadline,
    sql: str,
    params: Params,
    limits: Limits,
    before: BeforeStatement | None = None,
    *,
    cursor: apsw.Cursor | None = None,
    descriptions: Descriptions | None = None,
) -> list[Result]:
    """Runs every statement in `sql`; `before` sees each statement's text before it runs.

    `cursor` is one of `conn`'s to reuse (a reader's, for its point reads); without
    it a cursor is made and closed here. `descriptions` is `conn`'s cache for
    `read_one` (a reader's: it never changes the schema itself).
    """
    seconds = limits.statement_seconds
    if seconds is not None:
        deadline.start(seconds)
    own = cursor is None
    if cursor is None:
        cursor = conn.cursor()
    try:
        if before is None and is_single_statement(sql):  # a read: no statements to split
            if descriptions is not None:
                return [Result(*read_one(conn, cursor, sql, params, descriptions, limits))]
            return [_read_one(cursor, sql, params, limits)]
        return _run_collected(conn, cursor, sql, params, limits, before)
    except Exception as exc:
        raise error_from(exc, policy, deadline, seconds) from None
    finally:
        if seconds is not None:
            deadline.at = float("inf")
        if own:
            cursor.close(force=True)


def _run_collected(
    conn: apsw.Connection,
    cursor: apsw.Cursor,
    sql: str,
    params: Params,
    limits: Limits,
    before: BeforeStatement | None,
) -> list[Result]:
    """Any number of statements, each one's rows checked against the limits."""
    collector = _Collector(conn, limits, before)
    cursor.exec_trace = collector.trace
    try:
        cursor.execute(sql, params, prepare_flags=USER_PREPARE_FLAGS)
        for row in cursor:
            collector.add(row)
        collector.end_statement()
    finally:
        cursor.exec_trace = None
    return collector.results


def error_from(
    exc: Exception, policy: Policy, deadline: Deadline, seconds: float | None = None
) -> Exception:
    """The shoal error for what running a statement raised (a refusal the policy
    recorded first: SQLite reports it only as "not authorized")."""
    if isinstance(exc, apsw.InterruptError):
        passed = None if seconds is None else deadline.passed(seconds)
        return passed or from_apsw(apsw.InterruptError("interrupted"))
    if isinstance(exc, apsw.AuthError):
        return policy.take_refusal() or Refused(str(exc))
    if isinstance(exc, Error):
        return exc
    if isinstance(exc, KeyError):
        return ProgrammingError(f"no value supplied for parameter :{exc.args[0]}")
    if isinstance(exc, (apsw.Error, TypeError, ValueError, OverflowError)):
        return policy.take_refusal() or from_apsw(exc)
    return exc


def _read_one(cursor: apsw.Cursor, sql: str, params: Params, limits: Limits) -> Result:
    """The fast path for the commonest request: one statement that only reads (its
    text has no ';'), its rows fetched in chunks (or in one call, without limits)."""
    cursor.execute(sql, params, prepare_flags=USER_PREPARE_FLAGS)
    return Result(*description_and_rows(cursor, sql, params, limits))


def description_and_rows(
    cursor: apsw.Cursor, sql: str, params: Params, limits: Limits | None
) -> tuple[Description, list[Row]]:
    """What `cursor`, having executed `sql`, returns: its columns and every row."""
    try:
        description = cursor.get_description()
    except apsw.ExecutionCompleteError:  # no rows: the statement is already done
        return _description_without_running(cursor, sql, params), []
    return description, fetch(cursor, limits)


def read_one(
    conn: apsw.Connection,
    cursor: apsw.Cursor,
    sql: str,
    params: Params,
    descriptions: Descriptions,
    limits: Limits | None = None,
) -> tuple[Description, list[Row]]:
    """`_read_one` for a connection that never changes the schema itself (a
    reader), as (description, rows), with the description remembered.

    Asking SQLite for a description builds every column's name and type anew,
    which costs as much as a point read's own Python work. A statement's columns
    depend only on its text and the schema, and the schema changes only by a
    commit, which changes the connection's `data_version()`. That value is read
    after the statement's first step, in the read transaction it ran in, so a
    remembered description with the same value is the one SQLite would give now.
    """
    cursor.execute(sql, params, prepare_flags=USER_PREPARE_FLAGS)
    known = descriptions.get(sql)
    if known is not None and known[0] == conn.data_version():
        return known[1], fetch(cursor, limits)
    return described(conn, cursor, sql, params, descriptions, limits)


def described(
    conn: apsw.Connection,
    cursor: apsw.Cursor,
    sql: str,
    params: Params,
    descriptions: Descriptions,
    limits: Limits | None = None,
) -> tuple[Description, list[Row]]:
    """The rest of `read_one` once `cursor` has executed `sql` and no description
    was remembered for the connection's data version: asks, remembers, fetches."""
    version = conn.data_version()
    description, rows = description_and_rows(cursor, sql, params, limits)
    if len(descriptions) >= DESCRIPTIONS_KEPT:
        descriptions.clear()
    descriptions[sql] = (version, description)
    return description, rows


def _description_without_running(cursor: apsw.Cursor, sql: str, params: Params) -> Description:
    """The columns of a statement that returned no rows, from preparing it again and
    stopping before its first step (running it twice could see different rows)."""
    seen: list[Description] = []

    def stop(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        seen.append(cursor.get_description())
        return False

    cursor.exec_trace = stop
    try:
        cursor.execute(sql, params, prepare_flags=USER_PREPARE_FLAGS)
    except apsw.ExecTraceAbort:
        pass
    finally:
        cursor.exec_trace = None
    return seen[0]
