"""The native API, `/v1/...`: JSON in and out, described by `/v1/openapi.json`.

Values travel as JSON scalars, except a BLOB, which is `{"base64": "..."}`, and an
infinite REAL, which is `{"real": "Infinity"}` (JSON has no infinities); both
forms are accepted as parameters too. Every response about a database's
contents carries its version in the `Shoal-Version` header and the `version` field.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import shoal
from shoal.cluster.routing import Need
from shoal.cluster.view import DURABILITIES
from shoal.engine import Database, Result
from shoal.engine.execute import Params
from shoal.errors import Error, InvalidRequest, RequestTooLarge
from shoal.node.auth import Scope
from shoal.node.node import PAGE_LIMIT, DatabaseInfo, check_name
from shoal.server import backup
from shoal.server.httputil import (
    authorize,
    error_body,
    finite,
    header,
    json_response,
    node_of,
    read_body,
    read_json,
    route,
    status_of,
)
from shoal.server.routing import dispatch, level_of
from shoal.server.statements import (
    Batch,
    Statement,
    is_brief,
    is_read_only,
    run_query,
    run_request,
    run_writes,
)

__all__ = ["decode_params", "decode_values", "result_json", "routes", "statements_from"]

_INFINITIES = ("Infinity", "-Infinity")
MAX_WAIT_SECONDS = 60.0
DEFAULT_WAIT_SECONDS = 5.0


# -- request bodies -----------------------------------------------------------


def _value(raw: Any, where: str) -> Any:
    if raw is None or isinstance(raw, (str, int, float)):
        return int(raw) if isinstance(raw, bool) else raw
    if isinstance(raw, dict) and raw.keys() == {"base64"} and isinstance(raw["base64"], str):
        try:
            return base64.b64decode(raw["base64"], validate=True)
        except binascii.Error:
            raise InvalidRequest(f"{where}: 'base64' is not valid base64") from None
    if isinstance(raw, dict) and raw.keys() == {"real"} and raw["real"] in _INFINITIES:
        return math.inf if raw["real"] == "Infinity" else -math.inf
    raise InvalidRequest(
        f"{where}: {type(raw).__name__} is not a SQL value "
        '(use null, a number, a string, {"base64": ...} or {"real": "Infinity"})'
    )


def decode_values(raw: list[Any], where: str) -> list[Any]:
    """JSON values (a row, or `?` parameters) as SQL values."""
    return [_value(v, f"{where}[{i}]") for i, v in enumerate(raw)]


def decode_params(raw: Any, where: str) -> Params:
    """JSON parameters (an array for ?, an object for :name) as engine parameters."""
    if raw is None:
        return None
    if isinstance(raw, list):
        return decode_values(raw, where)
    if isinstance(raw, dict):
        return {str(k): _value(v, f"{where}.{k}") for k, v in raw.items()}
    raise InvalidRequest(f"{where}: parameters must be an array or an object")


def _statement(raw: Any, where: str) -> Statement:
    if isinstance(raw, str):
        return Statement(raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("sql"), str):
        raise InvalidRequest(f"{where}: a statement is a string or an object with 'sql'")
    unknown = raw.keys() - {"sql", "params"}
    if unknown:
        raise InvalidRequest(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    return Statement(raw["sql"], decode_params(raw.get("params"), f"{where}.params"))


def statements_from(body: Any, allowed: frozenset[str], limit: int) -> list[Statement]:
    """The statements of a request body: {"sql", "params"} or {"statements": [...]}."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    unknown = body.keys() - allowed
    if unknown:
        raise InvalidRequest(f"unknown field(s) in the request: {', '.join(sorted(unknown))}")
    if "statements" in body:
        if "sql" in body or "params" in body:
            raise InvalidRequest(
                "give either 'sql' and 'params', or 'statements' (each with its own params)"
            )
        raw = body["statements"]
        if not isinstance(raw, list) or not raw:
            raise InvalidRequest("'statements' must be a non-empty array")
        if len(raw) > limit:
            raise RequestTooLarge(f"{len(raw)} statements is over the limit of {limit} a request")
        return [_statement(item, f"statements[{i}]") for i, item in enumerate(raw)]
    if "sql" not in body:
        raise InvalidRequest("the request needs 'sql' (one statement) or 'statements'")
    return [_statement({k: body[k] for k in ("sql", "params") if k in body}, "request")]


