"""Continuous archiving on a node: every open database it leads, a round each second.

Rounds run on a thread of their own (uploads wait on the network, and must not
hold up requests), with backoff after failures (archive/rounds.py); a database's
lag shows in `/metrics`. A database closed for being
idle gets one last round first, so its newest writes do not wait for it to be
opened again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from shoal.archive.archiver import ArchivePolicy, Archiver
from shoal.archive.base import BlobStore
from shoal.archive.catalog import (
    Tombstone,
    archived_databases,
    put_tombstone,
    read_index,
    read_tombstone,
)
from shoal.archive.restore import iso_time, plan_restore, restore
from shoal.archive.rounds import ArchiveRounds
from shoal.archive.stores import open_store
from shoal.engine import Database
from shoal.node.config import Settings
from shoal.node.eviction import marker_of

__all__ = ["ArchiveService", "archive_service", "restore_missing"]

logger = logging.getLogger("shoal.archive")


@dataclass(frozen=True)
class ArchiveStatus:
    """How far one database's archive is behind, as status and metrics show it."""

    lag: int  # versions committed and not yet archived
    failures: int  # rounds failed in a row
    last_error: str | None
    uploads: int  # objects uploaded since the node started
    snapshot_version: int | None = None  # the newest snapshot in the archive
    snapshot_time_ns: int | None = None  # ... of the database as committed when


class ArchiveService:
    """Runs the archiver of every database registered with it."""

    def __init__(self, store: BlobStore, policy: ArchivePolicy, url: str) -> None:
        self.store = store
        self.policy = policy
        self.url = url
        self.states: dict[str, ArchiveRounds] = {}
        # The version archived when each database was last closed here: opened again
        # and closed unchanged (a read), it costs the archive nothing.
        self._archived_at_close: dict[str, int] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="shoal-archive")
        self._lock = asyncio.Lock()  # one round at a time, whoever asks

    def status(self) -> dict[str, ArchiveStatus]:
        """Each archived database's status, by name."""
        found = {}
        for name, state in sorted(self.states.items()):
            snapshot = state.archiver.last_snapshot
            found[name] = ArchiveStatus(
                state.archiver.lag,
                state.failures,
                state.last_error,
                state.archiver.uploads,
                snapshot.version if snapshot else None,
                snapshot.time_ns if snapshot else None,
            )
        return found

    def track(self, db: Database) -> None:
        """Starts archiving `db` (a database this node leads, just opened)."""
        if db.name not in self.states:
            archiver = Archiver(db, self.store, self.policy)
            archived = self._archived_at_close.get(db.name)
            self.states[db.name] = ArchiveRounds(archiver, archived)

    async def forget(self, name: str) -> None:
        """One last round for `name` if anything was committed since its last good
        one, then stops archiving it (it is being closed)."""
        state = self.states.get(name)
        if state is None:
            return
        if not state.quiet():
            await self._round(name, state, force=True)
        if state.archived_version is not None:
            self._archived_at_close[name] = state.archived_version
        if self.states.get(name) is state:  # not let go of meanwhile (led elsewhere)
            del self.states[name]

    async def mark_dropped(self, name: str, version: int) -> None:
        """Leaves a tombstone for `name`, dropped at `version`: its archive stays, for
        a restore on purpose, but `--restore-missing` passes it over."""
        self._archived_at_close.pop(name, None)  # a database of this name again is new
        tombstone = Tombstone(name, time.time_ns(), version)
        await asyncio.get_running_loop().run_in_executor(
            self._thread, put_tombstone, self.store, tombstone
        )

    async def run_round(self) -> None:
        """A round for every tracked database whose backoff has passed."""
        for name, state in list(self.states.items()):
            await self._round(name, state, force=False)

    async def _round(self, name: str, state: ArchiveRounds, *, force: bool) -> None:
        if not force and not state.due():
            return
        async with self._lock:
            run = functools.partial(state.run, final=force)
            await asyncio.get_running_loop().run_in_executor(self._thread, run)

    async def loop(self) -> None:
        """Rounds forever, `segment_seconds` apart (cancelled when the node stops)."""
        while True:
            await asyncio.sleep(self.policy.segment_seconds)
            await self.run_round()

    async def close(self) -> None:
        """A last round for everything, then lets go of the store."""
        for name in list(self.states):
            await self.forget(name)
        self._thread.shutdown()
        self.store.close()


def archive_service(settings: Settings) -> ArchiveService | None:
    """The node's archiving, from its settings (None when `archive` is 'off')."""
    if settings.archive.lower() == "off":
        return None
    policy = ArchivePolicy(
        segment_seconds=settings.archive_seconds,
        segment_bytes=settings.archive_segment_bytes,
        index_seconds=settings.archive_index_seconds,
        compact_seconds=settings.archive_compact_seconds,
        snapshot_seconds=settings.snapshot_seconds,
        snapshot_log_bytes=settings.snapshot_log_bytes,
        retention_seconds=settings.retention_seconds,
    )
    url = settings.archive or str(settings.data_dir / "archive")
    return ArchiveService(open_store(url), policy, url)


def restore_missing(store: BlobStore, directory: Path) -> list[str]:
    """Restores every database the archive holds and `directory` lacks, except the
    dropped ones and those evicted on purpose (restored on their first request);
    their names. (It lists the store: this runs once, at start.)"""
    restored = []
    for name in archived_databases(store):
        target = directory / f"{name}.db"
        if target.exists() or marker_of(target) is not None:
            continue
        if (tombstone := read_tombstone(store, name)) is not None:
            logger.info(
                "%s: dropped at %s; not restored (shoal restore brings it back on purpose)",
                name,
                iso_time(tombstone.time_ns),
            )
            continue
        restore(store, plan_restore(read_index(store, name)), target)
        restored.append(name)
    return restored
