"""Apply: replay a record's operations on a follower's open write transaction.

The follower's writer has triggers and foreign keys off: the leader's triggers
and cascades are already in the changeset. Any conflict aborts; the caller rolls
the whole transaction back, so a record is applied entirely or not at all.

Replayed inserts move sqlite_sequence as SQLite sees fit, which need not be what
the leader's did (an UPDATE of an AUTOINCREMENT key arrives as an insert; rows a
failed statement inserted and took back never arrive). So sqlite_sequence always
ends as the leader's: as the record's Sequence op says, or as it was before.
"""

from __future__ import annotations

import contextlib

import apsw

from shoal.engine.capture import SequenceRows, read_sequence, write_sequence
from shoal.errors import ApplyConflict, ReseedRequired
from shoal.record import Changeset, Record, Sequence, Statement, Vacuum

__all__ = ["apply_record"]

_CONFLICT_REASONS = {
    apsw.SQLITE_CHANGESET_DATA: "the row's values differ from the leader's",
    apsw.SQLITE_CHANGESET_NOTFOUND: "the row does not exist",
    apsw.SQLITE_CHANGESET_CONFLICT: "a row with that key already exists",
    apsw.SQLITE_CHANGESET_CONSTRAINT: "a constraint fails",
    apsw.SQLITE_CHANGESET_FOREIGN_KEY: "a foreign key fails",
}


class _Guard:
    """Refuses what Changeset.apply would otherwise skip or settle silently."""

    def __init__(self, conn: apsw.Connection) -> None:
        self._conn = conn
        self.problem: str | None = None

    def table(self, name: str) -> bool:
        exists = self._conn.execute(
            "SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = ?", (name,)
        ).fetchall()
        if not exists and self.problem is None:
            self.problem = f"table {name!r} does not exist on this copy"
        return bool(exists)

    def conflict(self, reason: int, change: apsw.TableChange) -> int:
        if self.problem is None:
            why = _CONFLICT_REASONS.get(reason, f"conflict {reason}")
            key = change.old if change.old is not None else change.new
            self.problem = f"{change.op} on {change.name!r} {key!r}: {why}"
        return apsw.SQLITE_CHANGESET_ABORT


def apply_record(conn: apsw.Connection, record: Record) -> None:
    """Replays `record` inside the caller's (trusted) transaction; raises on conflict.

    The caller rolls back on any error, so nothing changes then.
    """
    if record.is_barrier:
        raise ReseedRequired(record.version)
    sequence: SequenceRows | None = read_sequence(conn)
    for op in record.ops:
        if isinstance(op, Changeset):
            _apply_changeset(conn, op.data, record.version)
        elif isinstance(op, Statement):
            for _ in conn.execute(op.sql):
                pass
        elif isinstance(op, Sequence):
            sequence = op.rows
        elif isinstance(op, Vacuum):  # pragma: no cover - is_barrier caught it
            raise ReseedRequired(record.version)
    if sequence is not None and read_sequence(conn) != sequence:
        write_sequence(conn, sequence)


def _apply_changeset(conn: apsw.Connection, data: bytes, version: int) -> None:
    guard = _Guard(conn)
    with contextlib.suppress(apsw.AbortError):  # the guard holds the reason
        apsw.Changeset.apply(data, conn, filter=guard.table, conflict=guard.conflict)
    if guard.problem is not None:
        raise ApplyConflict(f"record {version} does not apply: {guard.problem}")
