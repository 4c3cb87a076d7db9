"""Capture: turn one write transaction into the ordered operations of its record.

Row changes come from a session attached to every table (with the rowid option,
so tables without a primary key are included). A session cannot span a schema
change (it would describe earlier rows in the new shape) and does not see rows
written by DDL (CREATE TABLE ... AS SELECT, DROP COLUMN), so capture *cuts* at
each schema statement: the changeset so far becomes one operation, the statement
runs with no session attached and travels as SQL text, and a new session starts
after it. A table created with rows (CREATE TABLE ... AS SELECT) travels as its
schema plus a changeset of those rows, so a non-deterministic SELECT cannot make
the copies differ.

`sqlite_sequence` is never in a changeset, so its rows travel whole whenever a
transaction changed them. `PRAGMA user_version` and `application_id` travel as
`PRAGMA name = value` with the value read back after the statement.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import apsw

from shoal.engine import rowid_tables
from shoal.engine.policy import INTERNAL_PREFIX, Policy
from shoal.engine.sqltext import (
    Kind,
    classify,
    leading_keyword,
    quote_identifier,
    replicated_pragma,
)
from shoal.errors import Refused
from shoal.record import Changeset, Op, Sequence, Statement

__all__ = ["Capture", "SequenceRows", "read_sequence", "write_sequence"]

SequenceRows = tuple[tuple[str, int], ...]
# Runs a query on the last committed state (a reader), for rowid_tables.repair.
ReadCommitted = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
_MOVES_ROWS = re.compile(r"^\s*(DROP\s+TABLE|ALTER\s+TABLE\s.*\sRENAME\s+TO\s)", re.I | re.S)


def read_sequence(conn: apsw.Connection) -> SequenceRows | None:
    """The rows of sqlite_sequence in name order, or None when it does not exist."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).fetchall()
    if not exists:
        return None
    return tuple(
        (str(name), int(seq))
        for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name")
    )


def write_sequence(conn: apsw.Connection, rows: SequenceRows) -> None:
    """Makes sqlite_sequence hold exactly `rows`."""
    conn.execute("DELETE FROM sqlite_sequence")
    conn.executemany("INSERT INTO sqlite_sequence(name, seq) VALUES (?, ?)", rows)


def _keep_table(name: str) -> bool:
    return not name.startswith(INTERNAL_PREFIX)


