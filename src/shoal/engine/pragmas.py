"""Which pragmas a user may run on a shoal database, and what each one does.

SQLite's pragmas belong to a connection, but a shoal database's connections are
shared: one writer for every client, and readers per thread. So each pragma that
sets something is settled by what it would change:

- a query, an inspection pragma, one that travels in the record (`user_version`,
  `application_id`), or transaction-scoped housekeeping: runs as in SQLite;
- a tuning of the connection that runs it (`busy_timeout`, `cache_size`,
  `temp_store`, `mmap_size`): runs; it changes neither rows nor durability;
- `optimize`, which applications run on closing: succeeds and does nothing, since
  the statistics it would gather outside capture would be on one copy only
  (ANALYZE gathers them on every copy);
- shoal's own setting restated (`journal_mode = WAL`, `synchronous` as shoal
  runs the database, `legacy_alter_table = OFF`, `foreign_keys` as the
  database's setting): succeeds and changes nothing, since it already holds;
- `foreign_keys` set to the other value: the database's setting, changed by a
  write of its own (see `Database.set_foreign_keys`);
- anything else: refused, naming the setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from shoal.errors import Error, ReadOnly, Refused

__all__ = ["Settings", "Verdict", "foreign_keys_request", "judge"]

# Pragmas that take an argument yet only read.
_INSPECTING = frozenset(
    {
        "collation_list",
        "compile_options",
        "database_list",
        "foreign_key_check",
        "foreign_key_list",
        "function_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "module_list",
        "pragma_list",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)
# The first two travel in the record; the rest are transaction-scoped or physical
# housekeeping that changes no row.
_HARMLESS = frozenset(
    {
        "user_version",
        "application_id",
        "defer_foreign_keys",
        "incremental_vacuum",
        "wal_checkpoint",
        "shrink_memory",
        "analysis_limit",
    }
)
# Settings of the connection that runs them: memory, temporary storage, waits.
_CONNECTION_TUNING = frozenset({"busy_timeout", "cache_size", "temp_store", "mmap_size"})
_RUN_AS_IN_SQLITE = _INSPECTING | _HARMLESS | _CONNECTION_TUNING
_SYNCHRONOUS_LEVELS = {"off": 0, "normal": 1, "full": 2, "extra": 3}
_BOOLEANS = {"on": 1, "yes": 1, "true": 1, "off": 0, "no": 0, "false": 0}
_DURABILITY = "a statement may not change its durability"
_REPLAYED_ALTER = "its copies replay ALTER TABLE that way, so they would differ"
_ASSIGNMENT = re.compile(
    r"\s*PRAGMA\s+(?:(?:main|\"main\")\s*\.\s*)?\"?(\w+)\"?\s*"
    r"(?:=\s*(?P<eq>[^;]*?)|\(\s*(?P<paren>[^;)]*?)\s*\))\s*;?\s*\Z",
    re.I | re.S,
)


@dataclass
class Settings:
    """What shoal fixes for one database, shared by its connections' policies."""

    synchronous: str = "normal"
    foreign_keys: bool = False


class Verdict(Enum):
    RUN = "run"  # let SQLite run it
    NO_OP = "no-op"  # it restates what holds: succeed without running it


def judge(name: str, argument: str | None, settings: Settings, *, reader: bool) -> Verdict | Error:
    """The verdict on `PRAGMA name = argument`, or the error that refuses it.

    `reader` says the statement runs on a read-only connection: there a change of
    the database's setting is a write (ReadOnly), so a client may send it as one.
    """
    name = name.lower()
    if name == "optimize":
        return Verdict.NO_OP
    if argument is None or name in _RUN_AS_IN_SQLITE:
        return Verdict.RUN
    if name == "journal_mode":
        if _plain(argument) == "wal":
            return Verdict.RUN
        return _fixed(name, argument, "WAL", _DURABILITY)
    if name == "synchronous":
        if _level(argument, _SYNCHRONOUS_LEVELS) == _SYNCHRONOUS_LEVELS[settings.synchronous]:
            return Verdict.NO_OP
        return _fixed(name, argument, settings.synchronous.upper(), _DURABILITY)
    if name == "legacy_alter_table":
        if _level(argument, _BOOLEANS) == 0:
            return Verdict.NO_OP
        return _fixed(name, argument, "OFF", _REPLAYED_ALTER)
    if name == "foreign_keys":
        wanted = _level(argument, _BOOLEANS)
        if wanted is None:
            return Refused(f"PRAGMA foreign_keys = {argument}: the value must be ON or OFF")
        if bool(wanted) == settings.foreign_keys:
            return Verdict.NO_OP
        return _foreign_keys_change(argument, settings, reader=reader)
    return Refused(
        f"PRAGMA {name} = {argument} is refused: it changes durability, the schema's "
        "integrity or replication, and shoal sets it"
    )


def foreign_keys_request(sql: str) -> bool | None:
    """The value asked for when `sql` is one `PRAGMA foreign_keys = X` statement."""
    match = _ASSIGNMENT.match(sql)
    if match is None or match.group(1).lower() != "foreign_keys":
        return None
    text = match.group("eq") if match.group("eq") is not None else match.group("paren")
    wanted = _level(text or "", _BOOLEANS)
    return None if wanted is None else bool(wanted)


def _plain(argument: str) -> str:
    """The argument without blanks, quotes or case: `'WAL'` is `wal`."""
    return argument.strip().strip("'\"").lower()


def _level(argument: str, names: dict[str, int]) -> int | None:
    """A pragma's argument as SQLite reads it: a number, or one of `names`."""
    value = _plain(argument)
    if value.lstrip("-").isdigit():
        return int(value)
    return names.get(value)


def _fixed(name: str, argument: str, holds: str, why: str) -> Refused:
    return Refused(
        f"PRAGMA {name} = {argument} is refused: shoal runs this database with "
        f"{name} = {holds}; {why}"
    )


def _foreign_keys_change(argument: str, settings: Settings, *, reader: bool) -> Error:
    now = "ON" if settings.foreign_keys else "OFF"
    if reader:
        return ReadOnly(
            f"PRAGMA foreign_keys = {argument} changes this database's foreign-key "
            f"setting (now {now}): it is a write"
        )
    return Refused(
        f"PRAGMA foreign_keys = {argument} changes this database's foreign-key setting "
        f"(now {now}) for every client; it must run alone, as its own request, "
        "outside any transaction"
    )
