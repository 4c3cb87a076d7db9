"""The log stream's frames: records as they commit, heartbeats, and an end.

`GET /v1/databases/{name}/log?after=V` answers with a body of frames, each
`kind u8 | length u32 (big-endian) | payload` (docs/record-format.md, "The log
stream"). The server writes them with `frame`; a client feeds what it receives,
in chunks of any size, to a `FrameReader`.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from shoal.errors import CorruptRecord

__all__ = ["MAX_FRAME", "MEDIA_TYPE", "Frame", "FrameKind", "FrameReader", "frame", "json_frame"]

MEDIA_TYPE = "application/vnd.shoal.log"
MAX_FRAME = 1 << 31  # a record's own bound (record.py decompresses at most 2 GiB)
_HEADER = struct.Struct(">BI")


class FrameKind(IntEnum):
    RECORD = 1  # payload: one encoded record, the next version
    HEARTBEAT = 2  # payload: JSON {"version": N}, this copy's version while idle
    END = 3  # payload: JSON {"error": {...}}, why the stream ends; nothing follows


_KINDS = frozenset(FrameKind)


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    payload: bytes

    def json(self) -> Any:
        """The payload of a heartbeat or an end, decoded."""
        return json.loads(self.payload)


def frame(kind: FrameKind, payload: bytes) -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


def json_frame(kind: FrameKind, body: Any) -> bytes:
    return frame(kind, json.dumps(body, separators=(",", ":")).encode())


class FrameReader:
    """Splits a stream's bytes into frames, whatever the chunking of the transport."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Frame]:
        """The frames completed by `data`; CorruptRecord for a frame that cannot be."""
        self._buffer += data
        while len(self._buffer) >= _HEADER.size:
            kind, length = _HEADER.unpack_from(self._buffer)
            if kind not in _KINDS or length > MAX_FRAME:
                raise CorruptRecord(f"the log stream sent a malformed frame (kind {kind})")
            end = _HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[_HEADER.size : end])
            del self._buffer[:end]
            yield Frame(FrameKind(kind), payload)

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet (a cut-off stream leaves some)."""
        return len(self._buffer)
