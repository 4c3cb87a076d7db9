"""Fixtures that start real services: nodes (`shoal serve` processes) for now.

They come from tests/services.py, the one place that knows how to start and stop
every real process the tests and benchmarks use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.services import Node, shoal_node

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