def _flag(body: Mapping[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be true or false")
    return value


def _wait(request: Request, body: Mapping[str, Any]) -> tuple[int | None, float]:
    """min_version (or the Shoal-Version request header) and how long to wait for it."""
    wanted, timeout = body.get("min_version"), body.get("timeout", DEFAULT_WAIT_SECONDS)
    sent = header(request, "shoal-version")
    if wanted is None and sent is not None:
        if not sent.strip().isdigit():
            raise InvalidRequest("the Shoal-Version header must be a version number")
        wanted = int(sent)
    if wanted is not None and (not isinstance(wanted, int) or isinstance(wanted, bool)):
        raise InvalidRequest("'min_version' must be an integer")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        raise InvalidRequest("'timeout' must be a number of seconds, 0 or more")
    return wanted, min(float(timeout), MAX_WAIT_SECONDS)


# -- responses ----------------------------------------------------------------


def _rows(rows: list[tuple[Any, ...]]) -> list[Any]:
    if any(type(v) is float and not math.isfinite(v) for row in rows for v in row):
        return [[finite(v) for v in row] for row in rows]
    return rows


def result_json(result: Result) -> dict[str, Any]:
    return {
        "columns": result.columns,
        "types": result.types,
        "rows": _rows(result.rows),
        "rows_affected": result.rows_affected,
        "last_insert_id": result.last_insert_id,
    }


def batch_json(batch: Batch) -> dict[str, Any]:
    """The version, and per statement its result or error; with the first error's
    own fields when one failed."""
    results = [
        error_body(item)["error"] if isinstance(item, Error) else result_json(item)
        for item in batch.items
    ]
    failure = batch.first_error
    if failure is None:
        return {"version": batch.version, "results": results}
    index, first = failure
    return {**error_body(first, statement=index), "version": batch.version, "results": results}


def batch_response(batch: Batch) -> Response:
    """200 with every result; or the first error's status, the error, and per
    statement its result or error (statements run on their own stay committed)."""
    headers = {"Shoal-Version": str(batch.version)}
    body = batch_json(batch)
    failure = batch.first_error
    if failure is None:
        return json_response(body, headers=headers)
    status = status_of(failure[1])
    if status == 503:
        headers["Retry-After"] = "1"
    return json_response(body, status, headers)


def _info_json(info: DatabaseInfo) -> dict[str, Any]:
    found = {k: v for k, v in vars(info).items() if v is not None and k != "copies"}
    if info.copies is not None:
        newest = max((version for _, version in info.copies), default=0)
        found["replicas"] = [
            {"node": node, "version": version, "lag": newest - version}
            for node, version in info.copies
        ]
    return found


# -- handlers -----------------------------------------------------------------

_QUERY_FIELDS = frozenset({"sql", "params", "statements", "min_version", "timeout", "level"})
_EXECUTE_FIELDS = frozenset({"sql", "params", "statements", "transaction"})
_REQUEST_FIELDS = _QUERY_FIELDS | _EXECUTE_FIELDS


async def list_databases(request: Request) -> Response:
    """A page of the databases the token covers: `?after=NAME&limit=N&contains=TEXT`."""
    grant = await authorize(request, Scope.READ, None)
    query = request.query_params
    unknown = query.keys() - {"after", "limit", "contains"}
    if unknown:
        raise InvalidRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
    limit = query.get("limit", str(PAGE_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= PAGE_LIMIT:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {PAGE_LIMIT}")
    listing = await node_of(request).list_databases(
        after=query.get("after", ""),
        limit=int(limit),
        contains=query.get("contains", ""),
        visible=grant.covers,
    )
    databases = [_info_json(info) for info in listing.databases]
    return json_response({"databases": databases, "next": listing.following})


async def create_database(request: Request) -> Response:
    grant = await authorize(request, Scope.ADMIN, None)  # before reading a body
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise InvalidRequest('the body must be {"name": "<database name>"}')
    unknown = body.keys() - {"name", "durability"}
    if unknown:
        raise InvalidRequest(f"unknown field(s) in the request: {', '.join(sorted(unknown))}")
    durability = body.get("durability")
    if durability is not None and durability not in DURABILITIES:
        raise InvalidRequest('\'durability\' must be "sync" or "async"')
    grant.check(Scope.ADMIN, body["name"])
    info = await node_of(request).create(check_name(body["name"]), durability)
    headers = {"Shoal-Version": str(info.version), "Location": f"/v1/databases/{info.name}"}
    return json_response(_info_json(info), 201, headers)


async def database_info(request: Request) -> Response:
    name = request.path_params["name"]
    await authorize(request, Scope.READ, name)

    checksum = request.query_params.get("checksum", "").lower() in ("1", "true", "yes")

    async def here() -> Response:
        node = node_of(request)
        info = _info_json(await node.info(name))
        if checksum:  # of this copy, at the version it reports
            info["version"], info["checksum"] = await node.run_on(
                name, _versioned_checksum, write=True
            )
        return json_response(info, headers={"Shoal-Version": str(info["version"])})

    return await dispatch(request, name, Need(write=False, level="none"), here)


def _versioned_checksum(db: Database) -> tuple[int, str]:
    """The copy's version and logical checksum, with the writer held so they match."""
    with db.writer_held():
        return db.version, db.checksum()


async def cluster_state(request: Request) -> Response:
    """Nodes, and per database its leader, log head and copies (`shoal cluster status`);
    `?databases=false`: the nodes alone (every database costs a read of its log head)."""
    grant = await authorize(request, Scope.READ, None)
    node = node_of(request)
    nodes_only = request.query_params.get("databases", "").lower() in ("0", "false", "no")
    summary = await node.cluster_status((lambda name: False) if nodes_only else grant.covers)
    if summary is None:
        return json_response({"clustered": False, "node": node.node_id})
    return json_response(summary)


async def drop_database(request: Request) -> Response:
    name = request.path_params["name"]
    await authorize(request, Scope.ADMIN, name)
    await node_of(request).drop(name)
    return json_response({"name": name, "dropped": True})


async def node_status(request: Request) -> Response:
    """The node, and each open database's version and archiving (for `shoal status`)."""
    grant = await authorize(request, Scope.READ, None)
    node = node_of(request)
    archived = node.archive_status()
    databases = []
    for name, version in node.versions().items():
        if not grant.covers(name):
            continue
        entry: dict[str, Any] = {"name": name, "version": version}
        archive = archived.get(name)
        if archive is not None:
            entry["archive_lag"] = archive.lag
            entry["archive_failures"] = archive.failures
            entry["archive_error"] = archive.last_error
            entry["snapshot_version"] = archive.snapshot_version
            entry["snapshot_time"] = (
                None if archive.snapshot_time_ns is None else archive.snapshot_time_ns / 1e9
            )
        databases.append(entry)
    body = {
        "shoal": shoal.__version__,
        "address": node.settings.address,
        "ready": node.ready,
        "uptime_seconds": round(time.time() - node.started, 3),
        "archive": node.archive_url,
        "databases": databases,
    }
    return json_response(body)


async def query(request: Request) -> Response:
    name = request.path_params["name"]
    await authorize(request, Scope.READ, name)
    node = node_of(request)
    body = await read_json(request)
    statements = statements_from(body, _QUERY_FIELDS, node.settings.max_statements)
    wanted, timeout = _wait(request, body)
    need = Need(write=False, level=level_of(body.get("level")), min_version=wanted)

    async def here() -> Response:
        batch = await node.run_on(
            name, run_query, statements, write=False, min_version=wanted, wait=timeout, brief=True
        )
        return batch_response(batch)

    return await dispatch(request, name, need, here)


async def execute(request: Request) -> Response:
    name = request.path_params["name"]
    await authorize(request, Scope.WRITE, name)
    node = node_of(request)
    body = await read_json(request)
    statements = statements_from(body, _EXECUTE_FIELDS, node.settings.max_statements)
    write = statements, _flag(body, "transaction", True)

    async def here() -> Response:
        batch = await node.write_together(name, run_writes, write, brief=is_brief(write))
        return batch_response(batch)

    return await dispatch(request, name, Need(write=True), here)


async def mixed_request(request: Request) -> Response:
    name = request.path_params["name"]
    grant = await authorize(request, Scope.READ, name)  # before reading a body
    node = node_of(request)
    body = await read_json(request)
    statements = statements_from(body, _REQUEST_FIELDS, node.settings.max_statements)
    reads_only = is_read_only(statements)
    grant.check(Scope.READ if reads_only else Scope.WRITE, name)
    transaction = _flag(body, "transaction", True)
    wanted, timeout = _wait(request, body)
    need = Need(write=not reads_only, level=level_of(body.get("level")), min_version=wanted)

    async def here() -> Response:
        batch = await node.run_on(
            name,
            run_request,
            statements,
            write=not reads_only,
            min_version=wanted,
            wait=timeout,
            brief=True,
            transaction=transaction,
        )
        return batch_response(batch)

    return await dispatch(request, name, need, here)


async def backup_database(request: Request) -> Response:
    name = request.path_params["name"]
    await authorize(request, Scope.READ, name)
    fmt = request.query_params.get("format", "sqlite")
    level = "none" if "noleader" in request.query_params else "weak"

    async def here() -> Response:
        return await backup.respond(node_of(request), name, fmt)

    return await dispatch(request, name, Need(write=False, level=level), here)


async def load_database(request: Request) -> Response:
    name = request.path_params["name"]
    await authorize(request, Scope.ADMIN, name)
    body = await read_body(request)

    async def here() -> Response:
        batch = await node_of(request).run_on(name, backup.load, body, write=True)
        return batch_response(batch)

    return await dispatch(request, name, Need(write=True), here)


BASE = "/v1/databases/{name}"


def routes() -> list[Route]:
    base = BASE
    return [
        route(f"{base}/query", query, "POST"),
        route(f"{base}/execute", execute, "POST"),
        route(f"{base}/request", mixed_request, "POST"),
        route("/v1/status", node_status, "GET"),
        route("/v1/cluster", cluster_state, "GET"),
        route("/v1/databases", list_databases, "GET"),
        route("/v1/databases", create_database, "POST"),
        route(base, database_info, "GET"),
        route(base, drop_database, "DELETE"),
        route(f"{base}/backup", backup_database, "GET"),
        route(f"{base}/load", load_database, "POST"),
    ]
