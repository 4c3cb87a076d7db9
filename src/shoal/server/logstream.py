"""The log stream and the snapshot: what a replica needs to follow a database.

Any copy serves both from its own file (level `none`), so replicas spread over a
cluster's nodes instead of all loading the leader; a node with no copy redirects
to one that has it. The stream's frames are shoal.stream's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from shoal.cluster.routing import Need
from shoal.engine import Database
from shoal.errors import Error, InvalidRequest, Unavailable
from shoal.node.auth import Scope
from shoal.server import backup
from shoal.server.httputil import authorize, error_body, node_of, route
from shoal.server.port import ServedNode
from shoal.server.routing import dispatch
from shoal.stream import MEDIA_TYPE, FrameKind, frame, json_frame

__all__ = ["routes"]

BATCH = 64  # records read and sent at a time
DEFAULT_HEARTBEAT = 1.0
_HERE = Need(write=False, level="none", redirect=True)


def _next(db: Database, after: int) -> tuple[list[bytes], int]:
    """The records after `after` (at most BATCH), and the copy's version."""
    return db.log_after(after, BATCH), db.version


async def log_stream(request: Request) -> Response:
    name = request.path_params["name"]
    await authorize(request, Scope.READ, name)
    after = _version(request, "after") or 0
    until = _version(request, "until")
    heartbeat = _seconds(request, "heartbeat", DEFAULT_HEARTBEAT, 0.05, 60.0)
    node = node_of(request)

    async def here() -> Response:
        # The first read happens before the response starts, so that a missing
        # database or a truncated log is a plain 404 or 410, not a stream's end.
        first = await node.run_on(name, _next, after, write=False)
        return StreamingResponse(
            _frames(node, name, after, until, first, heartbeat),
            media_type=MEDIA_TYPE,
            headers={"Shoal-Version": str(first[1]), "Cache-Control": "no-store"},
        )

    return await dispatch(request, name, _HERE, here)


async def _frames(
    node: ServedNode,
    name: str,
    sent: int,
    until: int | None,
    batch: tuple[list[bytes], int],
    heartbeat: float,
) -> AsyncIterator[bytes]:
    """Records as this copy gets them, up to `until` if given (then the body ends);
    a heartbeat after `heartbeat` quiet seconds."""
    records, version = batch
    quiet_since = time.monotonic()
    while True:
        if until is not None:
            del records[max(0, until - sent) :]
            if sent >= until:
                return
        if records:
            yield b"".join(frame(FrameKind.RECORD, raw) for raw in records)
            sent += len(records)
            quiet_since = time.monotonic()
        elif node.draining:
            stopping = Unavailable(f"the node is stopping: follow another, after version {sent}")
            yield json_frame(FrameKind.END, error_body(stopping))
            return
        else:
            quiet = time.monotonic() - quiet_since
            if quiet >= heartbeat:
                yield json_frame(FrameKind.HEARTBEAT, {"version": version})
                quiet_since = time.monotonic()
            else:
                await node.next_version(name, heartbeat - quiet)
        try:
            records, version = await node.run_on(name, _next, sent, write=False)
        except Error as exc:
            yield json_frame(FrameKind.END, error_body(exc))
            return


async def snapshot(request: Request) -> Response:
    """A consistent SQLite file of this copy to seed a replica from; its version is
    the Shoal-Version header, and the log stream follows from there."""
    name = request.path_params["name"]
    await authorize(request, Scope.READ, name)

    async def here() -> Response:
        return await backup.respond(node_of(request), name, "sqlite")

    return await dispatch(request, name, _HERE, here)


def _version(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw is None:
        return None
    if not raw.isdigit():
        raise InvalidRequest(f"?{key}= must be a version: a whole number, 0 or more, not {raw!r}")
    return int(raw)


def _seconds(request: Request, key: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not low <= value <= high:  # NaN fails too
        raise InvalidRequest(f"?{key}= must be seconds from {low:g} to {high:g}, not {raw!r}")
    return value


def routes(base: str) -> list[Route]:
    return [
        route(f"{base}/log", log_stream, "GET"),
        route(f"{base}/snapshot", snapshot, "GET"),
    ]
