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
    dropped                                  a tombstone: the database was dropped
    segments/FIRST-LAST-T1-T2.seg            records FIRST..LAST, committed T1..T2
    snapshots/VERSION.snap                   the database as of VERSION

Numbers are zero-padded (versions to 20 digits, nanosecond times to 19) so that
key order is version order, and a segment's key says all its entry does but its
size: segments the index does not name yet are found by one listing
(catalog.py).

Snapshots can be far larger than memory, so they are framed file to file, in
chunks (`pack_file`, `unpack_file`); segments and the index are small and are
framed in memory.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import zstandard

from shoal.errors import CorruptObject, CorruptRecord
from shoal.record import decode

__all__ = [
    "FORMAT",
    "Kind",
    "SegmentEntry",
    "SnapshotEntry",
    "database_prefix",
    "index_key",
    "open_segment",
    "pack",
    "pack_file",
    "parse_segment_key",
    "seal_segment",
    "segment_key",
    "segments_prefix",
    "snapshot_key",
    "tombstone_key",
    "unpack",
    "unpack_file",
]

MAGIC = b"SHAR"
FORMAT = 1
_FRAME = struct.Struct(">4sBB32s")
_LENGTH = struct.Struct(">I")
_SEGMENT_HEAD = struct.Struct(">QQI")
_MAX_OBJECT = 1 << 44  # what decompression may produce: bounds a hostile object
_MAX_IN_MEMORY = 1 << 30  # ... and what an object framed in memory may produce
_CHUNK = 1 << 20


class Kind(IntEnum):
    SEGMENT = 1
    SNAPSHOT = 2
    INDEX = 3
    TOMBSTONE = 4


DATABASES = "databases/"


def database_prefix(database: str) -> str:
    return f"{DATABASES}{database}/"


def index_key(database: str) -> str:
    return database_prefix(database) + "index"


def tombstone_key(database: str) -> str:
    return database_prefix(database) + "dropped"


def segments_prefix(database: str) -> str:
    return database_prefix(database) + "segments/"


def segment_key(database: str, first: int, last: int, first_time_ns: int, last_time_ns: int) -> str:
    return (
        f"{segments_prefix(database)}"
        f"{first:020d}-{last:020d}-{first_time_ns:019d}-{last_time_ns:019d}.seg"
    )


_SEGMENT_NAME = re.compile(r"(\d{20})-(\d{20})-(\d{19})-(\d{19})\.seg")


def snapshot_key(database: str, version: int) -> str:
    return f"{database_prefix(database)}snapshots/{version:020d}.snap"


def pack(kind: Kind, body: bytes, level: int = 3) -> bytes:
    """Frames `body`: compressed, checksummed."""
    stored = zstandard.ZstdCompressor(level=level).compress(body)
    return _FRAME.pack(MAGIC, kind, FORMAT, hashlib.sha256(stored).digest()) + stored


def unpack(key: str, kind: Kind, data: bytes) -> bytes:
    """The body of a framed object; CorruptObject naming `key` if anything is off."""
    digest = _check_header(key, kind, data[: _FRAME.size])
    stored = memoryview(data)[_FRAME.size :]
    if hashlib.sha256(stored).digest() != digest:
        raise _damaged(key)
    try:
        return zstandard.ZstdDecompressor().decompress(stored, max_output_size=_MAX_IN_MEMORY)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"object {key!r} does not decompress: {exc}") from None


def pack_file(kind: Kind, source: Path, dest: Path, level: int = 3) -> int:
    """`pack` from file to file in bounded memory; returns the object's size. The
    body is hashed as it is compressed, and the header written last."""
    digest = hashlib.sha256()
    with open(source, "rb") as body, open(dest, "wb") as out:
        out.write(bytes(_FRAME.size))
        for piece in zstandard.ZstdCompressor(level=level).read_to_iter(body, read_size=_CHUNK):
            digest.update(piece)
            out.write(piece)
        out.seek(0)
        out.write(_FRAME.pack(MAGIC, kind, FORMAT, digest.digest()))
    return dest.stat().st_size


def unpack_file(key: str, kind: Kind, source: Path, dest: Path) -> None:
    """`unpack` from file to file in bounded memory: the whole object is checked
    before a byte is decompressed into `dest`."""
    with open(source, "rb") as stored:
        expected = _check_header(key, kind, stored.read(_FRAME.size))
        digest = hashlib.sha256()
        while chunk := stored.read(_CHUNK):
            digest.update(chunk)
        if digest.digest() != expected:
            raise _damaged(key)
        stored.seek(_FRAME.size)
        written = 0
        with open(dest, "wb") as out:
            try:
                for piece in zstandard.ZstdDecompressor().read_to_iter(stored, read_size=_CHUNK):
                    written += len(piece)
                    if written > _MAX_OBJECT:  # a hostile object's bomb
                        raise CorruptObject(f"object {key!r} decompresses to over 16 TiB")
                    out.write(piece)
            except zstandard.ZstdError as exc:
                raise CorruptObject(f"object {key!r} does not decompress: {exc}") from None


def _check_header(key: str, kind: Kind, header: bytes) -> bytes:
    """The checksum a framed object's header promises for its body."""
    if len(header) < _FRAME.size:
        raise CorruptObject(f"object {key!r} is truncated ({len(header)} bytes)")
    magic, got_kind, got_format, digest = _FRAME.unpack(header)
    if magic != MAGIC or got_kind != kind or got_format != FORMAT:
        raise CorruptObject(f"object {key!r} is not a shoal {kind.name.lower()} object")
    return bytes(digest)


def _damaged(key: str) -> CorruptObject:
    return CorruptObject(f"object {key!r} fails its checksum: damaged or partly written")


@dataclass(frozen=True)
class SegmentEntry:
    first: int
    last: int
    first_time_ns: int
    last_time_ns: int
    key: str
    size: int
    level: int = 0  # 0: sealed by a round; 1: merged from level 0 by compaction


@dataclass(frozen=True)
class SnapshotEntry:
    version: int
    time_ns: int
    key: str
    size: int


def seal_segment(
    database: str, first: int, records: list[bytes], level: int = 0
) -> tuple[bytes, SegmentEntry]:
    """The object for consecutive records starting at version `first`, and its entry."""
    if not records:
        raise ValueError("a segment holds at least one record")
    last = first + len(records) - 1
    body = bytearray(_SEGMENT_HEAD.pack(first, last, len(records)))
    for raw in records:
        body += _LENGTH.pack(len(raw)) + raw
    data = pack(Kind.SEGMENT, bytes(body))
    first_time_ns, last_time_ns = decode(records[0]).time_ns, decode(records[-1]).time_ns
    key = segment_key(database, first, last, first_time_ns, last_time_ns)
    return data, SegmentEntry(first, last, first_time_ns, last_time_ns, key, len(data), level)


def parse_segment_key(key: str, size: int) -> SegmentEntry | None:
    """The entry of a level-0 segment found by listing (None: not a segment's key)."""
    match = _SEGMENT_NAME.fullmatch(key.rpartition("/")[2])
    if match is None:
        return None
    first, last, first_time_ns, last_time_ns = (int(group) for group in match.groups())
    if not 0 < first <= last:
        return None
    return SegmentEntry(first, last, first_time_ns, last_time_ns, key, size)


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
