"""The view a node keeps of the cluster, read by what changed (view.ViewReader), on
a real SQLite control plane with a fake clock."""

from __future__ import annotations

from pathlib import Path

from shoal.cluster.view import (
    Lease,
    Member,
    Spec,
    ViewReader,
    catalog_key,
    copies_key,
    lease_key,
    member_key,
)
from shoal.controlplane.sqlite import SQLiteControlPlane
from tests.controlplane.test_contract import FakeClock


def test_a_reader_follows_the_cluster_by_what_changed(tmp_path: Path) -> None:
    clock = FakeClock()
    cp = SQLiteControlPlane(tmp_path / "control.db", clock=clock)
    n1 = Member("n1", "http://n1", session="s1")
    n2 = Member("n2", "http://n2", session="s2")
    cp.put(member_key("n1"), n1.encode(), ttl=1)
    cp.put(member_key("n2"), n2.encode(), ttl=1)
    cp.put(catalog_key("app"), Spec("app", "sync").encode())
    cp.put(lease_key("app"), Lease("app", "n2", 3, 0, "s2").encode())
    cp.put(copies_key("n1"), Member("n1", "", {"app": 7}).encode_copies())
    reader = ViewReader()
    assert reader.read(cp) is None  # the members changed: everything may have
    view = reader.view
    assert sorted(view.members) == ["n1", "n2"] and view.members["n1"].versions == {"app": 7}
    assert view.leases["app"].holder == "n2" and view.catalog["app"].durability == "sync"

    cp.put(member_key("n1"), n1.encode(), ttl=1)  # renewals change nothing a copy acts on
    cp.put(member_key("n2"), n2.encode(), ttl=1)
    assert reader.read(cp) == set() and reader.view is view

    revision = cp.get(lease_key("app")).revision  # type: ignore[union-attr]
    cp.put(lease_key("app"), Lease("app", "n1", 4, 0, "s1").encode(), expect=revision)
    cp.put(catalog_key("other"), Spec("other", "async").encode())
    assert reader.read(cp) == {"app", "other"}
    assert reader.view.leases["app"].epoch == 4 and "other" in reader.view.catalog
    assert view.leases["app"].epoch == 3  # a view handed out never changes

    clock.advance(0.5)
    cp.put(member_key("n1"), n1.encode(), ttl=1)
    clock.advance(0.6)  # n2's key has expired; n1's has not
    assert reader.read(cp) is None
    assert sorted(reader.view.members) == ["n1"]

    cp.delete(catalog_key("other"))
    assert reader.read(cp) == {"other"} and "other" not in reader.view.catalog
    cp.close()


def test_a_reader_away_longer_than_deletions_are_kept_starts_over(tmp_path: Path) -> None:
    """Its next read is the whole table: what it held and is no longer there goes,
    even when nothing else changed."""
    clock = FakeClock()
    cp = SQLiteControlPlane(tmp_path / "control.db", clock=clock)
    cp.put(member_key("n1"), Member("n1", "http://n1", session="s1").encode())
    cp.put(catalog_key("app"), Spec("app", "sync").encode())
    reader = ViewReader()
    reader.read(cp)
    assert "app" in reader.view.catalog
    cp.delete(catalog_key("app"))
    clock.advance(2 * 3600)  # past the hour deletions are kept
    cp.put("other", b"")
    cp.delete("other")
    assert reader.read(cp) is None
    assert reader.view.catalog == {} and sorted(reader.view.members) == ["n1"]
    cp.close()


def test_a_lease_is_in_force_only_in_its_holders_live_session() -> None:
    from shoal.cluster.view import View

    members = {"n1": Member("n1", "http://n1", session="s1")}
    claims = {
        "a": Lease("a", "n1", 1, 10, "s1"),
        "b": Lease("b", "n1", 1, 11, "an older session"),
        "c": Lease("c", "gone", 1, 12, "s9"),
    }
    view = View(members, claims, {})
    assert sorted(view.leases) == ["a"] and view.claims == claims
    assert view.leader("a") == members["n1"] and view.leader("b") is None
