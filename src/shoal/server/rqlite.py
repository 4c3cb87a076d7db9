"""The rqlite dialect: `/db/execute`, `/db/query`, `/db/request`, `/db/backup`,
`/db/load`, `/status` and `/nodes`, with rqlite's bodies, flags, shapes and statuses,
so that rqlite's client libraries work unchanged. The database is `?db=NAME`
(default `default`).

SQL errors are reported per statement inside a 200, as rqlite does; a malformed
body or flag is a 400. Consistency levels route reads in a cluster (routing.py);
on one node every read is served at its newest version. `freshness` is checked
and accepted.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from dataclasses import replace
from typing import Any

import apsw
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import shoal
from shoal.cluster.routing import Need
from shoal.engine import Result
from shoal.errors import Busy, Error, InvalidRequest, RequestTooLarge
from shoal.node.auth import Scope
from shoal.node.node import DEFAULT_DATABASE
from shoal.server import backup
from shoal.server.httputil import (
    authorize,
    finite,
    json_response,
    node_of,
    read_body,
    read_json,
    route,
)
from shoal.server.port import ServedNode
from shoal.server.routing import dispatch, level_of
from shoal.server.statements import (
    Batch,
    Statement,
    is_brief,
    is_read_only,
    run_execute,
    run_query,
    run_request,
    run_writes,
)

__all__ = ["QueuedWrites", "go_duration", "routes", "statements_from"]

logger = logging.getLogger("shoal.rqlite")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SQL_TYPES = {int: "integer", float: "real", str: "text", bytes: "blob"}


def go_duration(text: str, name: str) -> float:
    """A Go duration ("500ms", "2m", "1h30m") in seconds, as rqlite's flags take them."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise InvalidRequest(f"{name}={text!r} is not a duration such as 500ms, 10s or 2m")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def _flag(request: Request, name: str) -> bool:
    """rqlite's flags are present (`?transaction`) or set (`?transaction=true`)."""
    value = request.query_params.get(name)
    return value is not None and value.lower() not in ("false", "0", "no")


def _database(request: Request) -> str:
    return request.query_params.get("db") or DEFAULT_DATABASE


def _read_need(request: Request, *, write: bool = False) -> Need:
    """What a read asks of the copy that serves it: rqlite's level, and its flags checked."""
    level = level_of(request.query_params.get("level"))
    for name in ("freshness", "timeout", "db_timeout"):
        if name in request.query_params:
            go_duration(request.query_params[name], name)
    return Need(write=write, level=level, redirect=_flag(request, "redirect"))


# -- bodies -------------------------------------------------------------------


def _param(raw: Any, where: str) -> Any:
    if raw is None or isinstance(raw, (str, int, float)):
        return int(raw) if isinstance(raw, bool) else raw
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return bytes(raw)  # a BLOB sent as an array of bytes
    raise InvalidRequest(f"{where}: {type(raw).__name__} is not a SQL value")


def _statement(raw: Any, where: str) -> Statement:
    if isinstance(raw, str):
        return Statement(raw)
    if not isinstance(raw, list) or not raw or not isinstance(raw[0], str):
        raise InvalidRequest(f"{where}: a statement is a string or an array [sql, params...]")
    sql, args = raw[0], raw[1:]
    if len(args) == 1 and isinstance(args[0], dict):
        return Statement(sql, {str(k): _param(v, f"{where}.{k}") for k, v in args[0].items()})
    return Statement(sql, [_param(v, f"{where}[{i + 1}]") for i, v in enumerate(args)] or None)


def statements_from(body: Any, limit: int) -> list[Statement]:
    """rqlite's body: an array of strings, or of arrays [sql, args...] or [sql, {named}]."""
    if not isinstance(body, list):
        raise InvalidRequest("the body must be a JSON array of statements")
    if not body:
        raise InvalidRequest("the body holds no statements")
    if len(body) > limit:
        raise RequestTooLarge(f"{len(body)} statements is over the limit of {limit} a request")
    return [_statement(item, f"statement {i}") for i, item in enumerate(body)]


async def _statements(request: Request) -> list[Statement]:
    limit = node_of(request).settings.max_statements
    if request.method == "GET":
        q = request.query_params.get("q")
        if q is None:
            raise InvalidRequest("a GET query needs the statement in ?q=")
        return [Statement(q)]
    return statements_from(await read_json(request), limit)


# -- responses ----------------------------------------------------------------


def _blob_default(blob_array: bool) -> Any:
    def encode(value: Any) -> Any:
        if isinstance(value, bytes):
            return list(value) if blob_array else base64.b64encode(value).decode()
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")

    return encode


