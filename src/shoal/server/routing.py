"""Any node answers for any database: the node decides where a request is served
(cluster.routing: here, or at the leader), and this module serves it here or
forwards it.

A forwarded request keeps its method, path, query, body and credentials; the
answer comes back as the leader gave it, `Shoal-Node` naming who served it. With
`redirect` asked (rqlite's flag), the answer is a 301 to the leader instead. A
write refused here because this node stopped leading while the request waited
(its lease was handed over) is routed again and forwarded to the new leader: it
had not committed anything, so that is safe.

A forward carries the epoch of the lease its sender saw (`Shoal-Lease-Epoch`),
which the receiver's routing honours, and `Shoal-Hops`, which caps how long a
request may chase a lease that keeps moving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
from starlette.requests import Request
from starlette.responses import Response

from shoal.cluster.routing import LEVELS, Leader, Need
from shoal.errors import (
    InvalidRequest,
    NotLeader,
    OutcomeUnknown,
    ReadOnly,
    Unavailable,
    VersionNotReached,
)
from shoal.server.httputil import BODY, header, node_of

__all__ = ["dispatch", "level_of"]

ALIASES = {"strong": "linearizable", "auto": "weak"}  # rqlite's names
HOPS = "Shoal-Hops"
EPOCH = "Shoal-Lease-Epoch"  # the lease under which the forwarder believes we lead
MAX_HOPS = 3
REFUSED_PAUSE_SECONDS = 0.01  # between a write refused here and routing it again
_PASSED_ON = ("authorization", "content-type", "accept", "shoal-version")
_PASSED_BACK = ("content-type", "shoal-version", "shoal-node", "retry-after", "location")


def level_of(raw: object) -> str:
    """A consistency level by its name or rqlite's; InvalidRequest for others."""
    if raw is None:
        return "weak"
    name = str(raw).lower()
    name = ALIASES.get(name, name)
    if name not in LEVELS:
        raise InvalidRequest(
            f"level {raw!r} is not one of none, weak, linearizable (or strong, auto)"
        )
    return name


async def dispatch(
    request: Request, name: str, need: Need, serve_here: Callable[[], Awaitable[Response]]
) -> Response:
    """Serves the request here when the node routes it here, else forwards (or
    redirects) it to the leader."""
    node = node_of(request)
    hops = _header_number(request, HOPS, MAX_HOPS)
    at_least = _header_number(request, EPOCH, 0)  # the lease the forwarder sent us under
    while True:
        leader = await node.route(name, need, at_least)
        if leader is None:
            try:
                return await serve_here()
            except (NotLeader, ReadOnly):
                if not need.write:
                    raise
                # Handed over, deposed or behind the log before anything committed:
                # route again, once the node has had a moment to move on.
                await asyncio.sleep(REFUSED_PAUSE_SECONDS)
                continue
            except VersionNotReached:
                if hops > 0:
                    raise
                # This copy lags: the leader holds every committed version, and the
                # forwarded request waits there for its own timeout, once.
                need = Need(write=False, redirect=need.redirect)
                leader = await node.route(name, need, at_least)
                if leader is None:  # this node leads: the version does not exist yet
                    raise
        if need.redirect:
            location = leader.url + request.url.path
            if request.url.query:
                location += "?" + request.url.query
            return Response(status_code=301, headers={"Location": location})
        if hops >= MAX_HOPS:
            raise NotLeader(f"{name!r} moved on while this request chased it; retry", leader.url)
        try:
            return await _forward(request, leader, hops + 1, need.write)
        except httpx.ConnectError:
            at_least = leader.epoch + 1  # the leader is gone: wait for the next one


def _header_number(request: Request, name: str, otherwise: int) -> int:
    raw = header(request, name.lower())
    if raw is None:
        return 0
    return int(raw) if raw.isdigit() else otherwise


async def _forward(request: Request, leader: Leader, hops: int, write: bool) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED_ON}
    headers[HOPS] = str(hops)
    headers[EPOCH] = str(leader.epoch)
    body = request.scope.get(BODY, b"")
    base = leader.url
    peers: httpx.AsyncClient = request.app.state.peers
    try:
        answer = await peers.request(
            request.method,
            base + request.url.path,
            params=request.url.query,
            content=body,
            headers=headers,
        )
    except httpx.ConnectError:
        raise
    except httpx.HTTPError as exc:
        if write:
            raise OutcomeUnknown(
                f"the leader at {base} went away before answering ({type(exc).__name__}): "
                "the write may or may not have been applied; check before sending it again"
            ) from None
        raise Unavailable(f"the leader at {base} went away before answering; retry") from None
    passed = {k: v for k, v in answer.headers.items() if k.lower() in _PASSED_BACK}
    return Response(answer.content, answer.status_code, passed)
