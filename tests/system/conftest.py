"""Fixtures that start real services: nodes (`shoal serve` processes), PostgreSQL
(the control plane of clusters), clusters of nodes, and Chromium.

They come from tests/harness/, the one place that knows how to start and stop
every real process the tests and benchmarks use; the session's PostgreSQL
(`postgres_dsn`) is in tests/conftest.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.harness import (
    Cluster,
    Node,
    chromium,
    create_postgres_database,
    shoal_cluster,
    shoal_node,
)

StartNode = Callable[..., Node]


@pytest.fixture
def start_node(tmp_path: Path) -> Iterator[StartNode]:
    """Starts nodes on free ports, each with its own data directory; all are stopped
    at the end of the test."""
    with ExitStack() as stack:
        count = 0

        def start(
            *args: str, env: dict[str, str] | None = None, data_dir: Path | None = None
        ) -> Node:
            nonlocal count
            count += 1
            directory = data_dir or tmp_path / f"node{count}"
            return stack.enter_context(shoal_node(directory, *args, env=env))

        yield start


@pytest.fixture
def node(start_node: StartNode) -> Node:
    return start_node()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, for one test module: Playwright's sync API
    keeps an event loop running in the main thread while it lives, and other
    modules' tests call asyncio.run()."""
    with chromium() as running:
        yield running


_databases = itertools.count(1)


@pytest.fixture
def control_plane(postgres_dsn: str) -> str:
    """The DSN of a new, empty PostgreSQL database: a control plane of this test's own
    (CREATE DATABASE takes about 0.2 s), so that no test sees another's cluster."""
    return create_postgres_database(postgres_dsn, f"shoal_{next(_databases)}")


@pytest.fixture
def cluster(tmp_path: Path, control_plane: str) -> Iterator[Cluster]:
    """Three nodes n1, n2, n3 of a new cluster, each seeing all three as members."""
    with shoal_cluster(tmp_path, control_plane, 3) as nodes:
        yield nodes
