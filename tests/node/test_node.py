"""The node's own logic that needs no server: pages of database names, and
closing databases past the limit."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import apsw
import pytest

from shoal.node import node as node_module
from shoal.node.config import Settings
from shoal.node.node import Node, select_page


def test_a_page_selects_names_without_looking_past_it() -> None:
    names = [f"db-{i:05d}" for i in range(10_000)]
    looked_at: list[str] = []

    def visible(name: str) -> bool:
        looked_at.append(name)
        return not name.endswith("7")

    page, following = select_page(names, "db-00100", 3, "", visible)
    assert page == ["db-00101", "db-00102", "db-00103"] and following == "db-00103"
    assert looked_at == ["db-00101", "db-00102", "db-00103", "db-00104"]
    assert select_page(names, "", 2, "0999", visible) == (["db-00999", "db-09990"], "db-09990")
    assert select_page(names, "db-09998", 5, "", visible) == (["db-09999"], None)


def test_a_failed_last_archive_round_does_not_keep_databases_open(tmp_path: Path) -> None:
    """Out of file descriptors, a leader's last archive round failed as it closed,
    and the error ended the task closing databases past the limit: nothing was
    closed again, and every open failed from then on."""

    async def scenario() -> int:
        node = Node(Settings(data_dir=tmp_path, max_open_databases=2))
        await node.start()
        try:
            assert node.archive is not None

            async def fails(name: str) -> None:
                raise apsw.CantOpenError("unable to open database file")

            forget, node.archive.forget = node.archive.forget, fails  # type: ignore[method-assign]
            for i in range(6):
                await node.create(f"tenant-{i}")
            for _ in range(100):
                if len(node.names()) <= 2:
                    break
                await asyncio.sleep(0.01)
            node.archive.forget = forget  # type: ignore[method-assign]
            return len(node.names())
        finally:
            await node.close()

    assert asyncio.run(scenario()) <= 2


def test_an_open_waits_while_as_many_databases_are_open_as_may_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query-many over 10,000 databases of a cluster opened them all at once:
    opens outran the closes until every file descriptor was in use."""
    monkeypatch.setattr(node_module, "IN_USE_BEYOND_LIMIT", 1)

    async def scenario() -> None:
        node = Node(Settings(data_dir=tmp_path, max_open_databases=2, archive="off"))
        await node.start()
        try:
            for i in range(6):
                await node.create(f"tenant-{i}")
            await node.close_idle()
            async with contextlib.AsyncExitStack() as held:
                for i in range(3):  # the limit, and one more in use
                    await held.enter_async_context(node.database(f"tenant-{i}"))
                waiting = asyncio.ensure_future(node.read_one("tenant-5", "SELECT 1", None))
                await asyncio.sleep(0.3)
                assert not waiting.done() and len(node.names()) == 3
            assert (await asyncio.wait_for(waiting, 5)).rows == [(1,)]
            assert len(node.names()) <= 3
        finally:
            await node.close()

    asyncio.run(scenario())
