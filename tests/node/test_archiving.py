"""A node's archiving service: the rounds of the databases it leads, and letting go
of one as it closes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

from shoal.archive.archiver import ArchivePolicy, Archiver
from shoal.archive.base import BlobInfo
from shoal.archive.catalog import read_index
from shoal.archive.local import FolderStore
from shoal.engine import Database
from shoal.node import eviction
from shoal.node.archiving import ArchiveService, restore_missing


def test_a_database_let_go_of_during_its_last_round_is_forgotten_without_error(
    tmp_path: Path,
) -> None:
    """The last round before a close runs on the archive's thread; meanwhile the
    database may stop being led here (which drops its state too). The close went
    on to fail with KeyError, and the node's closing of idle databases with it."""
    store = FolderStore(tmp_path / "archive")
    service = ArchiveService(store, ArchivePolicy(), str(tmp_path / "archive"))
    db = Database(tmp_path / "app.db", name="app")
    db.execute("CREATE TABLE t(x)")
    service.track(db)
    state = service.states["app"]
    in_round, go_on = threading.Event(), threading.Event()
    run = state.run

    def slow_run(*, final: bool = False) -> bool:
        in_round.set()
        go_on.wait(10)
        return run(final=final)

    state.run = slow_run  # type: ignore[method-assign]

    async def scenario() -> None:
        forgetting = asyncio.create_task(service.forget("app"))
        await asyncio.to_thread(in_round.wait, 10)
        service.states.pop("app", None)  # what Node.led(db, False) does
        go_on.set()
        await forgetting

    asyncio.run(scenario())
    assert "app" not in service.states
    assert read_index(store, "app").head == 1  # the last round still ran
    asyncio.run(service.close())
    db.close()


def test_restoring_what_is_missing_passes_evicted_databases_over(tmp_path: Path) -> None:
    """An evicted database is restored on its first request, not all at start."""
    store = FolderStore(tmp_path / "archive")
    directory = tmp_path / "databases"
    directory.mkdir()
    for name in ("kept", "evicted", "lost"):
        with Database(directory / f"{name}.db", name=name) as db:
            db.execute("CREATE TABLE t(x)")
            Archiver(db, store, ArchivePolicy()).step(final=True)
    assert eviction.evict(store, directory / "evicted.db", "evicted") is not None
    eviction.remove(directory / "lost.db")
    assert restore_missing(store, directory) == ["lost"]
    assert not (directory / "evicted.db").exists()


class Counting(FolderStore):
    """A folder store that counts the requests made of it."""

    requests = 0

    def get(self, key: str) -> tuple[bytes, str]:
        self.requests += 1
        return super().get(key)

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        self.requests += 1
        return super().put(key, data, if_match=if_match, if_none_match=if_none_match)

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[BlobInfo]:
        self.requests += 1
        return super().list(prefix, start_after)


def test_a_database_opened_and_closed_unchanged_costs_the_archive_nothing(
    tmp_path: Path,
) -> None:
    """Each close ran a last round (read the index, list, write the index): three
    requests for every read of a closed database, written or not."""
    store = Counting(tmp_path / "archive")
    service = ArchiveService(store, ArchivePolicy(), str(tmp_path / "archive"))
    db = Database(tmp_path / "app.db", name="app")
    db.execute("CREATE TABLE t(x)")

    async def open_then_close() -> None:
        service.track(db)
        await service.forget("app")

    asyncio.run(open_then_close())
    assert read_index(store, "app").head == 1
    before = store.requests
    asyncio.run(open_then_close())  # a read: nothing committed
    assert store.requests == before
    db.execute("INSERT INTO t VALUES (1)")
    asyncio.run(open_then_close())  # a write: archived at close
    assert read_index(store, "app").head == 2

    asyncio.run(service.mark_dropped("app", 2))  # a new database of that name is new
    service.track(db)
    assert not service.states["app"].quiet()
    asyncio.run(service.close())
    db.close()
