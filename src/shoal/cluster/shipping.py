"""How a leader's records reach its database's log in the control plane: the
database's commit hook (engine.CommitHook), called with the writer held.

- `sync` (SyncShipping): appended in `before_commit`, so a record is in the log
  before the local COMMIT, and before the client hears of it;
- `async` (AsyncShipping): queued in `after_commit` and appended in batches by
  `ship`; a write is refused while the oldest unshipped record is older than the
  window, so a crash loses at most that window.

Every append is a compare-and-set on the version: one that finds the log ahead
marks the leader `behind`, and it rejoins the log before it writes again.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Protocol

from shoal.controlplane import AppendConflict, ControlPlane
from shoal.errors import NotLeader, OutcomeUnknown, Unavailable

__all__ = ["AsyncShipping", "Leadership", "Shipping", "SyncShipping"]

logger = logging.getLogger("shoal.cluster")


class Leadership(Protocol):
    """What shipping asks of the replica whose records it ships (cluster.Replica)."""

    name: str

    def check_leading(self) -> None:
        """NotLeader unless this copy may take writes now."""
        ...

    def fell_behind(self) -> None:
        """An append found the log ahead of this leader: it rejoins the log."""
        ...

    def wake_soon(self) -> None:
        """Records wait to be shipped: the leader's task ships them within `every`."""
        ...


class SyncShipping:
    """`sync`: each record is appended before its transaction commits."""

    def __init__(self, leader: Leadership, cp: ControlPlane) -> None:
        self._leader = leader
        self._cp = cp

    def before_commit(self, version: int, record: bytes) -> None:
        self._leader.check_leading()
        try:
            self._cp.append(self._leader.name, version, [record])
        except AppendConflict as exc:
            self._leader.fell_behind()
            raise NotLeader(
                f"{self._leader.name!r}: the log is at version {exc.head}, "
                "ahead of this leader; retry"
            ) from None
        except OutcomeUnknown:
            self._leader.fell_behind()  # the record may be in the log: take it from there
            raise

    def after_commit(self, version: int, record: bytes) -> None:
        """Nothing left to do: the log had the record before the commit."""

    def pending(self) -> bool:
        return False

    def ship_in(self) -> float | None:
        """Nothing waits to be shipped."""
        return None

    def ship(self) -> None:
        """Nothing waits to be shipped."""

    def discard(self) -> bool:
        """Nothing was committed here without being logged."""
        return False


class AsyncShipping:
    """`async`: records are queued as they commit and appended in batches."""

    def __init__(self, leader: Leadership, cp: ControlPlane, every: float, window: float) -> None:
        self._leader = leader
        self._cp = cp
        self.every = every  # how often the leader's loop ships
        # The oldest a queued record may grow before writes are refused.
        self.window_limit = window
        self.unshipped: collections.deque[tuple[int, bytes, float]] = collections.deque()
        self._lock = threading.Lock()  # one append of queued records at a time

    def before_commit(self, version: int, record: bytes) -> None:
        self._leader.check_leading()
        if self.unshipped and time.monotonic() - self.unshipped[0][2] > self.window_limit:
            raise Unavailable(
                f"{self._leader.name!r}: the control plane is not taking this database's "
                "records; writes wait until it does (retry)"
            )

    def after_commit(self, version: int, record: bytes) -> None:
        first = not self.unshipped
        self.unshipped.append((version, record, time.monotonic()))
        if first:
            self._leader.wake_soon()

    def pending(self) -> bool:
        return bool(self.unshipped)

    def ship_in(self) -> float | None:
        """How soon the leader's task should ship; None while nothing waits."""
        return self.every if self.unshipped else None

    def ship(self) -> None:
        """Appends the queued records, in one compare-and-set."""
        name = self._leader.name
        with self._lock:
            batch = list(self.unshipped)
            if not batch:
                return
            try:
                self._cp.append(name, batch[0][0], [raw for _, raw, _ in batch])
            except AppendConflict as exc:
                if self._landed(batch, exc.head):
                    return  # an earlier try committed and lost its answer
                logger.error(
                    "%s: the log moved on (head %d) while versions %d-%d were unshipped: "
                    "this copy will be re-seeded",
                    name,
                    exc.head,
                    batch[0][0],
                    batch[-1][0],
                )
                self.unshipped.clear()
                self._leader.fell_behind()
                return
            for _ in batch:
                self.unshipped.popleft()

    def _landed(self, batch: list[tuple[int, bytes, float]], head: int) -> bool:
        """Whether the log holds `batch` as it is (and pops it if so)."""
        logged = self._cp.read(self._leader.name, batch[0][0], batch[-1][0])
        if head != batch[-1][0] or logged != [(v, raw) for v, raw, _ in batch]:
            return False
        for _ in batch:
            self.unshipped.popleft()
        return True

    def discard(self) -> bool:
        """Forgets what was committed here and never logged (the log decides now);
        whether there was any."""
        had = bool(self.unshipped)
        self.unshipped.clear()
        return had


Shipping = SyncShipping | AsyncShipping
