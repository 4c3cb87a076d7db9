"""A copy's leader half: it claims a void lease in its turn (or takes one handed
to it), catches up and promotes, trims the control plane's log, rejoins the log
when an append finds it ahead, and steps down: handing the lease over,
releasing it, or letting it lapse.

A database's lease stands on its holder's session (view.py): the node renews
one key for all the leases it holds (coordinator.py), and a lease is void once
that session has lapsed. A leader stops writing the moment its node's local
deadline passes (a safety margin inside the TTL, which the control plane counts
on its own clock); a node paused past it and resumed finds its session gone,
and an append it still tries fails its compare-and-set."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import replace
from enum import Enum
from typing import TYPE_CHECKING

from shoal.cluster.view import Lease, Member, lease_key, member_key
from shoal.controlplane import ABSENT, KeyConflict
from shoal.engine import Role
from shoal.errors import Unavailable
from shoal.record import decode

if TYPE_CHECKING:
    from shoal.cluster.replica import Replica

__all__ = ["Leader", "State"]

logger = logging.getLogger("shoal.cluster")

STAGGER_SECONDS = 0.25  # how much later each next candidate tries for an expired lease
TRIM_SECONDS = 10.0  # how often a leader drops, from the control plane, what every copy has
LOG_KEEP = 1000  # records kept below the slowest copy, so a copy just behind need not re-seed


class State(Enum):
    """Where a copy stands. Its task moves it along these arrows; those marked
    (writer) happen with the database's writer held, so no write is half-way:

        FOLLOWING -- lease won, or handed to this node --> TAKING
        TAKING -- caught up, lease still ours, promoted (writer) --> LEADING
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
        self._absent_since: float | None = None
        self._last_holder: str | None = None
        self._last_epoch = 0
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
            if lease.holder == me and lease.session == self._copy.host.session:
                await self.take(lease)  # handed to us
            return
        if self._absent_since is None:
            self._absent_since = now
        order = [
            n for n in view.replicas(self._copy.name, self._copy.factor) if n != self._last_holder
        ]
        if me not in order or now >= self._copy.host.valid_until:
            return
        turn_at = self._absent_since + order.index(me) * STAGGER_SECONDS
        if now < turn_at:
            self._turn_at = turn_at
            return
        void = view.claims.get(self._copy.name)
        await self._copy.hold()
        epoch = max(
            self._copy.db.epoch,
            self._newest_epoch(),
            self._last_epoch,
            void.epoch if void is not None else 0,
        )
        claim = Lease(self._copy.name, me, epoch + 1, 0, self._copy.host.session)
        try:
            revision = await self._copy.host.blocking(self._claim, claim, void)
        except KeyConflict:
            return
        if revision is not None:
            await self.take(replace(claim, revision=revision))

    def _claim(self, claim: Lease, void: Lease | None) -> int | None:
        """Writes `claim` over `void`, the lease entry as the view last saw it (None:
        no entry), if its holder's session has indeed lapsed; a lapsed session
        never comes back, so no one can renew it meanwhile. Returns the new
        revision; None if the view was behind and the holder lives."""
        if void is not None:
            entry = self._copy.cp.get(member_key(void.holder))
            if entry is not None and Member.decode(void.holder, entry).session == void.session:
                return None
        return self._copy.cp.put(
            lease_key(self._copy.name),
            claim.encode(),
            expect=ABSENT if void is None else void.revision,
        )

    def _newest_epoch(self) -> int:
        if self._copy.db.version == 0:
            return 0
        return decode(
            self._copy.db.log_range(self._copy.db.version, self._copy.db.version)[0]
        ).epoch

    async def take(self, lease: Lease) -> None:
        """Becomes the leader under `lease`: catch up to the log's head, then
        promote, if the lease is still ours (catching up may take a while)."""
        self.lease, self._copy.state = lease, State.TAKING
        await self._copy.follower.catch_up()  # which holds the copy
        if not await self._copy.host.blocking(self._still_ours, lease):
            logger.warning("%s: lost the lease before leading; following", self._copy.name)
            self.lease, self._copy.state = None, State.FOLLOWING
            return
        await self._copy.host.on_writer(self._promote, lease.epoch)
        logger.info(
            "%s: leading at version %d, epoch %d",
            self._copy.name,
            self._copy.db.version,
            lease.epoch,
        )

    def _still_ours(self, lease: Lease) -> bool:
        """Whether the control plane still holds `lease` as ours, in this node's
        session; Unavailable (the take is tried again) while the node's own
        lease is not renewed."""
        if time.monotonic() >= self._copy.host.valid_until:
            raise Unavailable(f"{self._copy.name!r}: this node's lease is not renewed now")
        entry = self._copy.cp.get(lease_key(self._copy.name))
        return (
            entry is not None
            and entry.revision == lease.revision
            and lease.session == self._copy.host.session
        )

    def _promote(self, epoch: int) -> None:
        self._copy.db.commit_hook = self._copy.shipping
        self._copy.db.promote(epoch)
        self._copy.state = State.LEADING
        self._copy.host.led(self._copy.db, True)

    def resume(self) -> None:
        """Leads on, under the same lease, with `copy.db` opened anew (Replica.adopt)."""
        lease = self.lease
        if self._copy.state is State.LEADING and lease is not None:
            self._promote(lease.epoch)

    async def lead(self) -> None:
        """One turn of leading: waits for news (or for records to ship, or the
        log to trim), then acts on it."""
        shipping = self._copy.shipping
        wait = shipping.ship_in()
        await self._copy.news_came(
            max(0.0, self._trim_at - time.monotonic() if wait is None else wait)
        )
        if shipping.pending():
            await self._copy.host.blocking(shipping.ship)
        if self._copy.behind:
            await self.rejoin_log()
        if self._lost():
            logger.warning("%s: lost the lease; following", self._copy.name)
            await self._copy.hold()
            await self._copy.host.on_writer(self.step_down, None, False)
            return
        if time.monotonic() >= self._trim_at:
            await self._trim_log()
        view = self._copy.host.cluster_view()
        if self.lease is not None and self._copy.host.node_id not in view.replicas(
            self._copy.name, self._copy.factor
        ):
            target = self.successor()
            if target is not None:  # placement moved on (a node joined): hand over
                await self._copy.hold()
                await self._copy.host.on_writer(self.step_down, target)

    def _lost(self) -> bool:
        """Whether our lease is void: this node's session lapsed, or the view
        shows a newer entry (a view older than our claim shows an older one)."""
        lease = self.lease
        if lease is None:
            return False
        if lease.session != self._copy.host.session:
            return True
        seen = self._copy.host.cluster_view().claims.get(self._copy.name)
        return seen is not None and seen.revision > lease.revision

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
        await self._copy.hold()
        await self._copy.host.on_writer(self._demote)
        await self._copy.follower.check_against_log()
        await self._copy.follower.catch_up()
        self._copy.behind = False
        if lease is not None:
            await self.take(lease)

    def successor(self) -> str | None:
        """The live replica, other than us, most caught up (ties: placement order);
        the first in placement order if none has published its version yet (a
        database created a moment ago): it catches up before it promotes."""
        view = self._copy.host.cluster_view()
        me = self._copy.host.node_id
        placed = [n for n in view.replicas(self._copy.name, self._copy.factor) if n != me]
        order = placed + [n for n in view.live() if n not in placed and n != me]
        caught_up = [n for n in order if view.members[n].versions.get(self._copy.name, -1) >= 0]
        if not caught_up:
            return placed[0] if placed else None
        return max(
            caught_up, key=lambda n: (view.members[n].versions[self._copy.name], -order.index(n))
        )

    def step_down(self, target: str | None, release: bool = True) -> None:
        """Stops writing (holding the writer, so no write is half-way), ships what
        is queued, then hands the lease to `target`, or releases it (or, with
        `release` False, leaves it: it is not ours any more)."""
        with self._copy.db.writer_held():
            before, self._copy.state = self._copy.state, State.HANDING_OVER
            try:
                lease = self.lease
                if lease is not None and release:
                    self._copy.shipping.ship()
                    view = self._copy.host.cluster_view()
                    member = view.members.get(target) if target is not None else None
                    if member is not None:
                        self._hand_over(lease, member)
                    else:  # else it is void when this node's session lapses
                        with contextlib.suppress(KeyConflict, Unavailable):
                            self._copy.cp.delete(lease_key(self._copy.name), expect=lease.revision)
                self._demote()
            finally:
                if self._copy.state is State.HANDING_OVER:  # not demoted: an error on the way
                    self._copy.state = before

    def _hand_over(self, lease: Lease, target: Member) -> None:
        """Writes `lease` over to `target`, in its session, at the next epoch."""
        handed = Lease(self._copy.name, target.id, lease.epoch + 1, 0, target.session)
        try:
            self._copy.cp.put(lease_key(self._copy.name), handed.encode(), expect=lease.revision)
            logger.info("%s: handed the lease to %s", self._copy.name, target.id)
        except (KeyConflict, Unavailable) as exc:
            logger.warning("%s: could not hand over the lease: %s", self._copy.name, exc)

    def _demote(self) -> None:
        was_leading = self._copy.db.role is Role.LEADER
        self.lease, self._copy.state = None, State.FOLLOWING
        self._copy.db.commit_hook = None
        self._copy.db.demote()
        if self._copy.shipping.discard():  # committed here, never logged: the log decides
            self._copy.diverged = True
        if was_leading:
            self._copy.host.led(self._copy.db, False)
