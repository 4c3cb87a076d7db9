"""The control-plane interface: per-database logs with CAS append, and a key-value table.

The control plane is where a cluster keeps what must be agreed on: each
database's log, the single source of truth for what was committed, and a small
key-value table with compare-and-set and expiry for leases, membership and the
catalog. Backends only store and compare; what the
records and keys mean (who leads, which node holds what) is the cluster's
business, so that a new backend is a small file.

Errors, added below shoal.errors' tree::

    DatabaseError
    └── ControlPlaneError              the control plane cannot do what was asked
        ├── AppendConflict             the log does not end where the append expected
        ├── KeyConflict                a key is not at the revision the write expected
        ├── ControlPlaneUnavailable    cannot be reached now; retry (also an Unavailable)
        └── CommitUnknown              the connection broke while a write committed
                                       (also an OutcomeUnknown)

Every method may raise ControlPlaneUnavailable; InvalidRequest for arguments
that are wrong whatever the data (a version below 1, a name with a NUL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shoal.errors import DatabaseError, OutcomeUnknown, Unavailable

__all__ = [
    "ABSENT",
    "AppendConflict",
    "Changes",
    "CommitUnknown",
    "ControlPlane",
    "ControlPlaneError",
    "ControlPlaneUnavailable",
    "Entry",
    "KeyConflict",
    "LogWatch",
]

ABSENT = 0
"""`put(..., expect=ABSENT)`: write only if the key has no live entry (absent or expired)."""


@dataclass(frozen=True)
class Entry:
    """A live key-value entry. `expires_at` is on the control plane's clock (`now()`)."""

    value: bytes
    revision: int
    expires_at: float | None


@dataclass(frozen=True)
class Changes:
    """What `changes` found: the keys written or deleted after a revision."""

    revision: int  # the table's revision as read: the `after` of the next call
    now: float  # the control plane's clock as read: an entry expired if expires_at <= now
    entries: list[tuple[str, Entry | None]]  # in revision order; None: deleted
    complete: bool  # every key is in `entries`: forget what came before


class ControlPlaneError(DatabaseError):
    """The control plane cannot do what was asked."""


class AppendConflict(ControlPlaneError):
    """An append expected the log to end just before `version`; it ends at `head`.

    For a leader this means another node appended first: it is deposed.
    """

    def __init__(self, database: str, version: int, head: int) -> None:
        super().__init__(
            f"append at version {version} to the log of {database!r} refused: "
            f"the log ends at version {head}, not {version - 1}"
        )
        self.database = database
        self.version = version
        self.head = head


class KeyConflict(ControlPlaneError):
    """A conditional write found the key in another state; `current` is what it holds
    (None when it has no live entry)."""

    def __init__(self, key: str, expected: int, current: Entry | None) -> None:
        found = "no live entry" if current is None else f"revision {current.revision}"
        wanted = "no live entry" if expected == ABSENT else f"revision {expected}"
        super().__init__(f"key {key!r} has {found}, the write expected {wanted}")
        self.key = key
        self.expected = expected
        self.current = current


class ControlPlaneUnavailable(ControlPlaneError, Unavailable):
    """The control plane cannot be reached or cannot serve now; retry with backoff.
    The write that got this did not take effect."""


class CommitUnknown(ControlPlaneError, OutcomeUnknown):
    """The connection broke while a write was committing: it may or may not have
    taken effect. Read the head or the key before trying it again."""


class LogWatch(Protocol):
    """Says which logs grew, so that one thread serves every log a node follows
    instead of a poll per log."""

    def wait(self, timeout: float) -> set[str] | None:
        """Waits up to `timeout` seconds for an append by any process (returning at
        once if one landed since the last call); returns the databases appended to
        since the last call (empty: none), or None when it cannot tell which (it
        lost its notifications, or has none): then any log may have grown, and the
        caller compares `heads`."""
        ...

    def close(self) -> None:
        """Stops watching; a `wait` under way returns. Idempotent."""
        ...


