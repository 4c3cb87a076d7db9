"""The replica connection's parts that need no node (the rest: tests/system/test_replicas.py)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.client import replica
from shoal.engine import Database, Role
from shoal.errors import StaleReplica


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


class QuietFollow:
    """A Follow that heard from no node, with a local copy and no thread."""

    def __init__(self, path: Path, name: str, *args: object) -> None:
        self.path, self.name = path, name
        self.db = Database(path, role=Role.FOLLOWER)
        self.reseeded: list[Callable[[Database], None]] = []

    def wait_until_heard(self, within: float) -> None:
        raise StaleReplica(f"heard from no node for over {within:g} s")

    def reseed(self, path: Path) -> None:
        old, self.db = self.db, Database(path, role=Role.FOLLOWER)
        old.close()
        for call in self.reseeded:
            call(self.db)

    def close(self) -> None:
        self.db.close()


def test_reads_check_the_lag_while_max_lag_is_set_and_follow_a_reseed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(replica, "Follow", QuietFollow)
    conn = replica.Connection(tmp_path / "copy.db", "http://127.0.0.1:9/db")
    try:
        follow = conn.follow
        assert isinstance(follow, QuietFollow)
        assert conn.execute("SELECT 1").fetchone() == (1,)  # unbounded: no check
        conn.max_lag_seconds = 5.0
        with pytest.raises(StaleReplica, match="over 5 s"):
            conn.execute("SELECT 1")
        conn.max_lag_seconds = None
        assert conn.execute("SELECT 2").fetchone() == (2,)
        with Database(tmp_path / "fresh.db") as fresh:
            fresh.execute("CREATE TABLE t(x)")
        follow.reseed(tmp_path / "fresh.db")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)  # the new copy
    finally:
        conn.close()
    assert follow.reseeded == []  # a closed connection is not told of re-seeds
