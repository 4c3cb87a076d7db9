"""A Replica's promises, in one process: a real SQLite control plane and real
databases, with `LocalHost` standing in for the node (the system tests in
tests/system/test_cluster.py run the same code in real `shoal serve` processes).

What is pinned down here is what no acknowledged write may depend on by luck:
a sync write is in the log before it is committed; a write that cannot be
logged is not committed; a leader past its lease writes nothing; an async
leader stops taking writes when its records cannot be shipped; a copy holding
writes the log does not is replaced, loudly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from shoal.cluster.replica import Replica, Timing
from shoal.cluster.shipping import AsyncShipping
from shoal.cluster.view import Lease, Member, Spec, View, lease_key
from shoal.controlplane import ControlPlane
from shoal.controlplane.sqlite import SQLiteControlPlane
from shoal.engine import Database, Role
from shoal.errors import NotLeader, ReadOnly, Unavailable
from shoal.record import decode

T = TypeVar("T")
NAME = "app"


class LocalHost:
    """The node side of a Replica, with everything in this process: the control
    plane is a real SQLite one; `source` is the copy re-seeds are taken from."""

    def __init__(self, directory: Path, cp: ControlPlane, node_id: str = "n1") -> None:
        self.directory = directory
        self.cp = cp
        self.node_id = node_id
        self.session = ""  # the members of `view` are in it too
        self.valid_until = float("inf")  # the node's own lease: renewed, unless a test says not
        self.view = View({node_id: Member(node_id, "http://here")}, {}, {})
        self.source: Database | None = None
        self.leading: list[bool] = []
        self.copies: dict[str, Database] = {}  # the node's open copies, by database
        self.closes = False  # let go of, a copy is closed at once (a node past its limit)
        self.closed: set[str] = set()
        self.held = 0  # times a replica held its copy again after letting go

    def replica(
        self, db: Database, durability: str = "sync", timing: Timing | None = None
    ) -> Replica:
        """A replica of `db` here: the host keeps `db` open for it, as a node does."""
        self.copies[db.name] = db
        return Replica(self, db, durability, 3, timing or Timing())

    def open_copy(self, database: str) -> Database:
        """Opens a closed copy again, as a node does for a request (which hands it to
        the replica: Cluster.adopt)."""
        self.closed.discard(database)
        db = Database(self.copies[database].path, name=database, role=Role.FOLLOWER)
        self.copies[database] = db
        return db

    async def hold_copy(self, database: str) -> Database:
        self.held += 1
        return self.open_copy(database) if database in self.closed else self.copies[database]

    def let_go_copy(self, database: str) -> None:
        if self.closes:
            self.copies[database].close()
            self.closed.add(database)

    def cluster_view(self) -> View:
        return self.view

    def control_plane(self) -> ControlPlane:
        return self.cp

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(fn, *args)

    async def fetch_snapshot(self, database: str, at_least: int) -> Path:
        assert self.source is not None
        path = self.directory / f"seed-{time.monotonic_ns()}.db"
        self.source.snapshot(path)
        return path

    async def replace_copy(self, database: str, snapshot: Path) -> Database:
        target = self.directory / f"copy-{time.monotonic_ns()}.db"
        snapshot.rename(target)
        self.copies[database] = Database(target, name=database, role=Role.FOLLOWER)
        return self.copies[database]

    def led(self, db: Database, leading: bool) -> None:
        self.leading.append(leading)


@pytest.fixture
def cp(tmp_path: Path) -> Iterator[SQLiteControlPlane]:
    plane = SQLiteControlPlane(tmp_path / "control.db")
    yield plane
    plane.close()


@pytest.fixture
def host(tmp_path: Path, cp: SQLiteControlPlane) -> LocalHost:
    return LocalHost(tmp_path, cp)


def follower(tmp_path: Path, file: str = "copy.db") -> Database:
    return Database(tmp_path / file, name=NAME, role=Role.FOLLOWER)


def led_elsewhere(tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane) -> Database:
    """The leader's copy, on node n2, with one record in the log; the lease is n2's."""
    source = Database(tmp_path / "source.db", name=NAME)
    source.execute("CREATE TABLE t(x)")
    cp.append(NAME, 1, source.log_range(1, 1))
    revision = cp.put(lease_key(NAME), Lease(NAME, "n2", 1, 0).encode())
    host.view = View(
        {"n1": Member("n1", "http://here"), "n2": Member("n2", "http://there")},
        {NAME: Lease(NAME, "n2", 1, revision)},
        {NAME: Spec(NAME, "sync")},
    )
    return source


async def lead(host: LocalHost, db: Database, durability: str = "sync", **timing: float) -> Replica:
    """A replica of `db` that takes the (absent) lease and leads."""
    replica = host.replica(db, durability, Timing(**timing))
    await replica.leader.maybe_lead()
    assert replica.leading
    return replica


def test_a_sync_write_is_in_the_log_before_it_is_committed(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    db = follower(tmp_path)
    replica = asyncio.run(lead(host, db))
    seen: list[int] = []
    original = cp.append

    def append(database: str, version: int, records: Any) -> None:
        seen.append(db.query("SELECT count(*) FROM sqlite_schema WHERE name = 't'").version)
        original(database, version, records)

    cp.append = append  # type: ignore[method-assign]
    db.execute("CREATE TABLE t(x)")
    assert seen == [0]  # the append ran while the local copy was still at version 0
    assert cp.head(NAME) == 1 == db.version
    assert cp.read(NAME, 1) == [(1, db.log_range(1, 1)[0])]
    assert decode(db.log_range(1, 1)[0]).epoch == replica.leader.lease.epoch  # type: ignore[union-attr]
    db.close()


def test_a_write_the_log_refuses_is_not_committed_and_the_leader_catches_up(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    """Another writer's record at the next version (a deposed leader's last append
    that landed): the write fails retryably, changes nothing, and the leader then
    applies that record and goes on leading."""
    other = Database(tmp_path / "other.db", name=NAME)
    db = follower(tmp_path)
    replica = asyncio.run(lead(host, db))
    other.execute("CREATE TABLE t(x)")
    cp.append(NAME, 1, other.log_range(1, 1))

    with pytest.raises(NotLeader, match="ahead of this leader"):
        db.execute("CREATE TABLE mine(y)")
    assert db.version == 0 and replica.behind
    assert not db.query("SELECT name FROM sqlite_schema WHERE name = 'mine'").results[0].rows

    asyncio.run(replica.leader.rejoin_log())
    assert replica.leading and db.version == 1
    assert db.execute("INSERT INTO t VALUES (1)").version == 2
    assert cp.head(NAME) == 2
    other.close()
    db.close()


def test_a_leader_whose_node_is_past_its_lease_writes_nothing(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    db = follower(tmp_path)
    replica = asyncio.run(lead(host, db))
    db.execute("CREATE TABLE t(x)")
    host.valid_until = time.monotonic()  # the node's lease not renewed in time (paused)
    assert not replica.leading
    with pytest.raises(NotLeader):
        db.execute("INSERT INTO t VALUES (1)")
    assert db.version == 1 == cp.head(NAME)
    host.valid_until = float("inf")  # renewed again, in the same session: nothing was lost
    assert replica.leading
    assert db.execute("INSERT INTO t VALUES (1)").version == 2 == cp.head(NAME)
    db.close()


@pytest.mark.parametrize("how", ["its node's session lapsed", "the view shows a newer claim"])
def test_a_void_lease_stops_the_leader(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane, how: str
) -> None:
    db = follower(tmp_path)
    replica = asyncio.run(lead(host, db))
    if how == "its node's session lapsed":
        host.session = "a new one"
    else:
        lease = replica.leader.lease
        assert lease is not None
        claim = Lease(NAME, "n2", lease.epoch + 1, 0, "")
        revision = cp.put(lease_key(NAME), claim.encode(), expect=lease.revision)
        members = {**host.view.members, "n2": Member("n2", "http://there")}
        host.view = View(members, {NAME: Lease(NAME, "n2", claim.epoch, revision)}, {})
    replica.poke()
    asyncio.run(replica.leader.lead())
    assert replica.leader.lease is None and db.role is Role.FOLLOWER
    assert host.leading == [True, False]
    with pytest.raises(NotLeader):  # a request that was routed here meanwhile
        replica.shipping.before_commit(1, b"")
    db.close()


def test_a_lease_is_claimed_only_once_its_holders_session_has_lapsed(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    """The view may lag: a holder it shows gone may have renewed meanwhile. The
    claim reads the holder's key first, and a session never comes back."""
    revision = cp.put(lease_key(NAME), Lease(NAME, "n2", 4, 0, "s2").encode())
    host.view = View(host.view.members, {NAME: Lease(NAME, "n2", 4, revision, "s2")}, {})
    cp.put("node/n2", Member("n2", "http://there", session="s2").encode(), ttl=60)
    replica = host.replica(follower(tmp_path))
    asyncio.run(replica.leader.maybe_lead())
    assert not replica.leading and Lease.decode(NAME, cp.get(lease_key(NAME))).holder == "n2"  # type: ignore[arg-type]

    cp.put("node/n2", Member("n2", "http://there", session="s3").encode(), ttl=60)  # rejoined
    asyncio.run(replica.leader.maybe_lead())
    assert replica.leading
    taken = Lease.decode(NAME, cp.get(lease_key(NAME)))  # type: ignore[arg-type]
    assert (taken.holder, taken.epoch, taken.session) == ("n1", 5, host.session)
    replica.db.close()


