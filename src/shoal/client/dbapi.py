"""PEP 249 pieces shared by every shoal connection: globals, types, the cursor,
and `BaseConnection`, which routes statements the same way whether the database
is in-process (embedded) or behind a server (remote).

A cursor hands each request to its connection, which fills the cursor in. A
connection needs four things from its backend: read, write in a transaction of
its own, begin a transaction, and close. A backend whose reads run in this
process also names the database they run on (`_local_reads`): the commonest
request, one statement that reads outside a transaction, goes straight to it.
"""

from __future__ import annotations

import datetime
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import apsw

from shoal import errors
from shoal.engine.execute import Description, Params, Result, Row
from shoal.engine.functions import Aggregate, Function
from shoal.engine.pragmas import foreign_keys_request
from shoal.engine.sqltext import Kind, classify, is_single_statement, leading_keyword
from shoal.errors import InterfaceError, OperationalError, ProgrammingError, ReadOnly, Refused

__all__ = [
    "BINARY",
    "BaseConnection",
    "DATETIME",
    "NUMBER",
    "ROWID",
    "STRING",
    "Binary",
    "Cursor",
    "Date",
    "DateFromTicks",
    "LocalReads",
    "Time",
    "TransactionHandle",
    "TimeFromTicks",
    "Timestamp",
    "TimestampFromTicks",
    "adapt_params",
    "apilevel",
    "paramstyle",
    "threadsafety",
]

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not connections
paramstyle = "qmark"  # also :name, @name and $name with a mapping
# The SQLite every shoal connection runs (APSW's own, whatever the system has), as sqlite3 names it.
sqlite_version: str = apsw.sqlite_lib_version()
sqlite_version_info: tuple[int, ...] = tuple(int(part) for part in sqlite_version.split("."))

Date = datetime.date
Time = datetime.time
Timestamp = datetime.datetime
Binary = bytes


def DateFromTicks(ticks: float) -> datetime.date:  # noqa: N802 - PEP 249 name
    return Date(*time.localtime(ticks)[:3])


def TimeFromTicks(ticks: float) -> datetime.time:  # noqa: N802 - PEP 249 name
    return Time(*time.localtime(ticks)[3:6])


def TimestampFromTicks(ticks: float) -> datetime.datetime:  # noqa: N802 - PEP 249 name
    return Timestamp(*time.localtime(ticks)[:6])


def type_kind(declared: str) -> str:
    """The PEP 249 type object a declared column type belongs to, by SQLite's column
    affinity rules (in their order), with dates and times their own kind:
    `varchar(20)` is STRING, `BIGINT` and `DECIMAL(10,2)` NUMBER, `BLOB` and no
    type BINARY, `TIMESTAMP` DATETIME."""
    upper = declared.upper()
    if "INT" in upper:
        return "NUMBER"
    if any(part in upper for part in ("CHAR", "CLOB", "TEXT")):
        return "STRING"
    if "BLOB" in upper or not upper.strip():
        return "BINARY"
    if "DATE" in upper or "TIME" in upper:
        return "DATETIME"
    if upper.strip() == "ROWID":
        return "ROWID"
    return "NUMBER"  # REAL, FLOAT, DOUBLE and the NUMERIC affinity


