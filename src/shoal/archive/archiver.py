"""The archiver: a database's log, sealed into segments, and snapshots, in a blob store.

One `step()` does a round of work and is safe to repeat after any failure:

1. seal the records not yet archived into level-0 segments (at most
   `segment_bytes` each) and upload them;
2. take and upload a snapshot when one is due (none yet and the log no longer
   starts at version 1; `snapshot_seconds` since the last; `snapshot_log_bytes` of
   log since; or a VACUUM barrier, which replay cannot cross), streamed from a
   file, so a snapshot may be far larger than memory;
3. every `compact_seconds`, merge the level-0 segments into level-1 segments of
   up to `segment_bytes`, so that a week of one-second segments is hundreds of
   objects, not hundreds of thousands (for the index, the bill and restores);
4. apply retention to the index;
5. write the index (compare-and-set on its tag) when a snapshot was taken, or
   `index_seconds` after the last write, or on the last round; then delete what
   it no longer names and truncate the local log below what it holds.

Objects are uploaded before the index names them, so an index never points at a
missing object; segments not yet named are found by listing after the newest
the index names (catalog.py). A crash leaves at worst unnamed objects. If the
store is unreachable, `step()` raises StoreUnavailable and nothing local changes:
the records stay in the local log until a later round archives them, so an
outage leaves no gap.

Concurrency rules: one Archiver per database, and only on the node that leads it;
the index's compare-and-set makes a second writer fail instead of losing entries.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shoal.archive.base import BlobStore
from shoal.archive.catalog import Index, erase_dropped, fetch_index, read_tombstone
from shoal.archive.objects import (
    Kind,
    SegmentEntry,
    SnapshotEntry,
    index_key,
    open_segment,
    pack_file,
    seal_segment,
    snapshot_key,
)
from shoal.engine import Database
from shoal.errors import PreconditionFailed
from shoal.record import Vacuum, decode

__all__ = ["ArchivePolicy", "Archiver"]

MiB = 1024 * 1024
READ_BATCH = 10_000  # records read from the local log at a time


@dataclass(frozen=True)
class ArchivePolicy:
    segment_seconds: float = 1.0  # how often a round runs, so at most this much is unsealed
    segment_bytes: int = 16 * MiB  # a segment holds at most about this many record bytes
    index_seconds: float = 60.0  # the index is rewritten at least this often while writes go on
    compact_seconds: float = 600.0  # level-0 segments are merged when the oldest is this old
    snapshot_seconds: float = 3600.0
    snapshot_log_bytes: int = 256 * MiB
    retention_seconds: float = 7 * 24 * 3600.0


class Archiver:
    """Keeps one database's archive up to date, a round at a time."""

    def __init__(
        self,
        db: Database,
        store: BlobStore,
        policy: ArchivePolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.store = store
        self.policy = policy or ArchivePolicy()
        self.clock = clock
        self._index: Index | None = None
        self._index_tag: str | None = None
        self._written: bytes | None = None  # the index as last written
        self._written_at = 0.0  # ... when (by `clock`)
        self._stored_head = 0  # the newest version the stored index names
        self._attempted: bytes | None = None  # ... or tried, when the answer was lost
        self._garbage: list[str] = []  # objects to delete once the stored index drops them
        self._log_bytes_since_snapshot = 0
        self.uploads = 0  # objects written, for the S3 bill and metrics

    # -- state ---------------------------------------------------------------

    def index(self) -> Index:
        """The index (with the segments it does not name yet), read from the store
        once, then kept up to date here. A dropped database's archive under this
        name (a tombstone) is erased first: the database is live again, and its
        history must not mix with the dropped one's."""
        if self._index is None:
            if read_tombstone(self.store, self.db.name) is not None:
                erase_dropped(self.store, self.db.name)  # the name is in use again
            self._index, self._index_tag = fetch_index(self.store, self.db.name)
            if self._index_tag is not None:
                self._stored_head = self._index.head
        return self._index

    @property
    def lag(self) -> int:
        """Versions committed locally and not yet in the archive (never asks the store:
        before the first round it counts everything)."""
        archived = self._index.head if self._index is not None else 0
        return max(0, self.db.version - archived)

    @property
    def last_snapshot(self) -> SnapshotEntry | None:
        """The newest snapshot in the archive, as this archiver knows it (None before
        its first round, or when there is none)."""
        if self._index is None or not self._index.snapshots:
            return None
        return self._index.snapshots[-1]

    # -- one round -------------------------------------------------------------

    def step(self, *, final: bool = False) -> int:
        """One round (see the module's docstring); returns how many records it
        archived. `final` writes the index whatever its schedule (a last round)."""
        index = self.index()
        archived, barrier, gap = 0, False, False
        while True:  # in batches: after a long outage the backlog may be large
            start = index.head + 1
            records = self.db.log_range(start, start + READ_BATCH - 1)
            if not records:
                break
            if decode(records[0]).version != start:
                gap = True  # the local log lost records the archive lacks
                break
            count, saw_barrier = self._upload_segments(index, records)
            archived, barrier = archived + count, barrier or saw_barrier
            if len(records) < READ_BATCH:
                break
        snapshot = self._snapshot_due(index, gap, barrier)
        if snapshot:
            self._upload_snapshot(index)
        self._compact(index)
        self._apply_retention(index)
        overdue = self.clock() - self._written_at >= self.policy.index_seconds
        if (snapshot or final or overdue or self._index_tag is None) and self._put_index(index):
            garbage, self._garbage = self._garbage, []
            self.store.delete(*garbage)
            level0 = [s.first for s in index.segments if s.level == 0]
            self.db.truncate_log(below=min([self._stored_head, *level0]))
        return archived

    def _upload_segments(self, index: Index, records: list[bytes]) -> tuple[int, bool]:
        barrier = False
        first = index.head + 1
        for batch in _batches(records, self.policy.segment_bytes):
            data, entry = seal_segment(self.db.name, first, batch)
            self.store.put(entry.key, data)
            self.uploads += 1
            index.segments.append(entry)
            self._log_bytes_since_snapshot += sum(len(r) for r in batch)
            barrier = barrier or any(
                isinstance(op, Vacuum) for raw in batch for op in decode(raw).ops
            )
            first += len(batch)
        return len(records), barrier

    def _snapshot_due(self, index: Index, gap: bool, barrier: bool) -> bool:
        if gap or barrier:
            return True  # replay could not cross these: start afresh from a snapshot
        if not index.snapshots:
            if not self.db.began_empty:
                return True  # its log does not explain all of it: a snapshot is the base
            if not index.segments:
                return False
            if index.segments[0].first != 1:
                return True  # replay from an empty database needs every record from 1
            since_ns = index.segments[0].first_time_ns
        else:
            if index.snapshots[-1].version == self.db.version:
                return False
            since_ns = index.snapshots[-1].time_ns
        age = self.clock() - since_ns / 1e9
        return (
            age >= self.policy.snapshot_seconds
            or self._log_bytes_since_snapshot >= self.policy.snapshot_log_bytes
        )

    def _upload_snapshot(self, index: Index) -> None:
        with tempfile.TemporaryDirectory(prefix="shoal-snapshot-", dir=self.db.path.parent) as tmp:
            copy, packed = Path(tmp) / "snapshot.db", Path(tmp) / "snapshot.shar"
            version = self.db.snapshot(copy)
            size = pack_file(Kind.SNAPSHOT, copy, packed)
            copy.unlink()  # the disk holds one copy at a time
            key = snapshot_key(self.db.name, version)
            self.store.put_file(key, packed)
        self.uploads += 1
        index.snapshots.append(SnapshotEntry(version, self._commit_time(version), key, size))
        index.snapshots.sort(key=lambda s: s.version)
        self._log_bytes_since_snapshot = 0

    def _compact(self, index: Index) -> None:
        """Merges the level-0 segments into level-1 ones once the oldest is
        `compact_seconds` old; the old objects go when the index no longer names them."""
        level0 = [s for s in index.segments if s.level == 0]
        cutoff_ns = (self.clock() - self.policy.compact_seconds) * 1e9
        if not level0 or level0[0].first_time_ns > cutoff_ns:
            return
        merged: list[SegmentEntry] = []
        run: list[SegmentEntry] = []
        records: list[bytes] = []
        merged_up_to = max((s.last for s in index.segments if s.level), default=0)
        first, size = max(level0[0].first, merged_up_to + 1), 0
        for entry, after in zip(level0, [*level0[1:], None], strict=True):
            # Segments found by listing may overlap (a round retried after a lost
            # answer sealed some records again): take each version once.
            if entry.last >= first + len(records):
                run.append(entry)
                chunk = self._records_of(entry)[first + len(records) - entry.first :]
                records += chunk
                size += sum(len(r) for r in chunk)
            gap = after is not None and after.first > first + len(records)
            if records and (after is None or gap or size >= self.policy.segment_bytes):
                merged.append(self._merge(run, first, records))
                first += len(records)
                run, records, size = [], [], 0
            if gap and after is not None:
                first = after.first
        kept = [s for s in index.segments if s.level != 0]
        index.segments = sorted(kept + merged, key=lambda s: s.first)
        # Only now that the index names the merged segments instead: a round that
        # fails half-way must not delete objects the index still needs.
        named = {s.key for s in merged}  # a segment kept as it was keeps its key
        self._garbage += [s.key for s in level0 if s.key not in named]

    def _records_of(self, entry: SegmentEntry) -> list[bytes]:
        """A segment's records: from the local log, which keeps them until compaction,
        or from the archive (a database restored or taken over from another node)."""
        records = self.db.log_range(entry.first, entry.last)
        if len(records) == entry.last - entry.first + 1:
            return records
        return open_segment(entry.key, self.store.get(entry.key)[0])[1]

    def _merge(self, run: list[SegmentEntry], first: int, records: list[bytes]) -> SegmentEntry:
        if len(run) == 1 and run[0].first == first:
            return dataclasses.replace(run[0], level=1)  # big enough as it is
        data, entry = seal_segment(self.db.name, first, records, level=1)
        self.store.put(entry.key, data)
        self.uploads += 1
        return entry

    def _commit_time(self, version: int) -> int:
        """When `version` was committed (now, if its record is no longer at hand)."""
        records = self.db.records(version, version) if version else []
        return records[0].time_ns if records else int(self.clock() * 1e9)

    def _put_index(self, index: Index) -> bool:
        """Writes the index if it changed; compare-and-set against a second writer."""
        data = index.to_bytes()
        key = index_key(self.db.name)
        if data == self._written:
            return False
        for _ in range(2):
            try:
                if self._index_tag is None:
                    self._index_tag = self.store.put(key, data, if_none_match=True)
                else:
                    self._index_tag = self.store.put(key, data, if_match=self._index_tag)
                break
            except PreconditionFailed:
                # A write whose answer was lost (a timeout) may have landed: if the
                # store holds what this archiver last tried to write, that write is
                # ours; take its tag and go on. Anything else is another writer.
                stored, tag = self.store.get(key)
                if stored not in (data, self._attempted):
                    raise
                self._index_tag = tag
                if stored == data:
                    break
            finally:
                self._attempted = data
        self._written, self._written_at = data, self.clock()
        self._stored_head = index.head
        self.uploads += 1
        return True

    def _apply_retention(self, index: Index) -> None:
        """Drops from the index snapshots older than the window (never the newest),
        and segments older than the window that only lead up to the oldest
        snapshot kept; their objects go once the stored index no longer names them."""
        if not index.snapshots:
            return
        cutoff_ns = int((self.clock() - self.policy.retention_seconds) * 1e9)
        kept = [s for s in index.snapshots[:-1] if s.time_ns >= cutoff_ns]
        kept.append(index.snapshots[-1])
        oldest = kept[0].version
        dropped_segments = [
            s for s in index.segments if s.last <= oldest and s.last_time_ns < cutoff_ns
        ]
        self._garbage += [s.key for s in index.snapshots if s not in kept]
        self._garbage += [s.key for s in dropped_segments]
        index.snapshots = kept
        index.segments = [s for s in index.segments if s not in dropped_segments]


def _batches(records: list[bytes], limit: int) -> list[list[bytes]]:
    """Consecutive runs of records of at most `limit` bytes (at least one record each)."""
    batches: list[list[bytes]] = [[]]
    size = 0
    for raw in records:
        if batches[-1] and size + len(raw) > limit:
            batches.append([])
            size = 0
        batches[-1].append(raw)
        size += len(raw)
    return batches
