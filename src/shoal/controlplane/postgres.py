"""The control plane in PostgreSQL, through psycopg 3.

For a cluster whose operators already run PostgreSQL (and its backups and
failover). The tables, prefixed `shoal_`, are created if missing, under an
advisory lock so that nodes starting together do not collide. `shoal_now()` is
a SQL function over `clock_timestamp()`: expiry runs on the server's clock,
the one clock every node shares.

Connections: up to POOL_SIZE for statements, each call taking one for its few
short round trips (so appends to different logs, from different threads, do
not wait on each other); another, on its own thread, LISTENs on CHANNEL. An append
notifies inside its transaction, so the notification goes out when it commits,
and followers of that log wake within milliseconds. While the listener is
reconnecting, followers poll every FALLBACK_POLL_SECONDS.

Failures: an OperationalError from psycopg (the server is down or restarting,
the connection was cut) drops the connection and becomes ControlPlaneUnavailable;
the next call connects again. A call on a connection left from before, which
may have died while idle (a server restart), is tried once more on a new one,
unless it failed while committing: then whether it took effect is unknown, and
the caller is told.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg

from shoal.controlplane.base import CommitUnknown, ControlPlaneError, ControlPlaneUnavailable
from shoal.controlplane.sql import POSTGRES, Cursor, SQLControlPlane, Wait
from shoal.errors import InterfaceError

__all__ = ["PostgresControlPlane"]

T = TypeVar("T")
CHANNEL = "shoal_log"
CONNECT_TIMEOUT = 3  # seconds; a server that is up answers in milliseconds
FALLBACK_POLL_SECONDS = 0.5  # how late a follower can be while the listener is away
LISTEN_TICK_SECONDS = 0.25  # how often the listener looks up to see if it should stop
RECONNECT_SECONDS = 0.5  # between the listener's attempts to connect
POOL_SIZE = 4  # connections for statements: appends of different logs run side by side
SCHEMA_LOCK = 0x73686F616C  # pg_advisory_xact_lock key for creating the tables ('shoal')

NOTIFY = "SELECT pg_notify(%s, %s)"
CREATE_CLOCK = """CREATE OR REPLACE FUNCTION shoal_now() RETURNS DOUBLE PRECISION
    LANGUAGE SQL VOLATILE AS 'SELECT extract(epoch FROM clock_timestamp())::float8'"""


def _topic(database: str) -> str:
    """A log's NOTIFY payload: a digest, since payloads stop at 8,000 bytes and names do not."""
    return hashlib.blake2b(database.encode(), digest_size=16).hexdigest()


