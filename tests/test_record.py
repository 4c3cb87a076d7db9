"""The record format: round trips, compression, and every kind of damage refused."""

from __future__ import annotations

import pytest

from shoal.errors import CorruptRecord
from shoal.record import (
    COMPRESS_ABOVE,
    Changeset,
    Record,
    Sequence,
    Statement,
    Vacuum,
    decode,
    encode,
)

RECORD = Record(
    database="tenant-1",
    version=42,
    epoch=3,
    time_ns=1_790_000_000_123_456_789,
    ops=(
        Changeset(b"T\x02\x01\x00t\x00"),
        Statement("CREATE TABLE t(a)"),
        Sequence((("t", 7), ("u", 1))),
        Statement("PRAGMA user_version = 5"),
    ),
)


def test_round_trip() -> None:
    assert decode(encode(RECORD)) == RECORD


def test_barrier_round_trip() -> None:
    record = Record("db", 1, 1, 0, (Vacuum(),))
    assert decode(encode(record)).is_barrier


def test_large_records_are_compressed() -> None:
    big = Record("db", 1, 1, 0, (Changeset(b"abc" * COMPRESS_ABOVE),))
    data = encode(big)
    assert len(data) < COMPRESS_ABOVE
    assert decode(data) == big


def test_incompressible_records_are_stored_as_they_are() -> None:
    import os

    noise = Record("db", 1, 1, 0, (Changeset(os.urandom(3 * COMPRESS_ABOVE)),))
    assert decode(encode(noise)) == noise


@pytest.mark.parametrize("position", [4, 5, 12, 20, 40, -1])
def test_any_flipped_byte_is_caught(position: int) -> None:
    data = bytearray(encode(RECORD))
    data[position] ^= 0x01
    with pytest.raises(CorruptRecord):
        decode(bytes(data))


def test_flipped_byte_in_compressed_body_is_caught() -> None:
    data = bytearray(encode(Record("db", 1, 1, 0, (Changeset(b"xyz" * 5000),))))
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(CorruptRecord, match="checksum"):
        decode(bytes(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "shorter than its header"),
        (b"NOPE" + bytes(10), "not a shoal record"),
        (encode(RECORD)[:-3], "header says"),
        (encode(RECORD) + b"x", "header says"),
    ],
)
def test_malformed_bytes_are_named(data: bytes, message: str) -> None:
    with pytest.raises(CorruptRecord, match=message):
        decode(data)


def test_unknown_format_is_refused() -> None:
    data = bytearray(encode(RECORD))
    data[4] = 99
    with pytest.raises(CorruptRecord, match="format 99"):
        decode(bytes(data))
