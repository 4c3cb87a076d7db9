"""SQL policy: what users may run on a shoal database, enforced by the authorizer.

The authorizer sees every action at prepare time, so a refused statement never
runs. APSW reports a denial only as "not authorized"; the policy keeps the error
so that the engine raises one that names the problem: `Refused`, or `ReadOnly`
for a reader asked to change a setting (which is a write). Pragmas are judged in
engine.pragmas.
"""

from __future__ import annotations

import apsw

from shoal.engine.pragmas import Settings, Verdict, judge
from shoal.errors import Error, Refused

__all__ = ["INTERNAL_PREFIX", "Policy"]

INTERNAL_PREFIX = "_shoal_"

_DROP_CODES = frozenset({apsw.SQLITE_DROP_TABLE, apsw.SQLITE_DROP_VIEW, apsw.SQLITE_DROP_VTABLE})
_VIRTUAL_TABLE_MODULES = frozenset({"fts3", "fts4", "fts5", "rtree", "rtree_i32"})
_WRITE_CODES = frozenset({apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE})
_SCHEMA_CODES = frozenset(
    {
        apsw.SQLITE_CREATE_TABLE,
        apsw.SQLITE_CREATE_INDEX,
        apsw.SQLITE_CREATE_TRIGGER,
        apsw.SQLITE_CREATE_VIEW,
        apsw.SQLITE_CREATE_VTABLE,
        apsw.SQLITE_DROP_TABLE,
        apsw.SQLITE_DROP_INDEX,
        apsw.SQLITE_DROP_TRIGGER,
        apsw.SQLITE_DROP_VIEW,
        apsw.SQLITE_DROP_VTABLE,
        apsw.SQLITE_ALTER_TABLE,
    }
)


class Policy:
    """The authorizer installed on every engine connection.

    The engine runs its own statements (the log, VACUUM, replayed schema) inside
    `with policy.trusted():`; everything else is a user statement and is checked.
    """

    def __init__(self, settings: Settings | None = None, *, reader: bool = False) -> None:
        self._settings = settings or Settings()
        self._reader = reader
        self._trusted_depth = 0
        self._dropping: str | None = None
        self.refusal: Error | None = None

    @property
    def internal(self) -> bool:
        return self._trusted_depth > 0

    def __call__(
        self, code: int, arg1: str | None, arg2: str | None, schema: str | None, trigger: str | None
    ) -> int:
        if self._trusted_depth:
            return apsw.SQLITE_OK
        if code == apsw.SQLITE_PRAGMA:
            return self._pragma(arg1 or "", arg2)
        reason = _refusal(code, arg1, arg2, schema)
        if reason is not None:
            self.refusal = Refused(reason)
            return apsw.SQLITE_DENY
        if code in _DROP_CODES:
            self._dropping = arg1
        elif code == apsw.SQLITE_DELETE:
            return self._delete(arg1)
        return apsw.SQLITE_OK

    def _pragma(self, name: str, argument: str | None) -> int:
        """IGNORE makes SQLite skip a pragma without an error: the answer for one
        that restates what holds (inside a transaction `synchronous` would fail)."""
        verdict = judge(name, argument, self._settings, reader=self._reader)
        if isinstance(verdict, Error):
            self.refusal = verdict
            return apsw.SQLITE_DENY
        return apsw.SQLITE_OK if verdict is Verdict.RUN else apsw.SQLITE_IGNORE

    def _delete(self, table: str | None) -> int:
        """IGNORE on a DELETE from a table turns off SQLite's truncate optimization,
        which empties a table without the per-row hook capture relies on (when no
        session was attached at prepare time). A DROP asks for DELETE on
        sqlite_schema and on what it drops too, and IGNORE there would silently
        skip the DROP, so those are allowed plainly."""
        dropping, self._dropping = self._dropping, None
        if table is None or table.lower().startswith("sqlite_") or table == dropping:
            return apsw.SQLITE_OK
        return apsw.SQLITE_IGNORE

    def trusted(self) -> Policy:
        """`with policy.trusted():` runs the engine's own statements unchecked."""
        return self

    def __enter__(self) -> None:
        self._trusted_depth += 1

    def __exit__(self, *exc: object) -> None:
        self._trusted_depth -= 1

    def take_refusal(self) -> Error | None:
        """The error for the last denial, cleared so it is reported once."""
        reason, self.refusal = self.refusal, None
        return reason


def _refusal(code: int, arg1: str | None, arg2: str | None, schema: str | None) -> str | None:
    if code == apsw.SQLITE_ATTACH:
        if arg1 == "":
            return "VACUUM must run alone, as its own request, outside any transaction"
        return "ATTACH is refused: each shoal database is one file, replicated on its own"
    if code == apsw.SQLITE_DETACH:
        return "DETACH is refused: shoal databases cannot attach others"
    if code == apsw.SQLITE_FUNCTION and arg2 == "load_extension":
        return "load_extension() is refused: extensions are not replicated"
    if code == apsw.SQLITE_TRANSACTION:
        return (
            f"{arg1} is refused here: each request runs as one transaction; "
            "use savepoints, or the client's commit() and rollback()"
        )
    if code == apsw.SQLITE_SAVEPOINT and (arg2 or "").lower().startswith(INTERNAL_PREFIX):
        return f"savepoint names starting with {INTERNAL_PREFIX!r} are reserved"
    if code in _WRITE_CODES and schema == "main" and _internal(arg1):
        return f"table {arg1!r} belongs to shoal and cannot be written"
    if code in _SCHEMA_CODES and _internal(arg1):
        return f"names starting with {INTERNAL_PREFIX!r} are reserved for shoal"
    if code == apsw.SQLITE_CREATE_VTABLE and (arg2 or "").lower() not in _VIRTUAL_TABLE_MODULES:
        allowed = ", ".join(sorted(_VIRTUAL_TABLE_MODULES))
        return f"virtual table module {arg2!r} is refused (allowed: {allowed})"
    return None


def _internal(name: str | None) -> bool:
    return bool(name) and name.lower().startswith(INTERNAL_PREFIX)  # type: ignore[union-attr]
