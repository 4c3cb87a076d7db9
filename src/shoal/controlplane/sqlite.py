"""The embedded control plane: one SQLite file (DATA_DIR/control.db), through APSW.

The default for one node. WAL, so that a follower's reads never wait for an
append; BEGIN IMMEDIATE, so that a write takes the file's write lock before it
reads and two processes never deadlock upgrading a read lock; synchronous=FULL,
so that an append is durable when it returns (a `sync` database's promise).

Concurrency: each instance owns one connection, used under a lock by one
thread at a time; instances and processes sharing the file take turns through
SQLite's own locks, waiting up to BUSY_TIMEOUT_MS. `follow` polls: a query of
an indexed range costs microseconds, and there is no one to notify it; for the
same reason its `watch_logs` cannot tell which logs grew, and says so every
WATCH_POLL_SECONDS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import apsw

from shoal.controlplane.base import ControlPlaneUnavailable, LogWatch
from shoal.controlplane.sql import SQLITE, Cursor, SQLControlPlane, Wait
from shoal.errors import Error, InterfaceError, from_apsw

__all__ = ["SQLiteControlPlane"]

T = TypeVar("T")
BUSY_TIMEOUT_MS = 5000  # another process's write transaction is milliseconds long
POLL_SECONDS = 0.005  # a follower sees an append within this
WATCH_POLL_SECONDS = 0.02  # a node following many logs compares their heads this often


class _Cursor:
    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, params))

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        list(self._conn.execute(sql, params))  # APSW runs a statement as it is iterated
        return self._conn.changes()


def _poll(seconds: float) -> None:
    time.sleep(min(seconds, POLL_SECONDS))


class _PollingWatch:
    """A LogWatch for a store that notifies no one: every log may have grown."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> set[str] | None:
        self._closed.wait(min(timeout, WATCH_POLL_SECONDS))
        return None

    def close(self) -> None:
        self._closed.set()


class SQLiteControlPlane(SQLControlPlane):
    """The control plane in the SQLite file at `path`, created if missing. `clock`
    is its clock (seconds since the epoch): expiry and `now()` run on it."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(SQLITE)
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: apsw.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = apsw.Connection(str(self.path))
            conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            list(conn.execute("PRAGMA journal_mode = WAL"))
            conn.execute("PRAGMA synchronous = FULL")
            conn.create_scalar_function("shoal_now", lambda *_: clock(), 0)
        except apsw.Error as exc:
            raise self._translate(exc) from exc
        self._conn = conn
        self._write(self._create)

    def _create(self, cursor: Cursor) -> None:
        for statement in self._sql.create:
            cursor.count(statement)

    def _read(self, work: Callable[[Cursor], T]) -> T:
        with self._lock:
            conn = self._open()
            try:
                return work(_Cursor(conn))
            except apsw.Error as exc:
                raise self._translate(exc) from exc

    def _write(self, work: Callable[[Cursor], T]) -> T:
        with self._lock:
            conn = self._open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                result = work(_Cursor(conn))
                conn.execute("COMMIT")
                return result
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, apsw.Error):
                    raise self._translate(exc) from exc
                raise

    def _appended(self, database: str) -> None:
        """Nothing to tell: followers poll."""

    def _watch(self, database: str) -> AbstractContextManager[Wait]:
        return nullcontext(_poll)

    def watch_logs(self) -> LogWatch:
        self._open()
        return _PollingWatch()

    def _open(self) -> apsw.Connection:
        if self._conn is None:
            raise InterfaceError("the control plane is closed")
        return self._conn

    def _translate(self, exc: apsw.Error) -> Error:
        if isinstance(exc, apsw.BusyError):
            return ControlPlaneUnavailable(
                f"the control plane {self.path} stayed locked by another writer "
                f"for {BUSY_TIMEOUT_MS} ms; retry"
            )
        return from_apsw(exc)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
