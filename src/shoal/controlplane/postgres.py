"""The control plane in PostgreSQL, through psycopg 3.

For a cluster whose operators already run PostgreSQL (and its backups and
failover). The tables, prefixed `shoal_`, are created if missing, under an
advisory lock so that nodes starting together do not collide. `shoal_now()` is
a SQL function over `clock_timestamp()`: expiry runs on the server's clock,
the one clock every node shares.

Connections: up to POOL_SIZE for statements, each call taking one for its few
short round trips (so appends to different logs, from different threads, do
not wait on each other); another, on its own thread, LISTENs on CHANNEL, and a
third NOTIFYs there once appends commit, off the appending thread's path, so
followers of that log wake within milliseconds. While the listener is
reconnecting, followers poll every FALLBACK_POLL_SECONDS.

A write is one statement, so one round trip: an append moves the head and
inserts the records in one data-modifying WITH, a key-value write takes its
revision and writes in another (decision 37).

Failures: an OperationalError from psycopg (the server is down or restarting,
the connection was cut) drops the connection and becomes ControlPlaneUnavailable;
the next call connects again. A call on a connection left from before, which
may have died while idle (a server restart), is tried once more on a new one,
unless it failed while committing: then whether it took effect is unknown, and
the caller is told. A write that failed so is settled instead: what it wrote,
read on a new connection, says whether it landed.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import psycopg

from shoal.controlplane.base import (
    ABSENT,
    AppendConflict,
    CommitUnknown,
    ControlPlaneError,
    ControlPlaneUnavailable,
    KeyConflict,
    LogWatch,
)
from shoal.controlplane.sql import EXPIRED, POSTGRES, Cursor, SQLControlPlane, Wait
from shoal.errors import InterfaceError

__all__ = ["PostgresControlPlane"]

T = TypeVar("T")
CHANNEL = "shoal_log"
CONNECT_TIMEOUT = 3  # seconds; a server that is up answers in milliseconds
FALLBACK_POLL_SECONDS = 0.5  # how late a follower can be while the listener is away
LISTEN_TICK_SECONDS = 0.25  # how often the listener looks up to see if it should stop
RECONNECT_SECONDS = 0.5  # between the listener's attempts to connect
TOPIC_BYTES = 1000  # a log's name up to this long is its own NOTIFY payload
POOL_SIZE = 4  # connections for statements: appends of different logs run side by side
SCHEMA_LOCK = 0x73686F616C  # pg_advisory_xact_lock key for creating the tables ('shoal')

NOTIFY = "SELECT pg_notify(%s, topic) FROM unnest(%s::text[]) AS topic"
# An append in one statement: the head moves (or starts, at version 1) only if it is
# where the append expects it, and the records go in only if it moved; the result
# is the moved head, no rows when another append came first.
_INSERT_RECORDS = """INSERT INTO shoal_log (database_name, version, record)
    SELECT %(database)s, v, r FROM moved, unnest(%(versions)s::bigint[], %(records)s::bytea[])
    AS t(v, r)"""
APPEND_FIRST = f"""WITH moved AS (
    INSERT INTO shoal_heads (database_name, head) VALUES (%(database)s, %(last)s)
    ON CONFLICT (database_name) DO NOTHING RETURNING head
), added AS ({_INSERT_RECORDS})
SELECT head FROM moved"""
APPEND_NEXT = f"""WITH moved AS (
    UPDATE shoal_heads SET head = %(last)s
    WHERE database_name = %(database)s AND head = %(expected)s RETURNING head
), added AS ({_INSERT_RECORDS})
SELECT head FROM moved"""
HEADS = "SELECT database_name, head FROM shoal_heads WHERE database_name = ANY(%s)"
RECORD_AT = "SELECT record FROM shoal_log WHERE database_name = %s AND version = %s"
# A key-value write in one statement. Taking the next revision locks the counter's
# row until the commit, so writes commit in revision order, as in the SQL backend's
# transaction; expired entries other than this key are purged on the way, and
# synchronous_commit is set for this transaction alone ("off": an expendable write).
# No rows back: the entry was not as expected.
_KV = f"""WITH settings AS (SELECT set_config('synchronous_commit', %(commit)s, true)),
next AS (UPDATE shoal_kv_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision),
purged AS (DELETE FROM shoal_kv WHERE {EXPIRED} AND key <> %(key)s)
"""
_UPSERT = (
    _KV
    + """INSERT INTO shoal_kv (key, value, revision, expires_at)
SELECT %(key)s, %(value)s, next.revision, shoal_now() + %(ttl)s FROM next, settings
ON CONFLICT (key) DO UPDATE SET
    value = excluded.value, revision = excluded.revision, expires_at = excluded.expires_at"""
)
PUT = _UPSERT + "\nRETURNING revision"
PUT_NEW = (  # only over an expired entry
    _UPSERT
    + """
