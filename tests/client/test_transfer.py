"""How a load tells a SQLite file from SQL text, before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.client.transfer import file_kind
from shoal.dump import SQLITE_HEADER
from shoal.errors import InvalidRequest


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (SQLITE_HEADER + b"\x10\x00" * 50, "sqlite"),
        (b"CREATE TABLE t(a);\n", "sql"),
        (b"", "sql"),  # the node answers that there is nothing to load
        (b"-- " + b"x" * (65536 - 4) + "é".encode(), "sql"),  # a character cut by the sniff
    ],
)
def test_kinds(tmp_path: Path, content: bytes, kind: str) -> None:
    path = tmp_path / "input"
    path.write_bytes(content)
    assert file_kind(path) == kind


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"SELECT 1;\x00"])
def test_neither_sqlite_nor_text(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "input"
    path.write_bytes(content)
    with pytest.raises(InvalidRequest, match="neither a SQLite database"):
        file_kind(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        file_kind(tmp_path / "absent.sql")
