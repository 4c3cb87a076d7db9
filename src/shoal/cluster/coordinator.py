"""A node's part in a cluster: membership, placement, one Replica per database it holds.

Five loops, each on the event loop, each doing its control-plane calls on
threads (a blocking call never stalls a request); the first three, this node's
own, on threads of their own, so that they never wait behind the replicas':

- heartbeat: renews `node/ID`, this node's one lease, every quarter of
  `lease_seconds` (every database lease it holds stands on it: view.py), and
  does nothing else;
- copies: writes `copies/ID`, the version of each copy here, when they
  changed, at most every COPIES_SECONDS;
- view: reads what changed among members, leases and the catalog every
  VIEW_SECONDS (view.ViewReader), starts or stops a Replica for each changed
  database this node should (or should no longer) hold, by rendezvous hashing
  over the live members, and pokes the replicas whose lease or spec changed;
  when the members change, all of them, and every PLACE_SECONDS it places every
  database again, in case a change was missed;
- logs: one watcher of every log (`ControlPlane.watch_logs`) tells each copy
  here that its log grew, and every SWEEP_SECONDS one read of the heads of all
  of them finds what a lost notification missed; a copy with no news sleeps;
- the replicas' own tasks (replica.py).

Stopping (SIGTERM) hands every lease this node holds to a live replica before
the databases close (a planned stop is no failover), then leaves the membership at once,
so the others re-place its databases without waiting for the TTL.

A node whose `node/ID` lapsed (paused, or cut off from the control plane for
longer than the lease) has lost its session, and with it every lease it held:
its leaders step down, and it joins again in a new session.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import apsw
import httpx

from shoal.archive.base import BlobStore
from shoal.archive.catalog import read_index
from shoal.archive.restore import plan_restore, restore
from shoal.cluster.replica import Replica, Timing
from shoal.cluster.view import (
    DURABILITIES,
    Member,
    Spec,
    View,
    ViewReader,
    catalog_key,
    copies_key,
    lease_key,
    member_key,
)
from shoal.controlplane import ABSENT, ControlPlane, KeyConflict
from shoal.engine import Database
from shoal.engine import log as engine_log
from shoal.errors import (
    ArchiveError,
    DatabaseExists,
    DatabaseNotFound,
    InvalidRequest,
    NotArchived,
    NotLeader,
    OutcomeUnknown,
    Unavailable,
)

__all__ = ["Cluster", "Databases"]

T = TypeVar("T")
logger = logging.getLogger("shoal.cluster")

COPIES_SECONDS = 0.5  # how often, at most, a node publishes its copies' versions
SAFETY = 0.8  # a node stops writing after this fraction of its lease's TTL
VIEW_SECONDS = 0.1
HOLD_BACKOFF_MAX = 60.0  # the longest wait before a copy that would not open is tried again
PLACE_SECONDS = 5.0  # how often a node places every database, not only those that changed
SWEEP_SECONDS = 2.0  # how late a copy may hear of an append whose notification was lost
SNAPSHOT_TIMEOUT = 300.0
WORK_SLOTS = 64  # replicas that may hold their copies at once (Cluster.hold_copy)


class Databases(Protocol):
    """What the cluster needs of the node's database registry (node.Node)."""

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    async def hold(self, name: str) -> Database:
        """Opens (creating an empty follower copy if missing) and keeps `name` open."""
        ...

    def release(self, name: str) -> None:
        """Lets go of what `hold` kept open: the node may close it from now on."""
        ...

    async def remove_copy(self, name: str, *, dropped: bool) -> None:
        """Deletes the local copy (with `dropped`, the database is gone: its
        archive gets a tombstone)."""
        ...

    async def replace_file(self, name: str, snapshot: Path) -> Database:
        """Puts the file `snapshot` in place of the local copy of a held database."""
        ...

    def led(self, db: Database, leading: bool) -> None:
        """This node starts or stops leading `db`."""
        ...


