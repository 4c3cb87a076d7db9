"""What every HTTP handler shares: bodies with a size limit, JSON out, auth, and the
one table that maps shoal's errors to HTTP statuses."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from shoal.errors import (
    DatabaseExists,
    DatabaseNotFound,
    Error,
    Forbidden,
    IntegrityError,
    InternalError,
    InvalidRequest,
    LogTruncated,
    OperationalError,
    OutcomeUnknown,
    QueryWrites,
    RequestTooLarge,
    ResultTooLarge,
    StatementTimeout,
    StoreUnavailable,
    TransactionNotFound,
    Unauthorized,
)
from shoal.node.auth import Grant, Scope
from shoal.server.port import ServedNode

__all__ = [
    "AUTHENTICATE",
    "BODY",
    "NODE",
    "Handler",
    "authorize",
    "error_body",
    "header",
    "json_response",
    "node_of",
    "route",
    "parse_json",
    "read_body",
    "read_json",
    "status_of",
]

AUTHENTICATE = {"WWW-Authenticate": 'Basic realm="shoal", Bearer realm="shoal"'}

# First match wins: subclasses before their bases.
_STATUS: list[tuple[type[BaseException], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (DatabaseNotFound, 404),
    (TransactionNotFound, 404),
    (DatabaseExists, 409),
    (IntegrityError, 409),
    (LogTruncated, 410),  # gone from this copy's log: seed from a snapshot
    (RequestTooLarge, 413),
    (QueryWrites, 400),
    (StatementTimeout, 400),  # the request is over a limit of the node: not worth a retry
    (ResultTooLarge, 400),
    (InternalError, 500),
    (StoreUnavailable, 503),  # the archive, away for now (restoring an evicted database)
    (OutcomeUnknown, 502),  # the node that was committing it went away: check, then retry
    (OperationalError, 503),  # Busy, ReadOnly, VersionNotReached, Unavailable: retry
    (Error, 400),  # bad SQL, a refused statement, a bad value, a statement limit
]


def status_of(exc: BaseException) -> int:
    """The HTTP status for an error: 4xx for the request's fault, 503 for retry later."""
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def error_body(exc: BaseException, **extra: Any) -> dict[str, Any]:
    """The native dialect's error object."""
    status = status_of(exc)
    message = str(exc) if isinstance(exc, Error) else f"internal error: {type(exc).__name__}"
    error = {"type": type(exc).__name__, "message": message, "retryable": status == 503}
    return {"error": {**error, **extra}}


def _default(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


class JSONResponse(Response):
    """A JSON body already encoded: Starlette's Response, its headers built in one
    step (its own constructor looks each one over again, per response)."""

    media_type = "application/json"

    def __init__(self, content: bytes, status: int, headers: dict[str, str] | None) -> None:
        self.body = content
        self.status_code = status
        self.background = None
        raw = [(b"content-length", str(len(content)).encode()), _JSON_TYPE]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw


_JSON_TYPE = (b"content-type", b"application/json")


def json_response(
    body: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
    *,
    pretty: bool = False,
    default: Callable[[Any], Any] = _default,
) -> Response:
    option = orjson.OPT_INDENT_2 if pretty else 0
    return JSONResponse(orjson.dumps(body, default=default, option=option), status, headers)


def finite(value: Any) -> Any:
    """JSON has no infinities: SQLite's ±Inf REAL travels as {"real": "Infinity"}."""
    if type(value) is float and not math.isfinite(value):
        return {"real": "Infinity" if value > 0 else "-Infinity"}
    return value


Handler = Callable[[Request], Awaitable[Response]]


class _Endpoint:
    """A handler as a plain ASGI app. Starlette would wrap a function in a layer of
    exception handling per request; the application's front does that once."""

    __slots__ = ("handler",)

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)


def route(path: str, handler: Handler, *methods: str) -> Route:
    """The route of `handler` for `path` and `methods`."""
    return Route(path, _Endpoint(handler), methods=list(methods), name=handler.__name__)


def header(request: Request, name: str) -> str | None:
    """The request's header `name` (lower case), the first if it came more than once.

    A dict made once per request from the ASGI scope, where header names arrive in
    lower case: Starlette's `request.headers` searches its list on every lookup."""
    scope = request.scope
    found: dict[str, str] | None = scope.get(HEADERS)
    if found is None:
        found = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(scope["headers"])}
        scope[HEADERS] = found
    return found.get(name)


def node_of(request: Request) -> ServedNode:
    """The node serving the request (the application's front put it in the scope)."""
    node: ServedNode = request.scope[NODE]
    return node


# The scope's keys for what a request's handlers share: the serving node, the
# request's body once read, and its headers by name.
NODE, BODY, HEADERS = "shoal.node", "shoal.body", "shoal.headers"


async def read_body(request: Request) -> bytes:
    """The whole body, or RequestTooLarge as soon as it passes the node's limit."""
    limit = node_of(request).settings.max_body_bytes
    declared = header(request, "content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(
            f"request body of {declared} bytes is over the limit of {limit} "
            "(the node's max_body_bytes setting)"
        )
    chunks, size = [], 0
    receive = request.receive  # not request.stream(): an async generator per request
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(
                f"request body is over the limit of {limit} bytes "
                "(the node's max_body_bytes setting)"
            )
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request.scope[BODY] = body  # kept, should the request be forwarded to another node
    return body


async def read_json(request: Request) -> Any:
    """The body parsed as JSON; InvalidRequest naming the problem when it is not."""
    return parse_json(await read_body(request))


def parse_json(body: bytes) -> Any:
    """`body` parsed as JSON; InvalidRequest naming the problem when it is not."""
    if not body.strip():
        raise InvalidRequest("the request body is empty; it must be JSON")
    try:
        # The standard parser, not orjson: orjson turns integers past 64 bits into
        # floats, and a value must never change silently on its way to the database.
        return _DECODER.decode(body.decode(json.detect_encoding(body)))
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # json.loads builds one per call


async def authorize(request: Request, scope: Scope, database: str | None) -> Grant:
    """The request's grant if it allows `scope` on `database`; Unauthorized or Forbidden."""
    node = node_of(request)
    client = request.scope.get("client")
    host = client[0] if client else None
    grant = await node.auth.authenticate(header(request, "authorization"), host)
    grant.check(scope, database)
    return grant
