"""One database on one node of a cluster: a copy that follows the database's log,
or leads it.

Its follower half (follower.py) applies the log's records when the node tells it
they were appended (`appended`, within milliseconds); while it follows, its task
sleeps until then, or until the node's view of its lease or of the members
changes (`poke`). Its leader half (leader.py) takes the lease when it is void and
this node is next in the database's order of preference; what it commits goes to
the log as its durability says (shipping.py: `sync` before each commit, `async`
in batches). Everything one copy does runs in its one task, so applying, taking
the lease and stepping down never interleave.

While it waits, a replica lets go of its copy (`let_go`), and the node may close
the copy's files like any idle database's; it holds the copy again (`hold`)
before it touches it, and a leader's copy that a request opens again is promoted
before the request can write (`adopt`). So an idle copy costs no file
descriptors, and a node's open files are bounded however many copies it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from shoal.cluster.follower import Follower
from shoal.cluster.leader import Leader, State
from shoal.cluster.shipping import AsyncShipping, Shipping, SyncShipping
from shoal.cluster.view import View
from shoal.controlplane import ControlPlane
from shoal.engine import Database, Role
from shoal.errors import NotLeader, Unavailable

__all__ = ["Host", "Replica", "State", "Timing"]

T = TypeVar("T")
logger = logging.getLogger("shoal.cluster")

IDLE_SECONDS = 10.0  # the longest a following copy sleeps without news before it looks again


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
    session: str  # the session this node holds its leases in (view.py)
    valid_until: float  # monotonic: this node takes no writes after it, unless renewed

    def cluster_view(self) -> View: ...

    def control_plane(self) -> ControlPlane: ...

    async def hold_copy(self, database: str) -> Database:
        """This node's copy of `database`, kept open until `let_go_copy` (opened
        again if the node closed it meanwhile)."""
        ...

    def let_go_copy(self, database: str) -> None:
        """The node may close the copy's files from now on (idle, or past its limit)."""
        ...

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
        self.state = State.FOLLOWING
        self.behind = False  # an append found the log ahead of us: catch up first
        self.diverged = False  # stepped down with records unshipped: check against the log
        self.follower = Follower(self)
        self.leader = Leader(self)
        self.shipping: Shipping = (
            AsyncShipping(
                self,
                self.cp,
                every=min(timing.async_window, timing.renew_every),
                window=max(timing.async_window * 10, timing.lease_seconds),
            )
            if durability == "async"
            else SyncShipping(self, self.cp)
        )
        self._held = True  # the node keeps `db` open for this replica (it was handed over held)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._news = asyncio.Event()
        self._appended = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.appended()  # a new copy reads the log once, whatever it holds

    def appended(self) -> None:
        """The log may have grown: the follower reads it. On the event loop."""
        self._appended = True
        self._news.set()

    def poke(self) -> None:
        """This copy's lease, its spec or the members changed: look. On the event loop."""
        self._news.set()

    def wake_soon(self) -> None:
        """`poke`, from any thread: records wait to be shipped, or the log was found
        ahead of this leader."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the node has stopped
                self._loop.call_soon_threadsafe(self._news.set)

    def fell_behind(self) -> None:
        """An append found the log ahead of this leader (shipping.Leadership)."""
        self.behind = True
        self.wake_soon()

    async def news_came(self, timeout: float) -> bool:
        """Waits up to `timeout` s for news, the copy let go of meanwhile; whether
        the log may have grown."""
        if not self._news.is_set():
            self.let_go()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), timeout)
        self._news.clear()
        appended, self._appended = self._appended, False
        return appended

    # -- the copy's files ----------------------------------------------------------

    async def hold(self) -> Database:
        """`db`, kept open until `let_go`. Everything this replica does to its copy
        (apply, promote, demote, check, re-seed) it does holding it."""
        if not self._held:
            db = await self.host.hold_copy(self.name)
            self._held = True
            if db is not self.db:  # opened without us (we were stopping): take it now
                self.adopt(db)
        return self.db

    def let_go(self) -> None:
        """While this replica waits for news, the node may close its copy's files
        (idle, or past `max_open_databases`): a node holds thousands of copies."""
        if self._held:
            self._held = False
            self.host.let_go_copy(self.name)

    def adopt(self, db: Database) -> None:
        """`db` is this copy's file opened anew by the node (after it closed it, or
        for a re-seed): a leader's goes on leading before anyone can write to it."""
        self.db = db
        self.leader.resume()

    # -- as seen from outside ---------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this copy takes writes now: it leads and its lease is within its deadline."""
        return (
            self.state is State.LEADING
            and self.leader.lease is not None
            and self.leader.lease.session == self.host.session
            and self.db.role is Role.LEADER
            and time.monotonic() < self.host.valid_until
        )

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
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
        if self.leader.lease is not None:
            await self.hold()
            target = self.leader.successor() if hand_over else None
            await self.host.on_writer(self.leader.step_down, target)
        self.let_go()

    # -- the task ---------------------------------------------------------------

    async def _run(self) -> None:
        await self.follower.check_against_log()
        while not self._stopping:
            try:
                if self.diverged:
                    await self.follower.check_against_log()
                    self.diverged = False
                if self.state is State.LEADING:
                    await self.leader.lead()
                    if self.leader.lease is None:  # stepped down: the log may have moved on
                        self.appended()
                elif self.state is State.TAKING and self.leader.lease is not None:
                    await self.leader.take(self.leader.lease)  # the last try was cut short
                else:
                    look_in = self.leader.look_in()
                    if await self.news_came(IDLE_SECONDS if look_in is None else look_in):
                        await self.follower.follow()
                    await self.leader.maybe_lead()
            except asyncio.CancelledError:
                raise
            except Unavailable as exc:  # the control plane is away: keep serving reads
                logger.warning("%s: %s", self.name, exc)
                self.appended()  # and read the log again once it is back
                await asyncio.sleep(0.2)
            except Exception:
                logger.exception("%s: replication step failed", self.name)
                self.appended()
                await asyncio.sleep(0.5)

    # -- asked by shipping, on the writer's thread with the writer held ----------

    def check_leading(self) -> None:
        """NotLeader unless this copy may take writes now (shipping.Leadership)."""
        if not self.leading:
            raise NotLeader(f"this node does not lead {self.name!r} now; retry")
        if self.behind:
            raise NotLeader(f"{self.name!r}: the log is ahead of this leader; retry")
