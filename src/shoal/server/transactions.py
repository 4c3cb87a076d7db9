"""Interactive transactions over HTTP: BEGIN, statements, then COMMIT or ROLLBACK.

They are what lets the remote DB-API behave as the embedded one (reads inside a
transaction see its writes; `commit()` is one record). Each holds its database's
writer for its whole length, as SQLite's `BEGIN IMMEDIATE` does, so:

- every one runs on a thread of its own (the engine's write lock belongs to the
  thread that took it, and the shared pools must never be blocked by a client
  that is thinking);
- one left idle for `transaction_seconds` is rolled back, so a vanished client
  cannot keep a database's writers waiting for longer than that;
- only the token that began it may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shoal.cluster.routing import Need
from shoal.engine import Transaction
from shoal.errors import Error, TransactionNotFound
from shoal.node.auth import Scope
from shoal.node.node import check_name
from shoal.server.httputil import (
    authorize,
    json_response,
    node_of,
    parse_json,
    read_body,
    read_json,
    route,
)
from shoal.server.native import batch_json, batch_response, statements_from
from shoal.server.port import ServedNode
from shoal.server.routing import dispatch
from shoal.server.statements import Batch, Statement

__all__ = ["InteractiveTransactions", "routes"]

T = TypeVar("T")


@dataclass(eq=False)
class _Open:
    id: str
    database: str
    owner: str
    thread: ThreadPoolExecutor
    hold: AsyncExitStack
    tx: Transaction | None = None
    last_used: float = field(default_factory=time.monotonic)
    running: int = 0


class InteractiveTransactions:
    """The open interactive transactions of a node, by id."""

    def __init__(self, node: ServedNode) -> None:
        self._node = node
        self._open: dict[str, _Open] = {}
        self._reaper: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return len(self._open)

    async def _on_thread(self, entry: _Open, fn: Any, *args: Any) -> Any:
        entry.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(entry.thread, fn, *args)
        finally:
            entry.running -= 1
            entry.last_used = time.monotonic()

    async def begin(self, database: str, owner: str) -> tuple[str, int]:
        """Opens a transaction (waiting for the writer); returns its id and base version."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._expire_idle())
        hold = AsyncExitStack()
        db = await hold.enter_async_context(self._node.database(database))
        entry = _Open(secrets.token_urlsafe(16), database, owner, ThreadPoolExecutor(1), hold)
        try:
            entry.tx = await self._on_thread(entry, db.transaction)
        except BaseException:
            await self._release(entry)
            raise
        self._open[entry.id] = entry
        return entry.id, entry.tx.version

    def _get(self, tx_id: str, database: str, owner: str) -> _Open:
        entry = self._open.get(tx_id)
        if entry is None or entry.database != database or entry.owner != owner:
            raise TransactionNotFound(
                f"no open transaction {tx_id!r} on {database!r}: it was committed, "
                "rolled back, or expired after being idle"
            )
        return entry

    async def execute(
        self, tx_id: str, database: str, owner: str, statements: list[Statement]
    ) -> Batch:
        entry = self._get(tx_id, database, owner)
        assert entry.tx is not None
        batch: Batch = await self._on_thread(entry, _run, entry.tx, statements)
        if not entry.tx.is_open:  # SQLite rolled the whole transaction back
            await self._end(entry)
        return batch

    async def commit(self, tx_id: str, database: str, owner: str) -> int:
        entry = self._get(tx_id, database, owner)
        assert entry.tx is not None
        try:
            version: int = await self._on_thread(entry, entry.tx.commit)
        finally:
            await self._end(entry)
        return version

    async def rollback(self, tx_id: str, database: str, owner: str) -> None:
        await self._end(self._get(tx_id, database, owner))

    async def _end(self, entry: _Open) -> None:
        """Rolls back if still open, then lets go of the thread and the database."""
        self._open.pop(entry.id, None)
        if entry.tx is not None and entry.tx.is_open:
            await self._on_thread(entry, entry.tx.rollback)
        await self._release(entry)

    async def _release(self, entry: _Open) -> None:
        entry.thread.shutdown(wait=False)
        await entry.hold.aclose()

    async def _expire_idle(self) -> None:
        limit = self._node.settings.transaction_seconds
        while True:
            await asyncio.sleep(min(1.0, limit / 4))
            cutoff = time.monotonic() - limit
            for entry in list(self._open.values()):
                if entry.running == 0 and entry.last_used < cutoff:
                    await self._end(entry)

    async def close(self) -> None:
        """Rolls back every open transaction (the node is stopping)."""
        if self._reaper is not None:
            self._reaper.cancel()
        for entry in list(self._open.values()):
            await self._end(entry)


