"""The ASGI application of a node: both dialects, probes, metrics and error mapping.

`create_app(settings)` is all a test or `shoal serve` needs; the node starts with
the application's lifespan and closes at its end, after in-flight requests.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Send
from starlette.types import Scope as ASGIScope

from shoal.errors import Error
from shoal.node.auth import Scope
from shoal.node.config import Settings
from shoal.node.node import Node
from shoal.server import dashboard, logstream, native, querymany, rqlite, transactions
from shoal.server.httputil import (
    AUTHENTICATE,
    NODE,
    authorize,
    error_body,
    json_response,
    node_of,
    route,
    status_of,
)
from shoal.server.metrics import Metrics
from shoal.server.openapi import document
from shoal.server.port import ServedNode

__all__ = ["create_app"]


def _native_path(request: Request) -> bool:
    """Everything but rqlite's own paths answers errors in the native shape."""
    path = request.url.path
    return not path.startswith("/db/") and path not in ("/status", "/nodes")


async def handle_error(request: Request, exc: Exception) -> Response:
    """Every shoal error becomes its status; the body is the dialect's error shape."""
    status = status_of(exc)
    headers = dict(AUTHENTICATE) if status == 401 else {}
    if status == 503:
        headers["Retry-After"] = "1"
    if _native_path(request):
        return json_response(error_body(exc), status, headers)
    return json_response({"error": str(exc)}, status, headers)


async def handle_http(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405, in the dialect's shape."""
    assert isinstance(exc, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
    message = f"{request.method} {request.url.path}: {exc.detail}"
    headers = dict(exc.headers or {})
    if _native_path(request):
        body = {"error": {"type": kind, "message": message, "retryable": False}}
        return json_response(body, exc.status_code, headers)
    return json_response({"error": message}, exc.status_code, headers)


async def livez(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def readyz(request: Request) -> Response:
    """rqlite's readiness text; 503 until the node serves, and while it stops."""
    if not node_of(request).ready:
        return PlainTextResponse("[+]node ok\n[-]store not ready\n", 503)
    return PlainTextResponse("[+]node ok\n[+]leader ok\n[+]store ok\n")


async def metrics(request: Request) -> Response:
    await authorize(request, Scope.READ, None)
    registry: transactions.InteractiveTransactions = request.app.state.transactions
    text = request.app.state.metrics.render(node_of(request), registry.count)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def openapi(request: Request) -> Response:
    return json_response(document())


class Front:
    """The one layer every request passes: it names the node that served the answer
    (`Shoal-Node`, unless a forwarded answer already does), closes the connection
    after each answer once the node is stopping (so that no kept-alive connection
    is idle when it closes them all), turns an exception into
    the dialect's error response, and counts the request by route, status and time.

    It stands in for Starlette's four layers (server errors, the middleware above,
    handled exceptions), each of which wrapped `send` again per request; and it
    finds the busiest routes, the `POST`s on one database, without the router
    (decision 42).
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, direct: Sequence[Route] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.direct = _by_action(direct)

    async def __call__(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None  # until the response begins
        node: ServedNode | None = getattr(scope["app"].state, "node", None)
        name = None
        if node is not None:
            scope[NODE] = node
            name = (b"shoal-node", node.node_id.encode())

        async def named(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                if name is not None and not any(k == b"shoal-node" for k, _ in headers):
                    headers = [*headers, name]
                if node is not None and node.draining:  # no idle connection left to cut
                    headers = [*headers, (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        try:
            known = self._direct_route(scope)
            if known is None:
                await self.app(scope, receive, named)
            else:
                scope["route"] = known
                await known.app(scope, receive, named)
        except Exception as exc:
            if status is not None:  # the response had begun: all that is left is to cut it
                raise
            request = Request(scope)
            handler = handle_http if isinstance(exc, HTTPException) else handle_error
            await (await handler(request, exc))(scope, receive, named)
            if not isinstance(exc, (Error, HTTPException)):
                raise  # a bug: the server logs it (a test client raises it)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - started
            self.metrics.observe(scope["method"], template, status or 500, seconds)

    def _direct_route(self, scope: ASGIScope) -> Route | None:
        """The route of a `POST /v1/databases/{name}/<action>`, found without the
        router (which tries routes one by one, each with a regular expression);
        `path_params` set as the router would set them."""
        path: str = scope["path"]
        if scope["method"] != "POST" or not path.startswith(_DATABASES) or scope.get("root_path"):
            return None
        name, _, action = path[len(_DATABASES) :].partition("/")
        known = self.direct.get(action)
        if known is None or not name:
            return None
        scope["path_params"] = {"name": name}
        return known


_DATABASES = native.BASE.removesuffix("{name}")


def _by_action(routes: Sequence[Route]) -> dict[str, Route]:
    """The routes `POST /v1/databases/{name}/<action>` by their action."""
    found = {}
    for each in routes:
        action = each.path.removeprefix(native.BASE + "/")
        if action != each.path and action.isalpha() and each.methods == {"POST"}:
            found[action] = each
    return found


class _App(Starlette):
    """Starlette's routing, state and lifespan, behind `Front` alone."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state.metrics = metrics

    def build_middleware_stack(self) -> ASGIApp:
        routes = [r for r in self.router.routes if isinstance(r, Route)]
        return Front(self.router, self.state.metrics, routes)


def create_app(
    settings: Settings,
    on_start: Callable[[ServedNode], None] | None = None,
    on_failure: Callable[[Error], None] | None = None,
    *,
    make_node: Callable[[Settings], ServedNode] = Node,
) -> Starlette:
    """The node's HTTP application; its lifespan makes the node (`make_node`: a
    test may serve a fake), starts and stops it, and calls `on_start` once it is
    ready (`on_failure` if it cannot start)."""
    counters = Metrics()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        node = make_node(settings)
        app.state.node = node
        # Forwards to other nodes (server.routing) share one pool of connections.
        app.state.peers = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0))
        app.state.transactions = transactions.InteractiveTransactions(node)
        try:
            await node.start()
        except Error as exc:
            if on_failure is not None:
                on_failure(exc)
            raise
        if on_start is not None:
            on_start(node)
        try:
            yield
        finally:
            await app.state.transactions.close()
            await node.close()
            await app.state.peers.aclose()

    routes = [  # the busiest first: Starlette tries them in order
        *native.routes(),
        *rqlite.routes(),
        *transactions.routes(native.BASE),
        *logstream.routes(native.BASE),
        route("/v1/query-many", querymany.query_many, "POST"),
        *dashboard.routes(),
        route("/livez", livez, "GET"),
        route("/readyz", readyz, "GET"),
        route("/metrics", metrics, "GET"),
        route("/v1/openapi.json", openapi, "GET"),
    ]
    app = _App(counters, routes=routes, lifespan=lifespan)
    app.state.rqlite_queue = rqlite.QueuedWrites()
    return app