class _Cursor:
    def __init__(self, cursor: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cursor = cursor

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cursor.execute(sql, params or None)
        return self._cursor.fetchall()

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cursor.execute(sql, params or None)
        return self._cursor.rowcount


class _Listener:
    """A thread with its own connection that LISTENs and wakes the followers of a log."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._lock = threading.Lock()
        self._waiting: dict[str, set[threading.Event]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="shoal-listen", daemon=True)
        self._thread.start()

    @contextmanager
    def watch(self, topic: str) -> Iterator[Wait]:
        event = threading.Event()
        with self._lock:
            self._waiting.setdefault(topic, set()).add(event)

        def wait(seconds: float) -> None:
            event.wait(min(seconds, FALLBACK_POLL_SECONDS))
            event.clear()

        try:
            yield wait
        finally:
            with self._lock:
                events = self._waiting[topic]
                events.discard(event)
                if not events:
                    del self._waiting[topic]

    def _wake(self, topic: str | None) -> None:
        """Wakes the followers of `topic`, or all of them (None)."""
        with self._lock:
            groups = self._waiting.values() if topic is None else [self._waiting.get(topic, set())]
            for events in groups:
                for event in events:
                    event.set()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                ) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._wake(None)  # what was notified while we were away is lost
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=LISTEN_TICK_SECONDS):
                            self._wake(notify.payload)
            except psycopg.Error:
                self._stop.wait(RECONNECT_SECONDS)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(CONNECT_TIMEOUT + 1)


class PostgresControlPlane(SQLControlPlane):
    """The control plane in the PostgreSQL database that `dsn` names (a libpq URL or
    key=value string; a password is best left to PGPASSWORD or ~/.pgpass).
    Connects at once: ControlPlaneUnavailable if the server cannot be reached."""

    def __init__(self, dsn: str, connections: int = POOL_SIZE) -> None:
        super().__init__(POSTGRES)
        self._dsn = dsn
        self._lock = threading.Lock()  # guards the idle list, the listener and closing
        self._slots = threading.BoundedSemaphore(connections)
        self._idle: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._listener: _Listener | None = None
        self._closed = False
        self._write(self._create)

    def _create(self, cursor: Cursor) -> None:
        cursor.rows("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        # Made before: leave them be. Even "IF NOT EXISTS" DDL takes table locks, and
        # deadlocks with the key-value writes of nodes already running.
        if cursor.rows("SELECT to_regclass('shoal_kv_revision') IS NOT NULL")[0][0]:
            return
        cursor.count(CREATE_CLOCK)
        for statement in self._sql.create:
            cursor.count(statement)

    def _read(self, work: Callable[[Cursor], T]) -> T:
        return self._run(work, write=False)

    def _write(self, work: Callable[[Cursor], T]) -> T:
        return self._run(work, write=True)

    def _run(self, work: Callable[[Cursor], T], *, write: bool) -> T:
        with self._slots:
            conn, reused = self._take()
            while True:
                committing = False
                try:
                    if not write:
                        result = work(_Cursor(conn.cursor()))
                    else:
                        with conn.transaction():
                            result = work(_Cursor(conn.cursor()))
                            committing = True
                    self._give_back(conn)
                    return result
                except psycopg.OperationalError as exc:
                    conn.close()
                    if committing:
                        raise CommitUnknown(
                            f"the PostgreSQL control plane went away while committing: {exc}"
                        ) from exc
                    if not reused:
                        raise ControlPlaneUnavailable(
                            f"the PostgreSQL control plane cannot be reached: {exc}"
                        ) from exc
                    conn, reused = self._take(fresh=True)
                except psycopg.Error as exc:
                    self._give_back(conn)
                    raise ControlPlaneError(f"the PostgreSQL control plane failed: {exc}") from exc
                except BaseException:
                    conn.close()
                    raise

    def _take(self, fresh: bool = False) -> tuple[psycopg.Connection[tuple[Any, ...]], bool]:
        """An idle connection (True: left from before, it may have died idle), or a new one."""
        with self._lock:
            if self._closed:
                raise InterfaceError("the control plane is closed")
            if self._idle and not fresh:
                return self._idle.pop(), True
        try:
            conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.OperationalError as exc:
            raise ControlPlaneUnavailable(
                f"the PostgreSQL control plane cannot be reached: {exc}"
            ) from exc
        return conn, False

    def _give_back(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        with self._lock:
            if self._closed or conn.closed:
                conn.close()
            else:
                self._idle.append(conn)

    def _appended(self, database: str) -> None:
        # In a statement of its own, after the append's commit: a transaction that
        # notifies holds a server-wide lock through its commit, and appends inside
        # one would commit one at a time, each waiting for its own disk flush.
        with contextlib.suppress(ControlPlaneError):
            self._read(lambda cursor: cursor.rows(NOTIFY, (CHANNEL, _topic(database))))

    def _expendable(self, cursor: Cursor) -> None:
        cursor.count("SET LOCAL synchronous_commit TO OFF")

    @contextmanager
    def _watch(self, database: str) -> Iterator[Wait]:
        with self._lock:
            if self._closed:
                raise InterfaceError("the control plane is closed")
            if self._listener is None:
                self._listener = _Listener(self._dsn)
            listener = self._listener
        with listener.watch(_topic(database)) as wait:
            yield wait

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            listener, self._listener = self._listener, None
        for conn in idle:
            conn.close()
        if listener is not None:
            listener.close()