class Capture:
    """Collects the operations of the write transaction open on `conn`.

    Owned by the engine's writer: one Capture per transaction, driven by
    `before_statement` for each statement and ended by `finish` or `discard`.
    """

    def __init__(
        self,
        conn: apsw.Connection,
        policy: Policy,
        sequence: SequenceRows | None,
        read_committed: ReadCommitted,
    ):
        self._conn = conn
        self._policy = policy
        self._read_committed = read_committed
        self._sequence_before = sequence
        self._ops: list[Op] = []
        self._session: apsw.Session | None = self._new_session()
        self._after: Callable[[], None] | None = None
        self._schema_changed = False
        self._savepoints: list[tuple[str, int]] = []
        self.broken = False  # capture failed: the transaction must roll back

    def before_statement(self, sql: str) -> None:
        """Called with each statement's text just before it runs."""
        self._run_after()
        kind = classify(sql)
        if kind is Kind.SCHEMA:
            self._cut()
            before = self._schema_state()
            self._after = lambda: self._after_schema(sql, before)
        elif kind is Kind.PRAGMA:
            name = replicated_pragma(sql)
            if name is not None:
                self._cut()
                self._after = lambda: self._after_pragma(name)
        elif kind is Kind.VACUUM:
            raise Refused("VACUUM must run alone, as its own request, outside any transaction")
        elif kind is Kind.TRANSACTION:
            self._savepoint_statement(sql)
        if self._session is not None and rowid_tables.near_growth(self._session):
            self._cut()  # see rowid_tables: no row is changed again after a growth
            self._session = self._new_session()

    def _savepoint_statement(self, sql: str) -> None:
        """Keeps operations in step with savepoints: ROLLBACK TO drops what it undid.

        The session undoes its own rows, but operations already cut (schema text,
        pragmas, earlier changesets) are not in it; so capture cuts at each
        SAVEPOINT, remembers how many operations stood then, and truncates to that
        count after a ROLLBACK TO.
        """
        words = sql.replace(";", " ").split()
        keyword = leading_keyword(sql)
        name = words[-1].strip('"`[]').lower() if len(words) > 1 else ""
        if keyword == "SAVEPOINT":
            self._cut()
            self._savepoints.append((name, len(self._ops)))
        elif keyword == "RELEASE":
            index = self._find_savepoint(name)
            if index is not None:
                del self._savepoints[index:]
        elif keyword == "ROLLBACK":
            index = self._find_savepoint(name)
            if index is not None:
                del self._savepoints[index + 1 :]
                kept = self._savepoints[index][1]
                self._cut()
                self._after = lambda: self._truncate_ops(kept)

    def _find_savepoint(self, name: str) -> int | None:
        for index in range(len(self._savepoints) - 1, -1, -1):
            if self._savepoints[index][0] == name:
                return index
        return None

    def _truncate_ops(self, count: int) -> None:
        if self._session is not None:
            self._session.close()  # its changes were undone with the savepoint
            self._session = None
        del self._ops[count:]

    def add_statement(self, sql: str) -> None:
        """Adds, in order, a statement the engine ran itself (its copies replay it)."""
        self._run_after()
        self._cut()
        self._ops.append(Statement(sql))

    def finish(self) -> tuple[list[Op], SequenceRows | None]:
        """The transaction's operations and sqlite_sequence after it; ends capture."""
        self._run_after()
        self._cut()
        sequence = self._sequence_before
        if sequence is not None or self._schema_changed:
            sequence = read_sequence(self._conn)
            if sequence != self._sequence_before and sequence is not None:
                self._ops.append(Sequence(sequence))
        return self._ops, sequence

    def discard(self) -> None:
        """Ends capture without a record (the transaction rolled back)."""
        self._after = None
        if self._session is not None:
            self._session.close()
            self._session = None

    def _new_session(self) -> apsw.Session:
        session = apsw.Session(self._conn, "main")
        session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
        session.config(apsw.SQLITE_SESSION_OBJCONFIG_SIZE, 1)
        session.table_filter(_keep_table)
        session.attach()
        return session

    def _cut(self) -> None:
        """Moves the changes so far into one operation and detaches the session."""
        if self._session is None:
            return
        session, self._session = self._session, None
        try:
            if not session.is_empty:
                data = session.changeset()
                if data and rowid_tables.may_have_grown(session):
                    with self._policy.trusted():
                        data = rowid_tables.repair(self._conn, data, self._existed_before)
                if data:
                    self._ops.append(Changeset(data))
        except BaseException:
            self.broken = True
            raise
        finally:
            session.close()

    def _existed_before(self, table: str, rowids: list[int]) -> dict[int, bool] | None:
        """Whether each row existed when the current session began: from this
        transaction's earlier changesets, else from the last committed state."""
        wanted, known = set(rowids), {}
        for op in self._ops:
            if isinstance(op, Statement) and _MOVES_ROWS.match(op.sql):
                return None  # the table may be another one than the reader's
            if isinstance(op, Changeset):
                for change in apsw.Changeset.iter(op.data):
                    row = change.old if change.old is not None else change.new
                    if change.name == table and row is not None and row[0] in wanted:
                        known[row[0]] = change.op != "DELETE"
        rest = sorted(wanted - known.keys())
        if rest and self._read_committed(
            "SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = ?", (table,)
        ):
            found = self._read_committed(
                f"SELECT rowid FROM main.{quote_identifier(table)} "
                "WHERE rowid IN (SELECT value FROM json_each(?))",
                (json.dumps(rest),),
            )
            known.update((rowid, True) for (rowid,) in found)
        return {rowid: known.get(rowid, False) for rowid in rowids}

    def _run_after(self) -> None:
        after, self._after = self._after, None
        if after is not None:
            with self._policy.trusted():
                after()
        if self._session is None:
            self._session = self._new_session()

    def _schema_state(self) -> tuple[int, frozenset[str]]:
        with self._policy.trusted():
            version = self._conn.execute("PRAGMA main.schema_version").fetchall()[0][0]
            names = frozenset(
                n for (n,) in self._conn.execute("SELECT name FROM main.sqlite_schema")
            )
        return int(version or 0), names

    def _after_schema(self, sql: str, before: tuple[int, frozenset[str]]) -> None:
        version, names = self._schema_state()
        if version == before[0] and not _always_travels(sql):
            return  # a temp object, or IF [NOT] EXISTS that did nothing
        self._schema_changed = True
        created = names - before[1] if leading_keyword(sql) == "CREATE" else frozenset()
        tables = self._new_ordinary_tables(created)
        if len(created) == 1 and tables:
            self._capture_new_table(tables[0])
        else:
            self._ops.append(Statement(sql))

    def _new_ordinary_tables(self, created: frozenset[str]) -> list[tuple[str, str]]:
        if not created:
            return []
        rows = self._conn.execute(
            "SELECT name, sql FROM main.sqlite_schema WHERE type = 'table' "
            "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' AND name IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(created)),),
        ).fetchall()
        return [(str(name), str(sql)) for name, sql in rows]

    def _capture_new_table(self, table: tuple[str, str]) -> None:
        """A new table travels as its stored schema and, if it has rows, their changeset."""
        name, schema_sql = table
        self._ops.append(Statement(schema_sql))
        quoted = quote_identifier(name)
        if not self._conn.execute(f"SELECT 1 FROM main.{quoted} LIMIT 1").fetchall():
            return
        columns = ", ".join(
            quote_identifier(str(row[1]))
            for row in self._conn.execute(f"PRAGMA main.table_info({quoted})")
        )
        conn = self._conn
        conn.execute(
            f"CREATE TEMP TABLE {INTERNAL_PREFIX}rows AS SELECT rowid AS {INTERNAL_PREFIX}rowid, "
            f"{columns} FROM main.{quoted}"
        )
        conn.execute(f"DELETE FROM main.{quoted}")
        session = self._new_session()
        conn.execute(
            f"INSERT INTO main.{quoted}(rowid, {columns}) SELECT * FROM temp.{INTERNAL_PREFIX}rows"
        )
        data = session.changeset()
        session.close()
        conn.execute(f"DROP TABLE temp.{INTERNAL_PREFIX}rows")
        self._ops.append(Changeset(data))

    def _after_pragma(self, name: str) -> None:
        value = self._conn.execute(f"PRAGMA main.{name}").fetchall()[0][0]
        self._ops.append(Statement(f"PRAGMA {name} = {int(value or 0)}"))


def _always_travels(sql: str) -> bool:
    """ANALYZE and REINDEX change statistics or indexes without a schema change."""
    return leading_keyword(sql) in ("ANALYZE", "REINDEX")