def _types(result: Result) -> list[str]:
    """Declared types in lower case; for an expression, the type of its first value."""
    first = result.rows[0] if result.rows else ()
    types = []
    for i, declared in enumerate(result.types):
        if declared:
            types.append(declared.lower())
        else:
            types.append(_SQL_TYPES.get(type(first[i]), "") if first else "")
    return types


def _result(item: Result | Error, seconds: float, *, rows_shape: bool, flags: set[str]) -> Any:
    if isinstance(item, Error):
        out: dict[str, Any] = {"error": str(item)}
    elif rows_shape or item.columns:
        values = [[finite(v) for v in row] for row in item.rows]
        types = _types(item)
        if "associative" in flags:
            out = {
                "types": dict(zip(item.columns, types, strict=True)),
                "rows": [dict(zip(item.columns, row, strict=True)) for row in values],
            }
        else:
            out = {"columns": item.columns, "types": types}
            if values:
                out["values"] = values
    else:
        out = {}
        if item.last_insert_id:
            out["last_insert_id"] = item.last_insert_id
        if item.rows_affected:
            out["rows_affected"] = item.rows_affected
    if "timings" in flags:
        out["time"] = seconds
    return out


def _respond(request: Request, batch: Batch, started: float, *, rows_shape: bool) -> Response:
    flags = {f for f in ("associative", "timings", "blob_array") if _flag(request, f)}
    results = [
        _result(item, seconds, rows_shape=rows_shape, flags=flags)
        for item, seconds in zip(batch.items, batch.seconds, strict=True)
    ]
    body: dict[str, Any] = {"results": results}
    if "timings" in flags:
        body["time"] = time.perf_counter() - started
    return json_response(
        body,
        headers={"Shoal-Version": str(batch.version)},
        pretty=_flag(request, "pretty"),
        default=_blob_default("blob_array" in flags),
    )


# -- queued writes ----------------------------------------------------------------


class QueuedWrites:
    """rqlite's `queue`: acknowledged at once, run in the background in order per
    database; the node waits for them before it stops."""

    def __init__(self) -> None:
        self.sequence = 0
        self._last: dict[str, asyncio.Future[None]] = {}

    def submit(
        self, node: ServedNode, name: str, statements: list[Statement]
    ) -> asyncio.Future[None]:
        self.sequence += 1
        previous = self._last.get(name)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._last[name] = done

        async def run() -> None:
            try:
                if previous is not None:
                    await asyncio.shield(previous)
                batch = await node.run_on(
                    name, run_execute, statements, write=True, transaction=False
                )
                for item in batch.items:
                    if isinstance(item, Error):
                        logger.warning("queued write to %s failed: %s", name, item)
            except Exception:
                logger.exception("queued write to %s failed", name)
            finally:
                done.set_result(None)
                if self._last.get(name) is done:
                    del self._last[name]

        node.background(run())
        return done


def _queue(request: Request) -> QueuedWrites:
    queue: QueuedWrites = request.app.state.rqlite_queue
    return queue


# -- handlers -------------------------------------------------------------------


async def db_execute(request: Request) -> Response:
    started = time.perf_counter()
    name = _database(request)
    await authorize(request, Scope.WRITE, name)
    statements = await _statements(request)
    need = Need(write=True, redirect=_flag(request, "redirect"))
    return await dispatch(request, name, need, lambda: _execute(request, name, statements, started))


async def _execute(
    request: Request, name: str, statements: list[Statement], started: float
) -> Response:
    node = node_of(request)
    if _flag(request, "queue"):
        async with node.database(name):
            pass  # a database that does not exist is a 404 now, not a failure later
        done = _queue(request).submit(node, name, statements)
        sequence = _queue(request).sequence
        if _flag(request, "wait"):
            timeout = go_duration(request.query_params.get("timeout", "30s"), "timeout")
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout)
            except TimeoutError:
                raise Busy(f"the queued writes did not finish within {timeout:g} s") from None
        return json_response({"results": [], "sequence_number": sequence})
    write = statements, _flag(request, "transaction")
    batch = await node.write_together(name, run_writes, write, brief=is_brief(write))
    return _respond(request, batch, started, rows_shape=False)


async def db_query(request: Request) -> Response:
    started = time.perf_counter()
    name = _database(request)
    await authorize(request, Scope.READ, name)
    need = _read_need(request)
    statements = await _statements(request)

    async def here() -> Response:
        batch = await node_of(request).run_on(name, run_query, statements, write=False, brief=True)
        return _respond(request, batch, started, rows_shape=True)

    return await dispatch(request, name, need, here)


