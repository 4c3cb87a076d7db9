"""The log stream's frames: split right whatever the chunking; nonsense refused."""

from __future__ import annotations

import pytest

from shoal.errors import CorruptRecord
from shoal.stream import FrameKind, FrameReader, frame, json_frame

STREAM = (
    frame(FrameKind.RECORD, b"SHRC first")
    + json_frame(FrameKind.HEARTBEAT, {"version": 7})
    + frame(FrameKind.RECORD, b"")
    + json_frame(FrameKind.END, {"error": {"type": "Unavailable"}})
)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, len(STREAM)])
def test_frames_come_out_whole_from_chunks_of_any_size(size: int) -> None:
    reader = FrameReader()
    frames = [f for at in range(0, len(STREAM), size) for f in reader.feed(STREAM[at : at + size])]
    assert [f.kind for f in frames] == [
        FrameKind.RECORD,
        FrameKind.HEARTBEAT,
        FrameKind.RECORD,
        FrameKind.END,
    ]
    assert frames[0].payload == b"SHRC first" and frames[2].payload == b""
    assert frames[1].json() == {"version": 7}
    assert reader.pending == 0


def test_a_cut_off_frame_stays_pending() -> None:
    reader = FrameReader()
    assert list(reader.feed(STREAM[:8])) == []
    assert reader.pending == 8


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(CorruptRecord, match="malformed frame"):
        list(FrameReader().feed(b"\x09\x00\x00\x00\x00"))
