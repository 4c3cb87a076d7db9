"""The cluster at a glance, for `GET /v1/cluster` and `shoal cluster status`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.cluster.coordinator import Cluster

__all__ = ["cluster_summary"]


async def cluster_summary(cluster: Cluster, visible: Callable[[str], bool]) -> dict[str, Any]:
    """Live nodes; each visible database's durability, leader, epoch, log head, and
    each copy's version (from its node's last heartbeat), lag behind the head, and
    problem if it cannot keep up."""
    view = cluster.view
    leading: dict[str, int] = {}
    for held in view.leases.values():
        leading[held.holder] = leading.get(held.holder, 0) + 1
    nodes = [
        {
            "id": member.id,
            "url": member.url,
            "leaving": member.leaving,
            "databases": len(member.versions),
            "leading": leading.get(member.id, 0),
        }
        for member in sorted(view.members.values(), key=lambda m: m.id)
    ]
    databases = []
    shown = sorted(name for name in view.catalog if visible(name))
    heads = await cluster.blocking(cluster.cp.heads, shown)  # one statement, not one each
    for name in shown:
        spec, head = view.catalog[name], heads.get(name, 0)
        lease = view.leases.get(name)
        copies = [
            {
                "node": member.id,
                "version": member.versions[name],
                "lag": max(0, head - member.versions[name]),
                "problem": member.problems.get(name),
            }
            for member in sorted(view.members.values(), key=lambda m: m.id)
            if name in member.versions
        ]
        databases.append(
            {
                "name": name,
                "durability": spec.durability,
                "leader": lease.holder if lease else None,
                "epoch": lease.epoch if lease else None,
                "head": head,
                "replicas": copies,
            }
        )
    return {"clustered": True, "node": cluster.node_id, "nodes": nodes, "databases": databases}
