"""The PEP 249 compliance suite (dbapi-compliance's dbapi20) on the remote
connection, against a real `shoal serve` (the embedded one: tests/client)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dbapi20
import pytest

import shoal
from tests.client import test_embedded
from tests.client import test_pep249_compliance as embedded
from tests.harness import shoal_node


@pytest.fixture(scope="class")
def remote_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with shoal_node(tmp_path_factory.mktemp("pep249")) as node:
        request.cls.connect_args = (f"{node.url}/default",)
        yield


@pytest.mark.usefixtures("remote_url")
class TestRemoteConnection(dbapi20.DatabaseAPI20Test):  # type: ignore[misc]
    driver = shoal
    connect_kw_args: dict[str, Any] = {}  # noqa: RUF012 - the suite's own class attribute

    def setUp(self) -> None:
        """Each test drops its tables at the end (the suite's tearDown)."""

    test_nextset = embedded.TestEmbeddedConnection.test_nextset
    test_setoutputsize = embedded.TestEmbeddedConnection.test_setoutputsize
    test_non_idempotent_close = embedded.TestEmbeddedConnection.test_non_idempotent_close


@pytest.fixture(scope="class")
def replica_of(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with shoal_node(tmp_path_factory.mktemp("pep249-replica")) as node:
        request.cls.connect_args = (tmp_path_factory.mktemp("replica") / "local.db",)
        request.cls.connect_kw_args = {"replica_of": f"{node.url}/default"}
        yield


@pytest.mark.usefixtures("replica_of")
class TestReplicaConnection(TestRemoteConnection):
    """The same suite on an embedded replica: reads local, writes through the node."""


def test_what_django_sends_works_over_http_and_foreign_keys_hold(tmp_path: Path) -> None:
    with (
        shoal_node(tmp_path) as node,
        contextlib.closing(shoal.connect(f"{node.url}/default")) as conn,
    ):
        test_embedded.connect_as_django_does(conn)
        test_embedded.assert_foreign_keys_enforced(conn)
        with pytest.raises(shoal.ProgrammingError, match="synchronous = NORMAL"):
            conn.execute("PRAGMA synchronous = OFF")
