"""The control plane over SQL, written once for SQLite and PostgreSQL.

The statements below are the whole data model; `Dialect` holds the few
differences (the placeholder, the bytes type, a byte-order collation for keys).
`SQLControlPlane` runs them: a backend only supplies a transaction (`_read`,
`_write`), a way to wait for appends (`_watch`) and `shoal_now()`, the SQL
function that is the control plane's clock (a registered Python callable on
SQLite, the server's `clock_timestamp()` on PostgreSQL).

Concurrency: an append is one conditional write of its log's head (insert if
absent at version 1, else update where the head is the expected one), which
both engines make atomic against a racing append: the loser matches no row.
Every key-value write first bumps the table's one revision counter, whose row
lock serialises key-value writes, so a compare-then-write cannot interleave.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from shoal.controlplane.base import (
    ABSENT,
    AppendConflict,
    Changes,
    Entry,
    KeyConflict,
    LogWatch,
)
from shoal.errors import InvalidRequest

__all__ = ["EXPIRED", "POSTGRES", "SQLITE", "Cursor", "Dialect", "SQLControlPlane", "Wait"]

T = TypeVar("T")
# The keys past their TTL: `shoal_now()` once per statement (a subquery), so that
# the partial index on expires_at serves it; else the clock, volatile, is called
# for every row and every key is read, in every key-value write.
EXPIRED = "expires_at IS NOT NULL AND expires_at <= (SELECT shoal_now())"
Wait = Callable[[float], None]
"""Blocks until a watched log may have grown, or for at most that many seconds."""

INSERT_BATCH = 500  # records per INSERT: 1,500 parameters, far below either engine's limit
HEADS_BATCH = 500  # names per lookup of heads
TOMBSTONE_SECONDS = 3600.0  # how long a deleted key stays visible to `changes`


@dataclass(frozen=True)
class Dialect:
    placeholder: str
    blob: str
    text: str  # keys sort by code point: byte order of UTF-8


SQLITE = Dialect(placeholder="?", blob="BLOB", text="TEXT")
POSTGRES = Dialect(placeholder="%s", blob="BYTEA", text='TEXT COLLATE "C"')


class Cursor(Protocol):
    """Runs one statement inside a backend's transaction (or alone, for reads)."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The statement's result rows."""
        ...

    def count(self, sql: str, params: Sequence[object] = ()) -> int:
        """How many rows the statement changed."""
        ...


class Statements:
    """Every statement, in the dialect's placeholders and types."""

    def __init__(self, dialect: Dialect) -> None:
        self._placeholder = dialect.placeholder
        self.create = [
            f"""CREATE TABLE IF NOT EXISTS shoal_heads (
                database_name {dialect.text} PRIMARY KEY,
                head BIGINT NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS shoal_log (
                database_name {dialect.text} NOT NULL,
                version BIGINT NOT NULL,
                record {dialect.blob} NOT NULL,
                PRIMARY KEY (database_name, version))""",
            f"""CREATE TABLE IF NOT EXISTS shoal_kv (
                key {dialect.text} PRIMARY KEY,
                value {dialect.blob} NOT NULL,
                revision BIGINT NOT NULL,
                expires_at DOUBLE PRECISION)""",
            """CREATE TABLE IF NOT EXISTS shoal_kv_revision (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                revision BIGINT NOT NULL)""",
            "INSERT INTO shoal_kv_revision (id, revision) VALUES (1, 0) "
            "ON CONFLICT (id) DO NOTHING",
            "CREATE INDEX IF NOT EXISTS shoal_kv_by_revision ON shoal_kv (revision)",
            f"""CREATE TABLE IF NOT EXISTS shoal_kv_deleted (
                key {dialect.text} PRIMARY KEY,
                revision BIGINT NOT NULL,
                deleted_at DOUBLE PRECISION NOT NULL)""",
            "CREATE INDEX IF NOT EXISTS shoal_kv_deleted_by_revision "
            "ON shoal_kv_deleted (revision)",
            # The newest deletion `changes` no longer shows: a reader from before
            # it reads the whole table.
            """CREATE TABLE IF NOT EXISTS shoal_kv_forgotten (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                revision BIGINT NOT NULL)""",
            "INSERT INTO shoal_kv_forgotten (id, revision) VALUES (1, 0) "
            "ON CONFLICT (id) DO NOTHING",
            # Partial: only keys with a TTL (members) are in it, so that purging the
            # expired ones reads those, not every key (10,000 databases: 20,000 keys).
            # Made last, the newest object: its presence says all are there.
            "CREATE INDEX IF NOT EXISTS shoal_kv_expiring ON shoal_kv (expires_at) "
            "WHERE expires_at IS NOT NULL",
        ]
        self.head = self._sql("SELECT head FROM shoal_heads WHERE database_name = ?")
        self.start_head = self._sql(
            "INSERT INTO shoal_heads (database_name, head) VALUES (?, ?) "
            "ON CONFLICT (database_name) DO NOTHING RETURNING head"
        )
        self.advance_head = self._sql(
            "UPDATE shoal_heads SET head = ? WHERE database_name = ? AND head = ? RETURNING head"
        )
        self.read = self._sql(
            "SELECT version, record FROM shoal_log "
            "WHERE database_name = ? AND version >= ? AND version <= ? "
            "ORDER BY version LIMIT ?"
        )
        self.truncate = self._sql("DELETE FROM shoal_log WHERE database_name = ? AND version < ?")
        self.drop_log = self._sql("DELETE FROM shoal_log WHERE database_name = ?")
        self.drop_head = self._sql("DELETE FROM shoal_heads WHERE database_name = ?")
        self.now = "SELECT shoal_now()"
        live = "(expires_at IS NULL OR expires_at > shoal_now())"
        self.get = self._sql(
            f"SELECT value, revision, expires_at FROM shoal_kv WHERE key = ? AND {live}"
        )
        self.next_revision = (
            "UPDATE shoal_kv_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision"
        )
        self.purge = f"DELETE FROM shoal_kv WHERE {EXPIRED}"
        # shoal_now() + NULL is NULL: no ttl, no expiry.
        self.put = self._sql(
            "INSERT INTO shoal_kv (key, value, revision, expires_at) "
            "VALUES (?, ?, ?, shoal_now() + ?) ON CONFLICT (key) DO UPDATE SET "
            "value = excluded.value, revision = excluded.revision, "
            "expires_at = excluded.expires_at"
        )
        self.delete = self._sql("DELETE FROM shoal_kv WHERE key = ?")
        self.tombstone = self._sql(
            "INSERT INTO shoal_kv_deleted (key, revision, deleted_at) "
            "VALUES (?, ?, shoal_now()) ON CONFLICT (key) DO UPDATE SET "
            "revision = excluded.revision, deleted_at = excluded.deleted_at"
        )
        self.oldest_kept = self._sql(
            "SELECT max(revision) FROM shoal_kv_deleted WHERE deleted_at < shoal_now() - ?"
        )
        self.forget = self._sql("DELETE FROM shoal_kv_deleted WHERE revision <= ?")
        self.forgotten = self._sql(
            "UPDATE shoal_kv_forgotten SET revision = ? WHERE id = 1 AND revision < ?"
        )
        # One statement, so one snapshot on PostgreSQL: the changed entries, the
        # deleted keys (value NULL), and two rows with no key: the counter with the
        # clock, and the newest deletion forgotten (its expires_at NULL).
        self.changes = self._sql(
            "SELECT key, value, revision, expires_at FROM shoal_kv WHERE revision > ? "
            "UNION ALL SELECT key, NULL, revision, NULL FROM shoal_kv_deleted "
            "WHERE revision > ? "
            "UNION ALL SELECT NULL, NULL, revision, shoal_now() FROM shoal_kv_revision "
            "UNION ALL SELECT NULL, NULL, revision, NULL FROM shoal_kv_forgotten"
        )
        # substr, not LIKE: '%' and '_' in a prefix are data, and SQLite's LIKE ignores case.
        self.scan = self._sql(
            "SELECT key, value, revision, expires_at FROM shoal_kv "
            f"WHERE substr(key, 1, ?) = ? AND {live} ORDER BY key"
        )

    def heads(self, count: int) -> str:
        """The heads of `count` named logs (those never appended to are missing)."""
        names = ", ".join(["?"] * count)
        return self._sql(
            f"SELECT database_name, head FROM shoal_heads WHERE database_name IN ({names})"
        )

    def insert_records(self, count: int) -> str:
        """An INSERT of `count` log records: (database, version, record) each."""
        rows = ", ".join(["(?, ?, ?)"] * count)
        return self._sql(f"INSERT INTO shoal_log (database_name, version, record) VALUES {rows}")

    def _sql(self, text: str) -> str:
        return text.replace("?", self._placeholder)