class ControlPlane(Protocol):
    """Logs and a key-value table, each operation atomic. Consistency assumed:
    linearizable per log and per key (a read sees every write acknowledged before
    it started), which both a single SQLite file and a PostgreSQL primary give.
    Safe to use from many threads, and from many processes on the same store."""

    # --- logs: one per database; versions are consecutive integers from 1 ----------

    def append(self, database: str, version: int, records: Sequence[bytes]) -> None:
        """Appends `records` at `version`, `version + 1`, ... if and only if the log
        ends at `version - 1` (compare-and-set; 0 for a log never written or
        dropped): all of them or none. Otherwise AppendConflict carrying the head,
        with nothing appended. Of two racing appends at one version exactly one
        wins. Not idempotent: a retry of a successful append conflicts."""
        ...

    def head(self, database: str) -> int:
        """The version the log ends at; 0 if nothing was appended. Truncating keeps it."""
        ...

    def read(
        self, database: str, start: int, end: int | None = None, limit: int = 1000
    ) -> list[tuple[int, bytes]]:
        """The records from `start` to `end` (inclusive; to the head if None), in
        order, at most `limit`. Those truncated away are missing: when the first
        version returned is above `start`, the caller is behind the log's tail."""
        ...

    def follow(self, database: str, after: int, timeout: float) -> list[tuple[int, bytes]]:
        """The records after version `after` (as `read(database, after + 1)`), waiting
        up to `timeout` seconds for the first to be appended; [] if none came.
        Returns within milliseconds of an append by any process."""
        ...

    def heads(self, databases: Sequence[str]) -> dict[str, int]:
        """The head of each of `databases`' logs (as `head` gives it), in one read
        however many there are."""
        ...

    def watch_logs(self) -> LogWatch:
        """A watcher of appends to every log; close it when done."""
        ...

    def truncate(self, database: str, below: int) -> int:
        """Drops the records with versions below `below`; returns how many. The head
        stays: later appends go on from it. Idempotent."""
        ...

    def drop(self, database: str) -> None:
        """Removes the log and its head (the database was deleted): the next append
        is at version 1 again. Idempotent."""
        ...

    # --- key-value: leases, membership, catalog -----------------------------------

    def now(self) -> float:
        """The control plane's clock, in seconds since the epoch: the clock that
        expiry runs on. Callers compute lease deadlines against it, not their own."""
        ...

    def get(self, key: str) -> Entry | None:
        """The live entry at `key`; None if absent or expired."""
        ...

    def put(
        self, key: str, value: bytes, *, expect: int | None = None, ttl: float | None = None
    ) -> int:
        """Writes `value` at `key` and returns its new revision. With `expect`, only
        if the key's live entry has that revision (ABSENT: only if it has none, so
        an expired entry can be taken over); otherwise KeyConflict carrying the
        current entry, with nothing written. With `ttl` (seconds, > 0) the entry
        expires that long after the write, on `now()`'s clock; without, never.
        Revisions come from one counter for the whole table: every write of a key
        gives it a higher one, and a key deleted and written again never gets one
        it had before, so a stale `expect` always fails."""
        ...

    def delete(self, key: str, *, expect: int | None = None) -> bool:
        """Removes the key; True if it had a live entry. With `expect`, only if the
        live entry has that revision (as in `put`), else KeyConflict."""
        ...

    def changes(self, after: int) -> Changes:
        """The keys written or deleted since revision `after`, with their entries
        as they are now (a key written twice shows once), so a reader keeps a
        copy of the table for the cost of what changed. An entry may have
        expired since: compare its `expires_at` with `now`. Deletions are kept
        for an hour; with `after` 0 or older than that, the answer is
        `complete`: every key there is, live or expired."""
        ...

    def scan(self, prefix: str) -> list[tuple[str, Entry]]:
        """The live entries whose keys start with `prefix`, sorted by key (by code
        point, whatever the store's locale)."""
        ...

    def close(self) -> None:
        """Lets go of connections and threads. Idempotent; later calls raise
        InterfaceError."""
        ...
