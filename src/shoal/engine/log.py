"""The embedded log: a database's records kept in its own file.

Each record is inserted in the same SQLite transaction as the changes it
describes, so after a crash at any instant the data and the log agree. The
database's version is the newest record's; truncation always keeps that one, so
the version survives however much of the log is dropped.
"""

from __future__ import annotations

import apsw

__all__ = ["append", "create", "head", "oldest", "read_after", "read_range", "truncate"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _shoal_log(version INTEGER PRIMARY KEY, record BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS _shoal_meta(key TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""


def create(conn: apsw.Connection) -> None:
    """Creates the log and metadata tables when missing (idempotent)."""
    conn.execute(_SCHEMA)


def head(conn: apsw.Connection) -> int:
    """The newest record's version, 0 for a database with none."""
    row = conn.execute("SELECT max(version) FROM _shoal_log").fetchall()
    return int(row[0][0] or 0)


def append(conn: apsw.Connection, version: int, record: bytes) -> None:
    """Adds a record inside the caller's open write transaction."""
    conn.execute("INSERT INTO _shoal_log(version, record) VALUES (?, ?)", (version, record))


def read_range(conn: apsw.Connection, start: int, end: int | None = None) -> list[bytes]:
    """The records with start <= version <= end (to the newest when end is None)."""
    if end is None:
        rows = conn.execute(
            "SELECT record FROM _shoal_log WHERE version >= ? ORDER BY version", (start,)
        )
    else:
        rows = conn.execute(
            "SELECT record FROM _shoal_log WHERE version BETWEEN ? AND ? ORDER BY version",
            (start, end),
        )
    return [bytes(record) for (record,) in rows]


def read_after(conn: apsw.Connection, after: int, limit: int) -> list[tuple[int, bytes]]:
    """Up to `limit` (version, record) pairs with version > after, oldest first."""
    rows = conn.execute(
        "SELECT version, record FROM _shoal_log WHERE version > ? ORDER BY version LIMIT ?",
        (after, limit),
    )
    return [(int(version), bytes(record)) for version, record in rows]


def oldest(conn: apsw.Connection) -> int:
    """The oldest version still in the log, 0 when it is empty."""
    row = conn.execute("SELECT min(version) FROM _shoal_log").fetchall()
    return int(row[0][0] or 0)


def truncate(conn: apsw.Connection, below: int) -> int:
    """Drops records older than `below`, never the newest; returns how many went."""
    conn.execute(
        "DELETE FROM _shoal_log "
        "WHERE version < ? AND version < (SELECT max(version) FROM _shoal_log)",
        (below,),
    )
    return conn.changes()