def test_an_async_write_commits_first_and_ships_in_batches(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    db = follower(tmp_path)
    replica = asyncio.run(lead(host, db, "async"))
    db.execute("CREATE TABLE t(x)")
    for i in range(5):
        db.execute("INSERT INTO t VALUES (?)", (i,))
    assert db.version == 6 and cp.head(NAME) == 0  # acknowledged, not yet shipped
    replica.shipping.ship()
    assert cp.head(NAME) == 6
    assert [raw for _, raw in cp.read(NAME, 1)] == db.log_range(1)
    db.close()


def test_an_async_leader_refuses_writes_once_it_cannot_ship_for_too_long(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    """Bounds what a crash can lose: past the window, writes wait (503) for the
    control plane rather than pile up unshipped."""
    db = follower(tmp_path)
    replica = asyncio.run(lead(host, db, "async", async_window=0.01, lease_seconds=10))
    db.execute("CREATE TABLE t(x)")
    shipping = replica.shipping
    assert isinstance(shipping, AsyncShipping)
    limit = shipping.window_limit
    shipping.unshipped[0] = (*shipping.unshipped[0][:2], time.monotonic() - limit - 1)
    with pytest.raises(Unavailable, match="not taking this database's records"):
        db.execute("INSERT INTO t VALUES (1)")
    assert db.version == 1
    shipping.ship()
    db.execute("INSERT INTO t VALUES (1)")
    assert db.version == 2
    db.close()


def test_a_copy_with_writes_the_log_lacks_is_reseeded_loudly(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    """An async leader that crashed with unshipped records comes back: the log
    decides, and its own versions are discarded, with an error in the log."""
    source = Database(tmp_path / "source.db", name=NAME)
    source.execute("CREATE TABLE t(x)")
    cp.append(NAME, 1, source.log_range(1, 1))
    host.source = source

    deposed = Database(tmp_path / "deposed.db", name=NAME)
    deposed.execute("CREATE TABLE t(x)")
    deposed.execute("INSERT INTO t VALUES ('never logged')")
    deposed.demote()
    replica = host.replica(deposed, "async")
    with caplog.at_level(logging.ERROR, logger="shoal.cluster"):
        asyncio.run(replica.follower.check_against_log())
    assert "DISCARDING" in caplog.text and "never logged" in caplog.text
    assert replica.db.version == 1
    assert replica.db.checksum() == source.checksum()
    replica.db.close()
    deposed.close()
    source.close()


def test_a_follower_applies_the_log_and_takes_an_expired_lease(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    source = Database(tmp_path / "source.db", name=NAME)
    source.execute("CREATE TABLE t(x)")
    source.execute("INSERT INTO t VALUES (1)")
    cp.append(NAME, 1, source.log_range(1))
    db = follower(tmp_path)
    replica = host.replica(db)

    asyncio.run(replica.follower.follow())
    assert db.version == 2 and db.checksum() == source.checksum()

    host.view = View(host.view.members, {}, {NAME: Spec(NAME, "sync")})
    asyncio.run(replica.leader.maybe_lead())
    assert replica.leading and db.role is Role.LEADER
    assert db.execute("INSERT INTO t VALUES (2)").version == 3 == cp.head(NAME)
    source.close()
    db.close()


def test_an_async_leader_deposed_with_unshipped_writes_takes_the_logs_instead(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    db = follower(tmp_path)
    replica = asyncio.run(lead(host, db, "async"))
    db.execute("CREATE TABLE t(x)")
    replica.shipping.ship()
    db.execute("INSERT INTO t VALUES ('lost with the lease')")
    host.session = "a later one"  # paused past its lease; another node leads and writes v2
    source = Database(tmp_path / "source.db", name=NAME)
    source.execute("CREATE TABLE t(x)")
    source.execute("INSERT INTO t VALUES ('the new leader''s')")
    cp.put(lease_key(NAME), Lease(NAME, "n2", 9, 0).encode())
    cp.append(NAME, 2, source.log_range(2, 2))
    host.source = source

    asyncio.run(replica.leader.lead())  # ships, finds the log ahead, and rejoins it
    assert replica.leader.lease is None and not replica.shipping.pending()
    assert replica.db.version == 2 and replica.db.checksum() == source.checksum()
    replica.db.close()
    db.close()
    source.close()


def test_a_copy_that_cannot_get_past_a_barrier_backs_off_and_says_why(
    tmp_path: Path,
    host: LocalHost,
    cp: SQLiteControlPlane,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The only seed on offer is from before the VACUUM: each try is counted, the
    problem is kept for status and metrics, and each next try waits twice as long
    (it re-seeded hundreds of times a second); reaching the log's head, or applying a
    record, clears it."""
    leader = Database(tmp_path / "leader.db", name=NAME)
    leader.execute("CREATE TABLE t(x)")
    stale = tmp_path / "stale.db"
    leader.snapshot(stale)
    leader.execute("VACUUM")
    cp.append(NAME, 1, leader.log_range(1, 2))
    host.source = Database(stale, name=NAME, role=Role.FOLLOWER)
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    replica = host.replica(follower(tmp_path))

    async def follow(times: int) -> None:
        for _ in range(times):
            await replica.follower.follow()

    asyncio.run(follow(4))
    assert replica.db.version == 1
    assert replica.follower.reseeds == replica.follower.reseeds_in_a_row == 4
    assert waits == [0.5, 1.0, 2.0]
    assert replica.follower.problem is not None and "short of version 2" in replica.follower.problem

    host.source = leader  # a seed after the barrier: the copy is well again
    asyncio.run(follow(1))
    assert replica.db.version == 2 and replica.follower.problem is None
    asyncio.run(follow(1))  # at the log's head with nothing to apply: well, not stuck
    assert replica.follower.reseeds_in_a_row == 0
    replica.follower.reseeds_in_a_row = 1
    leader.execute("INSERT INTO t VALUES (1)")
    cp.append(NAME, 3, leader.log_range(3, 3))
    asyncio.run(follow(1))
    assert replica.db.version == 3 and replica.follower.reseeds_in_a_row == 0
    replica.db.close()
    leader.close()


def test_a_take_cut_short_by_the_control_plane_is_tried_again(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    """Winning the lease and then failing to catch up (the control plane away for a
    moment) must not leave the lease with a copy that never promotes: the database
    would take no writes for as long as this node kept renewing it."""
    db = follower(tmp_path)
    replica = host.replica(db, timing=Timing(lease_seconds=1.0))
    original, failures = cp.head, [1]

    def head(database: str) -> int:
        if failures[0]:
            failures[0] -= 1
            raise Unavailable("the control plane is away for a moment")
        return original(database)

    cp.head = head  # type: ignore[method-assign]

    async def leads_within(seconds: float) -> bool:
        replica.start()
        deadline = time.monotonic() + seconds
        while not replica.leading and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        leading = replica.leading
        await replica.stop(hand_over=False)
        return leading

    assert asyncio.run(leads_within(5.0))
    assert failures == [0] and host.leading[0] is True
    db.close()


def test_an_idle_follower_asks_the_control_plane_nothing_until_told_its_log_grew(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    """A node holds thousands of copies: one that follows and has nothing to apply
    sleeps (it polled the log ten times a second), and wakes when told."""
    source = led_elsewhere(tmp_path, host, cp)
    replica = host.replica(follower(tmp_path))
    calls: list[str] = []
    for method in ("read", "follow", "head", "heads", "get", "put", "scan"):
        original = getattr(cp, method)

        def counted(*args: Any, _name: str = method, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(*args)

        setattr(cp, method, counted)

    async def scenario() -> tuple[list[str], int, int]:
        replica.start()
        await until(lambda: replica.db.version == 1)
        calls.clear()
        await asyncio.sleep(0.6)
        idle = list(calls)
        source.execute("INSERT INTO t VALUES (1)")
        cp.append(NAME, 2, source.log_range(2, 2))
        await asyncio.sleep(0.3)
        untold = replica.db.version
        replica.appended()
        await until(lambda: replica.db.version == 2)
        await replica.stop(hand_over=False)
        return idle, untold, replica.db.version

    idle, untold, told = asyncio.run(scenario())
    assert idle == [] and untold == 1 and told == 2
    assert replica.db.checksum() == source.checksum()
    replica.db.close()
    source.close()


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_an_idle_copy_is_let_go_and_held_again_when_its_log_grows(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    """A node holds more copies than it may keep open: one with nothing to do lets
    go of its files, and opens them again when there is something to apply."""
    source = led_elsewhere(tmp_path, host, cp)
    host.closes = True
    replica = host.replica(follower(tmp_path))

    async def scenario() -> None:
        replica.start()
        await until(lambda: replica.db.version == 1 and NAME in host.closed)
        source.execute("INSERT INTO t VALUES (1)")
        cp.append(NAME, 2, source.log_range(2, 2))
        replica.appended()
        await until(lambda: replica.db.version == 2 and NAME in host.closed)
        await replica.stop(hand_over=False)

    asyncio.run(scenario())
    assert host.held >= 1
    reopened = host.open_copy(NAME)
    assert reopened.checksum() == source.checksum()
    reopened.close()
    source.close()


def test_a_leaders_copy_opened_again_is_promoted_before_it_takes_a_write(
    tmp_path: Path, host: LocalHost, cp: SQLiteControlPlane
) -> None:
    """The node closed an idle leader's files; a request opens them again, and the
    node hands the new Database to the replica (Cluster.adopt) before the write."""
    host.closes = True
    replica = asyncio.run(lead(host, follower(tmp_path)))
    lease = replica.leader.lease
    assert lease is not None
    replica.let_go()
    assert NAME in host.closed

    unadopted = host.open_copy(NAME)
    with pytest.raises(ReadOnly):  # opened as every copy is: a follower
        unadopted.execute("CREATE TABLE t(x)")
    unadopted.close()

    db = host.open_copy(NAME)
    replica.adopt(db)
    assert replica.leading and replica.db is db
    assert db.execute("CREATE TABLE t(x)").version == 1
    assert cp.head(NAME) == 1 and decode(cp.read(NAME, 1)[0][1]).epoch == lease.epoch

    replica.let_go()
    asyncio.run(replica.stop(hand_over=False))  # holds its copy again to step down
    assert cp.get(lease_key(NAME)) is None and host.copies[NAME].role is Role.FOLLOWER
    host.copies[NAME].close()
