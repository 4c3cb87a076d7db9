"""One node's databases: each its own file, opened on demand and closed when idle.

Concurrency rules:

- The registry (`_open`, `_opening`) is touched only on the event loop thread.
- Nothing on the event loop waits on SQLite: every call into a Database goes
  through `read()` or `write()`, which run it on a thread pool. Reads and writes
  have separate pools, so writers queued behind one database's write lock can
  never starve reads of it, or of any other database.
- A database in use (`users` > 0) is never closed or dropped under a request:
  idle closing skips it, and drop waits for its users to leave.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from shoal.cluster.coordinator import Cluster
from shoal.cluster.replica import Timing
from shoal.cluster.routing import Leader, Need, route
from shoal.cluster.status import cluster_summary
from shoal.cluster.view import View
from shoal.controlplane import open_control_plane
from shoal.engine import Database, Limits, Options, Result, Role, read_file
from shoal.engine.execute import CutShort, Params
from shoal.errors import (
    Busy,
    DatabaseExists,
    DatabaseNotFound,
    Error,
    InvalidRequest,
    Unavailable,
    VersionNotReached,
)
from shoal.node import eviction
from shoal.node.archiving import ArchiveStatus, archive_service, restore_missing
from shoal.node.auth import Authenticator, TokenStore, write_local_admin
from shoal.node.config import Settings

__all__ = [
    "DEFAULT_DATABASE",
    "PAGE_LIMIT",
    "DatabaseInfo",
    "Listing",
    "Node",
    "check_name",
    "select_page",
]

T = TypeVar("T")
logger = logging.getLogger("shoal.node")

DEFAULT_DATABASE = "default"  # the rqlite dialect's database; it always exists
# A read, or a group of plain writes, that the event loop runs itself holds every
# other request back this long at most before it is handed to a thread (decisions
# 36 and 41).
BRIEF_SECONDS = 0.002
GATHER_TURNS = 4  # turns of the event loop a group of writes waits for more to join
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PAGE_LIMIT = 1000  # databases a listing answers with, unless asked for fewer
EVICT_BATCH = 100  # databases evicted at most in one housekeeping round
# Databases in use may take the open ones this far past `max_open_databases`;
# past that, an open waits for a close.
IN_USE_BEYOND_LIMIT = 64


def check_name(name: str) -> str:
    """`name` if it is a valid database name: it becomes a file name, so nothing
    that could leave the data directory (no separators, no leading dot)."""
    if not _NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid database name {name[:200]!r}: use 1 to 128 letters, digits, '_', '-' "
            "or '.', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class DatabaseInfo:
    name: str
    version: int
    size_bytes: int
    open: bool
    epoch: int | None = None
    role: str | None = None
    durability: str | None = None
    leader: str | None = None
    foreign_keys: bool | None = None
    evicted: bool = False  # its file is not on this node's disk; its next request restores it
    # In a cluster's listings: each node holding a copy, and that copy's version as
    # its node last reported it.
    copies: tuple[tuple[str, int], ...] | None = None


@dataclass(frozen=True)
class Listing:
    """A page of databases, and the name to list after for the next (None: the last)."""

    databases: list[DatabaseInfo]
    following: str | None


def select_page(
    names: list[str], after: str, limit: int, contains: str, visible: Callable[[str], bool]
) -> tuple[list[str], str | None]:
    """Of sorted `names`, the first `limit` after `after` that contain `contains`
    (ignoring case) and are `visible`; and the last of them if more follow."""
    wanted = contains.lower()
    page: list[str] = []
    for name in names[bisect.bisect_right(names, after) :]:
        if wanted in name.lower() and visible(name):
            if len(page) == limit:
                return page, page[-1]
            page.append(name)
    return page, None


@dataclass(eq=False)
class _Entry:
    db: Database
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    dropping: bool = False
    swapping: bool = False  # its file is being replaced (a re-seed): wait


# A write's item, where its answer goes, and whether it may run on the event loop.
_Waiting = tuple[Any, "asyncio.Future[Any]", bool]


class _Using:
    """An open database held for an `async with` block (a class, not a generator:
    every request takes one)."""

    __slots__ = ("_entry", "_name", "_node")

    def __init__(self, node: Node, name: str) -> None:
        self._node, self._name = node, name
        self._entry: _Entry | None = None

    async def __aenter__(self) -> Database:
        self._entry = await self._node._acquire(self._name)
        return self._entry.db

    async def __aexit__(self, *exc: object) -> None:
        assert self._entry is not None
        self._node._let_go(self._entry)


class Node:
    """The databases of one data directory, and the thread pools that touch them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = settings.data_dir / "databases"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.options = Options(
            limits=Limits(
                statement_seconds=settings.statement_seconds,
                max_rows=settings.max_result_rows,
                max_bytes=settings.max_result_bytes,
            )
        )
        self._reads = ThreadPoolExecutor(settings.threads, thread_name_prefix="shoal-read")
        self._writes = ThreadPoolExecutor(settings.threads, thread_name_prefix="shoal-write")
        self._open: dict[str, _Entry] = {}
        self._opening: dict[str, asyncio.Task[None]] = {}
        # Evictions and hydrations under way: a file coming or going (eviction.py).
        self._moving: dict[str, asyncio.Task[Any]] = {}
        self._closed_at: dict[str, float] = {}  # monotonic: closed (or read unopened) then
        self._evictable_since: float | None = None  # when the files found at start count from
        self._closing_over_limit = False  # a task closes the databases past the limit
        self._closer = ThreadPoolExecutor(1, thread_name_prefix="shoal-close")  # not behind opens
        self._admitting = asyncio.Lock()  # opens wait here, in turn, for room (`_admit`)
        self._opens_admitted = 0
        self._room = asyncio.Event()  # set when a database closes
        self._admin = asyncio.Lock()  # create and drop, one at a time
        self._tasks: set[asyncio.Task[Any]] = set()
        self._housekeeper: asyncio.Task[None] | None = None
        self._archiving: asyncio.Task[None] | None = None
        self.archive = archive_service(settings)
        self.tokens = TokenStore(settings.data_dir)
        self.auth = Authenticator(
            self.tokens,
            settings.tokens,
            settings.admin_token,
            local_admin=write_local_admin(settings.data_dir),
            data_dir=settings.data_dir,
            offload=self.read,
        )
        self.started = time.time()
        self.ready = False
        self.closing = False
        self.node_id = settings.node_id or (
            _node_id(settings.data_dir) if settings.control_plane else settings.address
        )
        self.cluster: Cluster | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._advanced: dict[str, asyncio.Event] = {}  # set at a database's next version
        # Writes waiting to go to the write pool together, by database and function;
        # a key is present while a group of its writes is on the pool.
        self._together: dict[tuple[Database, Callable[..., Any]], list[_Waiting]] = {}
        self.draining = False  # stopping: long-lived responses (log streams) end
        # In a cluster every copy opens as a follower; its replica promotes it.
        self._role = Role.FOLLOWER if settings.control_plane else Role.LEADER

    # -- threads -------------------------------------------------------------

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs `fn(*args, **kwargs)` on the read pool."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._reads, call)

    async def write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs `fn(*args, **kwargs)` on the write pool."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._writes, call)

    async def run_on(
        self,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        write: bool,
        min_version: int | None = None,
        wait: float = 0.0,
        brief: bool = False,
        **kwargs: Any,
    ) -> T:
        """Runs `fn(db, *args, **kwargs)` with database `name` held open, on the write
        or the read pool; first waits up to `wait` s for `min_version`, if given.

        `brief` reads (user queries, which may run twice) run here on the event loop,
        cut short after BRIEF_SECONDS and then run on the read pool: handing a
        point read to a thread costs more than the read.
        """
        async with self.database(name) as db:
            if min_version is not None:
                await self.wait_for_version(db, min_version, wait)
            if brief and not write:
                try:
                    with db.briefly(BRIEF_SECONDS):
                        return fn(db, *args, **kwargs)
                except CutShort:
                    pass
            pool = self.write if write else self.read
            return await pool(fn, db, *args, **kwargs)

    def holds(self, name: str) -> bool:
        """Whether this node holds database `name` open (in a cluster: every copy)."""
        return self.cluster is not None or name in self._open or name in self._opening

    async def read_one(self, name: str, sql: str, params: Params) -> Result:
        """The first result of the read `sql` on database `name`, through its
        Database (opened if need be)."""
        return await self.run_on(name, _first_result, sql, params, write=False, brief=True)

    async def read_files(
        self,
        names: list[str],
        sql: str,
        params: Params,
        each: Callable[[str, Result | Error], None],
    ) -> None:
        """Reads `sql` on each database of `names`, for a caller that reads many
        databases once each (query-many), without opening them: on connections
        opened and closed for it (engine.read_file), one after another on one
        thread, so that reading thousands neither opens them all nor closes others
        to make room. `each(name, its first result or its error)` is called on
        that thread as each is read. Evicted databases are restored first, one
        after another; each read counts as a use that puts off eviction."""
        for name in names:
            check_name(name)
        self._check_serving()
        now = time.monotonic()
        for name in names:
            if name in self._closed_at:
                self._closed_at[name] = now
        readable = names
        if self.archive is not None:
            evicted = await self.read(self._evicted_among, names)
            for name in evicted:
                try:
                    await self._on_disk(name)
                except Error as exc:
                    each(name, exc)
                    readable = [n for n in readable if n != name]
        await self.read(self._read_files, readable, sql, params, each)

    def _evicted_among(self, names: list[str]) -> list[str]:
        """Those of `names` evicted from this node's disk."""
        return [name for name in names if not self.path(name).exists() and self._exists(name)]

    def _read_files(
        self,
        names: list[str],
        sql: str,
        params: Params,
        each: Callable[[str, Result | Error], None],
    ) -> None:
        for name in names:
            path = self.path(name)
            try:
                each(name, read_file(path, sql, params, self.options)[0])
            except Error as exc:
                each(name, exc if path.exists() else DatabaseNotFound(name))

    async def write_together(
        self,
        name: str,
        fn: Callable[[Database, list[Any]], list[Any]],
        item: Any,
        *,
        brief: bool = False,
    ) -> Any:
        """`fn(db, [item])[0]` on the write pool, for database `name`; but `item` goes
        with every other one waiting meanwhile, in one call of `fn`, so that a group
        of writes costs one hand-over to a thread, not one each (decision 38). `fn`
        answers each item in order, with its result or the exception to raise.

        A group whose items are all `brief` (plain one-statement writes, which a cut
        rolls back whole) runs here on the event loop when it can, cut short after
        BRIEF_SECONDS and then handed to the pool (decision 41)."""
        async with self.database(name) as db:
            answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            key = (db, fn)
            waiting = self._together.get(key)
            if waiting is None:
                self._together[key] = [(item, answer, brief)]
                self.background(self._write_groups(key))
            else:
                waiting.append((item, answer, brief))
            return await answer

    async def _write_groups(self, key: tuple[Database, Callable[..., Any]]) -> None:
        """Hands the writes waiting under `key` to the write pool, a group at a time,
        until none wait; those arriving during one go in the next."""
        db, fn = key
        group: list[_Waiting] = []
        try:
            while group := self._together[key]:
                for _ in range(GATHER_TURNS):  # let requests already read join the group
                    size = len(group)
                    await asyncio.sleep(0)
                    if len(group) == size:
                        break
                self._together[key] = []
                items = [item for item, _, _ in group]
                try:
                    answers = await self._write_group(db, fn, items, all(b for *_, b in group))
                except Exception as exc:  # fn failed as a whole: every write hears it
                    answers = [exc] * len(group)
                for (_, answer, _), outcome in zip(group, answers, strict=True):
                    if answer.done():  # its request went away; the write was still made
                        continue
                    if isinstance(outcome, BaseException):
                        answer.set_exception(outcome)
                    else:
                        answer.set_result(outcome)
        finally:  # cancelled (the node stops): no write is left waiting for an answer
            for _, answer, _ in group + self._together.pop(key, []):
                if not answer.done():
                    answer.cancel()

    async def _write_group(
        self,
        db: Database,
        fn: Callable[[Database, list[Any]], list[Any]],
        items: list[Any],
        brief: bool,
    ) -> list[Any]:
        """`fn(db, items)`: here on the event loop when `brief` and it stays brief,
        else (or for the items a cut left uncommitted) on the write pool."""
        answers = _briefly(db, fn, items) if brief else None
        if answers is None:
            return await self.write(fn, db, items)
        again = [index for index, answer in enumerate(answers) if isinstance(answer, CutShort)]
        if again:
            rerun = await self.write(fn, db, [items[index] for index in again])
            for index, answer in zip(again, rerun, strict=True):
                answers[index] = answer
        return answers

    def background(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Runs `work` as a task that close() waits for (queued writes, say)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Restores missing databases if asked, makes sure the default database
        exists (or joins the cluster), then starts housekeeping and archiving."""
        self._loop = asyncio.get_running_loop()
        if self.archive is not None and self.settings.restore_missing:
            for name in await self.write(restore_missing, self.archive.store, self.directory):
                logger.info("restored %s from the archive", name)
        if self.settings.control_plane:
            await self._join()
        elif not await self.write(self._exists, DEFAULT_DATABASE):
            await self.create(DEFAULT_DATABASE)
        loop = asyncio.get_running_loop()
        self._housekeeper = loop.create_task(self._housekeeping())
        if self.archive is not None:
            self._archiving = loop.create_task(self.archive.loop())
        self.ready = True

    async def _join(self) -> None:
        settings = self.settings
        cp = await self.write(open_control_plane, settings.control_plane, settings.data_dir)
        self.cluster = Cluster(
            self,
            cp,
            node_id=self.node_id,
            url=settings.url,
            factor=settings.replication_factor,
            timing=Timing(settings.lease_seconds, settings.async_window_seconds),
            scratch=settings.data_dir / "tmp",
            archive=self.archive.store if self.archive is not None else None,
        )
        await self.cluster.start()
        logger.info("node %s joined the cluster as %s", self.node_id, settings.url)

    async def leave(self) -> None:
        """Ends log streams, and hands this node's leases over (before the HTTP
        server stops, so that requests meanwhile are forwarded to the new leaders,
        not refused)."""
        self.draining = True
        self._wake_all()
        if self.cluster is not None:
            self.ready = False  # /readyz: send new clients elsewhere
            await self.cluster.leave()

    async def close(self) -> None:
        """Waits for background work, then closes every database and the pools."""
        if self.cluster is not None:
            await self.cluster.close()
        self.ready = False
        self.closing = self.draining = True
        self._wake_all()
        for task in (self._housekeeper, self._archiving):
            if task is not None:
                task.cancel()
        while self._tasks or self._moving:
            await asyncio.gather(*self._tasks, *self._moving.values(), return_exceptions=True)
        if self.archive is not None:
            await self.archive.close()  # a last round while the databases are open
        entries, self._open = list(self._open.values()), {}
        for entry in entries:
            await self.write(entry.db.close)
        await self.write(self.tokens.close)
        self._reads.shutdown()
        self._writes.shutdown()
        self._closer.shutdown()

    async def _housekeeping(self) -> None:
        interval = min(1.0, self.settings.idle_seconds / 2)
        while True:
            await asyncio.sleep(interval)
            await self.auth.reload()
            await self.close_idle()
            if self.settings.evict_seconds and self.archive is not None:
                await self.evict_idle()

    async def evict_idle(self) -> int:
        """Evicts from disk up to EVICT_BATCH databases closed (and not read) for
        `evict_seconds` whose archive holds all of them; returns how many. One whose
        archive is behind is looked at again `evict_seconds` later."""
        assert self.archive is not None
        now = time.monotonic()
        if self._evictable_since is None:  # the files found at start count from then
            self._evictable_since = now
            for name in await self.read(functools.partial(self._file_names, evicted=False)):
                self._closed_at.setdefault(name, now)
        before = now - self.settings.evict_seconds

        def idle(name: str) -> bool:
            closed = self._closed_at.get(name)
            return (
                closed is not None
                and closed <= before
                and name not in self._open
                and name not in self._opening
                and name not in self._moving
            )

        evicted = 0
        for name in [name for name in self._closed_at if idle(name)][:EVICT_BATCH]:
            if not idle(name):  # opened or read since: an open now waits for the eviction
                continue
            store = self.archive.store
            found = await self._moving_file(name, eviction.evict, store, self.path(name), name)
            if found is None:
                self._closed_at[name] = time.monotonic()  # the archive is behind: later
                continue
            self._closed_at.pop(name, None)
            evicted += 1
            logger.info("%s: evicted from disk at version %d", name, found.version)
        return evicted

    async def _moving_file(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Runs `fn(*args)`, an eviction or a hydration of `name`, on the write pool;
        opening `name` waits for it meanwhile (`_on_disk`)."""
        task = asyncio.get_running_loop().create_task(self.write(fn, *args))
        self._moving[name] = task
        try:
            return await asyncio.shield(task)
        finally:
            if self._moving.get(name) is task:
                del self._moving[name]

    async def _on_disk(self, name: str) -> None:
        """Waits for an eviction or hydration of `name` under way; then restores
        `name` from the archive if it is evicted."""
        while (task := self._moving.get(name)) is not None:
            await asyncio.gather(asyncio.shield(task), return_exceptions=True)
        path = self.path(name)
        if self.archive is None or await self.write(path.exists):
            return
        if await self.write(eviction.marker_of, path) is not None:
            await self._moving_file(name, eviction.hydrate, self.archive.store, path, name)
            self._closed_at[name] = time.monotonic()  # evicted again once idle again

    async def close_idle(self) -> int:
        """Closes databases unused for `idle_seconds`; returns how many."""
        return await self._close_unused(time.monotonic() - self.settings.idle_seconds)

    async def _close_unused(self, before: float, most: int | None = None) -> int:
        """Closes up to `most` databases that no request holds and none has used
        since `before` (a monotonic time), least recently used first; returns how many."""
        unused = sorted(
            (entry.last_used, name)
            for name, entry in self._open.items()
            if entry.users == 0 and entry.last_used < before and not entry.dropping
        )
        closed = 0
        for _, name in unused[:most]:
            entry = self._open.get(name)
            if entry is None:
                continue
            if self.archive is not None:
                try:
                    await self.archive.forget(name)  # its newest writes, before it closes
                except Exception as exc:  # they wait in its log for its next round
                    logger.warning("%s: its last archive round failed: %s", name, exc)
            if entry.users or entry.last_used >= before or self._open.get(name) is not entry:
                self._track(entry.db)  # used again meanwhile: it stays open
                continue
            del self._open[name]
            await asyncio.get_running_loop().run_in_executor(self._closer, entry.db.close)
            self._closed_at[name] = time.monotonic()
            self._room.set()
            closed += 1
        return closed

    async def _close_over_limit(self) -> None:
        """Closes the least recently used databases past `max_open_databases`."""
        try:
            while (excess := len(self._open) - self.settings.max_open_databases) > 0:
                if not await self._close_unused(time.monotonic(), excess):
                    break  # all in use: the next one released calls limit_open again
        finally:
            self._closing_over_limit = False

    def _track(self, db: Database) -> None:
        if self.archive is not None and db.role is Role.LEADER:
            self.archive.track(db)

    # -- databases -----------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}.db"

    def database(self, name: str) -> _Using:
        """The open Database named `name` for the length of an `async with` block."""
        return _Using(self, name)

    def _exists(self, name: str) -> bool:
        """Whether database `name` is here, on disk or evicted from it."""
        path = self.path(name)
        return path.exists() or Path(f"{path}{eviction.MARKER_SUFFIX}").exists()

    def _check_serving(self) -> None:
        if self.closing:
            raise Unavailable("the node is shutting down; retry on another node or later")

    async def _acquire(self, name: str) -> _Entry:
        check_name(name)
        self._check_serving()
        while (entry := self._open.get(name)) is None:
            task = self._opening.get(name)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._open_file(name))
                self._opening[name] = task
            await asyncio.shield(task)
        while entry.swapping:
            await asyncio.sleep(0.01)
        if entry.dropping:
            raise DatabaseNotFound(name)
        entry.users += 1
        self.limit_open()  # not before: the entry just opened would be the one closed
        return entry

    async def _open_file(self, name: str) -> None:
        try:
            await self._admit()
            try:
                await self._on_disk(name)
                self._opened(name, await self.write(self._open_existing, name))
            finally:
                self._opens_admitted -= 1
                self._room.set()
        finally:
            del self._opening[name]

    async def _admit(self) -> None:
        """Waits, in turn, until fewer than `max_open_databases` and
        IN_USE_BEYOND_LIMIT databases are open or being opened. A flood of opens
        (a query-many over thousands, the replicas of a failover) otherwise outran
        the closes: every file descriptor in use, and every open failing."""
        most = self.settings.max_open_databases + IN_USE_BEYOND_LIMIT
        async with self._admitting:
            while len(self._open) + self._opens_admitted >= most:
                self.limit_open()
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 1.0)
            self._opens_admitted += 1

    def _opened(self, name: str, db: Database) -> None:
        """Keeps `db` open under `name` (its opener then limits what is open)."""
        self._open[name] = _Entry(db)
        self._track(db)

    def _let_go(self, entry: _Entry) -> None:
        """One user fewer; a database no one uses may be closed (idle, or past the limit)."""
        entry.users -= 1
        entry.last_used = time.monotonic()
        if entry.users == 0:
            self.limit_open()

    def limit_open(self) -> None:
        """Past `max_open_databases`, closes the least recently used unused ones, soon."""
        over = len(self._open) > self.settings.max_open_databases
        if over and not self._closing_over_limit:
            self._closing_over_limit = True
            self.background(self._close_over_limit())

    def _open_existing(self, name: str) -> Database:
        path = self.path(name)
        if not path.exists():
            raise DatabaseNotFound(name)
        db = self._database(path, name)
        if self.cluster is not None:
            self.cluster.adopt(db)  # a copy led here is promoted before anyone writes
        return db

    def _database(self, path: Path, name: str) -> Database:
        """Opens (or creates) the file as this node opens every database."""
        db = Database(path, name=name, options=self.options, role=self._role)
        db.listeners.append(functools.partial(self._on_version, db.name))
        return db

    # -- a cluster's copies (cluster.coordinator.Databases) ---------------------

    async def hold(self, name: str) -> Database:
        """Opens `name`, creating an empty copy if there is none, and keeps it open
        until `release`; it counts as a user, so no close takes it meanwhile."""
        if name not in self._open and not await self.write(self.path(name).exists):
            await self.write(self._create_copy, name)
        entry = await self._acquire(name)
        return entry.db

    def _create_copy(self, name: str) -> None:
        self._database(self.path(name), name).close()

    def release(self, name: str) -> None:
        """Lets go of what `hold` kept open: from now on it is closed when idle or
        past `max_open_databases`, as any database is."""
        self._let_go(self._open[name])

    async def remove_copy(self, name: str, *, dropped: bool) -> None:
        """Deletes this node's copy of `name` (its replica has stopped)."""
        with contextlib.suppress(DatabaseNotFound):
            await self._delete(name, wait=30.0, dropped=dropped)

    async def replace_file(self, name: str, snapshot: Path) -> Database:
        """Swaps a held copy's file for `snapshot`, once the requests using it are done."""
        entry = self._open[name]
        entry.swapping = True  # new requests wait in _acquire meanwhile
        try:
            while entry.users > 1:
                await asyncio.sleep(0.01)
            await self.write(entry.db.close)
            path = self.path(name)
            await self.write(eviction.remove, path)
            await self.write(os.replace, snapshot, path)
            entry.db = await self.write(self._open_existing, name)
        finally:
            entry.swapping = False
        return entry.db

    def led(self, db: Database, leading: bool) -> None:
        """Archiving follows leadership: only a database's leader archives it."""
        if self.archive is None:
            return
        archive = self.archive

        def switch() -> None:
            if leading:
                archive.track(db)
            else:
                archive.states.pop(db.name, None)

        assert self._loop is not None
        self._loop.call_soon_threadsafe(switch)

    async def create(self, name: str, durability: str | None = None) -> DatabaseInfo:
        """Creates an empty database; DatabaseExists if the name is taken."""
        path = self.path(name)
        self._check_serving()
        if self.cluster is not None:
            await self.cluster.create(name, durability or self.settings.durability)
            return DatabaseInfo(name=name, version=0, size_bytes=0, open=False)
        if durability is not None and durability not in ("sync", "async"):
            raise InvalidRequest(f"durability must be 'sync' or 'async', not {durability!r}")
        async with self._admin:
            if name in self._open or await self.write(self._exists, name):
                raise DatabaseExists(name)
            self._opened(name, await self.write(self._database, path, name))
        self.limit_open()
        return await self.info(name)

    async def drop(self, name: str, wait: float = 30.0) -> None:
        """Deletes a database and its files, once the requests using it are done (an
        evicted one: its marker, without restoring it first)."""
        if name == DEFAULT_DATABASE:
            raise InvalidRequest("the default database always exists; it cannot be dropped")
        check_name(name)
        if self.cluster is not None:
            await self.cluster.drop(name)
            return
        async with self._admin:
            while (moving := self._moving.get(name)) is not None:
                await asyncio.gather(asyncio.shield(moving), return_exceptions=True)
            path = self.path(name)
            evicted = None if name in self._open else await self.write(eviction.marker_of, path)
            if evicted is None or await self.write(path.exists):
                await self._delete(name, wait, dropped=True)
                return
            if self.archive is not None:  # no need to restore it to drop it
                await self.archive.mark_dropped(name, evicted.version)
            await self.write(eviction.forget, path)
            self._closed_at.pop(name, None)

    async def _delete(self, name: str, wait: float, *, dropped: bool) -> None:
        """Closes and deletes a local copy, once the requests using it are done; a
        `dropped` database also leaves a tombstone in the archive first (so that
        nothing restores it on its own)."""
        entry = await self._acquire(name)
        entry.users -= 1
        entry.dropping = True
        deadline = time.monotonic() + wait
        while entry.users > 0:
            if time.monotonic() > deadline:
                entry.dropping = False
                raise Busy(f"database {name!r} is still in use after {wait:g} s; not dropped")
            await asyncio.sleep(0.01)
        if self.archive is not None and dropped:
            try:
                await self.archive.mark_dropped(name, entry.db.version)
            except Exception:
                entry.dropping = False
                raise
        del self._open[name]
        self._room.set()
        if self.archive is not None:
            self.archive.states.pop(name, None)  # its archive stays, for restores
        await self.write(entry.db.close)
        await self.write(eviction.remove, self.path(name))
        await self.write(eviction.forget, self.path(name))  # a marker a crash left behind

    async def info(self, name: str) -> DatabaseInfo:
        async with self.database(name) as db:
            spec = self.cluster.view.catalog.get(name) if self.cluster else None
            lease = self.cluster.view.leases.get(name) if self.cluster else None
            return DatabaseInfo(
                name=name,
                version=db.version,
                size_bytes=await self.read(eviction.size_on_disk, db.path),
                open=True,
                epoch=db.epoch,
                role=db.role.value,
                durability=spec.durability if spec else None,
                leader=lease.holder if lease else None,
                foreign_keys=db.foreign_keys,
            )

    async def list_databases(
        self,
        *,
        after: str = "",
        limit: int = PAGE_LIMIT,
        contains: str = "",
        visible: Callable[[str], bool] = lambda name: True,
    ) -> Listing:
        """One page of the databases: those `visible` (the caller's grant covers) whose
        name contains `contains`, by name, after `after`; versions of closed ones are
        read from their files. In a cluster: the databases of the catalog, with this
        node's copy's version where it holds one, else its log's head. Only the page's
        databases are looked at beyond their names."""
        names = await self.database_names()
        page, following = select_page(names, after, limit, contains, visible)
        if self.cluster is None:
            infos = await self.read(self._file_infos, page, self.versions())
        else:
            infos = [await self._cluster_info(name) for name in page]
        return Listing(infos, following)

    async def database_names(self) -> list[str]:
        """Every database's name, sorted: the data directory's, or the catalog's."""
        if self.cluster is None:
            return await self.read(self._file_names)
        return sorted(self.cluster.view.catalog)

    async def _cluster_info(self, name: str) -> DatabaseInfo:
        """What the catalog, the leases and this node's copy (if any) say of `name`."""
        assert self.cluster is not None
        cluster = self.cluster
        spec = cluster.view.catalog.get(name)
        replica = cluster.replicas.get(name)
        if replica is None:
            version = await cluster.blocking(cluster.cp.head, name)
        else:
            version = replica.db.version
        lease = cluster.view.leases.get(name)
        members = sorted(cluster.view.members.values(), key=lambda member: member.id)
        return DatabaseInfo(
            name=name,
            version=version,
            size_bytes=(
                0 if replica is None else await self.read(eviction.size_on_disk, replica.db.path)
            ),
            open=replica is not None,
            epoch=lease.epoch if lease else None,
            role=None if replica is None else replica.db.role.value,
            durability=spec.durability if spec else None,
            leader=lease.holder if lease else None,
            copies=tuple((m.id, m.versions[name]) for m in members if name in m.versions),
        )

    def _file_names(self, *, evicted: bool = True) -> list[str]:
        """The names of the databases in the data directory (and, with `evicted`,
        of those evicted from it), sorted."""
        suffixes = (".db", ".db" + eviction.MARKER_SUFFIX) if evicted else (".db",)
        with os.scandir(self.directory) as entries:
            files = [e.name for e in entries]
        stems = {f[: -len(end)] for f in files for end in suffixes if f.endswith(end)}
        return sorted(name for name in stems if _NAME.fullmatch(name))

    def _file_infos(self, names: list[str], open_versions: dict[str, int]) -> list[DatabaseInfo]:
        infos = []
        for name in names:
            path, version = self.path(name), open_versions.get(name)
            if not path.exists():
                gone = eviction.marker_of(path)
                if gone is not None:
                    infos.append(DatabaseInfo(name, gone.version, 0, open=False, evicted=True))
                continue  # else dropped since the names were read
            infos.append(
                DatabaseInfo(
                    name=name,
                    version=eviction.peek_version(path) if version is None else version,
                    size_bytes=eviction.size_on_disk(path),
                    open=version is not None,
                )
            )
        return infos

    def names(self) -> list[str]:
        """The names of the databases that are open now."""
        return sorted(self._open)

    def versions(self) -> dict[str, int]:
        """The version of every open database, by name."""
        return {name: self._open[name].db.version for name in sorted(self._open)}

    # -- what the HTTP layer asks of the cluster and the archive ------------------

    async def route(self, name: str, need: Need, at_least: int = 0) -> Leader | None:
        """Where a request on `name` is served: None for here (always, on a node
        alone), else its leader (cluster.routing)."""
        if self.cluster is None:
            return None
        return await route(self.cluster, name, need, at_least)

    def cluster_view(self) -> View | None:
        """The cluster's members and leases as this node last read them; None alone."""
        return self.cluster.view if self.cluster is not None else None

    async def cluster_status(self, visible: Callable[[str], bool]) -> dict[str, Any] | None:
        """`shoal cluster status`'s state for the databases `visible` lets through."""
        if self.cluster is None:
            return None
        return await cluster_summary(self.cluster, visible)

    def reseeds(self) -> dict[str, tuple[int, int]]:
        """Per copy held in a cluster: its re-seeds, and those in a row without progress."""
        if self.cluster is None:
            return {}
        replicas = sorted(self.cluster.replicas.items())
        return {n: (r.follower.reseeds, r.follower.reseeds_in_a_row) for n, r in replicas}

    @property
    def archive_url(self) -> str | None:
        return self.archive.url if self.archive is not None else None

    def archive_status(self) -> dict[str, ArchiveStatus]:
        """Each archived database's status, by name; empty with archiving off."""
        return self.archive.status() if self.archive is not None else {}

    async def wait_for_version(self, db: Database, wanted: int, timeout: float) -> None:
        """Returns once `db` reached version `wanted`; VersionNotReached after `timeout`."""
        deadline = time.monotonic() + timeout
        while db.version < wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VersionNotReached(wanted, db.version, timeout)
            await self.next_version(db.name, remaining)

    async def next_version(self, name: str, timeout: float) -> None:
        """Returns when database `name` commits or applies a version, when the node
        starts draining, or after `timeout` seconds, whichever comes first. The
        caller checks what it waits for before calling: a version committed after
        that check wakes it, one committed before is already visible."""
        if self.draining:
            return
        event = self._advanced.setdefault(name, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    def _on_version(self, name: str, version: int) -> None:
        """A database's listener, on the thread that committed or applied `version`."""
        if name in self._advanced and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                self._loop.call_soon_threadsafe(self._wake, name)

    def _wake(self, name: str) -> None:
        event = self._advanced.pop(name, None)
        if event is not None:
            event.set()

    def _wake_all(self) -> None:
        for name in list(self._advanced):
            self._wake(name)


def _briefly(
    db: Database, fn: Callable[[Database, list[Any]], list[Any]], items: list[Any]
) -> list[Any] | None:
    """`fn(db, items)` on this thread if it stays brief; None when it was cut short
    (rolled back) or could not start at once."""
    try:
        with db.briefly(BRIEF_SECONDS, write=True):
            return fn(db, items)
    except CutShort:
        return None


def _first_result(db: Database, sql: str, params: Params) -> Result:
    return db.query(sql, params).results[0]


def _node_id(data_dir: Path) -> str:
    """This data directory's node id: made up once, then kept in DATA_DIR/node-id."""
    path = data_dir / "node-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        made = f"{socket.gethostname().split('.')[0]}-{secrets.token_hex(3)}"
        path.write_text(made + "\n")
        return made
