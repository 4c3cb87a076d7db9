"""One database on one node of a cluster: it follows the database's log, or leads it.

A follower applies the log's records as they are appended (`follow` wakes it
within milliseconds), and takes the lease when it expires and this node is next
in the database's order of preference. A leader renews its lease well within
its TTL and puts each record in the log with compare-and-set, as its durability
says (shipping.py: `sync` before each commit, `async` in batches).

A leader stops writing the moment its lease's local deadline passes (a safety
margin inside the TTL, which the control plane counts on its own clock); a
leader paused past it and resumed finds it gone, and an append it still tries
fails its compare-and-set. Everything one replica does runs in its one task, so
applying, taking the lease and stepping down never interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from shoal.cluster.shipping import AsyncShipping, Shipping, SyncShipping
from shoal.cluster.view import Lease, View, lease_key
from shoal.controlplane import ABSENT, ControlPlane, KeyConflict
from shoal.engine import Database, Role
from shoal.errors import NotLeader, ReplicationError, ReseedRequired, Unavailable
from shoal.record import decode

__all__ = ["Host", "Replica", "State", "Timing"]

T = TypeVar("T")
logger = logging.getLogger("shoal.cluster")

FOLLOW_SECONDS = 0.1  # the longest a follower waits on the log before looking at its lease
SAFETY = 0.8  # a leader stops writing after this fraction of its lease's TTL
STAGGER_SECONDS = 0.25  # how much later each next candidate tries for an expired lease
TRIM_SECONDS = 10.0  # how often a leader drops, from the control plane, what every copy has
LOG_KEEP = 1000  # records kept below the slowest copy, so a copy just behind need not re-seed
LOCAL_KEEP = 10_000  # records a follower keeps in its own log
RESEED_BACKOFF_MAX = 30.0  # the longest wait between re-seeds of a copy making no progress


class State(Enum):
    """Where a copy stands. Its task moves it along these arrows; those marked
    (writer) happen with the database's writer held, so no write is half-way:

        FOLLOWING -- lease won, or handed to this node --> TAKING
        TAKING -- caught up, lease renewed, promoted (writer) --> LEADING
        TAKING -- lease lost meanwhile --> FOLLOWING
        LEADING -- stepping down (writer) --> HANDING_OVER -- demoted --> FOLLOWING
        LEADING -- the log found ahead: demoted (writer) --> FOLLOWING,
                   then TAKING again if the lease is still this node's

    A take cut short by an error (the control plane away) stays TAKING, and the
    task tries it again: a lease must never rest with a copy that does not lead.
    """

    FOLLOWING = "following"
    TAKING = "taking"
    LEADING = "leading"
    HANDING_OVER = "handing over"


@dataclass(frozen=True)
class Timing:
    """A cluster's clocks, from the node's settings."""

    lease_seconds: float = 1.0
    async_window: float = 0.1

    @property
    def renew_every(self) -> float:
        return self.lease_seconds / 4


class Host(Protocol):
    """What a replica needs of the node that hosts it (node.Node)."""

    node_id: str

    def cluster_view(self) -> View: ...

    def control_plane(self) -> ControlPlane: ...

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs a control-plane call on the cluster's own threads."""
        ...

    async def on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn` on the node's write threads."""
        ...

    async def fetch_snapshot(self, database: str, at_least: int) -> Path:
        """A copy of `database` at version `at_least` or later that the log goes on
        from, in a temporary file."""
        ...

    async def replace_copy(self, database: str, snapshot: Path) -> Database:
        """Puts `snapshot` in place of this node's copy; returns the new Database."""
        ...

    def led(self, db: Database, leading: bool) -> None:
        """Told when this node starts or stops leading `db` (its archiving follows)."""
        ...


class Replica:
    """This node's copy of `name`, and the one task that keeps it in step."""

    def __init__(
        self, host: Host, db: Database, durability: str, factor: int, timing: Timing
    ) -> None:
        self.host = host
        self.db = db
        self.name = db.name
        self.durability = durability
        self.factor = factor
        self.timing = timing
        self.cp = host.control_plane()
        self.lease: Lease | None = None  # ours, while we lead
        self.valid_until = 0.0  # monotonic: no write after this without a renewal
        self.state = State.FOLLOWING
        self.behind = False  # an append found the log ahead of us: catch up first
        self._diverged = False  # stepped down with records unshipped: check against the log
        self._absent_since: float | None = None
        self._last_holder: str | None = None
        self._last_epoch = 0
        self._renew_at = 0.0  # monotonic
        self._trim_at = time.monotonic() + TRIM_SECONDS
        self._trimmed_locally = 0
        self.shipping: Shipping = (
            AsyncShipping(
                self,
                self.cp,
                every=min(timing.async_window, timing.renew_every),
                window=max(timing.async_window * 10, timing.lease_seconds),
            )
            if durability == "async"
            else SyncShipping(self, self.cp, every=timing.renew_every)
        )
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.reseeds = 0  # re-seeds of this copy since the node started
        self.reseeds_in_a_row = 0  # re-seeds since a record applied or the head reached
        self.problem: str | None = None  # why the last re-seed failed, until the copy is well

    # -- as seen from outside ---------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this copy takes writes now: it leads and its lease is within its deadline."""
        return (
            self.state is State.LEADING
            and self.lease is not None
            and self.db.role is Role.LEADER
            and time.monotonic() < self.valid_until
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"replica {self.name}"
        )

    async def stop(self, *, hand_over: bool) -> None:
        """Ends the task; a leader first hands its lease to a caught-up replica
        (if asked and one is live), else just lets it go."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.lease is not None:
            target = self._successor() if hand_over else None
            await self.host.on_writer(self._step_down, target)

    # -- the task ---------------------------------------------------------------

    async def _run(self) -> None:
        await self._check_against_log()
        while not self._stopping:
            try:
                if self._diverged:
                    await self._check_against_log()
                    self._diverged = False
                if self.state is State.LEADING:
                    await self._lead()
                elif self.state is State.TAKING and self.lease is not None:
                    await self._take(self.lease)  # the last try was cut short
                else:
                    await self._follow()
                    await self._maybe_lead()
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:  # the control plane is away: keep serving reads
                logger.warning("%s: %s", self.name, exc)
                await asyncio.sleep(0.2)
            except Exception:
                logger.exception("%s: replication step failed", self.name)
                await asyncio.sleep(0.5)

    # -- following --------------------------------------------------------------

    async def _follow(self) -> None:
        records = await self.host.blocking(
            self.cp.follow, self.name, self.db.version, FOLLOW_SECONDS
        )
        await self._apply(records)

    async def _apply(self, records: list[tuple[int, bytes]]) -> None:
        if not records:  # at the log's head: whatever re-seeded this copy worked
            self._progressed()
            return
        if records[0][0] != self.db.version + 1:
            await self._reseed(
                f"the log no longer holds version {self.db.version + 1}", records[0][0] - 1
            )
            return
        try:
            await self.host.on_writer(self.db.apply_many, [raw for _, raw in records])
        except ReseedRequired as exc:
            await self._reseed(str(exc), exc.version)
            return
        except ReplicationError as exc:
            await self._reseed(f"a record does not apply here: {exc}", self.db.version + 1)
            return
        self._progressed()
        below = self.db.version - LOCAL_KEEP
        if below - self._trimmed_locally >= LOCAL_KEEP:
            await self.host.on_writer(self.db.truncate_log, below)
            self._trimmed_locally = below

    async def _catch_up(self) -> None:
        """Applies the log up to its head (as it is when we look)."""
        head = await self.host.blocking(self.cp.head, self.name)
        while self.db.version < head:
            records = await self.host.blocking(self.cp.read, self.name, self.db.version + 1, head)
            if not records:
                await self._reseed(
                    f"the log no longer holds version {self.db.version + 1}", self.db.version + 1
                )
                continue
            await self._apply(records)
        self._progressed()

    def _progressed(self) -> None:
        """The copy applied a record or stands at the log's head: not stuck."""
        self.reseeds_in_a_row, self.problem = 0, None

    async def _check_against_log(self) -> None:
        """Re-seeds a copy that holds writes the log does not (an async leader's
        unshipped records, or a deposed leader's): the log decides."""
        version = self.db.version
        if version == 0:
            return
        head = await self.host.blocking(self.cp.head, self.name)
        logged = await self.host.blocking(self.cp.read, self.name, version, version)
        if version > head:
            await self._reseed(
                f"this copy is at version {version} but the log ends at {head}: "
                f"versions {head + 1} to {version} were committed here and never logged",
                0,
            )
        elif logged and logged[0][1] != self.db.log_range(version, version)[0]:
            await self._reseed(f"version {version} here differs from the log's", 0)
        elif not logged and head > 0:
            await self._reseed(
                f"the log no longer holds version {version} to check it against", version
            )

    async def _reseed(self, why: str, at_least: int) -> None:
        """Replaces this copy, loudly, with one at version `at_least` or later that
        the log goes on from. A copy re-seeded again before it applied a record is
        making no progress: each such try waits twice as long as the last (up to
        RESEED_BACKOFF_MAX), and a failure stays in `problem` for status and metrics."""
        if self.reseeds_in_a_row:
            await asyncio.sleep(min(RESEED_BACKOFF_MAX, 0.5 * 2 ** (self.reseeds_in_a_row - 1)))
        self.reseeds += 1
        self.reseeds_in_a_row += 1
        logger.error(
            "%s: DISCARDING this node's copy (version %d) and re-seeding: %s",
            self.name,
            self.db.version,
            why,
        )
        try:
            snapshot = await self.host.fetch_snapshot(self.name, at_least)
            self.db = await self.host.replace_copy(self.name, snapshot)
        except Exception as exc:
            self.problem = f"re-seed failed: {exc}"
            raise
        if self.db.version < at_least:  # the host's checks should make this impossible
            self.problem = (
                f"re-seeded at version {self.db.version}, short of version {at_least}: {why}"
            )
            logger.error("%s: %s", self.name, self.problem)
            return
        self.problem = None
        logger.warning("%s: re-seeded at version %d", self.name, self.db.version)

    # -- taking the lease -------------------------------------------------------

    async def _maybe_lead(self) -> None:
        view = self.host.cluster_view()
        lease = view.leases.get(self.name)
        me = self.host.node_id
        now = time.monotonic()
        if lease is not None:
            self._absent_since = None
            self._last_holder = lease.holder
            self._last_epoch = max(self._last_epoch, lease.epoch)
            if lease.holder == me:  # handed to us, or ours from before a restart
                await self._take(lease)
            return
        if self._absent_since is None:
            self._absent_since = now
        order = [n for n in view.replicas(self.name, self.factor) if n != self._last_holder]
        if me not in order:
            return
        if now - self._absent_since < order.index(me) * STAGGER_SECONDS:
            return
        epoch = max(self.db.epoch, self._newest_epoch(), self._last_epoch) + 1
        claim = Lease(self.name, me, epoch, 0)
        started = time.monotonic()
        try:
            revision = await self.host.blocking(self._put_lease, claim, ABSENT)
        except KeyConflict:
            return
        self.valid_until = started + self.timing.lease_seconds * SAFETY
        await self._take(Lease(self.name, me, epoch, revision))

    def _put_lease(self, lease: Lease, expect: int) -> int:
        """Writes `lease` if the key is at revision `expect`; returns the new revision."""
        return self.cp.put(
            lease_key(self.name), lease.encode(), expect=expect, ttl=self.timing.lease_seconds
        )

    def _newest_epoch(self) -> int:
        if self.db.version == 0:
            return 0
        return decode(self.db.log_range(self.db.version, self.db.version)[0]).epoch

    async def _take(self, lease: Lease) -> None:
        """Becomes the leader under `lease`: catch up to the log's head, then promote."""
        self.lease, self.state = lease, State.TAKING
        if self.valid_until < time.monotonic():  # handed over: renew before relying on it
            await self._renew()
            if self.lease is None:
                return
        await self._catch_up()
        await self._renew()  # catching up may have taken a while
        if self.lease is None:
            return
        await self.host.on_writer(self._promote, lease.epoch)
        logger.info("%s: leading at version %d, epoch %d", self.name, self.db.version, lease.epoch)

    def _promote(self, epoch: int) -> None:
        self.db.commit_hook = self.shipping
        self.db.promote(epoch)
        self.state = State.LEADING
        self.host.led(self.db, True)

    # -- leading ----------------------------------------------------------------

    async def _lead(self) -> None:
        await asyncio.sleep(self.shipping.every)
        if self.shipping.pending():
            await self.host.blocking(self.shipping.ship)
        if self.behind:
            await self._rejoin_log()
        if time.monotonic() >= self._renew_at:
            await self._renew()
        if time.monotonic() >= self._trim_at:
            await self._trim_log()
        view = self.host.cluster_view()
        if self.lease is not None and self.host.node_id not in view.replicas(
            self.name, self.factor
        ):
            target = self._successor()
            if target is not None:  # placement moved on (a node joined): hand over
                await self.host.on_writer(self._step_down, target)

    async def _renew(self) -> None:
        lease = self.lease
        if lease is None:
            return
        started = time.monotonic()
        try:
            revision = await self.host.blocking(self._put_lease, lease, lease.revision)
        except KeyConflict:
            logger.warning("%s: lost the lease; following", self.name)
            await self.host.on_writer(self._step_down, None, False)
            return
        except Unavailable:
            if time.monotonic() >= self.valid_until:
                logger.warning("%s: cannot renew the lease in time; following", self.name)
                await self.host.on_writer(self._step_down, None, False)
            raise
        self.lease = Lease(self.name, lease.holder, lease.epoch, revision)
        self.valid_until = started + self.timing.lease_seconds * SAFETY
        self._renew_at = started + self.timing.renew_every

    async def _trim_log(self) -> None:
        """Drops from the control plane's log what every live copy has applied
        (less LOG_KEEP); a copy that was away longer re-seeds from a snapshot."""
        self._trim_at = time.monotonic() + TRIM_SECONDS
        view = self.host.cluster_view()
        versions = [m.versions[self.name] for m in view.members.values() if self.name in m.versions]
        below = min([self.db.version, *versions]) - LOG_KEEP
        if below > 1:
            await self.host.blocking(self.cp.truncate, self.name, below)

    async def _rejoin_log(self) -> None:
        """An append found the log ahead of this leader (a deposed leader's last
        append landed, or an async batch lost its race): become the log again,
        then go on leading if the lease is still ours."""
        lease = self.lease
        await self.host.on_writer(self._demote)
        await self._check_against_log()
        await self._catch_up()
        self.behind = False
        if lease is not None:
            await self._take(lease)

    def _successor(self) -> str | None:
        """The live replica, other than us, most caught up (ties: placement order)."""
        view = self.host.cluster_view()
        me = self.host.node_id
        order = [n for n in view.replicas(self.name, self.factor) if n != me]
        order += [n for n in view.live() if n not in order and n != me]
        caught_up = [n for n in order if view.members[n].versions.get(self.name, -1) >= 0]
        if not caught_up:
            return None
        return max(caught_up, key=lambda n: (view.members[n].versions[self.name], -order.index(n)))

    def _step_down(self, target: str | None, release: bool = True) -> None:
        """Stops writing (holding the writer, so no write is half-way), ships what
        is queued, then hands the lease to `target`, or releases it (or, with
        `release` False, leaves it to expire: it is not ours any more)."""
        with self.db.writer_held():
            before, self.state = self.state, State.HANDING_OVER
            try:
                lease = self.lease
                if lease is not None and release:
                    self.shipping.ship()
                    if target is not None:
                        handed = Lease(self.name, target, lease.epoch + 1, 0)
                        try:
                            self._put_lease(handed, lease.revision)
                            logger.info("%s: handed the lease to %s", self.name, target)
                        except (KeyConflict, Unavailable) as exc:
                            logger.warning("%s: could not hand over the lease: %s", self.name, exc)
                    else:
                        with contextlib.suppress(KeyConflict, Unavailable):  # else it expires
                            self.cp.delete(lease_key(self.name), expect=lease.revision)
                self._demote()
            finally:
                if self.state is State.HANDING_OVER:  # not demoted: an error on the way
                    self.state = before

    def _demote(self) -> None:
        was_leading = self.db.role is Role.LEADER
        self.lease, self.state = None, State.FOLLOWING
        self.valid_until = 0.0
        self.db.commit_hook = None
        self.db.demote()
        if self.shipping.discard():  # committed here, never logged: the log decides
            self._diverged = True
        if was_leading:
            self.host.led(self.db, False)

    # -- asked by shipping, on the writer's thread with the writer held ----------

    def check_leading(self) -> None:
        """NotLeader unless this copy may take writes now (shipping.Leadership)."""
        if not self.leading:
            raise NotLeader(f"this node does not lead {self.name!r} now; retry")
        if self.behind:
            raise NotLeader(f"{self.name!r}: the log is ahead of this leader; retry")
