"""What a cluster agrees on, as it lies in the control plane's key-value table.

Three kinds of keys, each a small JSON value:

    node/ID        a member: its URL and, per database it holds, its version.
                   Written every heartbeat with a TTL: a node that stops
                   heartbeating drops out of membership by expiry alone.
    lease/NAME     who leads database NAME, and in which epoch. Written with a TTL
                   by its holder, renewed well within it; absent means no leader.
    db/NAME        the catalog: database NAME exists, with its durability.

A node reads all three with one scan each into a `View`, a consistent enough
picture for placement and routing. The view only says who should act; what was
committed is decided by the log's compare-and-set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shoal.cluster.placement import replicas
from shoal.controlplane import ControlPlane, Entry

__all__ = [
    "DURABILITIES",
    "Lease",
    "Member",
    "Spec",
    "View",
    "catalog_key",
    "lease_key",
    "member_key",
    "read_view",
]

DURABILITIES = ("sync", "async")

MEMBERS, LEASES, CATALOG = "node/", "lease/", "db/"


def member_key(node_id: str) -> str:
    return MEMBERS + node_id


def lease_key(database: str) -> str:
    return LEASES + database


def catalog_key(database: str) -> str:
    return CATALOG + database


def _load(entry: Entry) -> dict[str, Any]:
    value = json.loads(entry.value)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Member:
    """A live node: where to reach it, the version of each database it holds, and
    what is wrong with any copy that cannot keep up (for status)."""

    id: str
    url: str
    versions: dict[str, int] = field(default_factory=dict)
    leaving: bool = False
    problems: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        value: dict[str, Any] = {"url": self.url, "versions": self.versions}
        value["leaving"] = self.leaving
        if self.problems:
            value["problems"] = self.problems
        return dump(value)

    @classmethod
    def decode(cls, node_id: str, entry: Entry) -> Member:
        value = _load(entry)
        versions = {str(k): int(v) for k, v in dict(value.get("versions", {})).items()}
        problems = {str(k): str(v) for k, v in dict(value.get("problems", {})).items()}
        leaving = bool(value.get("leaving", False))
        return cls(node_id, str(value["url"]), versions, leaving, problems)


@dataclass(frozen=True)
class Lease:
    """Database `database` is led by node `holder` in `epoch`; `revision` is the
    entry's, the `expect` of the holder's next renewal."""

    database: str
    holder: str
    epoch: int
    revision: int

    def encode(self) -> bytes:
        return dump({"holder": self.holder, "epoch": self.epoch})

    @classmethod
    def decode(cls, database: str, entry: Entry) -> Lease:
        value = _load(entry)
        return cls(database, str(value["holder"]), int(value["epoch"]), entry.revision)


@dataclass(frozen=True)
class Spec:
    """A database in the catalog, and how durable its writes are."""

    name: str
    durability: str
    revision: int = 0

    def encode(self) -> bytes:
        return dump({"durability": self.durability})

    @classmethod
    def decode(cls, name: str, entry: Entry) -> Spec:
        return cls(name, str(_load(entry)["durability"]), entry.revision)


@dataclass(frozen=True)
class View:
    """Members, leases and the catalog, as one node last read them."""

    members: dict[str, Member]
    leases: dict[str, Lease]
    catalog: dict[str, Spec]

    def live(self) -> list[str]:
        """The members that take databases: every live node not on its way out."""
        return sorted(node for node, member in self.members.items() if not member.leaving)

    def replicas(self, database: str, factor: int) -> list[str]:
        return replicas(database, self.live(), factor)

    def leader(self, database: str) -> Member | None:
        """The member that holds `database`'s lease, if any is live."""
        lease = self.leases.get(database)
        return None if lease is None else self.members.get(lease.holder)


def _scan(cp: ControlPlane, prefix: str, decode: Any) -> dict[str, Any]:
    found = {}
    for key, entry in cp.scan(prefix):
        name = key[len(prefix) :]
        try:
            found[name] = decode(name, entry)
        except (ValueError, KeyError, TypeError):
            continue  # a value this version cannot read: as if absent
    return found


def read_view(cp: ControlPlane) -> View:
    """The cluster as the control plane holds it now (three scans)."""
    return View(
        members=_scan(cp, MEMBERS, Member.decode),
        leases=_scan(cp, LEASES, Lease.decode),
        catalog=_scan(cp, CATALOG, Spec.decode),
    )
