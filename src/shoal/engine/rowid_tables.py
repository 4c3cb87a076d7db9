"""A workaround for the session extension's bug with tables that have no primary key.

Such tables are captured in the session's rowid mode, where SQLite 3.54 files a
change under one hash when it records it and under another when its hash table
grows (at 128 changed rows of a table, then 256, ...). After a growth, a row
changed again is not found: the session gets two entries for it, and the
changeset describes the row twice. A follower refuses such a changeset (the
second entry conflicts), so replication would stop.

Capture avoids most of it and repairs the rest it can tell apart:

- Between statements it starts a new session once the session may be near a
  growth (`near_growth`), so a row changed by a later statement is never looked
  up after a growth.
- Within one statement a row can still be changed again after a growth (an
  UPDATE statement itself records each row twice over, as an update and then as
  the insert of its new image; triggers, REPLACE and upserts change rows again),
  and its stray entries describe it from the wrong starting point. Whether the
  row existed when the session began tells the true entry: for a row that did
  not, the first change was an INSERT and every UPDATE or DELETE is stray; for a
  row that did, an INSERT is stray. `repair` drops the strays, and refuses the
  transaction (a clear error, nothing written) when that leaves anything but one
  entry it can trust, or when the rows' past is unknown.

docs/sql-features.md lists what remains; tests/engine/test_session_behaviour.py
pins the bug, so a SQLite that fixes it shows up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import apsw

from shoal.errors import NotSupportedError

__all__ = ["ExistedBefore", "may_have_grown", "near_growth", "repair"]

# The session's size estimate grows by at least 12 bytes per changed row of a
# table without a primary key (rowid, one column, op and flag bytes), so below
# 128 * 12 bytes no such table can have reached the first growth, at 128 rows.
_GROWTH_BYTES = 128 * 12


def near_growth(session: apsw.Session) -> bool:
    """Whether a table without a primary key may have had its hash table grown."""
    return session.changeset_size >= _GROWTH_BYTES // 2


def may_have_grown(session: apsw.Session) -> bool:
    """Whether the changeset must go through `repair`."""
    return session.changeset_size >= _GROWTH_BYTES


# Given a table and rowids, whether each row existed when the session began;
# None when that cannot be known.
ExistedBefore = Callable[[str, list[int]], dict[int, bool] | None]


def repair(conn: apsw.Connection, data: bytes, existed_before: ExistedBefore) -> bytes:
    """`data` with each row of a table without a primary key described truly, once."""
    tables = _tables_without_primary_key(conn)
    if not tables:
        return data
    seen: dict[str, dict[int, list[str]]] = defaultdict(lambda: defaultdict(list))
    for change in apsw.Changeset.iter(data):
        if change.name in tables:
            seen[change.name][_rowid(change)].append(change.op)
    stray: set[tuple[str, int, str]] = set()
    for table, changes in seen.items():
        existed = existed_before(table, list(changes))
        for rowid, ops in changes.items():
            if existed is None:
                if len(ops) > 1:
                    raise _refusal(table, rowid)
                continue
            inserts = ops.count("INSERT")
            if not existed[rowid] and inserts <= 1:
                stray.update((table, rowid, op) for op in ops if op != "INSERT")
            elif existed[rowid] and len(ops) - inserts == 1:
                if inserts:
                    stray.add((table, rowid, "INSERT"))
            else:
                raise _refusal(table, rowid)
    if not stray:
        return data
    builder = apsw.ChangesetBuilder()  # type: ignore[no-untyped-call]
    for change in apsw.Changeset.iter(data):
        if change.name not in tables or (change.name, _rowid(change), change.op) not in stray:
            builder.add_change(change)
    return builder.output()


def _rowid(change: apsw.TableChange) -> int:
    row = change.old if change.old is not None else change.new
    assert row is not None
    rowid = row[0]
    assert isinstance(rowid, int)
    return rowid


def _refusal(table: str, rowid: int) -> NotSupportedError:
    return NotSupportedError(
        f"this statement changed row {rowid} of table {table!r} (which has no primary "
        "key) more than once after many other changes, which SQLite's session extension "
        "records wrongly; shoal refuses it rather than replicate it wrong. Split the "
        "statement, or give the table a primary key"
    )


def _tables_without_primary_key(conn: apsw.Connection) -> frozenset[str]:
    rows = conn.execute(
        "SELECT name FROM main.sqlite_schema AS s WHERE type = 'table' "
        "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' "
        "AND NOT EXISTS (SELECT 1 FROM pragma_table_info(s.name) WHERE pk > 0)"
    ).fetchall()
    return frozenset(str(name) for (name,) in rows)