class _TypeObject:
    """A PEP 249 type object: equal to every declared type of its kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return type_kind(other) == self.kind
        return isinstance(other, _TypeObject) and other.kind == self.kind

    def __hash__(self) -> int:
        return hash(self.kind)

    def __repr__(self) -> str:
        return self.kind


STRING = _TypeObject("STRING")
BINARY = _TypeObject("BINARY")
NUMBER = _TypeObject("NUMBER")
DATETIME = _TypeObject("DATETIME")
ROWID = _TypeObject("ROWID")

_NATIVE = (int, float, str, bytes, type(None))
_NATIVE_TYPES = frozenset({int, float, str, bytes, bool, type(None)})


def _adapt(value: Any) -> Any:
    if isinstance(value, _NATIVE):
        return value
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat(" ") if isinstance(value, datetime.datetime) else value.isoformat()
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def adapt_params(params: Params) -> Params:
    """Dates and times become ISO 8601 text, as sqlite3's adapters made them."""
    if type(params) is tuple or type(params) is list:  # the commonest case
        for value in params:
            if type(value) not in _NATIVE_TYPES:
                return [_adapt(v) for v in params]
        return params
    if params is None:
        return None
    if isinstance(params, Mapping):
        if _NATIVE_TYPES.issuperset(map(type, params.values())):
            return params
        return {k: _adapt(v) for k, v in params.items()}
    if isinstance(params, (str, bytes)):
        raise ProgrammingError("parameters must be a sequence or a mapping, not a string")
    return [_adapt(v) for v in params]


class Cursor:
    """A PEP 249 cursor. Rows are fetched whole when a statement runs; the
    description is built only when asked for."""

    __slots__ = (
        "_at",
        "_closed",
        "_columns",
        "_description",
        "_rows",
        "arraysize",
        "connection",
        "lastrowid",
        "rowcount",
    )

    def __init__(self, connection: BaseConnection) -> None:
        self.connection = connection
        self.arraysize = 1
        self._rows: list[Row] = []
        self._at = 0
        # The columns of the last execute's result set (None if it produced none:
        # fetch needs one), as SQLite described them.
        self._columns: Description | None = None
        self._description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self._closed = False

    @property
    def description(self) -> tuple[tuple[Any, ...], ...] | None:
        """(name, declared type, None, None, None, None, None) per column, or None."""
        columns = self._columns
        if self._description is None and columns is not None:
            self._description = tuple(
                (name, decltype, None, None, None, None, None) for name, decltype in columns
            )
        return self._description

    def execute(
        self, operation: str, parameters: Params = None, *, min_version: int | None = None
    ) -> Cursor:
        """Runs `operation`. `min_version` (a shoal extension) makes a read outside a
        transaction see at least that version: a replica waits for it, a remote
        connection asks the node for it, a file raises if it has not got it."""
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection.execute(operation, parameters, min_version=min_version, _into=self)
        return self

    def executemany(self, operation: str, seq_of_parameters: Sequence[Params]) -> Cursor:
        self._check_open()
        total = 0
        for parameters in seq_of_parameters:
            self._take(self.connection.run(operation, adapt_params(parameters)))
            total += max(self.rowcount, 0)
        self.rowcount = total
        self._rows, self._at, self._columns, self._description = [], 0, None, None
        return self

    def _take(self, results: list[Result]) -> None:
        if len(results) == 1:  # one statement: most calls
            result = results[0]
            shown = result if result.description else None
            last_insert_id = result.last_insert_id
        else:
            shown = next((r for r in reversed(results) if r.description), None)
            last_insert_id = next(
                (r.last_insert_id for r in reversed(results) if r.last_insert_id is not None),
                None,
            )
        self._description, self._at = None, 0
        if shown is not None:
            self._columns, self._rows, self.rowcount = shown.description, shown.rows, -1
        else:
            self._columns, self._rows = None, []
            self.rowcount = sum(r.rows_affected for r in results)
        if last_insert_id is not None:
            self.lastrowid = last_insert_id

    def _check_result_set(self) -> None:
        self._check_open()
        if self._columns is None:
            raise ProgrammingError(
                "no result set to fetch from: the last execute() ran no query that returns "
                "rows (or nothing ran yet)"
            )

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._columns is None or self._closed or self.connection._closed:
            self._check_result_set()  # raises
        at, rows = self._at, self._rows
        if at < len(rows):
            self._at = at + 1
            return rows[at]
        return None

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._check_result_set()
        count = self.arraysize if size is None else size
        rows = self._rows[self._at : self._at + count]
        self._at += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._check_result_set()
        rows = self._rows[self._at :]
        self._at = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        """The rows left (none after a statement without a result set, as sqlite3)."""
        self._check_open()
        while self._columns is not None and (row := self.fetchone()) is not None:
            yield row

    def setinputsizes(self, sizes: Any) -> None:
        """Accepted and ignored, as PEP 249 allows."""

    def setoutputsize(self, size: Any, column: Any = None) -> None:
        """Accepted and ignored, as PEP 249 allows."""

    def close(self) -> None:
        self._closed = True
        self._rows = []

    def _check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the cursor is closed")
        self.connection.check_open()

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_new_cursor = object.__new__