def _run(tx: Transaction, statements: list[Statement]) -> Batch:
    """Each statement in the open transaction; a failure undoes only that statement,
    unless SQLite ended the whole transaction (then the rest do not run)."""
    batch = Batch(tx.version)
    for origin, statement in enumerate(statements):
        started = time.perf_counter()
        try:
            batch.extend(tx.execute(statement.sql, statement.params), origin, started)
        except Error as exc:
            batch.add(exc, origin, started)
            if not tx.is_open:
                break
    return batch


# -- handlers -----------------------------------------------------------------

_FIELDS = frozenset({"sql", "params", "statements"})
LEADER = Need(write=True)  # an interactive transaction lives on the leader


def _registry(request: Request) -> InteractiveTransactions:
    registry: InteractiveTransactions = request.app.state.transactions
    return registry


async def begin(request: Request) -> Response:
    """Opens a transaction; with statements in the body, also runs them in it, so a
    client's first statement costs no round trip of its own. If one of them fails,
    the transaction is rolled back and the answer is that statement's error: the
    client holds no transaction it was not told the id of."""
    name = request.path_params["name"]
    grant = await authorize(request, Scope.WRITE, name)
    node = node_of(request)
    raw = await read_body(request)
    statements: list[Statement] = []
    if raw.strip():
        statements = statements_from(parse_json(raw), _FIELDS, node.settings.max_statements)

    async def here() -> Response:
        registry = _registry(request)
        tx_id, version = await registry.begin(name, grant.name)
        body: dict[str, Any] = {
            "id": tx_id,
            "version": version,
            "idle_timeout": node.settings.transaction_seconds,
        }
        if statements:
            batch = await registry.execute(tx_id, name, grant.name, statements)
            if batch.first_error is not None:
                with contextlib.suppress(TransactionNotFound):  # SQLite may have ended it
                    await registry.rollback(tx_id, name, grant.name)
                return batch_response(batch)
            body["results"] = batch_json(batch)["results"]
        return json_response(body, 201, {"Shoal-Version": str(version)})

    return await dispatch(request, name, LEADER, here)


async def run_in(request: Request) -> Response:
    name, tx_id = check_name(request.path_params["name"]), request.path_params["tx"]
    grant = await authorize(request, Scope.WRITE, name)
    node = node_of(request)
    statements = statements_from(await read_json(request), _FIELDS, node.settings.max_statements)

    async def here() -> Response:
        batch = await _registry(request).execute(tx_id, name, grant.name, statements)
        return batch_response(batch)

    return await dispatch(request, name, LEADER, here)


async def commit(request: Request) -> Response:
    name, tx_id = check_name(request.path_params["name"]), request.path_params["tx"]
    grant = await authorize(request, Scope.WRITE, name)

    async def here() -> Response:
        version = await _registry(request).commit(tx_id, name, grant.name)
        return json_response({"version": version}, headers={"Shoal-Version": str(version)})

    return await dispatch(request, name, LEADER, here)


async def rollback(request: Request) -> Response:
    name, tx_id = check_name(request.path_params["name"]), request.path_params["tx"]
    grant = await authorize(request, Scope.WRITE, name)

    async def here() -> Response:
        await _registry(request).rollback(tx_id, name, grant.name)
        return json_response({"rolled_back": True})

    return await dispatch(request, name, LEADER, here)


def routes(base: str) -> list[Route]:
    return [
        route(f"{base}/transactions", begin, "POST"),
        route(f"{base}/transactions/{{tx}}", run_in, "POST"),
        route(f"{base}/transactions/{{tx}}/commit", commit, "POST"),
        route(f"{base}/transactions/{{tx}}/rollback", rollback, "POST"),
    ]
