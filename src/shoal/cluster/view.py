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

A node keeps a `View` of them, a consistent enough picture for placement and
routing, by reading what changed since its last read (`ViewReader`): an idle
cluster's reads return its members' renewals and nothing else. The view only
says who should act; what was committed is decided by the log's
compare-and-set.
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
    "ViewReader",
    "catalog_key",
    "copies_key",
    "lease_key",
    "member_key",
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


_KINDS: dict[str, Any] = {MEMBERS: Member.decode, LEASES: Lease.decode, CATALOG: Spec.decode}


class ViewReader:
    """Keeps a View up to date from the control plane's `changes`: each read costs
    what changed since the last. One read at a time."""

    def __init__(self) -> None:
        self.view = View({}, {}, {})
        self._after = 0
        self._members: dict[str, tuple[Member, float | None]] = {}  # and when each expires
        self._copies: dict[str, tuple[dict[str, int], dict[str, str]]] = {}
        self._claims: dict[str, Lease] = {}
        self._catalog: dict[str, Spec] = {}

    def read(self, cp: ControlPlane) -> set[str] | None:
        """Brings `view` up to date; returns the databases whose lease or spec
        changed, or None when the members did (everything may have)."""
        changes = cp.changes(self._after)
        if changes.complete:
            self._members, self._copies, self._claims, self._catalog = {}, {}, {}, {}
        changed: set[str] = set()
        before = self.view
        claims, catalog = self._claims, self._catalog
        for key, entry in changes.entries:
            if key.startswith(COPIES):
                self._put(self._copies, key[len(COPIES) :], _copies(entry))
                continue
            prefix = next((p for p in _KINDS if key.startswith(p)), None)
            if prefix is None:
                continue
            name = key[len(prefix) :]
            value = _decoded(prefix, name, entry)
            if prefix == MEMBERS:
                kept = None if value is None or entry is None else (value, entry.expires_at)
                self._put(self._members, name, kept)
                continue
            if prefix == LEASES and claims is self._claims:
                claims = dict(claims)  # a View handed out is never changed
            elif prefix == CATALOG and catalog is self._catalog:
                catalog = dict(catalog)
            self._put(claims if prefix == LEASES else catalog, name, value)
            changed.add(name)
        self._after = changes.revision
        self._claims, self._catalog = claims, catalog
        members = {
            node: replace(member, versions=copies[0], problems=copies[1])
            if (copies := self._copies.get(node))
            else member
            for node, (member, expires_at) in self._members.items()
            if expires_at is None or expires_at > changes.now
        }
        if changes.complete or members != before.members or changed:
            self.view = View(members, claims, catalog)
        if changes.complete or _membership(before) != _membership(self.view):
            return None
        return changed

    @staticmethod
    def _put(found: dict[str, Any], name: str, value: Any) -> None:
        if value is None:
            found.pop(name, None)
        else:
            found[name] = value


def _copies(entry: Entry | None) -> tuple[dict[str, int], dict[str, str]] | None:
    """The versions and problems a `copies/` entry lists; None if deleted or unreadable."""
    if entry is None:
        return None
    try:
        value = _load(entry)
        versions = {str(k): int(v) for k, v in dict(value.get("versions", {})).items()}
        problems = {str(k): str(v) for k, v in dict(value.get("problems", {})).items()}
    except (ValueError, KeyError, TypeError):
        return None  # a value this version cannot read: as if absent
    return versions, problems


def _decoded(prefix: str, name: str, entry: Entry | None) -> Any:
    """The entry's value as its kind's class; None if deleted or unreadable."""
    if entry is None:
        return None
    try:
        return _KINDS[prefix](name, entry)
    except (ValueError, KeyError, TypeError):
        return None  # a value this version cannot read: as if absent


def _membership(view: View) -> dict[str, tuple[str, bool, str]]:
    """What of the members a copy acts on: who is live, where, who is leaving, and
    in which session."""
    return {
        node: (member.url, member.leaving, member.session) for node, member in view.members.items()
    }
