"""The coordinator's own decisions, with the node's databases faked (the system
tests in tests/system/test_cluster.py run it in real nodes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.cluster import coordinator
from shoal.cluster.coordinator import Cluster
from shoal.cluster.replica import Timing
from shoal.cluster.view import Spec
from shoal.controlplane.sqlite import SQLiteControlPlane
from shoal.errors import OperationalError


@contextlib.asynccontextmanager
async def node(tmp_path: Path, databases: Any) -> AsyncIterator[Cluster]:
    """A Cluster (not started) over `databases`, on a SQLite control plane."""
    cp = SQLiteControlPlane(tmp_path / "control.db")
    cluster = Cluster(
        databases,
        cp,
        node_id="n1",
        url="http://n1",
        factor=3,
        timing=Timing(),
        scratch=tmp_path / "scratch",
    )
    try:
        yield cluster
    finally:
        await cluster.http.aclose()
        cp.close()


class NoFilesLeft:
    """Databases that cannot be opened: the process is out of file descriptors."""

    async def hold(self, name: str) -> Any:
        raise OperationalError(f"cannot open {name}.db: unable to open database file")


def test_a_copy_that_will_not_open_is_tried_again_later_each_time_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Thousands of copies failing at once (no file descriptors left) were each
    tried every second, each with a traceback in the log."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def scenario() -> None:
        async with node(tmp_path, NoFilesLeft()) as cluster:
            monkeypatch.setattr(asyncio, "sleep", sleep)
            try:
                for _ in range(8):
                    await cluster._hold(Spec("app", "sync"))
            finally:
                monkeypatch.undo()
            assert "app" not in cluster.replicas

    with caplog.at_level(logging.WARNING, logger="shoal.cluster"):
        asyncio.run(scenario())
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "try 8" in caplog.records[-1].getMessage()


class Counted:
    """Databases that open at once, counting how many are held."""

    def __init__(self) -> None:
        self.held = 0
        self.most = 0

    async def hold(self, name: str) -> Any:
        self.held += 1
        self.most = max(self.most, self.held)
        return name

    def release(self, name: str) -> None:
        self.held -= 1


def test_only_so_many_replicas_hold_their_copies_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a failover every replica of a node wants its copy at once, each open while
    it works: thousands of files, past the process's limit."""
    monkeypatch.setattr(coordinator, "WORK_SLOTS", 2)
    databases = Counted()

    async def scenario() -> None:
        async with node(tmp_path, databases) as cluster:
            holding = [asyncio.create_task(cluster.hold_copy(f"db{i}")) for i in range(4)]
            await asyncio.sleep(0.05)
            assert [task.done() for task in holding] == [True, True, False, False]
            cluster.let_go_copy("db0")
            await asyncio.sleep(0.05)
            assert [task.done() for task in holding] == [True, True, True, False]
            for name in ("db1", "db2"):
                cluster.let_go_copy(name)
            await asyncio.wait_for(holding[3], 1)
            cluster.let_go_copy("db3")

            failing = NoFilesLeft()  # a copy that will not open gives its turn back
            cluster.databases = failing  # type: ignore[assignment]
            for _ in range(3):
                with pytest.raises(OperationalError):
                    await asyncio.wait_for(cluster.hold_copy("broken"), 1)

    asyncio.run(scenario())
    assert databases.most == 2 and databases.held == 0


def test_the_nodes_lease_is_renewed_however_many_replica_calls_wait(tmp_path: Path) -> None:
    """Renewals shared the replicas' threads: in a failover of thousands of
    databases they queued behind the claims for seconds, the node's lease lapsed,
    its leaders stepped down, and the failover fed itself."""
    gate = threading.Event()

    async def scenario() -> None:
        async with node(tmp_path, Counted()) as cluster:
            queued = [asyncio.ensure_future(cluster.blocking(gate.wait, 10)) for _ in range(100)]
            try:
                await asyncio.wait_for(cluster._renew(), 2)
                await asyncio.wait_for(cluster._refresh(), 2)
                assert cluster.valid_until > time.monotonic()
            finally:
                gate.set()
                await asyncio.gather(*queued)

    asyncio.run(scenario())