class LocalReads(Protocol):
    """A database whose reads run in this process (shoal.engine.Database)."""

    def read_one(self, sql: str, params: Params) -> tuple[Description, list[Row]]: ...


class TransactionHandle(Protocol):
    """An open write transaction, as a backend gives it to a connection."""

    @property
    def is_open(self) -> bool: ...

    def execute(self, sql: str, params: Params = None) -> list[Result]: ...

    def commit(self) -> int: ...

    def rollback(self) -> None: ...


_ISOLATION_LEVELS = frozenset({"", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"})
_READ_FIRST = frozenset({Kind.READ, Kind.PRAGMA})
_TRANSACTION, _VACUUM, _PRAGMA = Kind.TRANSACTION, Kind.VACUUM, Kind.PRAGMA  # Kind.X costs a lookup

# How a connection routes a text: (its kind, whether it is tried as a read first,
# whether it is one statement for the reader's fast path). Decided once per text.
Plan = tuple[Kind, bool, bool]
_PLANS: dict[str, Plan] = {}
_PLANS_KEPT = 4096


def _plan(sql: str) -> Plan:
    """`sql`'s plan, remembered. A read may write after all (a PRAGMA that sets,
    WITH ... INSERT): the reader refuses it, and it goes on as a write. The fast
    path takes one statement that is not a PRAGMA (a pragma read refreshes the
    reader's schema first: Database.read)."""
    plan = _PLANS.get(sql)
    if plan is None:
        kind = classify(sql)
        read_first = kind in _READ_FIRST or leading_keyword(sql) == "WITH"
        one_read = read_first and kind is not _PRAGMA and is_single_statement(sql)
        plan = (kind, read_first, one_read)
        if len(_PLANS) >= _PLANS_KEPT:
            _PLANS.clear()
        _PLANS[sql] = plan
    return plan


class BaseConnection(ABC):
    """A PEP 249 connection in sqlite3's default (legacy) transaction mode.

    A statement that writes opens a transaction; `commit()` ends it: one record,
    one version. Reads outside a transaction go to the backend's reader, so they
    never wait for the writer. Subclasses give the backend's four operations.
    """

    # PEP 249's optional extension: the exceptions as attributes of the connection,
    # so code holding connections to several drivers can catch the right ones.
    Warning = errors.Warning
    Error = errors.Error
    InterfaceError = errors.InterfaceError
    DatabaseError = errors.DatabaseError
    DataError = errors.DataError
    OperationalError = errors.OperationalError
    IntegrityError = errors.IntegrityError
    InternalError = errors.InternalError
    ProgrammingError = errors.ProgrammingError
    NotSupportedError = errors.NotSupportedError

    def __init__(self, *, autocommit: bool) -> None:
        self.autocommit = autocommit
        self._tx: TransactionHandle | None = None
        self._closed = False
        # Where a read outside a transaction, without min_version, may run directly,
        # skipping `_read`: a database in this process, when the backend has
        # nothing to check before such a read. None: every read goes to `_read`.
        self._local_reads: LocalReads | None = None
        # The text of the last statement that took that path: a loop that runs one
        # text (the same str object) again skips looking up its plan.
        self._last_one_read: str | None = None

    # -- the backend -----------------------------------------------------------

    @abstractmethod
    def _read(self, sql: str, params: Params, min_version: int | None) -> list[Result]:
        """Runs statements that only read, on a copy holding at least `min_version`;
        raises ReadOnly if they write."""

    @abstractmethod
    def _write(self, sql: str, params: Params) -> list[Result]:
        """Runs `sql` as a write transaction of its own."""

    @abstractmethod
    def _begin(self) -> TransactionHandle:
        """Opens a write transaction."""

    @abstractmethod
    def _close_backend(self) -> None:
        """Lets go of the database or the node."""

    @abstractmethod
    def _register(self, function: Function) -> None:
        """Makes a Python function callable from SQL, where SQL runs in this process."""

    # -- PEP 249 ---------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    @property
    def isolation_level(self) -> str | None:
        """sqlite3's spelling of `autocommit`: None when every write commits on its
        own, "" (or DEFERRED, IMMEDIATE, EXCLUSIVE, all alike here: a shoal
        transaction always holds the one writer) when a write opens a transaction."""
        return None if self.autocommit else ""

    @isolation_level.setter
    def isolation_level(self, level: str | None) -> None:
        if level is not None and level.upper() not in _ISOLATION_LEVELS:
            raise ProgrammingError(
                f"isolation_level must be None or one of {sorted(_ISOLATION_LEVELS)}, not {level!r}"
            )
        if level is None and self._tx is not None:
            self.commit()  # as sqlite3 does on turning autocommit on
        self.autocommit = level is None

    def cursor(self, factory: Callable[[BaseConnection], Cursor] | None = None) -> Cursor:
        """A new cursor; `factory` (a Cursor subclass, as in sqlite3) makes it."""
        self.check_open()
        return Cursor(self) if factory is None else factory(self)

    def create_function(
        self,
        name: str,
        narg: int,
        func: Callable[..., Any] | None,
        *,
        deterministic: bool = False,
    ) -> None:
        """As sqlite3's: SQL can call `func` as `name` with `narg` arguments (-1:
        any number); None removes it. SQL runs it in this process, so a file or
        an embedded replica can, a node's URL cannot (docs/embedded.md)."""
        self.check_open()
        self._register(Function(name, narg, scalar=func, deterministic=deterministic))

    def create_aggregate(
        self, name: str, n_arg: int, aggregate_class: Callable[[], Aggregate] | None
    ) -> None:
        """As sqlite3's: `aggregate_class()` is made per group, `step(*values)`
        called per row and `finalize()` for the result; None removes it."""
        self.check_open()
        self._register(Function(name, n_arg, aggregate=aggregate_class))

    def executemany(self, sql: str, seq_of_parameters: Sequence[Params]) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def commit(self) -> None:
        """Commits the open transaction, if any: one record, one new version."""
        self.check_open()
        tx, self._tx = self._tx, None
        if tx is not None:
            tx.commit()

    def rollback(self) -> None:
        """Rolls the open transaction back, if any: no record, no version."""
        self.check_open()
        tx, self._tx = self._tx, None
        if tx is not None:
            tx.rollback()

    def close(self) -> None:
        """Rolls back anything uncommitted (as sqlite3 does) and closes. A rollback
        that cannot reach a node is not an error here: the node rolls back an
        abandoned transaction itself once it is idle."""
        if self._closed:
            return
        tx, self._tx = self._tx, None
        try:
            if tx is not None:
                tx.rollback()
        except OperationalError:
            pass
        finally:
            self._close_backend()
            self._closed = True

    def check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    def execute(
        self,
        sql: str,
        parameters: Params = None,
        *,
        min_version: int | None = None,
        _into: Cursor | None = None,
    ) -> Cursor:
        """A shortcut, as in sqlite3: a new cursor with `sql` executed; and, given
        `_into`, how that cursor's own execute() runs (run() checks that the
        connection is open).

        The commonest request, one statement that reads outside a transaction,
        goes straight to `_local_reads`; the rest through run(). Every call counts
        on that path, so it is this one function: a tuple of parameters is adapted
        only if SQLite refuses to bind it (as it refuses dates; nothing has run
        then), and the cursor is filled in as Cursor._take would."""
        cursor = _into
        if cursor is None:
            cursor = _new_cursor(Cursor)  # Cursor(self), without the cost of __init__
            cursor.connection = self
            cursor.arraysize = 1
            cursor.lastrowid = None
            cursor._closed = False
        local = self._local_reads
        if (
            local is not None
            and self._tx is None
            and min_version is None
            and not self._closed
            and (sql is self._last_one_read or (_PLANS.get(sql) or _plan(sql))[2])
        ):
            self._last_one_read = sql
            params = parameters if type(parameters) is tuple else adapt_params(parameters)
            try:
                columns, rows = local.read_one(sql, params)
            except ReadOnly:  # it writes after all
                kind = _plan(sql)[0]
                cursor._take(self._not_a_read(sql, adapt_params(params), kind))
                return cursor
            except ProgrammingError:
                adapted = adapt_params(params)
                if adapted is params:
                    raise
                cursor._take(self.run(sql, adapted, min_version))
                return cursor
            cursor._description, cursor._at = None, 0
            if columns:
                cursor._columns, cursor._rows, cursor.rowcount = columns, rows, -1
            else:  # no result set: nothing to fetch, nothing affected
                cursor._columns, cursor._rows, cursor.rowcount = None, [], 0
            return cursor
        cursor._take(self.run(sql, adapt_params(parameters), min_version))
        return cursor

    def run(self, sql: str, params: Params, min_version: int | None = None) -> list[Result]:
        """Routes one request: to the open transaction, a reader, or a new transaction.
        Only a read outside a transaction heeds `min_version`: a write and what runs
        in a transaction run on the leader's newest state."""
        if self._closed:
            self.check_open()
        kind, read_first, _ = _PLANS.get(sql) or _plan(sql)
        if kind is _TRANSACTION:
            return self._transaction_statement(sql, params)
        if self._tx is not None:
            return self._in_transaction(sql, params)
        if read_first:
            try:
                return self._read(sql, params, min_version)
            except ReadOnly:
                pass  # it writes after all (a PRAGMA that sets, WITH ... INSERT)
        return self._not_a_read(sql, params, kind)

    def _not_a_read(self, sql: str, params: Params, kind: Kind) -> list[Result]:
        """A statement that writes, outside a transaction: it opens one, or runs
        alone at once when it is a setting for every client."""
        if kind is _VACUUM or self.autocommit or foreign_keys_request(sql) is not None:
            return self._write(sql, params)
        self._tx = self._begin()
        return self._in_transaction(sql, params)

    def _in_transaction(self, sql: str, params: Params) -> list[Result]:
        """Runs in the open transaction, forgetting it if it was rolled back."""
        assert self._tx is not None
        try:
            return self._tx.execute(sql, params)
        finally:
            if self._tx is not None and not self._tx.is_open:
                self._tx = None

    def _transaction_statement(self, sql: str, params: Params) -> list[Result]:
        """BEGIN, COMMIT and ROLLBACK map to the connection; savepoints run inside."""
        keyword = leading_keyword(sql)
        if keyword in ("COMMIT", "END"):
            self.commit()
        elif keyword == "ROLLBACK" and " TO " not in f" {sql.upper()} ":
            self.rollback()
        elif keyword == "BEGIN":
            if self._tx is not None:
                raise Refused("cannot BEGIN: a transaction is already open")
            self._tx = self._begin()
        else:  # SAVEPOINT, RELEASE, ROLLBACK TO
            if self._tx is None:
                self._tx = self._begin()
            return self._in_transaction(sql, params)
        return [Result()]

    def __enter__(self) -> BaseConnection:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Commits on success and rolls back on error; does not close (as sqlite3)."""
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
