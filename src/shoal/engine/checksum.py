"""A logical checksum: the schema and every row, independent of the file's layout.

Two copies with equal checksums hold the same schema, the same rows with the same
rowids, and the same sqlite_sequence, however their pages are arranged. Values are
hashed with their type, so 1, 1.0, '1' and x'31' differ, and so do 0.0 and -0.0.
Shoal's own tables and SQLite's statistics tables are left out.
"""

from __future__ import annotations

import hashlib
import struct

import apsw

from shoal.engine.policy import INTERNAL_PREFIX
from shoal.engine.sqltext import quote_identifier

__all__ = ["logical_checksum"]

_INT = struct.Struct(">q")


def _feed(digest: hashlib._Hash, value: object) -> None:
    if value is None:
        digest.update(b"n")
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            digest.update(b"i" + _INT.pack(value))
        else:  # pragma: no cover - SQLite integers are 64-bit
            digest.update(b"I" + str(value).encode())
    elif isinstance(value, float):
        digest.update(b"r" + struct.pack(">d", value))
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"t" + _INT.pack(len(data)) + data)
    else:
        data = bytes(value)  # type: ignore[call-overload]
        digest.update(b"b" + _INT.pack(len(data)) + data)


def _tables(conn: apsw.Connection) -> list[tuple[str, bool]]:
    """(name, has_rowid) of every ordinary table to hash, in name order."""
    tables = []
    for name, sql in conn.execute(
        "SELECT name, sql FROM main.sqlite_schema WHERE type = 'table' ORDER BY name"
    ):
        if name.startswith(INTERNAL_PREFIX) or name.startswith("sqlite_stat"):
            continue
        if str(sql or "").upper().startswith("CREATE VIRTUAL TABLE"):
            continue  # its shadow tables hold its rows and are hashed themselves
        without_rowid = conn.execute(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?", (name,)
        ).fetchall()
        tables.append((str(name), not (without_rowid and without_rowid[0][0])))
    return tables


def logical_checksum(conn: apsw.Connection) -> str:
    """The hex SHA-256 of the schema and the rows of every table, read in one transaction."""
    digest = hashlib.sha256()
    conn.execute("BEGIN")
    try:
        for row in conn.execute(
            "SELECT type, name, tbl_name, sql FROM main.sqlite_schema "
            "WHERE substr(name, 1, 7) != '_shoal_' AND substr(name, 1, 11) != 'sqlite_stat' "
            "ORDER BY type, name"
        ):
            digest.update(b"S")
            for value in row:
                _feed(digest, value)
        for name, has_rowid in _tables(conn):
            quoted = quote_identifier(name)
            if has_rowid:
                query = f"SELECT _rowid_, * FROM main.{quoted} ORDER BY _rowid_"
            else:
                query = f"SELECT * FROM main.{quoted} ORDER BY {_primary_key(conn, name)}"
            digest.update(b"T")
            _feed(digest, name)
            for row in conn.execute(query):
                digest.update(b"R")
                for value in row:
                    _feed(digest, value)
    finally:
        conn.execute("COMMIT")
    return digest.hexdigest()


def _primary_key(conn: apsw.Connection, table: str) -> str:
    columns = sorted(
        (int(pk), str(name))
        for _, name, _, _, _, pk, *_ in conn.execute(
            "SELECT * FROM pragma_table_xinfo(?) WHERE pk > 0", (table,)
        )
    )
    return ", ".join(quote_identifier(name) for _, name in columns)
