"""A copy's follower half: it applies its database's log when told records were
appended (the node's one watcher of every log tells it: coordinator.py),
catches up to the head, checks itself against the log, and re-seeds (loudly, and
more slowly each time it makes no progress) when the log cannot take it further."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from shoal.errors import ReplicationError, ReseedRequired

if TYPE_CHECKING:
    from shoal.cluster.replica import Replica

__all__ = ["Follower"]

logger = logging.getLogger("shoal.cluster")

READ_LIMIT = 1000  # records a follower reads from the log at a time
LOCAL_KEEP = 10_000  # records a follower keeps in its own log
RESEED_BACKOFF_MAX = 30.0  # the longest wait between re-seeds of a copy making no progress


class Follower:
    """Keeps `copy` in step with the log; `copy.db` is replaced when it re-seeds."""

    def __init__(self, copy: Replica) -> None:
        self._copy = copy
        self._trimmed_locally = 0
        self.reseeds = 0  # re-seeds of this copy since the node started
        self.reseeds_in_a_row = 0  # re-seeds since a record applied or the head reached
        self.problem: str | None = None  # why the last re-seed failed, until the copy is well

    async def follow(self) -> None:
        """Applies what the log holds past this copy; if that was more than one
        read's worth, the copy is told to read again."""
        await self._copy.hold()
        records = await self._copy.host.blocking(
            self._copy.cp.read, self._copy.name, self._copy.db.version + 1, None, READ_LIMIT
        )
        await self.apply(records)
        if len(records) >= READ_LIMIT:
            self._copy.appended()

    async def apply(self, records: list[tuple[int, bytes]]) -> None:
        if not records:  # at the log's head: whatever re-seeded this copy worked
            self._progressed()
            return
        if records[0][0] != self._copy.db.version + 1:
            await self.reseed(
                f"the log no longer holds version {self._copy.db.version + 1}", records[0][0] - 1
            )
            return
        try:
            await self._copy.host.on_writer(self._copy.db.apply_many, [raw for _, raw in records])
        except ReseedRequired as exc:
            await self.reseed(str(exc), exc.version)
            return
        except ReplicationError as exc:
            await self.reseed(f"a record does not apply here: {exc}", self._copy.db.version + 1)
            return
        self._progressed()
        below = self._copy.db.version - LOCAL_KEEP
        if below - self._trimmed_locally >= LOCAL_KEEP:
            await self._copy.host.on_writer(self._copy.db.truncate_log, below)
            self._trimmed_locally = below

    async def catch_up(self) -> None:
        """Applies the log up to its head (as it is when we look)."""
        await self._copy.hold()
        head = await self._copy.host.blocking(self._copy.cp.head, self._copy.name)
        while self._copy.db.version < head:
            records = await self._copy.host.blocking(
                self._copy.cp.read, self._copy.name, self._copy.db.version + 1, head
            )
            if not records:
                await self.reseed(
                    f"the log no longer holds version {self._copy.db.version + 1}",
                    self._copy.db.version + 1,
                )
                continue
            await self.apply(records)
        self._progressed()

    def _progressed(self) -> None:
        """The copy applied a record or stands at the log's head: not stuck."""
        self.reseeds_in_a_row, self.problem = 0, None

    async def check_against_log(self) -> None:
        """Re-seeds a copy that holds writes the log does not (an async leader's
        unshipped records, or a deposed leader's): the log decides."""
        await self._copy.hold()
        version = self._copy.db.version
        if version == 0:
            return
        head = await self._copy.host.blocking(self._copy.cp.head, self._copy.name)
        logged = await self._copy.host.blocking(
            self._copy.cp.read, self._copy.name, version, version
        )
        if version > head:
            await self.reseed(
                f"this copy is at version {version} but the log ends at {head}: "
                f"versions {head + 1} to {version} were committed here and never logged",
                0,
            )
        elif logged and logged[0][1] != self._copy.db.log_range(version, version)[0]:
            await self.reseed(f"version {version} here differs from the log's", 0)
        elif not logged and head > 0:
            await self.reseed(
                f"the log no longer holds version {version} to check it against", version
            )

    async def reseed(self, why: str, at_least: int) -> None:
        """Replaces this copy, loudly, with one at version `at_least` or later that
        the log goes on from. A copy re-seeded again before it applied a record is
        making no progress: each such try waits twice as long as the last (up to
        RESEED_BACKOFF_MAX), and a failure stays in `problem` for status and metrics."""
        if self.reseeds_in_a_row:
            await asyncio.sleep(min(RESEED_BACKOFF_MAX, 0.5 * 2 ** (self.reseeds_in_a_row - 1)))
        self.reseeds += 1
        self.reseeds_in_a_row += 1
        logger.error(
            "%s: DISCARDING this node's copy (version %d) and re-seeding: %s",
            self._copy.name,
            self._copy.db.version,
            why,
        )
        try:
            snapshot = await self._copy.host.fetch_snapshot(self._copy.name, at_least)
            self._copy.db = await self._copy.host.replace_copy(self._copy.name, snapshot)
        except Exception as exc:
            self.problem = f"re-seed failed: {exc}"
            raise
        if self._copy.db.version < at_least:  # the host's checks should make this impossible
            self.problem = (
                f"re-seeded at version {self._copy.db.version}, short of version {at_least}: {why}"
            )
            logger.error("%s: %s", self._copy.name, self.problem)
            return
        self.problem = None
        logger.warning("%s: re-seeded at version %d", self._copy.name, self._copy.db.version)