class SQLControlPlane(ABC):
    """The ControlPlane operations, for a backend that supplies transactions."""

    def __init__(self, dialect: Dialect) -> None:
        self._sql = Statements(dialect)

    # --- what a backend supplies ---------------------------------------------------

    @abstractmethod
    def _read(self, work: Callable[[Cursor], T]) -> T:
        """Runs `work`, whose statements only read; each sees every committed write."""

    @abstractmethod
    def _write(self, work: Callable[[Cursor], T]) -> T:
        """Runs `work` in one transaction that commits if it returns and rolls back
        if it raises; write transactions on one store run one at a time where
        they touch the same rows."""

    @abstractmethod
    def _watch(self, database: str) -> AbstractContextManager[Wait]:
        """While open, a Wait that returns early when `database`'s log may have grown."""

    @abstractmethod
    def watch_logs(self) -> LogWatch:
        """A watcher of appends to every log."""

    @abstractmethod
    def _appended(self, database: str) -> None:
        """Called once an append committed, to wake the log's followers at once.
        Never raises: followers also poll, only more slowly."""

    # --- logs ------------------------------------------------------------------------

    def append(self, database: str, version: int, records: Sequence[bytes]) -> None:
        _check_name("database", database)
        if version < 1:
            raise InvalidRequest(f"log versions start at 1, not {version}")
        if not records:
            raise InvalidRequest("an append needs at least one record")
        self._append(database, version, records)
        self._appended(database)

    def _append(self, database: str, version: int, records: Sequence[bytes]) -> None:
        """Writes `records` from `version` on if the log ends just before it, else
        raises AppendConflict. In one transaction here; a backend may do better."""
        last = version + len(records) - 1

        def append(cursor: Cursor) -> None:
            if version == 1:
                moved = cursor.rows(self._sql.start_head, (database, last))
            else:
                moved = cursor.rows(self._sql.advance_head, (last, database, version - 1))
            if not moved:
                raise AppendConflict(database, version, self._head(cursor, database))
            numbered = list(enumerate(records, start=version))
            for first in range(0, len(numbered), INSERT_BATCH):
                batch = numbered[first : first + INSERT_BATCH]
                params = [value for v, record in batch for value in (database, v, record)]
                cursor.count(self._sql.insert_records(len(batch)), params)

        self._write(append)

    def head(self, database: str) -> int:
        _check_name("database", database)
        return self._read(lambda cursor: self._head(cursor, database))

    def heads(self, databases: Sequence[str]) -> dict[str, int]:
        for database in databases:
            _check_name("database", database)

        found = dict.fromkeys(databases, 0)
        found.update(self._read(lambda cursor: self._logged_heads(cursor, databases)))
        return found

    def _logged_heads(self, cursor: Cursor, databases: Sequence[str]) -> list[tuple[str, int]]:
        """(name, head) of each of `databases` ever appended to. In batches of
        HEADS_BATCH names here; a backend may do it in one statement."""
        found = []
        for first in range(0, len(databases), HEADS_BATCH):
            batch = databases[first : first + HEADS_BATCH]
            found += [
                (str(name), int(head))
                for name, head in cursor.rows(self._sql.heads(len(batch)), batch)
            ]
        return found

    def read(
        self, database: str, start: int, end: int | None = None, limit: int = 1000
    ) -> list[tuple[int, bytes]]:
        _check_name("database", database)
        if limit < 1:
            raise InvalidRequest(f"a read's limit is at least 1, not {limit}")
        last = end if end is not None else 2**63 - 1
        params = (database, start, last, limit)
        return self._read(
            lambda cursor: [(v, bytes(r)) for v, r in cursor.rows(self._sql.read, params)]
        )

    def follow(self, database: str, after: int, timeout: float) -> list[tuple[int, bytes]]:
        deadline = time.monotonic() + timeout
        with self._watch(database) as wait:
            while True:
                records = self.read(database, after + 1)
                remaining = deadline - time.monotonic()
                if records or remaining <= 0:
                    return records
                wait(remaining)

    def truncate(self, database: str, below: int) -> int:
        _check_name("database", database)
        return self._write(lambda cursor: cursor.count(self._sql.truncate, (database, below)))

    def drop(self, database: str) -> None:
        _check_name("database", database)

        def drop(cursor: Cursor) -> None:
            # The head first: its row lock holds off appends until the records are gone.
            cursor.count(self._sql.drop_head, (database,))
            cursor.count(self._sql.drop_log, (database,))

        self._write(drop)

    def _head(self, cursor: Cursor, database: str) -> int:
        rows = cursor.rows(self._sql.head, (database,))
        return int(rows[0][0]) if rows else 0

    # --- key-value -------------------------------------------------------------------

    def now(self) -> float:
        return self._read(lambda cursor: float(cursor.rows(self._sql.now)[0][0]))

    def get(self, key: str) -> Entry | None:
        _check_name("key", key)
        return self._read(lambda cursor: self._get(cursor, key))

    def put(
        self, key: str, value: bytes, *, expect: int | None = None, ttl: float | None = None
    ) -> int:
        _check_name("key", key)
        if ttl is not None and not ttl > 0:
            raise InvalidRequest(f"a ttl is a number of seconds above 0, not {ttl}")

        return self._put(key, value, expect, None if ttl is None else float(ttl))

    def _put(self, key: str, value: bytes, expect: int | None, ttl: float | None) -> int:
        """Writes the entry if `expect` holds (else raises KeyConflict) and returns its
        revision. In one transaction here; a backend may do it in fewer round trips.
        A write with a TTL is expendable: the store may lose the last of these in a
        crash of its own, as if they had expired early (leases and heartbeats)."""

        def put(cursor: Cursor) -> int:
            revision = self._compare(cursor, key, expect)
            cursor.count(self._sql.put, (key, value, revision, ttl))
            return revision

        return self._write(put)

    def delete(self, key: str, *, expect: int | None = None) -> bool:
        _check_name("key", key)

        def delete(cursor: Cursor) -> bool:
            revision = self._compare(cursor, key, expect)
            if not cursor.count(self._sql.delete, (key,)):
                return False
            cursor.count(self._sql.tombstone, (key, revision))
            old = cursor.rows(self._sql.oldest_kept, (TOMBSTONE_SECONDS,))[0][0]
            if old is not None:
                cursor.count(self._sql.forgotten, (old, old))
                cursor.count(self._sql.forget, (old,))
            return True

        return self._write(delete)

    def changes(self, after: int) -> Changes:
        changes = self._read(lambda cursor: self._changes(cursor, after))
        if changes.complete and after > 0:  # forgotten since: read every key
            return self._read(lambda cursor: self._changes(cursor, 0))
        return changes

    def _changes(self, cursor: Cursor, after: int) -> Changes:
        revision, now, forgotten = 0, 0.0, 0
        found: list[tuple[int, str, Entry | None]] = []
        for key, value, at, expires_at in cursor.rows(self._sql.changes, (after, after)):
            if key is None and expires_at is not None:
                revision, now = int(at), float(expires_at)
            elif key is None:
                forgotten = int(at)
            elif value is None:
                found.append((int(at), key, None))
            else:
                found.append((int(at), key, _entry((value, at, expires_at))))
        found.sort(key=lambda change: change[0])
        entries = [(key, entry) for _, key, entry in found]
        return Changes(revision, now, entries, complete=after == 0 or after < forgotten)

    def scan(self, prefix: str) -> list[tuple[str, Entry]]:
        _check_name("prefix", prefix)

        def scan(cursor: Cursor) -> list[tuple[str, Entry]]:
            rows = cursor.rows(self._sql.scan, (len(prefix), prefix))
            return [(key, _entry(rest)) for key, *rest in rows]

        return self._read(scan)

    def _get(self, cursor: Cursor, key: str) -> Entry | None:
        rows = cursor.rows(self._sql.get, (key,))
        return _entry(rows[0]) if rows else None

    def _compare(self, cursor: Cursor, key: str, expect: int | None) -> int:
        """Takes the key-value write lock, drops expired entries and checks `expect`;
        returns the revision this write gives the key."""
        revision = int(cursor.rows(self._sql.next_revision)[0][0])
        cursor.count(self._sql.purge)
        if expect is not None:
            current = self._get(cursor, key)
            if (current.revision if current else ABSENT) != expect:
                raise KeyConflict(key, expect, current)
        return revision


def _entry(row: Sequence[Any]) -> Entry:
    value, revision, expires_at = row
    return Entry(bytes(value), int(revision), None if expires_at is None else float(expires_at))


def _check_name(kind: str, name: str) -> None:
    """Any string is a name, but PostgreSQL's TEXT cannot hold NUL: refused on both."""
    if "\x00" in name:
        raise InvalidRequest(f"a {kind} cannot contain NUL characters: {name!r}")