async def db_request(request: Request) -> Response:
    started = time.perf_counter()
    name = _database(request)
    grant = await authorize(request, Scope.READ, name)  # before reading a body
    need = _read_need(request)
    statements = await _statements(request)
    reads_only = is_read_only(statements)
    grant.check(Scope.READ if reads_only else Scope.WRITE, name)

    async def here() -> Response:
        batch = await node_of(request).run_on(
            name,
            run_request,
            statements,
            write=not reads_only,
            brief=True,
            transaction=_flag(request, "transaction"),
        )
        return _respond(request, batch, started, rows_shape=False)

    return await dispatch(request, name, replace(need, write=not reads_only), here)


async def db_backup(request: Request) -> Response:
    name = _database(request)
    await authorize(request, Scope.READ, name)
    fmt = request.query_params.get("fmt", "sqlite")
    level = "none" if _flag(request, "noleader") else "weak"

    async def here() -> Response:
        return await backup.respond(
            node_of(request),
            name,
            fmt,
            vacuum=_flag(request, "vacuum"),
            gz=_flag(request, "compress"),
        )

    need = Need(write=False, level=level, redirect=_flag(request, "redirect"))
    return await dispatch(request, name, need, here)


async def db_load(request: Request) -> Response:
    started = time.perf_counter()
    name = _database(request)
    await authorize(request, Scope.ADMIN, name)
    body = await read_body(request)

    async def here() -> Response:
        batch = await node_of(request).run_on(name, backup.load, body, write=True)
        return _respond(request, batch, started, rows_shape=False)

    return await dispatch(request, name, Need(write=True), here)


def _node_entry(request: Request) -> dict[str, Any]:
    node = node_of(request)
    url = f"{request.url.scheme}://{request.url.netloc}"
    return {
        "id": node.node_id,
        "api_addr": url,
        "addr": node.settings.address,
        "voter": True,
        "reachable": True,
        "leader": True,
        "time": 0.0,
    }


def _member_entries(request: Request) -> list[dict[str, Any]]:
    """The cluster's live nodes, the leader of `?db=` (default `default`) marked."""
    view = node_of(request).cluster_view()
    if view is None:
        return [_node_entry(request)]
    lease = view.leases.get(_database(request))
    return [
        {
            "id": member.id,
            "api_addr": member.url,
            "addr": member.url.partition("://")[2],
            "voter": True,
            "reachable": True,
            "leader": lease is not None and lease.holder == member.id,
            "time": 0.0,
        }
        for member in sorted(view.members.values(), key=lambda m: m.id)
    ]


async def nodes(request: Request) -> Response:
    await authorize(request, Scope.READ, None)
    entries = _member_entries(request)
    if request.query_params.get("ver") == "2":
        return json_response({"nodes": entries}, pretty=_flag(request, "pretty"))
    by_id = {entry["id"]: entry for entry in entries}
    return json_response(by_id, pretty=_flag(request, "pretty"))


async def status(request: Request) -> Response:
    await authorize(request, Scope.READ, None)
    node = node_of(request)
    leader = next((e for e in _member_entries(request) if e["leader"]), None)
    body = {
        "build": {"version": f"shoal-{shoal.__version__}", "compatibility": "rqlite"},
        "node": {
            "id": node.node_id,
            "start_time": node.started,
            "uptime": f"{time.time() - node.started:.3f}s",
        },
        "http": {
            "bind_addr": node.settings.address,
            "auth": "loopback only" if node.auth.open else "tokens",
        },
        "store": {
            "node_id": node.node_id,
            "dir": str(node.settings.data_dir),
            "leader": {"node_id": leader["id"], "addr": leader["addr"]} if leader else {},
            "raft": {
                "state": "Leader" if leader and leader["id"] == node.node_id else "Follower",
                "voters": len(view.members) if (view := node.cluster_view()) else 1,
            },
            "sqlite3": {"version": apsw.sqlite_lib_version()},
            "databases_open": len(node.names()),
        },
    }
    return json_response(body, pretty=_flag(request, "pretty"))


def routes() -> list[Route]:
    return [
        route("/db/execute", db_execute, "POST"),
        route("/db/query", db_query, "GET", "POST"),
        route("/db/request", db_request, "POST"),
        route("/db/backup", db_backup, "GET"),
        route("/db/load", db_load, "POST"),
        route("/nodes", nodes, "GET"),
        route("/status", status, "GET"),
    ]
