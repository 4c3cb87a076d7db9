"""Archive rounds: a quiet database is looked at every index_seconds, not every round;
a failed round backs off."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoal.archive import rounds
from shoal.archive.archiver import ArchivePolicy, Archiver
from shoal.archive.local import FolderStore
from shoal.engine import Database
from shoal.errors import StoreUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(rounds.time, "monotonic", clock)
    return clock


@pytest.fixture
def make_rounds(tmp_path: Path) -> Iterator[Callable[[ArchivePolicy], rounds.ArchiveRounds]]:
    """Rounds for a fresh database "app" archived to a folder, with `policy`."""
    db = Database(tmp_path / "app.db", name="app")
    store = FolderStore(tmp_path / "archive")
    yield lambda policy: rounds.ArchiveRounds(Archiver(db, store, policy))
    db.close()
    store.close()


def test_a_database_unchanged_since_its_last_round_waits_for_index_seconds(
    clock: Clock, make_rounds: Callable[[ArchivePolicy], rounds.ArchiveRounds]
) -> None:
    state = make_rounds(ArchivePolicy(index_seconds=60))
    db = state.archiver.db
    assert state.due()  # never archived
    db.execute("CREATE TABLE t(a)")
    assert state.run() and state.archiver.lag == 0
    assert not state.due()
    clock.now += 59
    assert not state.due()
    db.execute("INSERT INTO t VALUES (1)")
    assert state.due()  # a write is news at once
    assert state.run() and state.archiver.lag == 0
    assert not state.due()
    clock.now += 60
    assert state.due()  # quiet: looked at again after index_seconds
    assert state.run()
    assert not state.due()


def test_a_failed_round_backs_off_even_with_news(
    clock: Clock,
    make_rounds: Callable[[ArchivePolicy], rounds.ArchiveRounds],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = make_rounds(ArchivePolicy(segment_seconds=1))
    state.archiver.db.execute("CREATE TABLE t(a)")

    def unreachable(*args: object) -> None:
        raise StoreUnavailable("the store is down (a fault of the test)")

    with monkeypatch.context() as fault:
        fault.setattr(state.archiver.store, "put", unreachable)
        assert not state.run() and state.failures == 1 and state.last_error
        assert not state.due()
    clock.now += 2.1  # segment_seconds * 2 ** failures
    assert state.due() and state.run() and state.failures == 0