class Cluster:
    """This node's membership and replicas; also the `Host` its replicas run on."""

    def __init__(
        self,
        databases: Databases,
        cp: ControlPlane,
        *,
        node_id: str,
        url: str,
        factor: int,
        timing: Timing,
        scratch: Path,
        archive: BlobStore | None = None,
    ) -> None:
        self.databases = databases
        self.cp = cp
        self.node_id = node_id
        self.url = url
        self.factor = factor
        self.timing = timing
        self.scratch = scratch
        self.archive = archive
        self.view = View({}, {}, {})
        self._reader = ViewReader()
        self._reading = asyncio.Lock()
        self._hold_failures: dict[str, int] = {}  # failed tries to open a copy, in a row
        self.replicas: dict[str, Replica] = {}
        self.http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0))
        self._threads = ThreadPoolExecutor(64, thread_name_prefix="shoal-cluster")
        # This node's lease and view never wait behind its replicas' calls: in a
        # failover of thousands of databases those queue for seconds.
        self._own_threads = ThreadPoolExecutor(2, thread_name_prefix="shoal-node")
        self._renewing = ThreadPoolExecutor(1, thread_name_prefix="shoal-renew")  # nothing else
        self._working = asyncio.Semaphore(WORK_SLOTS)
        self._tasks: list[asyncio.Task[None]] = []
        self._changing: dict[str, asyncio.Task[None]] = {}
        self._leaving = False
        self._viewed = asyncio.Event()
        self.session = secrets.token_hex(8)  # the leases this node holds stand on it
        self.valid_until = 0.0  # monotonic: no write here after it, unless renewed
        self._member_revision = ABSENT
        # The versions and problems last written to `copies/ID`.
        self._copies_written: tuple[dict[str, int], dict[str, str]] | None = None

    # -- Host, for the replicas -------------------------------------------------------

    def cluster_view(self) -> View:
        return self.view

    def control_plane(self) -> ControlPlane:
        return self.cp

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        call = functools.partial(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    async def on_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.databases.write(fn, *args)

    async def _own(self, fn: Callable[..., T], *args: Any, renewal: bool = False) -> T:
        """`blocking`, on the threads of this node's own view and copies (a renewal:
        on a thread of its own, which nothing else waits on)."""
        call = functools.partial(fn, *args)
        threads = self._renewing if renewal else self._own_threads
        return await asyncio.get_running_loop().run_in_executor(threads, call)

    async def fetch_snapshot(self, database: str, at_least: int) -> Path:
        """A copy of `database` at version `at_least` or later that the log goes on
        from: restored from the archive when it has one, else the leader's,
        downloaded into the scratch directory."""
        if self.archive is not None:
            restored = await self.blocking(self._from_archive, database, at_least)
            if restored is not None:
                return restored
        deadline = time.monotonic() + SNAPSHOT_TIMEOUT
        while True:
            leader = self.view.leader(database)
            if leader is not None and leader.id != self.node_id:
                try:
                    return await self._download(leader.url, database)
                except (httpx.HTTPError, OSError) as exc:
                    logger.warning("%s: snapshot from %s failed: %s", database, leader.id, exc)
            if time.monotonic() > deadline:
                raise Unavailable(f"no leader of {database!r} to seed a copy from")
            await asyncio.sleep(0.2)

    def _from_archive(self, database: str, at_least: int) -> Path | None:
        """The archive's newest state of `database`, if it is a state the log went
        through, at `at_least` or later, and the log still holds what follows it
        (else None: the leader's copy it is)."""
        assert self.archive is not None
        target = self._scratch_file(database)
        target.unlink()  # restore makes the file itself, and never overwrites one
        try:
            version = restore(
                self.archive, plan_restore(read_index(self.archive, database)), target
            )
            unfit = self._unfit_seed(database, target, version, at_least)
            if unfit is None:
                logger.info("%s: hydrated from the archive at version %d", database, version)
                return target
            logger.info("%s: not seeding from the archive: %s", database, unfit)
        except NotArchived:
            pass
        except ArchiveError as exc:
            logger.warning("%s: cannot hydrate from the archive: %s", database, exc)
        target.unlink(missing_ok=True)
        return None

    def _unfit_seed(self, database: str, path: Path, version: int, at_least: int) -> str | None:
        """Why the copy at `path` (at `version`) cannot seed this node's copy, or None."""
        if version < at_least:
            return f"it reaches version {version}, and this copy needs {at_least} or later"
        if version > 0:
            logged = self.cp.read(database, version, version)
            if not logged:
                return f"the log no longer holds its version {version}"
            if logged[0][1] != _last_record(path):
                return f"its version {version} differs from the log's"
        elif self.cp.head(database) > 0 and not self.cp.read(database, 1, 1):
            return "it is empty and the log no longer starts at version 1"
        return None

    def _scratch_file(self, database: str) -> Path:
        self.scratch.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f"{database}.", suffix=".seed", dir=self.scratch)
        os.close(handle)
        return Path(name)

    async def _download(self, url: str, database: str) -> Path:
        path = self._scratch_file(database)
        try:
            with path.open("wb") as out:
                source = f"{url}/v1/databases/{database}/backup"
                async with self.http.stream("GET", source, headers=_INTERNAL) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPStatusError(
                            f"{source}: {response.status_code}",
                            request=response.request,
                            response=response,
                        )
                    async for chunk in response.aiter_bytes(1 << 20):
                        out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def led(self, db: Database, leading: bool) -> None:
        self.databases.led(db, leading)

    async def hold_copy(self, database: str) -> Database:
        """The copy, held, once fewer than WORK_SLOTS replicas hold theirs: a node
        holds thousands of copies, and in a failover all of them want to work at
        once; each holds its files open while it does."""
        await self._working.acquire()
        try:
            return await self.databases.hold(database)
        except BaseException:
            self._working.release()
            raise

    def let_go_copy(self, database: str) -> None:
        self.databases.release(database)
        self._working.release()

    def adopt(self, db: Database) -> None:
        """The node opened `db`, a copy it had closed: its replica, if any, takes it
        (a leader's is promoted). On the thread that opened it."""
        replica = self.replicas.get(db.name)
        if replica is not None:
            replica.adopt(db)

    async def replace_copy(self, database: str, snapshot: Path) -> Database:
        try:
            return await self.databases.replace_file(database, snapshot)
        finally:
            snapshot.unlink(missing_ok=True)

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Joins: takes this node's lease, reads the view, makes sure `default` is
        in the catalog, and starts holding this node's databases."""
        await self._join()
        with contextlib.suppress(KeyConflict):
            spec = Spec("default", "sync")
            await self.blocking(
                lambda: self.cp.put(catalog_key("default"), spec.encode(), expect=ABSENT)
            )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeats(), name="heartbeats"),
            loop.create_task(self._publishing(), name="copies"),
            loop.create_task(self._views(), name="views"),
            loop.create_task(self._follow_logs(), name="logs"),
        ]
        await self._viewed.wait()

    async def leave(self) -> None:
        """Hands over every lease and lets go of every copy, while the view and
        forwarding keep working: requests that still reach this node meanwhile
        are forwarded to the new leaders. Idempotent."""
        if self._leaving:
            return
        self._leaving = True
        for task in list(self._changing.values()):
            await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):  # tell the others first: they stop sending here
            await self._renew()
        await asyncio.gather(*(r.stop(hand_over=True) for r in self.replicas.values()))
        self.replicas.clear()

    async def close(self) -> None:
        """Leaves, then stops the loops and leaves the membership at once."""
        await self.leave()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.blocking(self.cp.delete, member_key(self.node_id))
            await self.blocking(self.cp.delete, copies_key(self.node_id))
        await self.http.aclose()
        await self.blocking(self.cp.close)
        self._threads.shutdown(wait=False)
        self._own_threads.shutdown(wait=False)
        self._renewing.shutdown(wait=False)

    # -- loops ------------------------------------------------------------------------

    async def _join(self) -> None:
        """Takes `node/ID` in a new session. A key still live is a previous run of
        this node that stopped without leaving (or another node with this ID):
        its leases stand until it lapses, so this waits that long, then says so."""
        deadline = time.monotonic() + self.timing.lease_seconds * 2 + 1
        while True:
            try:
                await self._renew()
                return
            except KeyConflict as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(
                        f"node ID {self.node_id!r} is in use by a live node; "
                        "give each node an ID of its own"
                    ) from exc
                await asyncio.sleep(self.timing.renew_every)

    async def _renew(self) -> None:
        """Renews this node's lease (or takes it, in a new session); KeyConflict
        if it is not ours to renew."""
        member = Member(self.node_id, self.url, leaving=self._leaving, session=self.session)
        started = time.monotonic()
        try:
            self._member_revision = await self._own(
                lambda: self.cp.put(
                    member_key(self.node_id),
                    member.encode(),
                    expect=self._member_revision,
                    ttl=self.timing.lease_seconds,
                ),
                renewal=True,
            )
        except (KeyConflict, OutcomeUnknown):
            entry = await self._own(self.cp.get, member_key(self.node_id), renewal=True)
            if entry is None or Member.decode(self.node_id, entry).session != self.session:
                raise
            # Ours, by a renewal whose answer was lost: when it landed is unknown,
            # so the deadline stays where the last one we heard of put it.
            self._member_revision = entry.revision
            return
        self.valid_until = started + self.timing.lease_seconds * SAFETY

    def _lost_session(self) -> None:
        """This node's lease lapsed: every lease it held is void (another node may
        hold it now). Its leaders step down when poked; it joins in a new session."""
        logger.warning(
            "this node's lease lapsed: its leaders step down, and it joins again in a new session"
        )
        self.session, self._member_revision, self.valid_until = secrets.token_hex(8), ABSENT, 0.0
        for replica in self.replicas.values():
            replica.poke()

    async def _publish_copies(self) -> None:
        """Writes the version of each copy here (and any copy's problem), if changed:
        encoded off the event loop, as it grows with the copies (10,000: 250 KB)."""
        versions = {name: r.db.version for name, r in self.replicas.items()}
        problems = {n: r.follower.problem for n, r in self.replicas.items() if r.follower.problem}
        if (versions, problems) == self._copies_written:
            return
        member = Member(self.node_id, self.url, versions, problems=problems)
        value = await self._own(member.encode_copies)
        await self._own(self.cp.put, copies_key(self.node_id), value)
        self._copies_written = (versions, problems)

    async def _heartbeats(self) -> None:
        """Renews this node's lease, and nothing else: a renewal that waits for other
        work (the copies' versions) lets the lease lapse, and every lease with it."""
        while True:
            await asyncio.sleep(self.timing.renew_every)
            try:
                await self._renew()
            except KeyConflict:
                self._lost_session()
            except (Unavailable, OutcomeUnknown) as exc:
                logger.warning("cannot renew this node's lease: %s", exc)
            except Exception:
                logger.exception("renewing this node's lease failed")

    async def _publishing(self) -> None:
        while True:
            await asyncio.sleep(COPIES_SECONDS)
            try:
                await self._publish_copies()
            except (Unavailable, OutcomeUnknown) as exc:
                logger.warning("cannot publish this node's copies: %s", exc)
            except Exception:
                logger.exception("publishing this node's copies failed")

    async def _views(self) -> None:
        placed = 0.0
        while True:
            try:
                changed = await self._refresh()
                if changed is None or time.monotonic() - placed >= PLACE_SECONDS:
                    placed = time.monotonic()
                    self._place(None)
                elif changed:
                    self._place(changed)
                self._viewed.set()
            except Unavailable as exc:
                logger.warning("cannot read the cluster's state: %s", exc)
                await asyncio.sleep(0.5)
            except Exception:
                logger.exception("reading the cluster's state failed")
                await asyncio.sleep(0.5)
            await asyncio.sleep(VIEW_SECONDS)

    async def _refresh(self) -> set[str] | None:
        """Reads what changed into `view`, and pokes the copies it concerns; returns
        the databases whose lease or spec changed (None: the members changed)."""
        async with self._reading:
            changed = await self._own(self._reader.read, self.cp)
            self.view = self._reader.view
        for name in self.replicas if changed is None else changed:
            replica = self.replicas.get(name)
            if replica is not None:
                replica.poke()
        return changed

    async def _follow_logs(self) -> None:
        """Tells each copy here when its log grew (see the module's docstring)."""
        watch = await self.blocking(self.cp.watch_logs)
        swept = 0.0
        try:
            while True:
                try:
                    grown = await self.blocking(watch.wait, SWEEP_SECONDS)
                    if grown is None or time.monotonic() - swept >= SWEEP_SECONDS:
                        swept = time.monotonic()
                        grown = await self._behind_their_logs()
                except Unavailable as exc:
                    logger.warning("cannot watch the logs: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                except Exception:
                    logger.exception("watching the logs failed")
                    await asyncio.sleep(0.5)
                    continue
                for name in grown:
                    replica = self.replicas.get(name)
                    if replica is not None:
                        replica.appended()
        finally:
            watch.close()

    async def _behind_their_logs(self) -> set[str]:
        """The copies here whose logs end past them, by one read of every head."""
        heads = await self.blocking(self.cp.heads, list(self.replicas))
        return {
            name
            for name, head in heads.items()
            if (replica := self.replicas.get(name)) is not None and head > replica.db.version
        }

    def _place(self, names: set[str] | None) -> None:
        """Starts and stops replicas of `names` (None: of every database) to match
        placement, never two changes of one database at once."""
        if self._leaving or self.node_id not in self.view.members:
            return  # our lease lapsed: hold what we hold until it is back
        catalog = self.view.catalog
        for name in set(catalog) | set(self.replicas) if names is None else names:
            if name in self._changing:
                continue
            spec = catalog.get(name)
            wanted = spec is not None and self.node_id in self.view.replicas(name, self.factor)
            replica = self.replicas.get(name)
            if wanted and replica is None:
                assert spec is not None
                self._change(name, self._hold(spec))
            elif not wanted and replica is not None:
                if replica.leader.lease is not None and spec is not None:
                    continue  # it hands its lease over itself, then goes
                self._change(name, self._let_go(name, dropped=spec is None))

    def _change(self, name: str, work: Any) -> None:
        """Runs `work`, a change of `name`'s copy; then places `name` again, in
        case the view moved on meanwhile."""
        task = asyncio.get_running_loop().create_task(work)
        self._changing[name] = task

        def done(_: object) -> None:
            self._changing.pop(name, None)
            self._place({name})

        task.add_done_callback(done)

    async def _hold(self, spec: Spec) -> None:
        """Opens this node's copy and starts its replica. A copy that cannot be
        opened (no file descriptors or disk left) is tried again, each time twice
        as late, up to HOLD_BACKOFF_MAX, and its traceback is logged once."""
        try:
            db = await self.hold_copy(spec.name)
        except Exception as exc:
            failures = self._hold_failures.get(spec.name, 0) + 1
            self._hold_failures[spec.name] = failures
            if failures == 1:
                logger.exception("%s: cannot open this node's copy", spec.name)
            else:
                logger.warning(
                    "%s: cannot open this node's copy (try %d): %s", spec.name, failures, exc
                )
            await asyncio.sleep(min(HOLD_BACKOFF_MAX, 2.0 ** (failures - 1)))
            return  # and it is placed again
        self._hold_failures.pop(spec.name, None)
        replica = Replica(self, db, spec.durability, self.factor, self.timing)
        self.replicas[spec.name] = replica
        replica.start()
        logger.info("%s: holding a copy (version %d)", spec.name, db.version)

    async def _let_go(self, name: str, *, dropped: bool) -> None:
        replica = self.replicas.pop(name)
        await replica.stop(hand_over=not dropped)
        await self.databases.remove_copy(name, dropped=dropped)
        logger.info("%s: %s", name, "dropped" if dropped else "moved to other nodes")

    # -- the catalog -------------------------------------------------------------------

    async def create(self, name: str, durability: str, wait: float = 10.0) -> None:
        """Adds `name` to the catalog and waits until it has a leader."""
        if durability not in DURABILITIES:
            raise InvalidRequest(f"durability must be 'sync' or 'async', not {durability!r}")
        spec = Spec(name, durability)
        try:
            await self.blocking(
                lambda: self.cp.put(catalog_key(name), spec.encode(), expect=ABSENT)
            )
        except KeyConflict:
            raise DatabaseExists(name) from None
        await self.leader(name, wait)

    async def drop(self, name: str) -> None:
        """Removes `name` from the catalog; its replicas drop their copies, then its log goes."""
        if not await self.blocking(self.cp.delete, catalog_key(name)):
            raise DatabaseNotFound(name)
        deadline = time.monotonic() + 5.0
        while name in self.view.leases and time.monotonic() < deadline:
            await asyncio.sleep(VIEW_SECONDS)
        await self.blocking(self.cp.delete, lease_key(name))  # a void one stays otherwise
        await self.blocking(self.cp.drop, name)

    def spec(self, name: str) -> Spec:
        spec = self.view.catalog.get(name)
        if spec is None:
            raise DatabaseNotFound(name)
        return spec

    async def leader(self, name: str, wait: float, at_least: int = 0) -> tuple[Member, int]:
        """The live member holding `name`'s lease, and the lease's epoch, waiting up
        to `wait` s for one to appear at epoch `at_least` or later."""
        deadline = time.monotonic() + wait
        while True:
            if name not in self.view.catalog and name not in self.replicas:
                # The catalog may be newer than our view: look once before saying no.
                await self._refresh()
                if name not in self.view.catalog:
                    raise DatabaseNotFound(name)
            lease, leader = self.view.leases.get(name), self.view.leader(name)
            if lease and leader and not leader.leaving and lease.epoch >= at_least:
                return leader, lease.epoch
            if time.monotonic() >= deadline:
                raise NotLeader(f"database {name!r} has no leader now; retry shortly")
            await asyncio.sleep(0.02)


_INTERNAL = {"Shoal-Hops": "1"}


def _last_record(path: Path) -> bytes:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return engine_log.read_range(conn, engine_log.head(conn))[0]
    finally:
        conn.close()
