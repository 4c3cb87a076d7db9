"""The coordinator's own decisions, with the node's databases faked (the system
tests in tests/system/test_cluster.py run it in real nodes)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from shoal.cluster.coordinator import Cluster
from shoal.cluster.replica import Timing
from shoal.cluster.view import Spec
from shoal.controlplane.sqlite import SQLiteControlPlane
from shoal.errors import OperationalError


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
        cp = SQLiteControlPlane(tmp_path / "control.db")
        cluster = Cluster(
            NoFilesLeft(),  # type: ignore[arg-type]
            cp,
            node_id="n1",
            url="http://n1",
            factor=3,
            timing=Timing(),
            scratch=tmp_path / "scratch",
        )
        monkeypatch.setattr(asyncio, "sleep", sleep)
        try:
            for _ in range(8):
                await cluster._hold(Spec("app", "sync"))
        finally:
            monkeypatch.undo()
            await cluster.http.aclose()
            cp.close()
        assert "app" not in cluster.replicas

    with caplog.at_level(logging.WARNING, logger="shoal.cluster"):
        asyncio.run(scenario())
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1 and "try 8" in caplog.records[-1].getMessage()
