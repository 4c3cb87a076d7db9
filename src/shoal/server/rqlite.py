"""The rqlite dialect: `/db/execute`, `/db/query`, `/db/request`, `/db/backup`,
`/db/load`, `/status` and `/nodes`, with rqlite's bodies, flags, shapes and statuses,
so that rqlite's client libraries work unchanged. The database is `?db=NAME`
(default `default`).

SQL errors are reported per statement inside a 200, as rqlite does; a malformed
body or flag is a 400. Consistency levels and freshness are accepted and checked:
on one node every read is served by the leader at its newest version.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from typing import Any

import apsw
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import shoal
from shoal.engine import Result
from shoal.errors import Busy, Error, InvalidRequest, RequestTooLarge
from shoal.server import backup
from shoal.server.auth import Scope
from shoal.server.httputil import authorize, finite, json_response, node_of, read_body, read_json
from shoal.server.node import DEFAULT_DATABASE, Node
from shoal.server.statements import (
    Batch,
    Statement,
    is_read_only,
    run_execute,
    run_query,
    run_request,
)

__all__ = ["QueuedWrites", "go_duration", "routes", "statements_from"]

logger = logging.getLogger("shoal.rqlite")

LEVELS = frozenset({"none", "weak", "strong", "linearizable", "auto"})
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


def _check_read_flags(request: Request) -> None:
    level = request.query_params.get("level")
    if level is not None and level.lower() not in LEVELS:
        raise InvalidRequest(f"level={level!r} is not one of {', '.join(sorted(LEVELS))}")
    for name in ("freshness", "timeout", "db_timeout"):
        if name in request.query_params:
            go_duration(request.query_params[name], name)


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

    def submit(self, node: Node, name: str, statements: list[Statement]) -> asyncio.Future[None]:
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
    authorize(request, Scope.WRITE, name)
    node = node_of(request)
    statements = await _statements(request)
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
    transaction = _flag(request, "transaction")
    batch = await node.run_on(name, run_execute, statements, write=True, transaction=transaction)
    return _respond(request, batch, started, rows_shape=False)


async def db_query(request: Request) -> Response:
    started = time.perf_counter()
    name = _database(request)
    authorize(request, Scope.READ, name)
    _check_read_flags(request)
    statements = await _statements(request)
    batch = await node_of(request).run_on(name, run_query, statements, write=False)
    return _respond(request, batch, started, rows_shape=True)


async def db_request(request: Request) -> Response:
    started = time.perf_counter()
    name = _database(request)
    grant = authorize(request, Scope.READ, name)  # before reading a body
    _check_read_flags(request)
    statements = await _statements(request)
    reads_only = is_read_only(statements)
    grant.check(Scope.READ if reads_only else Scope.WRITE, name)
    batch = await node_of(request).run_on(
        name,
        run_request,
        statements,
        write=not reads_only,
        transaction=_flag(request, "transaction"),
    )
    return _respond(request, batch, started, rows_shape=False)


async def db_backup(request: Request) -> Response:
    name = _database(request)
    authorize(request, Scope.READ, name)
    fmt = request.query_params.get("fmt", "sqlite")
    return await backup.respond(
        node_of(request),
        name,
        fmt,
        vacuum=_flag(request, "vacuum"),
        gz=_flag(request, "compress"),
    )


async def db_load(request: Request) -> Response:
    started = time.perf_counter()
    name = _database(request)
    authorize(request, Scope.ADMIN, name)
    body = await read_body(request)
    batch = await node_of(request).run_on(name, backup.load, body, write=True)
    return _respond(request, batch, started, rows_shape=False)


def _node_entry(request: Request) -> dict[str, Any]:
    node = node_of(request)
    url = f"{request.url.scheme}://{request.url.netloc}"
    return {
        "id": node.settings.address,
        "api_addr": url,
        "addr": node.settings.address,
        "voter": True,
        "reachable": True,
        "leader": True,
        "time": 0.0,
    }


async def nodes(request: Request) -> Response:
    authorize(request, Scope.READ, None)
    entry = _node_entry(request)
    if request.query_params.get("ver") == "2":
        return json_response({"nodes": [entry]}, pretty=_flag(request, "pretty"))
    return json_response({entry["id"]: entry}, pretty=_flag(request, "pretty"))


async def status(request: Request) -> Response:
    authorize(request, Scope.READ, None)
    node = node_of(request)
    entry = _node_entry(request)
    body = {
        "build": {"version": f"shoal-{shoal.__version__}", "compatibility": "rqlite"},
        "node": {
            "id": entry["id"],
            "start_time": node.started,
            "uptime": f"{time.time() - node.started:.3f}s",
        },
        "http": {
            "bind_addr": node.settings.address,
            "auth": "loopback only" if node.auth.open else "tokens",
        },
        "store": {
            "node_id": entry["id"],
            "dir": str(node.settings.data_dir),
            "leader": {"node_id": entry["id"], "addr": entry["addr"]},
            "raft": {"state": "Leader", "voters": 1},
            "sqlite3": {"version": apsw.sqlite_lib_version()},
            "databases_open": len(node.names()),
        },
    }
    return json_response(body, pretty=_flag(request, "pretty"))


def routes() -> list[Route]:
    return [
        Route("/db/execute", db_execute, methods=["POST"]),
        Route("/db/query", db_query, methods=["GET", "POST"]),
        Route("/db/request", db_request, methods=["POST"]),
        Route("/db/backup", db_backup, methods=["GET"]),
        Route("/db/load", db_load, methods=["POST"]),
        Route("/nodes", nodes, methods=["GET"]),
        Route("/status", status, methods=["GET"]),
    ]
