"""A logical checksum: the schema and every row, independent of the file's layout.

Two copies with equal checksums hold the same schema, the same rows, and the same
sqlite_sequence entries, however their pages are arranged. A row is identified by
its primary key, or by its rowid in a table without one. The hidden rowid of a
table whose primary key is not an INTEGER PRIMARY KEY is left out: the session
extension keys such rows by their primary key, so a follower numbers them as it
inserts them, and SQLite itself renumbers them on VACUUM (decision 32).
Values are hashed with their storage class, so 1, 1.0, '1' and x'31' differ; TEXT
is hashed as its stored bytes, so text that is not valid UTF-8 is covered too.
Zero is hashed without its sign, as SQL compares it (0.0 = -0.0): the session
extension does not record an UPDATE that only flips the sign (docs/sql-features.md).
Shoal's own tables and SQLite's statistics tables are left out, and
sqlite_sequence is hashed by name, since its rowids depend on history.
"""

from __future__ import annotations

import hashlib
import struct

import apsw

from shoal.engine.policy import INTERNAL_PREFIX
from shoal.engine.sqltext import quote_identifier

__all__ = ["logical_checksum"]

_INT = struct.Struct(">q")
_REAL = struct.Struct(">d")


def _feed(digest: hashlib._Hash, storage: str, value: object) -> None:
    """Hashes one value read as (typeof(value), value with TEXT cast to BLOB)."""
    if value is None:
        digest.update(b"n")
    elif isinstance(value, int):
        digest.update(b"i" + _INT.pack(value))
    elif isinstance(value, float):
        digest.update(b"r" + _REAL.pack(value if value != 0.0 else 0.0))
    else:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]
        tag = b"t" if storage == "text" else b"b"
        digest.update(tag + _INT.pack(len(data)) + data)


def _row_query(conn: apsw.Connection, table: str, order: str, rowid: bool) -> str:
    """SELECT each column as its storage class and value, TEXT read as bytes."""
    columns = [
        quote_identifier(str(row[1]))
        for row in conn.execute("SELECT * FROM pragma_table_xinfo(?)", (table,))
    ]
    if rowid:
        columns.insert(0, "_rowid_")
    parts = [
        f"typeof({c}), CASE typeof({c}) WHEN 'text' THEN CAST({c} AS BLOB) ELSE {c} END"
        for c in columns
    ]
    return f"SELECT {', '.join(parts)} FROM main.{quote_identifier(table)} ORDER BY {order}"


def _tables(conn: apsw.Connection) -> list[str]:
    """Every ordinary table to hash, in name order."""
    tables = []
    for name, sql in conn.execute(
        "SELECT name, sql FROM main.sqlite_schema WHERE type = 'table' ORDER BY name"
    ):
        if name.startswith(INTERNAL_PREFIX) or name.startswith("sqlite_stat"):
            continue
        if str(sql or "").upper().startswith("CREATE VIRTUAL TABLE"):
            continue  # its shadow tables hold its rows and are hashed themselves
        tables.append(str(name))
    return tables


def logical_checksum(conn: apsw.Connection) -> str:
    """The hex SHA-256 of the schema and the rows of every table, read in one transaction."""
    digest = hashlib.sha256()
    # Never cached: on a reader, a user's point read shares the statement cache
    # (Database.read_one), and a user's BEGIN must be prepared, so judged, anew.
    conn.execute("BEGIN", can_cache=False)
    try:
        for row in conn.execute(
            "SELECT type, name, tbl_name, sql FROM main.sqlite_schema "
            "WHERE substr(name, 1, 7) != '_shoal_' AND substr(name, 1, 11) != 'sqlite_stat' "
            "ORDER BY type, name"
        ):
            digest.update(b"S")
            for value in row:
                _feed(digest, "text", value)
        for name in _tables(conn):
            if name == "sqlite_sequence":
                query = _row_query(conn, name, "name, seq", rowid=False)
            elif key := _primary_key(conn, name):
                query = _row_query(conn, name, key, rowid=False)
            else:
                query = _row_query(conn, name, "_rowid_", rowid=True)
            digest.update(b"T")
            _feed(digest, "text", name)
            for row in conn.execute(query):
                digest.update(b"R")
                for index in range(0, len(row), 2):
                    _feed(digest, row[index], row[index + 1])
    finally:
        conn.execute("COMMIT", can_cache=False)
    return digest.hexdigest()


def _primary_key(conn: apsw.Connection, table: str) -> str:
    """The ORDER BY of the table's primary key ("" when it has none)."""
    columns = sorted(
        (int(pk), str(name))
        for _, name, _, _, _, pk, *_ in conn.execute(
            "SELECT * FROM pragma_table_xinfo(?) WHERE pk > 0", (table,)
        )
    )
    return ", ".join(quote_identifier(name) for _, name in columns)
