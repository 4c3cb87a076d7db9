"""The record: one committed write transaction, as it is logged and shipped.

A record holds the ordered operations that replay the transaction on another
copy: changeset segments (row changes), SQL text (schema statements and the
pragmas that must travel), the rows of ``sqlite_sequence`` when they changed, and
the VACUUM barrier. ``docs/record-format.md`` describes the bytes; this module is
the only code that reads or writes them.

Layout (all integers big-endian)::

    magic "SHRC" | format u8 | flags u8 | crc32 u32 | length u32 | body[length]

``crc32`` covers format, flags, length and the stored body, so corruption is
caught before anything is decompressed or decoded. ``flags`` bit 0 means the body
is zstd-compressed (done when it is larger than ``COMPRESS_ABOVE`` bytes).
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

import zstandard

from shoal.errors import CorruptRecord

__all__ = [
    "COMPRESS_ABOVE",
    "FORMAT",
    "Changeset",
    "Op",
    "Record",
    "Sequence",
    "Statement",
    "Vacuum",
    "decode",
    "encode",
]

MAGIC = b"SHRC"
FORMAT = 1
COMPRESS_ABOVE = 4096
_FLAG_ZSTD = 0x01
_HEADER = struct.Struct(">4sBBII")
_BODY_HEAD = struct.Struct(">QQqH")
_OP_HEAD = struct.Struct(">BI")
_COUNT = struct.Struct(">I")
# Decompression is bounded so that a hostile record cannot exhaust memory.
_MAX_BODY = 1 << 31


class OpKind(IntEnum):
    CHANGESET = 1
    STATEMENT = 2
    SEQUENCE = 3
    VACUUM = 4


@dataclass(frozen=True)
class Changeset:
    """Row changes from SQLite's session extension, applied with Changeset.apply."""

    data: bytes


@dataclass(frozen=True)
class Statement:
    """SQL run as text on replay: a schema statement or a pragma that travels."""

    sql: str


@dataclass(frozen=True)
class Sequence:
    """The whole of ``sqlite_sequence`` after the transaction (name -> seq)."""

    rows: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class Vacuum:
    """A barrier: rowids may have moved, so followers re-seed from a snapshot."""


Op = Changeset | Statement | Sequence | Vacuum


@dataclass(frozen=True)
class Record:
    """One committed write transaction of one database."""

    database: str
    version: int
    epoch: int
    time_ns: int
    ops: tuple[Op, ...] = field(default_factory=tuple)

    @property
    def is_barrier(self) -> bool:
        return any(isinstance(op, Vacuum) for op in self.ops)


def _op_bytes(op: Op) -> tuple[OpKind, bytes]:
    if isinstance(op, Changeset):
        return OpKind.CHANGESET, op.data
    if isinstance(op, Statement):
        return OpKind.STATEMENT, op.sql.encode("utf-8", "surrogatepass")
    if isinstance(op, Sequence):
        return OpKind.SEQUENCE, json.dumps([list(row) for row in op.rows]).encode()
    return OpKind.VACUUM, b""


def encode(record: Record) -> bytes:
    """The record's bytes: checksummed, compressed when large."""
    name = record.database.encode()
    parts = [
        _BODY_HEAD.pack(record.version, record.epoch, record.time_ns, len(name)),
        name,
        _COUNT.pack(len(record.ops)),
    ]
    for op in record.ops:
        kind, payload = _op_bytes(op)
        parts.append(_OP_HEAD.pack(kind, len(payload)))
        parts.append(payload)
    body = b"".join(parts)
    flags = 0
    if len(body) > COMPRESS_ABOVE:
        compressed = zstandard.ZstdCompressor(level=3).compress(body)
        if len(compressed) < len(body):
            body, flags = compressed, _FLAG_ZSTD
    crc = zlib.crc32(body, zlib.crc32(bytes((FORMAT, flags)) + len(body).to_bytes(4, "big")))
    return _HEADER.pack(MAGIC, FORMAT, flags, crc, len(body)) + body


def decode(data: bytes) -> Record:
    """The record in ``data``; raises CorruptRecord for anything malformed."""
    view = memoryview(data)
    if len(view) < _HEADER.size:
        raise CorruptRecord(f"record is {len(view)} bytes, shorter than its header")
    magic, fmt, flags, crc, length = _HEADER.unpack_from(view)
    if magic != MAGIC:
        raise CorruptRecord(f"not a shoal record (magic {bytes(magic)!r})")
    if fmt != FORMAT:
        raise CorruptRecord(f"record format {fmt} is not supported (this build reads {FORMAT})")
    body = view[_HEADER.size :]
    if len(body) != length:
        raise CorruptRecord(f"record body is {len(body)} bytes, header says {length}")
    expected = zlib.crc32(body, zlib.crc32(bytes((fmt, flags)) + length.to_bytes(4, "big")))
    if expected != crc:
        raise CorruptRecord(f"record checksum mismatch (stored {crc:08x}, computed {expected:08x})")
    if flags & ~_FLAG_ZSTD:
        raise CorruptRecord(f"record has unknown flags {flags:#x}")
    raw: bytes | memoryview = body
    if flags & _FLAG_ZSTD:
        try:
            raw = zstandard.ZstdDecompressor().decompress(bytes(body), max_output_size=_MAX_BODY)
        except zstandard.ZstdError as exc:
            raise CorruptRecord(f"record body does not decompress: {exc}") from None
    try:
        return _decode_body(memoryview(raw))
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise CorruptRecord(f"record body is malformed: {exc}") from None


def _decode_body(body: memoryview) -> Record:
    version, epoch, time_ns, name_len = _BODY_HEAD.unpack_from(body)
    at = _BODY_HEAD.size
    name = bytes(body[at : at + name_len]).decode()
    at += name_len
    (count,) = _COUNT.unpack_from(body, at)
    at += _COUNT.size
    ops: list[Op] = []
    for _ in range(count):
        kind, size = _OP_HEAD.unpack_from(body, at)
        at += _OP_HEAD.size
        payload = bytes(body[at : at + size])
        if len(payload) != size:
            raise ValueError("operation runs past the end of the record")
        at += size
        ops.append(_decode_op(kind, payload))
    if at != len(body):
        raise ValueError(f"{len(body) - at} stray bytes after the operations")
    return Record(name, version, epoch, time_ns, tuple(ops))


def _decode_op(kind: int, payload: bytes) -> Op:
    if kind == OpKind.CHANGESET:
        return Changeset(payload)
    if kind == OpKind.STATEMENT:
        return Statement(payload.decode("utf-8", "surrogatepass"))
    if kind == OpKind.SEQUENCE:
        rows = json.loads(payload)
        return Sequence(tuple((str(name), int(seq)) for name, seq in rows))
    if kind == OpKind.VACUUM:
        return Vacuum()
    raise ValueError(f"unknown operation kind {kind}")
