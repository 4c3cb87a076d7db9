"""The archive's objects as bytes: sealed segments, snapshots, and each database's index.

Every object is framed the same way (integers big-endian)::

    magic "SHAR" | kind u8 | format u8 | sha256(stored body) [32] | stored body

and the stored body is zstd-compressed. The checksum is verified before anything
is decompressed, so a partial or flipped object is refused (CorruptObject, naming
its key) and never used. Inside, a segment is a run of consecutive records in
their logged bytes (each carries its own checksum too); a snapshot is a SQLite
database file; the index is JSON.

Keys, under a database's folder `databases/NAME/`::

    index                                    the index (the only object rewritten)
    segments/FIRST-LAST.seg                  records FIRST..LAST (20-digit versions)
    snapshots/VERSION.snap                   the database as of VERSION

Numbers are zero-padded so that key order is version order.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from enum import IntEnum

import zstandard

from shoal.errors import CorruptObject, CorruptRecord
from shoal.record import decode

__all__ = [
    "Index",
    "SegmentEntry",
    "SnapshotEntry",
    "database_prefix",
    "index_key",
    "open_segment",
    "pack",
    "seal_segment",
    "segment_key",
    "snapshot_key",
    "unpack",
]

MAGIC = b"SHAR"
FORMAT = 1
_FRAME = struct.Struct(">4sBB32s")
_LENGTH = struct.Struct(">I")
_SEGMENT_HEAD = struct.Struct(">QQI")
_MAX_OBJECT = 1 << 34  # what decompression may produce: bounds a hostile object


class Kind(IntEnum):
    SEGMENT = 1
    SNAPSHOT = 2
    INDEX = 3


DATABASES = "databases/"


def database_prefix(database: str) -> str:
    return f"{DATABASES}{database}/"


def index_key(database: str) -> str:
    return database_prefix(database) + "index"


def segment_key(database: str, first: int, last: int) -> str:
    return f"{database_prefix(database)}segments/{first:020d}-{last:020d}.seg"


def snapshot_key(database: str, version: int) -> str:
    return f"{database_prefix(database)}snapshots/{version:020d}.snap"


def pack(kind: Kind, body: bytes, level: int = 3) -> bytes:
    """Frames `body`: compressed, checksummed."""
    stored = zstandard.ZstdCompressor(level=level).compress(body)
    return _FRAME.pack(MAGIC, kind, FORMAT, hashlib.sha256(stored).digest()) + stored


def unpack(key: str, kind: Kind, data: bytes) -> bytes:
    """The body of a framed object; CorruptObject naming `key` if anything is off."""
    if len(data) < _FRAME.size:
        raise CorruptObject(f"object {key!r} is truncated ({len(data)} bytes)")
    magic, got_kind, got_format, digest = _FRAME.unpack_from(data)
    if magic != MAGIC or got_kind != kind or got_format != FORMAT:
        raise CorruptObject(f"object {key!r} is not a shoal {kind.name.lower()} object")
    stored = memoryview(data)[_FRAME.size :]
    if hashlib.sha256(stored).digest() != digest:
        raise CorruptObject(f"object {key!r} fails its checksum: damaged or partly written")
    try:
        return zstandard.ZstdDecompressor().decompress(stored, max_output_size=_MAX_OBJECT)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"object {key!r} does not decompress: {exc}") from None


@dataclass(frozen=True)
class SegmentEntry:
    first: int
    last: int
    first_time_ns: int
    last_time_ns: int
    key: str
    size: int


@dataclass(frozen=True)
class SnapshotEntry:
    version: int
    time_ns: int
    key: str
    size: int


def seal_segment(database: str, first: int, records: list[bytes]) -> tuple[bytes, SegmentEntry]:
    """The object for consecutive records starting at version `first`, and its entry."""
    if not records:
        raise ValueError("a segment holds at least one record")
    last = first + len(records) - 1
    body = bytearray(_SEGMENT_HEAD.pack(first, last, len(records)))
    for raw in records:
        body += _LENGTH.pack(len(raw)) + raw
    data = pack(Kind.SEGMENT, bytes(body))
    entry = SegmentEntry(
        first=first,
        last=last,
        first_time_ns=decode(records[0]).time_ns,
        last_time_ns=decode(records[-1]).time_ns,
        key=segment_key(database, first, last),
        size=len(data),
    )
    return data, entry


def open_segment(key: str, data: bytes) -> tuple[int, list[bytes]]:
    """The first version and the records of a segment object, checked."""
    body = unpack(key, Kind.SEGMENT, data)
    try:
        first, last, count = _SEGMENT_HEAD.unpack_from(body)
        at, records = _SEGMENT_HEAD.size, []
        for _ in range(count):
            (length,) = _LENGTH.unpack_from(body, at)
            records.append(body[at + _LENGTH.size : at + _LENGTH.size + length])
            at += _LENGTH.size + length
        if at != len(body) or last - first + 1 != count:
            raise CorruptObject(f"segment {key!r} has a malformed body")
        for version, raw in enumerate(records, start=first):
            if decode(raw).version != version:
                raise CorruptObject(f"segment {key!r} holds record {version} out of place")
    except (struct.error, CorruptRecord) as exc:
        raise CorruptObject(f"segment {key!r} is malformed: {exc}") from None
    return first, records


@dataclass
class Index:
    """What the archive holds for one database, so that nothing needs a listing."""

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
