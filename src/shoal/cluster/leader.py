"""A copy's leader half: it claims an expired lease in its turn (or takes one handed
to it), catches up and promotes, renews the lease well within its TTL, trims the
control plane's log, rejoins the log when an append finds it ahead, and steps
down: handing the lease over, releasing it, or letting it expire.

A leader stops writing the moment its lease's local deadline passes (a safety
margin inside the TTL, which the control plane counts on its own clock); a leader
paused past it and resumed finds it gone, and an append it still tries fails its
compare-and-set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from enum import Enum
from typing import TYPE_CHECKING

from shoal.cluster.view import Lease, lease_key
from shoal.controlplane import ABSENT, KeyConflict
from shoal.engine import Role
from shoal.errors import Unavailable
from shoal.record import decode

if TYPE_CHECKING:
    from shoal.cluster.replica import Replica

__all__ = ["Leader", "State"]

logger = logging.getLogger("shoal.cluster")

SAFETY = 0.8  # a leader stops writing after this fraction of its lease's TTL
STAGGER_SECONDS = 0.25  # how much later each next candidate tries for an expired lease
TRIM_SECONDS = 10.0  # how often a leader drops, from the control plane, what every copy has
LOG_KEEP = 1000  # records kept below the slowest copy, so a copy just behind need not re-seed


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


class Leader:
    """Takes, holds and gives up `copy`'s lease, moving `copy.state` as it does."""

    def __init__(self, copy: Replica) -> None:
        self._copy = copy
        self.lease: Lease | None = None  # ours, while we lead
        self.valid_until = 0.0  # monotonic: no write after this without a renewal
        self._absent_since: float | None = None
        self._last_holder: str | None = None
        self._last_epoch = 0
        self._renew_at = 0.0  # monotonic
        self._trim_at = time.monotonic() + TRIM_SECONDS
        self._trimmed_below = 0  # the log holds nothing below this version any more
        self._turn_at: float | None = None  # monotonic: when an absent lease is ours to try

    def look_in(self) -> float | None:
        """How soon `maybe_lead` wants to look again even if nothing changes: when
        this node's turn to claim an absent lease comes (None: only on news)."""
        return None if self._turn_at is None else max(0.0, self._turn_at - time.monotonic())

    async def maybe_lead(self) -> None:
        view = self._copy.host.cluster_view()
        lease = view.leases.get(self._copy.name)
        me = self._copy.host.node_id
        now = time.monotonic()
        self._turn_at = None
        if lease is not None:
            self._absent_since = None
            self._last_holder = lease.holder
            self._last_epoch = max(self._last_epoch, lease.epoch)
            if lease.holder == me:  # handed to us, or ours from before a restart
                await self.take(lease)
            return
        if self._absent_since is None:
            self._absent_since = now
        order = [
            n for n in view.replicas(self._copy.name, self._copy.factor) if n != self._last_holder
        ]
        if me not in order:
            return
        turn_at = self._absent_since + order.index(me) * STAGGER_SECONDS
        if now < turn_at:
            self._turn_at = turn_at
            return
        epoch = max(self._copy.db.epoch, self._newest_epoch(), self._last_epoch) + 1
        claim = Lease(self._copy.name, me, epoch, 0)
        started = time.monotonic()
        try:
            revision = await self._copy.host.blocking(self._put_lease, claim, ABSENT)
        except KeyConflict:
            return
        self.valid_until = started + self._copy.timing.lease_seconds * SAFETY
        await self.take(Lease(self._copy.name, me, epoch, revision))

    def _put_lease(self, lease: Lease, expect: int) -> int:
        """Writes `lease` if the key is at revision `expect`; returns the new revision."""
        return self._copy.cp.put(
            lease_key(self._copy.name),
            lease.encode(),
            expect=expect,
            ttl=self._copy.timing.lease_seconds,
        )

    def _newest_epoch(self) -> int:
        if self._copy.db.version == 0:
            return 0
        return decode(
            self._copy.db.log_range(self._copy.db.version, self._copy.db.version)[0]
        ).epoch

    async def take(self, lease: Lease) -> None:
        """Becomes the leader under `lease`: catch up to the log's head, then promote."""
        self.lease, self._copy.state = lease, State.TAKING
        if self.valid_until < time.monotonic():  # handed over: renew before relying on it
            await self.renew()
            if self.lease is None:
                return
        await self._copy.follower.catch_up()
        await self.renew()  # catching up may have taken a while
        if self.lease is None:
            return
        await self._copy.host.on_writer(self._promote, lease.epoch)
        logger.info(
            "%s: leading at version %d, epoch %d",
            self._copy.name,
            self._copy.db.version,
            lease.epoch,
        )

    def _promote(self, epoch: int) -> None:
        self._copy.db.commit_hook = self._copy.shipping
        self._copy.db.promote(epoch)
        self._copy.state = State.LEADING
        self._copy.host.led(self._copy.db, True)

    async def lead(self) -> None:
        await asyncio.sleep(self._copy.shipping.every)
        if self._copy.shipping.pending():
            await self._copy.host.blocking(self._copy.shipping.ship)
        if self._copy.behind:
            await self.rejoin_log()
        if time.monotonic() >= self._renew_at:
            await self.renew()
        if time.monotonic() >= self._trim_at:
            await self._trim_log()
        view = self._copy.host.cluster_view()
        if self.lease is not None and self._copy.host.node_id not in view.replicas(
            self._copy.name, self._copy.factor
        ):
            target = self.successor()
            if target is not None:  # placement moved on (a node joined): hand over
                await self._copy.host.on_writer(self.step_down, target)

    async def renew(self) -> None:
        lease = self.lease
        if lease is None:
            return
        started = time.monotonic()
        try:
            revision = await self._copy.host.blocking(self._put_lease, lease, lease.revision)
        except KeyConflict:
            logger.warning("%s: lost the lease; following", self._copy.name)
            await self._copy.host.on_writer(self.step_down, None, False)
            return
        except Unavailable:
            if time.monotonic() >= self.valid_until:
                logger.warning("%s: cannot renew the lease in time; following", self._copy.name)
                await self._copy.host.on_writer(self.step_down, None, False)
            raise
        self.lease = Lease(self._copy.name, lease.holder, lease.epoch, revision)
        self.valid_until = started + self._copy.timing.lease_seconds * SAFETY
        self._renew_at = started + self._copy.timing.renew_every

    async def _trim_log(self) -> None:
        """Drops from the control plane's log what every live copy has applied
        (less LOG_KEEP); a copy that was away longer re-seeds from a snapshot."""
        self._trim_at = time.monotonic() + TRIM_SECONDS
        view = self._copy.host.cluster_view()
        versions = [
            m.versions[self._copy.name]
            for m in view.members.values()
            if self._copy.name in m.versions
        ]
        below = min([self._copy.db.version, *versions]) - LOG_KEEP
        if below > max(1, self._trimmed_below):  # an idle database's log has nothing to drop
            await self._copy.host.blocking(self._copy.cp.truncate, self._copy.name, below)
            self._trimmed_below = below

    async def rejoin_log(self) -> None:
        """An append found the log ahead of this leader (a deposed leader's last
        append landed, or an async batch lost its race): become the log again,
        then go on leading if the lease is still ours."""
        lease = self.lease
        await self._copy.host.on_writer(self._demote)
        await self._copy.follower.check_against_log()
        await self._copy.follower.catch_up()
        self._copy.behind = False
        if lease is not None:
            await self.take(lease)

    def successor(self) -> str | None:
        """The live replica, other than us, most caught up (ties: placement order)."""
        view = self._copy.host.cluster_view()
        me = self._copy.host.node_id
        order = [n for n in view.replicas(self._copy.name, self._copy.factor) if n != me]
        order += [n for n in view.live() if n not in order and n != me]
        caught_up = [n for n in order if view.members[n].versions.get(self._copy.name, -1) >= 0]
        if not caught_up:
            return None
        return max(
            caught_up, key=lambda n: (view.members[n].versions[self._copy.name], -order.index(n))
        )

    def step_down(self, target: str | None, release: bool = True) -> None:
        """Stops writing (holding the writer, so no write is half-way), ships what
        is queued, then hands the lease to `target`, or releases it (or, with
        `release` False, leaves it to expire: it is not ours any more)."""
        with self._copy.db.writer_held():
            before, self._copy.state = self._copy.state, State.HANDING_OVER
            try:
                lease = self.lease
                if lease is not None and release:
                    self._copy.shipping.ship()
                    if target is not None:
                        handed = Lease(self._copy.name, target, lease.epoch + 1, 0)
                        try:
                            self._put_lease(handed, lease.revision)
                            logger.info("%s: handed the lease to %s", self._copy.name, target)
                        except (KeyConflict, Unavailable) as exc:
                            logger.warning(
                                "%s: could not hand over the lease: %s", self._copy.name, exc
                            )
                    else:
                        with contextlib.suppress(KeyConflict, Unavailable):  # else it expires
                            self._copy.cp.delete(lease_key(self._copy.name), expect=lease.revision)
                self._demote()
            finally:
                if self._copy.state is State.HANDING_OVER:  # not demoted: an error on the way
                    self._copy.state = before

    def _demote(self) -> None:
        was_leading = self._copy.db.role is Role.LEADER
        self.lease, self._copy.state = None, State.FOLLOWING
        self.valid_until = 0.0
        self._copy.db.commit_hook = None
        self._copy.db.demote()
        if self._copy.shipping.discard():  # committed here, never logged: the log decides
            self._copy.diverged = True
        if was_leading:
            self._copy.host.led(self._copy.db, False)
