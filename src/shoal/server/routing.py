"""Any node answers for any database: it serves a request here, or forwards it.

Where a request may be served depends on what it needs:

    write                        the leader
    read, level "none"           any copy (this node's, if it holds one)
    read, min_version N          any copy that reached N (a follower waits for it
                                 up to the timeout, then asks the leader)
    read, "weak" (the default)   the leader
    read, "linearizable"         the leader, after it checks that it still holds
                                 its lease and is at the log's head ("strong" too)

A request that cannot be served here goes to the node that can, with its
method, path, query, body and credentials; the answer comes back as the leader
gave it, `Shoal-Node` naming who served it. With `redirect` asked (rqlite's
flag), the answer is a 301 to the leader instead. A write that finds this node
no longer leading (its lease was handed over while the request waited) is
forwarded to the new leader: it had not committed anything, so that is safe.

Views of the leases lag by up to a view's period, so a forward carries the
epoch of the lease its sender saw (`Shoal-Lease-Epoch`): the receiver never
sends it on under an older lease than that, which would bounce it back to a
node that has just handed the lease over; it waits until its own view catches
up instead. Epochs only grow along a chain, so a request cannot loop;
`Shoal-Hops` caps how long it may chase a lease that keeps moving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
from starlette.requests import Request
from starlette.responses import Response

from shoal.cluster.coordinator import Cluster
from shoal.cluster.view import Member
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
EPOCH = "Shoal-Lease-Epoch"  # the lease under which the forwarder believes we lead
MAX_HOPS = 3
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
    hops = _header_number(request, HOPS, MAX_HOPS)
    at_least = _header_number(request, EPOCH, 0)  # the lease the forwarder sent us under
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
                replica = cluster.replicas.get(name)
                if hops > 0 or (replica is not None and replica.leading):
                    raise
                # This copy lags: the leader holds every committed version, and the
                # forwarded request waits there for its own timeout, once.
                need = Need(write=False)
        found = await _leader_elsewhere(cluster, name, at_least, need)
        if found is None:  # this node leads (again): serve here, once its replica settles
            await asyncio.sleep(0.01)
            continue
        leader, epoch = found
        if need.redirect:
            location = leader.url + request.url.path
            if request.url.query:
                location += "?" + request.url.query
            return Response(status_code=301, headers={"Location": location})
        if hops >= MAX_HOPS:
            raise NotLeader(f"{name!r} moved on while this request chased it; retry", leader.url)
        try:
            return await _forward(cluster, request, leader.url, hops + 1, epoch, need.write)
        except httpx.ConnectError:
            at_least = epoch + 1  # the leader is gone: wait for the next one


def _here(cluster: Cluster, name: str, need: Need) -> bool:
    replica = cluster.replicas.get(name)
    if replica is None:
        return False
    if need.write or (need.level != "none" and need.min_version is None):
        return replica.leading
    return True


async def _leader_elsewhere(
    cluster: Cluster, name: str, at_least: int, need: Need
) -> tuple[Member, int] | None:
    """The other node that leads `name` under a lease of epoch `at_least` or later,
    and that epoch; None once this node leads it. Our view may lag: a lease handed
    to us, or away from us, shows within VIEW_SECONDS, so we wait for it rather than
    send the request back where it came from. NotLeader (retryable) after
    LEADER_WAIT_SECONDS."""
    deadline = time.monotonic() + LEADER_WAIT_SECONDS
    while True:
        wait = max(0.0, deadline - time.monotonic())
        leader, epoch = await cluster.leader(name, wait, at_least)
        if leader.id != cluster.node_id:
            return leader, epoch
        replica = cluster.replicas.get(name)
        if replica is not None and replica.leading:
            return None
        if time.monotonic() >= deadline:
            serve = "take writes" if need.write else f"serve {need.level} reads"
            raise NotLeader(
                f"this node holds {name!r}'s lease but cannot confirm it (the control plane "
                f"may be unreachable), so it cannot {serve} now; reads at level 'none' are "
                "served from any copy; retry"
            )
        await asyncio.sleep(0.01)


async def _confirm(cluster: Cluster, name: str) -> None:
    """A linearizable read: the lease is still ours, and no record is past our copy."""
    replica = cluster.replicas[name]
    head = await cluster.blocking(cluster.cp.head, name)
    if not replica.leading or head != replica.db.version:
        raise NotLeader(f"{name!r}: this leader could not confirm it is current; retry")


def _header_number(request: Request, header: str, otherwise: int) -> int:
    raw = request.headers.get(header, "0")
    return int(raw) if raw.isdigit() else otherwise


async def _forward(
    cluster: Cluster, request: Request, base: str, hops: int, epoch: int, write: bool
) -> Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED_ON}
    headers[HOPS] = str(hops)
    headers[EPOCH] = str(epoch)
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
