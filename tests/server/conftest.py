"""The node's HTTP application in-process: real routes, real engine, no sockets.

`api` is a Starlette TestClient on a fresh data directory, entered so the node's
lifespan (start and close) runs, and calling from 127.0.0.1 so that a node
without tokens serves it. System tests with real processes are in tests/system.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from shoal.node.config import Settings
from shoal.server.app import create_app

MakeClient = Callable[..., TestClient]


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[MakeClient]:
    """Makes clients on nodes with the given settings (data in tmp_path unless told)."""
    clients: list[TestClient] = []

    def make(host: str = "127.0.0.1", **settings: Any) -> TestClient:
        settings.setdefault("data_dir", tmp_path / "data")
        client = TestClient(create_app(Settings(**settings)), client=(host, 50000))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: MakeClient) -> TestClient:
    return make_api()
