"""The dashboard at `/ui`: one HTML page, a script and a style sheet, served by the
node itself (no build step), behind the node's auth.

The page holds no data: its script reads the node's own API (status, cluster,
database pages, query and query-many) with the credentials the browser sent for
the page. A node with tokens answers `/ui` with 401 and a Basic challenge, so the
browser asks for a user (any) and a token as the password, once.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from shoal.node.auth import Scope
from shoal.server.httputil import authorize, route

__all__ = ["routes"]

_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
_FILES = {name: (resources.files("shoal.server") / "ui" / name).read_bytes() for name in _TYPES}


def _asset(name: str) -> Route:
    async def serve(request: Request) -> Response:
        await authorize(request, Scope.READ, None)
        headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        return Response(_FILES[name], media_type=f"{_TYPES[name]}; charset=utf-8", headers=headers)

    serve.__name__ = f"ui_{name.replace('.', '_')}"
    return route("/ui" if name == "index.html" else f"/ui/{name}", serve, "GET")


def routes() -> list[Route]:
    return [_asset(name) for name in _TYPES]
