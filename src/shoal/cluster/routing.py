"""Where a request on a database is served in a cluster: here, or at its leader.
Decided once, before the request runs:

    write                        the leader
    read, level "none"           any copy (this node's, if it holds one)
    read, min_version N          any copy that reached N (a follower waits for it
                                 up to the timeout, then asks the leader)
    read, "weak" (the default)   the leader
    read, "linearizable"         the leader, after it checks that it still holds
                                 its lease and is at the log's head

Views of the leases lag by up to a view's period, so a request forwarded to this
node carries the epoch of the lease its sender saw: it is never sent on under an
older lease than that, which would bounce it back to a node that has just handed
the lease over; this node waits until its own view catches up instead. Epochs only
grow along a chain of forwards, so a request cannot loop.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from shoal.cluster.coordinator import Cluster
from shoal.errors import NotLeader

__all__ = ["LEVELS", "Leader", "Need", "route"]

LEVELS = ("none", "weak", "linearizable")
LEADER_WAIT_SECONDS = 5.0  # how long a request waits for a database to have a leader


@dataclass(frozen=True)
class Need:
    """What a request needs of the copy that serves it; `redirect`: the caller wants
    to be sent to the leader rather than have the request forwarded there."""

    write: bool
    level: str = "weak"
    min_version: int | None = None
    redirect: bool = False


@dataclass(frozen=True)
class Leader:
    """Serve at another node: the leader's URL, and the epoch of its lease."""

    url: str
    epoch: int


async def route(cluster: Cluster, name: str, need: Need, at_least: int = 0) -> Leader | None:
    """None to serve here (a linearizable read once this leader has confirmed it is
    current), else the node leading `name` under a lease of epoch `at_least` or
    later. NotLeader (retryable) when no leader shows within LEADER_WAIT_SECONDS."""
    while True:
        if _here(cluster, name, need):
            if need.level == "linearizable" and not need.write:
                await _confirm(cluster, name)
            return None
        leader = await _leader_elsewhere(cluster, name, at_least, need)
        if leader is not None:
            return leader
        await asyncio.sleep(0.01)  # this node leads (again): once its replica settles


def _here(cluster: Cluster, name: str, need: Need) -> bool:
    replica = cluster.replicas.get(name)
    if replica is None:
        return False
    if need.write or (need.level != "none" and need.min_version is None):
        return replica.leading
    return True


async def _leader_elsewhere(
    cluster: Cluster, name: str, at_least: int, need: Need
) -> Leader | None:
    """The other node that leads `name` under a lease of epoch `at_least` or later;
    None once this node leads it. Our view may lag: a lease handed to us, or away
    from us, shows within VIEW_SECONDS, so we wait for it rather than send the
    request back where it came from."""
    deadline = time.monotonic() + LEADER_WAIT_SECONDS
    while True:
        wait = max(0.0, deadline - time.monotonic())
        leader, epoch = await cluster.leader(name, wait, at_least)
        if leader.id != cluster.node_id:
            return Leader(leader.url, epoch)
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
