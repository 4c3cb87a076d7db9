"""What a cluster agrees on, as it lies in the control plane's key-value table.

Four kinds of keys, each a small JSON value:

    node/ID        a member, and its lease: its URL and the session it holds
                   leases in. Written with a TTL of `lease_seconds`, renewed by
                   compare-and-set well within it: a node that stops renewing
                   drops out by expiry alone, and its session never comes back.
    copies/ID      the version of each database node ID holds, written when they
                   change (no TTL: read only for live members).
    lease/NAME     who leads database NAME, in which epoch, under which session
                   of its node. No TTL: it is in force while that session lives,
                   so one renewal per node keeps every lease it holds.
    db/NAME        the catalog: database NAME exists, with its durability.

A node reads them with one scan each into a `View`, a consistent enough picture
for placement and routing. The view only says who should act; what was
committed is decided by the log's compare-and-set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
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
    "copies_key",
    "lease_key",
    "member_key",
    "read_view",
]

DURABILITIES = ("sync", "async")

MEMBERS, COPIES, LEASES, CATALOG = "node/", "copies/", "lease/", "db/"


def member_key(node_id: str) -> str:
    return MEMBERS + node_id


def copies_key(node_id: str) -> str:
    return COPIES + node_id


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
    """A live node: where to reach it, the session its leases are held in, and
    (from its `copies/` key) the version of each database it holds and what is
    wrong with any copy that cannot keep up (for status)."""

    id: str
    url: str
    versions: dict[str, int] = field(default_factory=dict)
    leaving: bool = False
    problems: dict[str, str] = field(default_factory=dict)
    session: str = ""

    def encode(self) -> bytes:
        return dump({"url": self.url, "leaving": self.leaving, "session": self.session})

    def encode_copies(self) -> bytes:
        value: dict[str, Any] = {"versions": self.versions}
        if self.problems:
            value["problems"] = self.problems
        return dump(value)

    @classmethod
    def decode(cls, node_id: str, entry: Entry) -> Member:
        value = _load(entry)
        leaving = bool(value.get("leaving", False))
        return cls(node_id, str(value["url"]), leaving=leaving, session=str(value["session"]))

    def with_copies(self, entry: Entry | None) -> Member:
        """This member with the versions and problems its `copies/` entry lists."""
        if entry is None:
            return self
        try:
            value = _load(entry)
            versions = {str(k): int(v) for k, v in dict(value.get("versions", {})).items()}
            problems = {str(k): str(v) for k, v in dict(value.get("problems", {})).items()}
        except (ValueError, KeyError, TypeError):
            return self  # a value this version cannot read: as if absent
        return replace(self, versions=versions, problems=problems)


@dataclass(frozen=True)
class Lease:
    """Database `database` is led by node `holder` in `epoch`, for as long as the
    holder's `session` lives; `revision` is the entry's, the `expect` of the
    next write of it (a hand-over, a release, or a claim once it is void)."""

    database: str
    holder: str
    epoch: int
    revision: int
    session: str = ""

    def encode(self) -> bytes:
        return dump({"holder": self.holder, "epoch": self.epoch, "session": self.session})

    @classmethod
    def decode(cls, database: str, entry: Entry) -> Lease:
        value = _load(entry)
        holder, epoch, session = str(value["holder"]), int(value["epoch"]), str(value["session"])
        return cls(database, holder, epoch, entry.revision, session)


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
    """Members, leases and the catalog, as one node last read them. `claims` are
    the lease entries as stored; `leases` those in force, whose holder is live
    in the session it claimed them in."""

    members: dict[str, Member]
    claims: dict[str, Lease]
    catalog: dict[str, Spec]
    leases: dict[str, Lease] = field(init=False)

    def __post_init__(self) -> None:
        leases = {
            name: lease
            for name, lease in self.claims.items()
            if (holder := self.members.get(lease.holder)) is not None
            and holder.session == lease.session
        }
        object.__setattr__(self, "leases", leases)

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
    """The cluster as the control plane holds it now (four scans)."""
    copies = dict(cp.scan(COPIES))
    members = {
        node: member.with_copies(copies.get(copies_key(node)))
        for node, member in _scan(cp, MEMBERS, Member.decode).items()
    }
    return View(
        members=members,
        claims=_scan(cp, LEASES, Lease.decode),
        catalog=_scan(cp, CATALOG, Spec.decode),
    )
