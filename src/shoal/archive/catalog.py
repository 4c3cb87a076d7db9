"""What the archive holds for one database: its index, and the segments written since.

The index object names every snapshot and segment, so that neither archiving
nor restoring lists the bucket. Rewriting it after every segment would double
the requests a steady workload makes (and its bytes grow with retention), so the
archiver writes it only every `index_seconds` and after snapshots, compaction and
retention. Segments uploaded in between are still in the archive: their keys
carry everything their entries hold but the size, and `read_index` finds them
with one listing that starts after the newest segment the index names.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from shoal.archive.base import BlobStore
from shoal.archive.objects import (
    DATABASES,
    FORMAT,
    Kind,
    SegmentEntry,
    SnapshotEntry,
    database_prefix,
    index_key,
    pack,
    parse_segment_key,
    segments_prefix,
    tombstone_key,
    unpack,
)
from shoal.errors import BlobNotFound, CorruptObject, NotArchived

__all__ = [
    "Index",
    "Tombstone",
    "archived_databases",
    "erase_dropped",
    "fetch_index",
    "put_tombstone",
    "read_index",
    "read_tombstone",
]


@dataclass
class Index:
    """Snapshots and segments in version order; segments form a chain from the first."""

    database: str
    snapshots: list[SnapshotEntry] = field(default_factory=list)
    segments: list[SegmentEntry] = field(default_factory=list)

    @property
    def head(self) -> int:
        """The newest version archived (0 when nothing is)."""
        newest = [s.last for s in self.segments] + [s.version for s in self.snapshots]
        return max(newest, default=0)

    def to_bytes(self) -> bytes:
        document = {"format": FORMAT, **asdict(self)}
        return pack(Kind.INDEX, json.dumps(document, separators=(",", ":")).encode())

    @classmethod
    def from_bytes(cls, key: str, data: bytes) -> Index:
        try:
            document = json.loads(unpack(key, Kind.INDEX, data))
            return cls(
                database=document["database"],
                snapshots=[SnapshotEntry(**s) for s in document["snapshots"]],
                segments=[SegmentEntry(**s) for s in document["segments"]],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptObject(f"index {key!r} is malformed: {exc}") from None

    def extend(self, found: list[SegmentEntry]) -> None:
        """Adds the segments of `found` (in key order) that carry the chain on; one
        that repeats versions already held (a round retried after a lost answer)
        or leaves a gap is passed over."""
        for entry in found:
            if entry.first <= self.head + 1 < entry.last + 1:
                self.segments.append(entry)


def fetch_index(store: BlobStore, database: str) -> tuple[Index, str | None]:
    """The index with the segments uploaded since it was written, and the stored
    index's tag (None, and an Index of just those segments, when there is none)."""
    key = index_key(database)
    try:
        data, tag = store.get(key)
        index: Index = Index.from_bytes(key, data)
    except BlobNotFound:
        index, tag = Index(database), None
    newest = max(index.segments, key=lambda s: s.first, default=None)
    listed = store.list(segments_prefix(database), start_after=newest.key if newest else None)
    index.extend([e for info in listed if (e := parse_segment_key(info.key, info.size))])
    return index, tag


def read_index(store: BlobStore, database: str) -> Index:
    """What the archive holds for `database`; NotArchived if it holds nothing."""
    index, tag = fetch_index(store, database)
    if tag is None and not index.segments:
        raise NotArchived(database)
    return index


def archived_databases(store: BlobStore) -> list[str]:
    """The names of the databases the archive holds, dropped ones included (this
    lists the whole archive: for rare work, such as a start or an error)."""
    names = set()
    for info in store.list(DATABASES):
        name, _, rest = info.key[len(DATABASES) :].partition("/")
        if rest == "index" or rest.startswith("segments/"):
            names.add(name)
    return sorted(names)


@dataclass(frozen=True)
class Tombstone:
    """`database` was dropped at `time_ns`, at `version`: its archive stays (for a
    restore on purpose) but nothing restores it on its own."""

    database: str
    time_ns: int
    version: int


def put_tombstone(store: BlobStore, tombstone: Tombstone) -> None:
    body = json.dumps({"format": FORMAT, **asdict(tombstone)}).encode()
    store.put(tombstone_key(tombstone.database), pack(Kind.TOMBSTONE, body))


def read_tombstone(store: BlobStore, database: str) -> Tombstone | None:
    """The tombstone of `database`, if it was dropped."""
    key = tombstone_key(database)
    try:
        data, _ = store.get(key)
    except BlobNotFound:
        return None
    try:
        document = json.loads(unpack(key, Kind.TOMBSTONE, data))
        return Tombstone(document["database"], int(document["time_ns"]), int(document["version"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptObject(f"tombstone {key!r} is malformed: {exc}") from None


def erase_dropped(store: BlobStore, database: str) -> int:
    """Deletes the archive of a dropped `database` (its name is in use again, and a
    new history must not mix with the old); how many objects went. The tombstone
    goes last, so an erase cut short is taken up again by the next."""
    keys = [info.key for info in store.list(database_prefix(database))]
    stone = tombstone_key(database)
    store.delete(*[key for key in keys if key != stone])
    store.delete(stone)
    return len(keys)