WHERE shoal_kv.expires_at IS NOT NULL AND shoal_kv.expires_at <= shoal_now()
RETURNING revision"""
)
PUT_OVER = (
    _KV
    + """UPDATE shoal_kv SET
    value = %(value)s, revision = next.revision, expires_at = shoal_now() + %(ttl)s
FROM next, settings
WHERE key = %(key)s AND shoal_kv.revision = %(expect)s
    AND (expires_at IS NULL OR expires_at > shoal_now())
RETURNING shoal_kv.revision"""
)
CREATE_CLOCK = """CREATE OR REPLACE FUNCTION shoal_now() RETURNS DOUBLE PRECISION
    LANGUAGE SQL VOLATILE AS 'SELECT extract(epoch FROM clock_timestamp())::float8'"""


Rows = list[tuple[Any, ...]]


def _rows(conn: psycopg.Connection[tuple[Any, ...]], sql: str, params: Any) -> Rows:
    return conn.execute(sql, params).fetchall()


def _topic(database: str) -> str:
    """A log's NOTIFY payload: its name, or for a name too long for a payload (they
    stop at 8,000 bytes) or one that could be mistaken for it, a digest after '#'."""
    if len(database.encode()) <= TOPIC_BYTES and not database.startswith("#"):
        return database
    return "#" + hashlib.blake2b(database.encode(), digest_size=16).hexdigest()


class _LogWatch:
    """A LogWatch fed by the listener: the names it was notified of since the last
    `wait`, or None after a digest or a lost connection (it cannot tell which)."""

    def __init__(self, release: Callable[[_LogWatch], None]) -> None:
        self._release = release
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._grown: set[str] = set()
        self._lost = False

    def notified(self, topic: str | None) -> None:
        with self._lock:
            if topic is None or topic.startswith("#"):
                self._lost = True
            else:
                self._grown.add(topic)
            self._ready.set()

    def wait(self, timeout: float) -> set[str] | None:
        self._ready.wait(timeout)
        with self._lock:
            grown, lost = self._grown, self._lost
            self._grown, self._lost = set(), False
            self._ready.clear()
        return None if lost else grown

    def close(self) -> None:
        self._release(self)
        self._ready.set()


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
        self._watches: set[_LogWatch] = set()
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

    def watch_all(self) -> _LogWatch:
        watch = _LogWatch(self._unwatch)
        with self._lock:
            self._watches.add(watch)
        return watch

    def _unwatch(self, watch: _LogWatch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _wake(self, topic: str | None) -> None:
        """Wakes the followers of `topic`, or all of them (None)."""
        with self._lock:
            groups = self._waiting.values() if topic is None else [self._waiting.get(topic, set())]
            for events in groups:
                for event in events:
                    event.set()
            for watch in self._watches:
                watch.notified(topic)

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


class _Notifier:
    """A thread with its own connection that NOTIFYs the logs appended to since it
    last did, in one statement. A transaction that notifies holds a server-wide
    lock through its commit and waits for its own disk flush; kept off the
    append's path, neither slows an append, and one notification covers many."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._lock = threading.Lock()
        self._topics: set[str] = set()
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._notify, name="shoal-notify", daemon=True)
        self._thread.start()

    def add(self, topic: str) -> None:
        with self._lock:
            self._topics.add(topic)
        self._pending.set()

    def _notify(self) -> None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        while True:
            self._pending.wait()
            if self._stop.is_set():
                break
            self._pending.clear()
            with self._lock:
                topics, self._topics = sorted(self._topics), set()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(
                        self._dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                    )
                    # A lost notification costs a follower one poll, never data.
                    conn.execute("SET synchronous_commit TO OFF")
                conn.execute(NOTIFY, (CHANNEL, topics))
            except psycopg.Error:
                if conn is not None:
                    conn.close()  # followers poll until the next append notifies
        if conn is not None:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._pending.set()
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
        # A write with a TTL (a node's lease) never waits behind other statements
        # for a connection: a renewal late by a lease's length loses every lease.
        self._expendable_slot = threading.BoundedSemaphore(1)
        self._idle: list[psycopg.Connection[tuple[Any, ...]]] = []
        self._listener: _Listener | None = None
        self._notifier: _Notifier | None = None
        self._closed = False
        self._write(self._create)

    def _create(self, cursor: Cursor) -> None:
        cursor.rows("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        # Made before (the newest object is there): leave them be. Even "IF NOT EXISTS"
        # DDL takes table locks, and deadlocks with the key-value writes of nodes
        # already running.
        if cursor.rows("SELECT to_regclass('shoal_kv_expiring') IS NOT NULL")[0][0]:
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

                def call(conn: psycopg.Connection[tuple[Any, ...]] = conn) -> T:
                    nonlocal committing
                    if not write:
                        return work(_Cursor(conn.cursor()))
                    with conn.transaction():
                        result = work(_Cursor(conn.cursor()))
                        committing = True
                    return result

                try:
                    return self._on(conn, call)
                except psycopg.OperationalError as exc:
                    if committing:
                        raise CommitUnknown(
                            f"the PostgreSQL control plane went away while committing: {exc}"
                        ) from exc
                    if not reused:
                        raise ControlPlaneUnavailable(
                            f"the PostgreSQL control plane cannot be reached: {exc}"
                        ) from exc
                    conn, reused = self._take(fresh=True)

    def _on(self, conn: psycopg.Connection[tuple[Any, ...]], call: Callable[[], T]) -> T:
        """`call()`, which uses `conn`; then `conn` goes back to the idle list. An
        OperationalError (the connection broke) passes, with `conn` closed."""
        try:
            result = call()
        except psycopg.OperationalError:
            conn.close()
            raise
        except psycopg.Error as exc:
            self._give_back(conn)
            raise ControlPlaneError(f"the PostgreSQL control plane failed: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._give_back(conn)
        return result

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

    def _append(self, database: str, version: int, records: Sequence[bytes]) -> None:
        last = version + len(records) - 1
        params = {
            "database": database,
            "last": last,
            "expected": version - 1,
            "versions": list(range(version, last + 1)),
            "records": list(records),
        }

        def landed() -> Rows | None:  # our last record there, another's, or none
            rows = self._read(lambda cursor: cursor.rows(RECORD_AT, (database, last)))
            return None if not rows else [(last,)] if bytes(rows[0][0]) == records[-1] else []

        statement = APPEND_FIRST if version == 1 else APPEND_NEXT
        if not self._write_alone(statement, params, landed):
            raise AppendConflict(database, version, self.head(database))

    def _put(self, key: str, value: bytes, expect: int | None, ttl: float | None) -> int:
        params = {
            "key": key,
            "value": value,
            "expect": expect,
            "ttl": ttl,
            "commit": "on" if ttl is None else "off",  # an expendable write: see _put
        }

        def landed() -> Rows | None:
            if expect is None:
                return None  # last writer wins: writing it again is the same write
            entry = self.get(key)
            if entry is None or entry.revision == expect:
                return None  # still as expected: it did not land
            # Moved on: ours if it holds our value (a lease's holder and epoch, which
            # only its holder writes), else another writer's: a conflict either way.
            return [(entry.revision,)] if entry.value == value else []

        statement = PUT if expect is None else PUT_NEW if expect == ABSENT else PUT_OVER
        slots = self._slots if ttl is None else self._expendable_slot
        rows = self._write_alone(statement, params, landed, slots)
        if not rows:
            raise KeyConflict(key, ABSENT if expect is None else expect, self.get(key))
        return int(rows[0][0])

    def _write_alone(
        self,
        statement: str,
        params: dict[str, Any],
        landed: Callable[[], Rows | None],
        slots: threading.BoundedSemaphore | None = None,
    ) -> Rows:
        """The rows of `statement`, a write run alone: one round trip, its own
        transaction, on a connection had by `slots` (default: the pool's). When the
        connection breaks the write may or may not have committed; `landed()`,
        reading on another connection, gives the rows it returned if it did, None
        if it did not, and then it is sent once more."""
        for fresh in (False, True):
            with slots or self._slots:
                conn, _ = self._take(fresh)
                try:
                    return self._on(conn, partial(_rows, conn, statement, params))
                except psycopg.OperationalError as exc:
                    broken = exc
            try:
                rows = landed()
            except ControlPlaneError as exc:
                raise CommitUnknown(
                    f"the PostgreSQL control plane went away during a write ({broken}), "
                    f"and whether it landed cannot be read: {exc}"
                ) from broken
            if rows is not None:
                return rows
        raise ControlPlaneUnavailable(
            f"the PostgreSQL control plane broke the connection of a write twice; "
            f"it did not land: {broken}"
        )

    def _appended(self, database: str) -> None:
        with self._lock:
            if self._closed:
                return
            if self._notifier is None:
                self._notifier = _Notifier(self._dsn)
            notifier = self._notifier
        notifier.add(_topic(database))

    def _listening(self) -> _Listener:
        with self._lock:
            if self._closed:
                raise InterfaceError("the control plane is closed")
            if self._listener is None:
                self._listener = _Listener(self._dsn)
            return self._listener

    @contextmanager
    def _watch(self, database: str) -> Iterator[Wait]:
        with self._listening().watch(_topic(database)) as wait:
            yield wait

    def watch_logs(self) -> LogWatch:
        return self._listening().watch_all()

    def _logged_heads(self, cursor: Cursor, databases: Sequence[str]) -> list[tuple[str, int]]:
        return [(str(name), int(head)) for name, head in cursor.rows(HEADS, (list(databases),))]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            listener, self._listener = self._listener, None
            notifier, self._notifier = self._notifier, None
        for conn in idle:
            conn.close()
        for helper in (listener, notifier):
            if helper is not None:
                helper.close()
