"""A node's archiving service: the rounds of the databases it leads, and letting go
of one as it closes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from shoal.archive.archiver import ArchivePolicy
from shoal.archive.catalog import read_index
from shoal.archive.local import FolderStore
from shoal.engine import Database
from shoal.node.archiving import ArchiveService


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
