"""Any node answers for any database: it serves a request here, or forwards it.

Where a request may be served depends on what it needs:

    write                        the leader
    read, level "none"           any copy (this node's, if it holds one)
    read, min_version N          any copy that reached N (a copy waits for it)
    read, "weak" (the default)   the leader
    read, "linearizable"         the leader, after it checks that it still holds
                                 its lease and is at the log's head ("strong" too)

A request that cannot be served here goes to the node that can, once (the
`Shoal-Hops` header stops loops), with its method, path, query, body and
credentials; the answer comes back as the leader gave it, `Shoal-Node` naming
who served it. With `redirect` asked (rqlite's flag), the answer is a 301 to
the leader instead. A write that finds this node no longer leading (its lease
was handed over while the request waited) is forwarded to the new leader: it
had not committed anything, so that is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from starlette.requests import Request
from starlette.responses import Response

from shoal.cluster.coordinator import Cluster
from shoal.errors import (
    InvalidRequest,
    NotLeader,
    OutcomeUnknown,
    ReadOnly,
    Unavailable,
    VersionNotReached,
)
from shoal.server.httputil import node_of

__all__ = ["LEVELS", "Need", "dispatch", "level_of"]

LEVELS = ("none", "weak", "linearizable")
ALIASES = {"strong": "linearizable", "auto": "weak"}  # rqlite's names
HOPS = "Shoal-Hops"
MAX_HOPS = 2
LEADER_WAIT_SECONDS = 5.0  # how long a request waits for a database to have a leader
_PASSED_ON = ("authorization", "content-type", "accept", "shoal-version")
_PASSED_BACK = ("content-type", "shoal-version", "shoal-node", "retry-after", "location")


@dataclass(frozen=True)
class Need:
    """What a request needs of the copy that serves it."""

    write: bool
    level: str = "weak"
    min_version: int | None = None
    redirect: bool = False


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
    """Serves the request here when this copy can, else forwards (or redirects) it."""
    cluster = node_of(request).cluster
    if cluster is None:
        return await serve_here()
    hops = _hops(request)
    while True:
        if _here(cluster, name, need):
            if need.level == "linearizable" and not need.write:
                await _confirm(cluster, name)
            try:
                return await serve_here()
            except (NotLeader, ReadOnly):
                if not need.write:
                    raise
                # Handed over or deposed before anything committed: go to the new leader.
            except VersionNotReached:
                if hops >= MAX_HOPS:
                    raise
                need = Need(write=False, min_version=need.min_version)  # the leader has it
        if hops >= MAX_HOPS:  # forwarded to us as the leader, and we are not (yet)
            await _wait_for_leading(cluster, name)
            continue
        leader = await cluster.leader(name, LEADER_WAIT_SECONDS)
        if leader.id == cluster.node_id:
            await _wait_for_leading(cluster, name)
            continue
        if need.redirect:
            location = leader.url + request.url.path
            if request.url.query:
                location += "?" + request.url.query
            return Response(status_code=301, headers={"Location": location})
        try:
            return await _forward(cluster, request, leader.url, hops + 1, write=need.write)
        except httpx.ConnectError:
            await asyncio.sleep(0.1)  # the leader is gone: wait for the next one
            continue


def _here(cluster: Cluster, name: str, need: Need) -> bool:
    replica = cluster.replicas.get(name)
    if replica is None:
        return False
    if need.write or (need.level != "none" and need.min_version is None):
        return replica.leading
    return True


async def _wait_for_leading(cluster: Cluster, name: str) -> None:
    """Waits (a lease handed to us is taken within milliseconds) or says retry."""
    deadline = asyncio.get_running_loop().time() + LEADER_WAIT_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        replica = cluster.replicas.get(name)
        if replica is not None and replica.leading:
            return
        await asyncio.sleep(0.01)
    raise NotLeader(f"this node was sent {name!r}'s writes but does not lead it; retry")


async def _confirm(cluster: Cluster, name: str) -> None:
    """A linearizable read: the lease is still ours, and no record is past our copy."""
    replica = cluster.replicas[name]
    head = await cluster.blocking(cluster.cp.head, name)
    if not replica.leading or head != replica.db.version:
        raise NotLeader(f"{name!r}: this leader could not confirm it is current; retry")


def _hops(request: Request) -> int:
    raw = request.headers.get(HOPS, "0")
    return int(raw) if raw.isdigit() else MAX_HOPS


async def _forward(
    cluster: Cluster, request: Request, base: str, hops: int, *, write: bool
) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED_ON}
    headers[HOPS] = str(hops)
    body = getattr(request.state, "body", b"")
    try:
        answer = await cluster.http.request(
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
