"""SQL text that recreates a database, like sqlite3's `.dump`.

It needs only a function that runs a read and returns its rows, so one dumper
serves the embedded engine, a DB-API connection and a remote server alike.

What it emits, in load order: each table's CREATE then its rows, the
AUTOINCREMENT counters, then indexes, views and triggers (last, so that loading
the copied rows fires none of them), then `PRAGMA user_version` and
`application_id`. Rows keep their rowids, since shoal's checksum covers them.
SQLite's tables, shoal's `_shoal_*` tables and the shadow tables of virtual
tables are left out: a fresh database makes its own, and a virtual table's rows
are dumped as INSERTs into the virtual table, which refills its shadow tables.
The caller wraps the output in a transaction if it wants one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from shoal.engine.policy import INTERNAL_PREFIX
from shoal.engine.sqltext import quote_identifier

__all__ = ["SQLITE_HEADER", "Query", "SchemaObject", "dump", "dump_text", "user_objects"]

SQLITE_HEADER = b"SQLite format 3\x00"
"""The first bytes of every SQLite database file: how a load tells a file from SQL text."""

Query = Callable[[str], list[tuple[Any, ...]]]
"""Runs one statement that reads and returns its rows."""

_TRAVELLING_PRAGMAS = ("user_version", "application_id")
_ROWID_NAMES = ("rowid", "_rowid_", "oid")


@dataclass(frozen=True)
class SchemaObject:
    """One entry of the user's schema, as sqlite_schema and PRAGMA table_list see it."""

    type: str  # 'table', 'index', 'view' or 'trigger'
    name: str
    table: str  # the table an index or trigger is on; the name itself for tables and views
    sql: str
    virtual: bool = False
    without_rowid: bool = False


def user_objects(query: Query) -> list[SchemaObject]:
    """The user's schema in creation order (so each object follows what it uses),
    without SQLite's, shoal's or virtual tables' shadow tables and what is on them."""
    listed = {
        str(name): (str(kind), bool(wr))
        for name, kind, wr in query(
            "SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main'"
        )
    }
    objects = []
    for kind, name, table, sql in query(
        "SELECT type, name, tbl_name, sql FROM main.sqlite_schema "
        "WHERE sql IS NOT NULL ORDER BY rowid"
    ):
        if _internal(name) or _internal(table) or listed.get(table, ("",))[0] == "shadow":
            continue
        listing, without_rowid = listed.get(name, ("", False))
        objects.append(SchemaObject(kind, name, table, sql, listing == "virtual", without_rowid))
    return objects


def dump(query: Query) -> Iterator[str]:
    """Complete SQL statements, each ending with ';', that recreate the database."""
    objects = user_objects(query)
    for table in (o for o in objects if o.type == "table"):
        yield f"{table.sql};"
        yield from _rows(query, table)
    yield from _sequence(query)
    for kind in ("index", "view", "trigger"):
        yield from (f"{o.sql};" for o in objects if o.type == kind)
    for pragma in _TRAVELLING_PRAGMAS:
        ((value,),) = query(f"PRAGMA {pragma}")
        if value:
            yield f"PRAGMA {pragma} = {int(value)};"


def dump_text(query: Query) -> str:
    """The dump as one script, a statement a line (literals may span lines)."""
    return "\n".join(dump(query))


def _internal(name: str) -> bool:
    return name.lower().startswith(("sqlite_", INTERNAL_PREFIX))


def _rows(query: Query, table: SchemaObject) -> Iterator[str]:
    """INSERTs naming their columns, so generated and hidden columns are left out,
    and naming the rowid where no column carries it, so it survives."""
    columns = query(
        f"SELECT name, type, pk, hidden FROM pragma_table_xinfo({_literal(table.name)})"
    )
    names = [quote_identifier(name) for name, _, _, hidden in columns if hidden == 0]
    rowid = None if table.without_rowid else _rowid_name(columns)
    if rowid is not None and not _aliased(query, table, columns):
        names.insert(0, rowid)
    keys = sorted((pk, quote_identifier(name)) for name, _, pk, _ in columns if pk)
    order = rowid or ", ".join(name for _, name in keys)
    select = f"SELECT {', '.join(names)} FROM main.{quote_identifier(table.name)}"
    insert = f"INSERT INTO {quote_identifier(table.name)}({','.join(names)}) VALUES("
    for row in query(f"{select} ORDER BY {order}" if order else select):
        yield insert + ",".join(_literal(value) for value in row) + ");"


def _rowid_name(columns: list[tuple[Any, ...]]) -> str | None:
    """The first of rowid's names that no column takes, or None if all are taken."""
    taken = {str(name).lower() for name, *_ in columns}
    return next((name for name in _ROWID_NAMES if name not in taken), None)


def _aliased(query: Query, table: SchemaObject, columns: list[tuple[Any, ...]]) -> bool:
    """True when an INTEGER PRIMARY KEY column is the rowid. `INTEGER PRIMARY KEY
    DESC` is not (a quirk SQLite keeps), and such a key has an index of its own."""
    keys = [str(kind) for _, kind, pk, _ in columns if pk]
    if table.virtual or [kind.upper() for kind in keys] != ["INTEGER"]:
        return False
    own_index = f"SELECT 1 FROM pragma_index_list({_literal(table.name)}) WHERE origin = 'pk'"
    return not query(own_index)


def _sequence(query: Query) -> Iterator[str]:
    """sqlite_sequence as it is: loading the rows moved it, maybe not to where it was."""
    if not query("SELECT 1 FROM main.sqlite_schema WHERE name = 'sqlite_sequence'"):
        return
    yield "DELETE FROM sqlite_sequence;"
    for name, seq in query("SELECT name, seq FROM main.sqlite_sequence ORDER BY name"):
        if not _internal(name):
            values = f"{_literal(name)}, {_literal(seq)}"
            yield f"INSERT INTO sqlite_sequence(name, seq) VALUES({values});"


def _literal(value: Any) -> str:
    """A SQL literal that reads back as exactly `value`, storage class included."""
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)  # the shortest text that round-trips; always has '.' or 'e'
    if isinstance(value, str):
        if "\0" in value:  # SQLite's tokenizer stops at NUL, even inside a string
            return f"CAST(X'{value.encode().hex()}' AS TEXT)"
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"X'{bytes(value).hex()}'"
    raise TypeError(f"cannot write a {type(value).__name__} as a SQL literal")
