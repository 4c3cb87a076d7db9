"""The replica connection's parts that need no node (the rest: tests/system/test_replicas.py)."""

from __future__ import annotations

import io

import pytest

from shoal.client import replica


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_seeding_draws_a_bar_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert replica._terminal_progress() is None
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    bar = replica._terminal_progress()
    assert bar is not None
    bar(512, 1024)
    bar(1024, 1024)
    drawn = terminal.getvalue()
    assert "[###############...............] 512 B / 1.0 KiB" in drawn
    assert drawn.endswith("1.0 KiB / 1.0 KiB\n")  # the line ends once the seed is whole
