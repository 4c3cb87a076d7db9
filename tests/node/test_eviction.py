"""Evicting a database from disk and hydrating it from the archive: only what the
archive holds whole is evicted, and a restore short of the evicted version serves
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.archive.archiver import ArchivePolicy, Archiver
from shoal.archive.local import FolderStore
from shoal.engine import Database
from shoal.errors import ArchiveError, InternalError
from shoal.node import eviction


@pytest.fixture
def store(tmp_path: Path) -> FolderStore:
    return FolderStore(tmp_path / "archive")


def archived(tmp_path: Path, store: FolderStore, rows: int = 20) -> tuple[Path, str]:
    """A closed database with `rows` rows, archived whole; its path and checksum."""
    path = tmp_path / "app.db"
    with Database(path, name="app") as db:
        db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        for i in range(rows):
            db.execute("INSERT INTO t VALUES (?, ?)", (i, f"row {i}"))
        Archiver(db, store, ArchivePolicy()).step(final=True)
        return path, db.checksum()


def test_an_archived_database_is_evicted_and_hydrated_whole(
    tmp_path: Path, store: FolderStore
) -> None:
    path, checksum = archived(tmp_path, store)
    evicted = eviction.evict(store, path, "app")
    assert evicted is not None and evicted.version == 21 and evicted.size_bytes > 0
    assert not path.exists() and eviction.marker_of(path) == evicted
    assert eviction.hydrate(store, path, "app") == 21
    assert eviction.marker_of(path) is None
    with Database(path, name="app") as db:
        assert db.checksum() == checksum and db.version == 21


def test_a_database_the_archive_is_behind_on_stays(tmp_path: Path, store: FolderStore) -> None:
    path, _ = archived(tmp_path, store)
    with Database(path, name="app") as db:
        db.execute("INSERT INTO t VALUES (100, 'not archived yet')")
    assert eviction.evict(store, path, "app") is None
    assert path.exists() and eviction.marker_of(path) is None
    never = tmp_path / "never.db"
    Database(never, name="never").close()
    assert eviction.evict(store, never, "never") is None  # nothing archived at all


def test_an_archive_short_of_the_evicted_version_restores_nothing(
    tmp_path: Path, store: FolderStore
) -> None:
    path, _ = archived(tmp_path, store)
    eviction.evict(store, path, "app")
    marker = Path(f"{path}{eviction.MARKER_SUFFIX}")
    found = json.loads(marker.read_text())
    marker.write_text(json.dumps({**found, "version": 30}))  # writes the archive lost
    with pytest.raises(InternalError, match="gives back version 21, but it was evicted at"):
        eviction.hydrate(store, path, "app")
    assert not path.exists() and eviction.marker_of(path) is not None
    marker.write_text("{not json")
    with pytest.raises(ArchiveError, match="malformed"):
        eviction.marker_of(path)


def test_a_file_that_cannot_be_read_is_not_evicted(tmp_path: Path, store: FolderStore) -> None:
    path, _ = archived(tmp_path, store)
    path.write_bytes(b"this is not a SQLite database" * 100)
    assert eviction.evict(store, path, "app") is None
    assert path.exists() and eviction.marker_of(path) is None
