"""The HTTP layer over a fake node built on server.port.ServedNode: the handlers need
nothing of a node but what that protocol names, and map what it raises to answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from starlette.testclient import TestClient

from shoal.cluster.routing import Leader, Need
from shoal.cluster.view import View
from shoal.engine import Database, Result
from shoal.engine.execute import Params
from shoal.errors import DatabaseNotFound, Error, OperationalError
from shoal.node.archiving import ArchiveStatus
from shoal.node.auth import Authenticator, TokenStore
from shoal.node.config import Settings
from shoal.node.node import PAGE_LIMIT, DatabaseInfo, Listing
from shoal.server.app import create_app
from shoal.server.port import ServedNode

T = TypeVar("T")


class FakeNode:
    """One file database, `app`, run on the calling thread; it keeps what it was asked."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = "fake"
        self.started = time.time()
        self.ready = False
        self.draining = False
        self.auth = Authenticator(
            TokenStore(settings.data_dir),
            (),
            None,
            local_admin="local",
            data_dir=settings.data_dir,
            offload=self.read,
        )
        self.db = Database(settings.data_dir / "app.db", name="app")
        self.calls: list[tuple[str, bool]] = []  # (database, write) of each run_on

    async def start(self) -> None:
        self.ready = True

    async def leave(self) -> None:
        self.ready, self.draining = False, True

    async def close(self) -> None:
        self.db.close()

    @contextlib.asynccontextmanager
    async def database(self, name: str) -> AsyncIterator[Database]:
        if name != "app":
            raise DatabaseNotFound(name)
        yield self.db

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    async def write_together(
        self,
        name: str,
        fn: Callable[[Database, list[Any]], list[Any]],
        item: Any,
        *,
        brief: bool = False,
    ) -> Any:
        self.calls.append((name, True))
        async with self.database(name) as db:
            (answer,) = fn(db, [item])
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def run_on(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        write: bool,
        min_version: int | None = None,
        wait: float = 0.0,
        brief: bool = False,
        **kwargs: Any,
    ) -> T:
        self.calls.append((name, write))
        async with self.database(name) as db:
            return fn(db, *args, **kwargs)

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        return asyncio.get_running_loop().create_task(work)

    async def create(self, name: str, durability: str | None = None) -> DatabaseInfo:
        raise OperationalError("this fake holds one database")

    async def drop(self, name: str, wait: float = 30.0) -> None:
        raise OperationalError("this fake holds one database")

    async def info(self, name: str) -> DatabaseInfo:
        async with self.database(name) as db:
            return DatabaseInfo(name, db.version, 0, True)

    def holds(self, name: str) -> bool:
        return True

    async def read_one(self, name: str, sql: str, params: Params) -> Result:
        async with self.database(name) as db:
            return db.query(sql, params).results[0]

    async def read_files(
        self,
        names: list[str],
        sql: str,
        params: Params,
        each: Callable[[str, Result | Error], None],
    ) -> None:
        raise OperationalError("this fake holds every database open")

    async def database_names(self) -> list[str]:
        return ["app"]

    async def list_databases(
        self,
        *,
        after: str = "",
        limit: int = PAGE_LIMIT,
        contains: str = "",
        visible: Callable[[str], bool] = lambda name: True,
    ) -> Listing:
        return Listing([await self.info("app")], None)

    def names(self) -> list[str]:
        return ["app"]

    def versions(self) -> dict[str, int]:
        return {"app": self.db.version}

    async def next_version(self, name: str, timeout: float) -> None:
        await asyncio.sleep(timeout)

    async def route(self, name: str, need: Need, at_least: int = 0) -> Leader | None:
        return None  # a node alone serves everything here

    def cluster_view(self) -> View | None:
        return None

    async def cluster_status(self, visible: Callable[[str], bool]) -> dict[str, Any] | None:
        return None

    def reseeds(self) -> dict[str, tuple[int, int]]:
        return {}

    archive_url = None

    def archive_status(self) -> dict[str, ArchiveStatus]:
        return {}


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[TestClient, FakeNode]]:
    made: list[FakeNode] = []

    def make(settings: Settings) -> ServedNode:
        made.append(FakeNode(settings))
        return made[0]

    app = create_app(Settings(data_dir=tmp_path), make_node=make)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        yield client, made[0]


def test_statements_run_through_run_on(fake: tuple[TestClient, FakeNode]) -> None:
    client, node = fake
    created = client.post("/v1/databases/app/execute", json={"sql": "CREATE TABLE t(a)"})
    assert created.status_code == 200, created.text
    client.post("/v1/databases/app/execute", json={"sql": "INSERT INTO t VALUES (7)"})
    answer = client.post("/v1/databases/app/query", json={"sql": "SELECT a FROM t"}).json()
    assert answer["results"][0]["rows"] == [[7]]
    assert node.calls == [("app", True), ("app", True), ("app", False)]
    assert node.db.version == 2


def test_what_the_node_raises_is_the_answer(fake: tuple[TestClient, FakeNode]) -> None:
    client, node = fake
    missing = client.post("/v1/databases/other/query", json={"sql": "SELECT 1"})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "DatabaseNotFound"
    refused = client.post("/v1/databases", json={"name": "two"})
    assert refused.json()["error"]["message"] == "this fake holds one database"
    assert node.names() == ["app"]


def test_status_and_readiness_come_from_the_node(fake: tuple[TestClient, FakeNode]) -> None:
    client, node = fake
    assert client.get("/readyz").status_code == 200
    status = client.get("/v1/status").json()
    assert status["databases"] == [{"name": "app", "version": 0}]
    assert client.get("/livez").headers["shoal-node"] == "fake"
    node.ready = False
    assert client.get("/readyz").status_code == 503


def test_a_stopping_node_closes_each_connection_after_its_answer(
    fake: tuple[TestClient, FakeNode],
) -> None:
    """Else a client's kept-alive connection is idle when the server closes them all,
    and a request sent on it at that moment is lost without a word."""
    client, node = fake
    assert "connection" not in client.get("/livez").headers
    node.draining = True
    assert client.get("/livez").headers["connection"] == "close"
    answer = client.post("/v1/databases/app/query", json={"sql": "SELECT 1"})
    assert answer.headers["connection"] == "close" and answer.headers["shoal-node"] == "fake"
