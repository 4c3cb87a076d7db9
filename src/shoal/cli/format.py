"""What the commands share in printing: aligned tables, times and sizes."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

__all__ = ["format_table", "local_time", "print_table"]


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as an aligned text table with a header rule, as people read them."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(name) for name in columns]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True)),
        "  ".join("-" * width for width in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    print(format_table(columns, rows))


def local_time(seconds: float, timespec: str = "seconds") -> str:
    """A time in seconds since the epoch as local time, to the second by default."""
    return datetime.datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec=timespec)


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)
