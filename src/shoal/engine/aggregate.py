"""An outer statement over rows gathered from many databases (`query-many`).

The rows go into a table `results` of a private in-memory SQLite database, a
column `db` first, and the statement runs there: `SELECT db, sum(n) FROM results
GROUP BY db`. It may only read: an authorizer refuses everything but reading and
calling functions (no ATTACH, which could open files, no PRAGMA, no writes). It
runs within a time limit and a row limit, as a query on a database does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apsw

from shoal.engine.execute import Deadline, Limits, Result, description_and_rows
from shoal.engine.sqltext import quote_identifier, split_statements
from shoal.errors import SQLError, StatementTimeout, from_apsw

__all__ = ["TABLE", "aggregate", "column_names"]

TABLE = "results"
_ALLOWED = frozenset(
    {apsw.SQLITE_SELECT, apsw.SQLITE_READ, apsw.SQLITE_FUNCTION, apsw.SQLITE_RECURSIVE}
)


def column_names(columns: Sequence[str]) -> list[str]:
    """The table's column names: `db`, then `columns`, each made unique by a suffix
    (a statement may return two columns of one name, or one named `db`)."""
    names: list[str] = []
    for wanted in ["db", *columns]:
        name, n = wanted, 1
        while name.lower() in (taken.lower() for taken in names):
            n += 1
            name = f"{wanted}_{n}"
        names.append(name)
    return names


def aggregate(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    sql: str,
    *,
    seconds: float,
    max_rows: int,
) -> Result:
    """The result of `sql` over a table `results` of `rows` (each `db` first, then
    one value per name of `columns`)."""
    conn = apsw.Connection(":memory:")
    try:
        if len(list(split_statements(sql))) != 1:
            raise SQLError("the aggregate must be one statement")
        names = column_names(columns)
        quoted = ", ".join(quote_identifier(name) for name in names)
        conn.execute(f"CREATE TABLE {TABLE}({quoted})")
        marks = ", ".join("?" * len(names))
        with conn:
            conn.executemany(f"INSERT INTO {TABLE} VALUES ({marks})", rows)
        conn.authorizer = _only_reads
        deadline = Deadline()
        deadline.install(conn)
        deadline.start(seconds)
        try:
            cursor = conn.execute(sql)
            description, found = description_and_rows(cursor, sql, None, Limits(max_rows=max_rows))
        except apsw.InterruptError:
            raise StatementTimeout(seconds) from None
        except apsw.AuthError:
            raise SQLError(
                f"the aggregate statement may only read table {TABLE!r} "
                "(SELECT and functions: no ATTACH, PRAGMA or writes)"
            ) from None
        except apsw.Error as exc:
            raise from_apsw(exc) from None
        if not description:
            raise SQLError("the aggregate statement must return rows: one SELECT")
        return Result(description=description, rows=found)
    finally:
        conn.close()


def _only_reads(action: int, *args: Any) -> int:
    return apsw.SQLITE_OK if action in _ALLOWED else apsw.SQLITE_DENY
