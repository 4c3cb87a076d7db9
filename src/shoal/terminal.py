"""What shoal draws on a terminal, for the CLI and for a replica seeding its file:
sizes as people read them, and a progress bar redrawn in place."""

from __future__ import annotations

import sys

__all__ = ["human_size", "progress_bar"]


def human_size(size: float) -> str:
    """Bytes as people read them: 512 B, 3.4 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def progress_bar(done: int, total: int) -> None:
    """A progress bar on stderr, redrawn in place: bytes done of the total."""
    width = 30
    filled = width * done // total if total else width
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {human_size(done)} / {human_size(total)}",
        end="",
        file=sys.stderr,
        flush=True,
    )
