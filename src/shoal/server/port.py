"""What the HTTP layer needs of the node it serves, and nothing more: the members
its handlers, middleware and lifespan use. shoal.node.Node is the implementation;
tests of handlers may serve a small fake of their own instead."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from shoal.cluster.routing import Leader, Need
from shoal.cluster.view import View
from shoal.engine import Database, Result
from shoal.engine.execute import Params
from shoal.errors import Error
from shoal.node.archiving import ArchiveStatus
from shoal.node.auth import Authenticator
from shoal.node.config import Settings
from shoal.node.node import PAGE_LIMIT, DatabaseInfo, Listing

__all__ = ["ServedNode"]

T = TypeVar("T")


class ServedNode(Protocol):
    """A node as `shoal serve` serves it."""

    settings: Settings
    node_id: str
    started: float  # Unix time
    ready: bool  # /readyz: serving, not starting or stopping
    draining: bool  # stopping: long-lived responses end
    auth: Authenticator

    async def start(self) -> None: ...

    async def leave(self) -> None:
        """Stops taking new work and hands over what it leads (SIGTERM's first step)."""
        ...

    async def close(self) -> None: ...

    def database(self, name: str) -> AbstractAsyncContextManager[Database]:
        """The open database `name`, held for the block."""
        ...

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs `fn(*args, **kwargs)` on the read pool."""
        ...

    async def write_together(
        self,
        name: str,
        fn: Callable[[Database, list[Any]], list[Any]],
        item: Any,
        *,
        brief: bool = False,
    ) -> Any:
        """`fn(db, [item])[0]` on the write pool (or, for `brief` items, the event
        loop), in one call with the other items waiting for database `name`; an
        exception among `fn`'s answers is raised."""
        ...

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
        """Runs `fn(db, *args, **kwargs)` on database `name`, on the write or the
        read pool, once it holds `min_version` (waiting up to `wait` s). A `brief`
        read (`fn` may run twice) runs on the event loop while it stays brief."""
        ...

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Runs `work` as a task that close() waits for."""
        ...

    async def create(self, name: str, durability: str | None = None) -> DatabaseInfo: ...

    async def drop(self, name: str, wait: float = 30.0) -> None: ...

    async def info(self, name: str) -> DatabaseInfo: ...

    def holds(self, name: str) -> bool:
        """Whether the node holds database `name` open."""
        ...

    async def read_one(self, name: str, sql: str, params: Params) -> Result:
        """The first result of a read of `name`, through its Database."""
        ...

    async def read_files(
        self,
        names: list[str],
        sql: str,
        params: Params,
        each: Callable[[str, Result | Error], None],
    ) -> None:
        """A read of each of `names` without opening them, `each` called on a
        thread with each one's first result or error (see Node.read_files)."""
        ...

    async def database_names(self) -> list[str]:
        """Every database's name, sorted."""
        ...

    async def list_databases(
        self,
        *,
        after: str = "",
        limit: int = PAGE_LIMIT,
        contains: str = "",
        visible: Callable[[str], bool] = ...,
    ) -> Listing:
        """One page of the databases, by name (see Node.list_databases)."""
        ...

    def names(self) -> list[str]:
        """The databases open now."""
        ...

    def versions(self) -> dict[str, int]:
        """The version of each open database."""
        ...

    async def next_version(self, name: str, timeout: float) -> None:
        """Returns once `name` has a newer version, or after `timeout` s."""
        ...

    async def route(self, name: str, need: Need, at_least: int = 0) -> Leader | None:
        """Where a request on `name` is served: None for here, else its leader."""
        ...

    def cluster_view(self) -> View | None:
        """The cluster's members and leases; None on a node alone."""
        ...

    async def cluster_status(self, visible: Callable[[str], bool]) -> dict[str, Any] | None:
        """`shoal cluster status`'s state; None on a node alone."""
        ...

    def reseeds(self) -> dict[str, tuple[int, int]]:
        """Per copy held in a cluster: its re-seeds, and those in a row."""
        ...

    @property
    def archive_url(self) -> str | None: ...

    def archive_status(self) -> dict[str, ArchiveStatus]:
        """Each archived database's status, by name."""
        ...
