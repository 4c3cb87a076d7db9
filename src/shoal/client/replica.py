"""Embedded replicas: a local copy of a node's database, read in process.

`shoal.connect("local.db", replica_of="http://host:4001/orders")` keeps `local.db`
a follower of the node's database: seeded from the node's snapshot when the file
is new, then fed the node's log stream by a background thread (`Follow`), which
moves to the next URL of `replica_of` when a node fails. Reads run on the local
file; writes run on the node (the remote connection's interactive transaction),
and `commit()` returns once the local copy has applied the committed version, so
a process reads its own writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit

import httpx

from shoal.client import remote
from shoal.client.dbapi import BaseConnection, TransactionHandle
from shoal.client.remote import NodeClient
from shoal.client.transfer import Progress, download
from shoal.engine import Database, Role
from shoal.engine.execute import Params, Result
from shoal.engine.functions import Function
from shoal.errors import (
    Error,
    InterfaceError,
    OperationalError,
    ReplicationError,
    StaleReplica,
    Unavailable,
    VersionNotReached,
)
from shoal.stream import FrameKind, FrameReader
from shoal.terminal import progress_bar

__all__ = ["Connection", "Follow"]

T = TypeVar("T")

logger = logging.getLogger("shoal.replica")

HEARTBEAT_SECONDS = 1.0
RETRY_SECONDS = (0.05, 0.2, 1.0)  # between attempts, growing; the last repeats


class Follow:
    """Keeps a follower Database at `path` in step with a node's copy, in a thread."""

    def __init__(
        self,
        path: Path,
        name: str,
        urls: Sequence[str],
        token: str | None,
        progress: Progress | None = None,
    ) -> None:
        self.path = path
        self.name = name
        timeout = httpx.Timeout(30.0, connect=2.0, read=4 * HEARTBEAT_SECONDS)
        self._nodes = [NodeClient(url, token, timeout) for url in urls]
        self._progress = progress
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self.heard = 0.0  # time.monotonic() of the last frame from a node
        self.problem: Error | None = None  # why the last attempt to follow failed
        self._response: httpx.Response | None = None  # the stream being read
        # Called with the new Database when a re-seed replaces `db` (from the thread).
        self.reseeded: list[Callable[[Database], None]] = []
        if not path.exists():
            try:
                self._seed_from_any()
            except OperationalError:
                self._close_nodes()
                raise
        self.db = Database(path, name=name, role=Role.FOLLOWER)
        self._thread = threading.Thread(target=self._run, name=f"shoal-follow-{name}", daemon=True)
        self._thread.start()

    # -- the thread ------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            node = self._nodes[failures % len(self._nodes)]
            try:
                self._follow(node)
                failures = 0
            except ReplicationError as exc:  # truncated log, a barrier, a diverged copy
                logger.warning("%s: re-seeding from %s: %s", self.name, node.base_url, exc)
                self._reseed(node)
            except (Error, httpx.HTTPError) as exc:
                self.problem = exc if isinstance(exc, Error) else _unreachable(node, exc)
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                self._stopping.wait(delay)

    def _follow(self, node: NodeClient) -> None:
        """Applies the node's log stream until it ends; raises why it ended."""
        query = f"?after={self.db.version}&heartbeat={HEARTBEAT_SECONDS:g}"
        with node.stream("GET", self._path("log") + query) as response:
            self._response = response
            self.problem = None
            self._heard()  # the node answered: it is heard from, before any frame
            reader = FrameReader()
            for chunk in response.iter_raw():
                if self._stopping.is_set():
                    return
                frames = list(reader.feed(chunk))
                records = [f.payload for f in frames if f.kind is FrameKind.RECORD]
                if records:
                    self.db.apply_many(records)
                self._heard()
                for end in (f for f in frames if f.kind is FrameKind.END):
                    raise _error_of(end.json())
        raise Unavailable(f"{node.base_url} closed the log stream; following another node")

    def _heard(self) -> None:
        with self._changed:
            self.heard = time.monotonic()
            self._changed.notify_all()

    def _seed_from_any(self) -> None:
        problems = []
        for node in self._nodes:
            try:
                self._download(node, self.path)
                return
            except (Error, httpx.HTTPError) as exc:
                problems.append(f"{node.base_url}: {exc}")
        raise OperationalError(
            f"cannot seed replica {self.path} of {self.name!r}: " + "; ".join(problems)
        )

    def _reseed(self, node: NodeClient) -> None:
        fresh = self.path.with_name(self.path.name + ".seed")
        try:
            self._download(node, fresh)
        except (Error, httpx.HTTPError) as exc:
            self.problem = exc if isinstance(exc, Error) else _unreachable(node, exc)
            self._stopping.wait(RETRY_SECONDS[-1])
            return
        old = self.db
        old.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        os.replace(fresh, self.path)
        self.db = Database(self.path, name=self.name, role=Role.FOLLOWER)
        for function in old.functions():
            self.db.register(function)
        for call in self.reseeded:
            call(self.db)

    def _download(self, node: NodeClient, target: Path) -> None:
        version, size = download(node, self._path("snapshot"), target, self._progress)
        logger.info(
            "%s: seeded %s from %s at version %d (%d bytes)",
            self.name,
            target,
            node.base_url,
            version,
            size,
        )

    def _close_nodes(self) -> None:
        for node in self._nodes:
            node.close()

    def _path(self, what: str) -> str:
        return f"/v1/databases/{quote(self.name, safe='')}/{what}"

    # -- callers ---------------------------------------------------------------

    def wait_until_heard(self, within: float) -> None:
        """Returns once a node was heard from in the last `within` seconds, waiting
        up to `within` for it; StaleReplica otherwise."""
        deadline = time.monotonic() + within
        with self._changed:
            while time.monotonic() - self.heard > within:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    quiet = time.monotonic() - self.heard
                    why = f": {self.problem}" if self.problem is not None else ""
                    raise StaleReplica(
                        f"replica {self.path} of {self.name!r} has heard from no node for "
                        f"{quiet:.1f} s (max_lag_seconds={within:g}){why}"
                    )
                self._changed.wait(remaining)

    def wait_for(self, version: int, timeout: float) -> None:
        """Returns once the copy holds `version`; VersionNotReached after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.db.version < version:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise VersionNotReached(version, self.db.version, timeout)
                self._changed.wait(remaining)

    def close(self) -> None:
        self._stopping.set()
        response = self._response
        if response is not None:  # end its read at once, not at the next heartbeat
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._close_nodes()
        self.db.close()


# One Follow per replica file in this process, shared by every connection to it (a
# pool's): two would each apply every record to the same file, and the second to
# reach a version, finding it applied, would re-seed the file under the first.
_following: dict[Path, tuple[Follow, int]] = {}  # resolved path: (follow, connections)
_following_lock = threading.Lock()


def _follow(path: Path, name: str, urls: Sequence[str], token: str | None) -> Follow:
    """The Follow of `path`, started (and the file seeded) by its first connection."""
    key = path.resolve()
    with _following_lock:
        follow, users = _following.get(key) or (None, 0)
        if follow is None:
            follow = Follow(path, name, urls, token, _terminal_progress())
        elif follow.name != name:
            raise InterfaceError(
                f"{path} is already a replica of {follow.name!r} in this process, not of {name!r}"
            )
        _following[key] = (follow, users + 1)
        return follow


def _release(follow: Follow) -> None:
    """One connection fewer on `follow`; the last one stops it."""
    key = follow.path.resolve()
    with _following_lock:
        _, users = _following[key]
        if users > 1:
            _following[key] = (follow, users - 1)
            return
        del _following[key]
    follow.close()


def _unreachable(node: NodeClient, exc: httpx.HTTPError) -> Unavailable:
    return Unavailable(f"cannot follow {node.base_url}: {type(exc).__name__}: {exc}")


def _error_of(body: dict[str, object]) -> Error:
    return remote.error_from(httpx.Response(503, json=body))


class _WriteThrough:
    """A node's interactive transaction, begun with its first statement on the first
    node that answers; commit returns once the copy has it."""

    def __init__(self, replica: Connection) -> None:
        self._replica = replica
        self._tx: TransactionHandle | None = None

    @property
    def is_open(self) -> bool:
        return self._tx is None or self._tx.is_open

    def execute(self, sql: str, params: Params = None) -> list[Result]:
        if self._tx is not None:
            return self._tx.execute(sql, params)

        def begin_with(writer: remote.Connection) -> tuple[TransactionHandle, list[Result]]:
            tx = writer._begin()
            return tx, tx.execute(sql, params)

        self._tx, results = self._replica._on_a_node(begin_with)
        return results

    def commit(self) -> int:
        if self._tx is None:
            return self._replica.version  # nothing ran: nothing to commit
        version = self._tx.commit()
        self._replica.wait_for(version)
        return version

    def rollback(self) -> None:
        if self._tx is not None:
            self._tx.rollback()


class Connection(BaseConnection):
    """A PEP 249 connection reading a local replica and writing through a node."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        replica_of: str | Sequence[str],
        *,
        token: str | None = None,
        autocommit: bool = False,
        timeout: float = 60.0,
        max_lag_seconds: float | None = None,
    ) -> None:
        super().__init__(autocommit=autocommit)
        if max_lag_seconds is not None and max_lag_seconds <= HEARTBEAT_SECONDS:
            raise InterfaceError(
                f"max_lag_seconds must be over {HEARTBEAT_SECONDS:g} s, the heartbeat of an "
                "idle stream; a quiet copy would always be refused"
            )
        self._max_lag_seconds = max_lag_seconds
        urls = [replica_of] if isinstance(replica_of, str) else list(replica_of)
        if not urls:
            raise InterfaceError("replica_of needs at least one node URL")
        bases, names = zip(*(_split(url) for url in urls), strict=True)
        if len(set(names)) != 1:
            raise InterfaceError(f"replica_of names more than one database: {sorted(set(names))}")
        if token is None:
            token = os.environ.get("SHOAL_TOKEN") or None
        self.timeout = timeout
        self.follow = _follow(Path(path), names[0], bases, token)
        self.follow.reseeded.append(self._reads_on)
        self._reads_on(self.follow.db)
        self._writers = [
            remote.Connection(url, token=token, autocommit=True, timeout=timeout) for url in urls
        ]
        self._current = 0  # the writer that answered last

    @property
    def database(self) -> Database:
        """The local copy."""
        return self.follow.db

    @property
    def max_lag_seconds(self) -> float | None:
        """How stale a read may be (see docs/embedded.md); None: unbounded."""
        return self._max_lag_seconds

    @max_lag_seconds.setter
    def max_lag_seconds(self, seconds: float | None) -> None:
        self._max_lag_seconds = seconds
        self._reads_on(self.follow.db)

    def _reads_on(self, db: Database) -> None:
        """Plain reads run on `db` directly, unless each must check the lag first."""
        self._local_reads = db if self._max_lag_seconds is None else None

    @property
    def version(self) -> int:
        """The local copy's version: at least that of every write this process committed."""
        return self.follow.db.version

    def wait_for(self, version: int, timeout: float | None = None) -> None:
        """Waits until the copy holds `version` (another process's `conn.version`,
        say); VersionNotReached after `timeout` seconds (the connection's timeout)."""
        self.follow.wait_for(version, self.timeout if timeout is None else timeout)

    def sync(self, timeout: float | None = None) -> int:
        """Waits until the copy holds every version the node had committed; returns it."""
        body = {"sql": "SELECT 1", "level": "linearizable"}  # the leader's head
        head = self._on_a_node(
            lambda writer: writer.client.call("POST", f"{writer.path}/query", body)["version"]
        )
        self.follow.wait_for(int(head), self.timeout if timeout is None else timeout)
        return self.version

    def _read(self, sql: str, params: Params, min_version: int | None) -> list[Result]:
        if min_version is not None and min_version > self.follow.db.version:
            self.follow.wait_for(min_version, self.timeout)
        if self._max_lag_seconds is not None:
            self.follow.wait_until_heard(self._max_lag_seconds)
        return self.follow.db.read(sql, params)

    def _write(self, sql: str, params: Params) -> list[Result]:
        results, version = self._on_a_node(
            lambda writer: (writer._write(sql, params), writer.version)
        )
        self.follow.wait_for(version, self.timeout)
        return results

    def _begin(self) -> _WriteThrough:
        return _WriteThrough(self)

    def _on_a_node(self, call: Callable[[remote.Connection], T]) -> T:
        """`call` on the nodes of `replica_of` in turn, from the one that answered
        last, while they answer Unavailable (retryable: nothing was done)."""
        tried = 0
        while True:
            try:
                return call(self._writers[self._current])
            except Unavailable:
                tried += 1
                if tried == len(self._writers):
                    raise
                self._current = (self._current + 1) % len(self._writers)

    def _register(self, function: Function) -> None:
        """On the local copy, for its reads: a write runs on a node, which has no
        such function. Every connection to this copy in the process shares it."""
        self.follow.db.register(function)

    def _close_backend(self) -> None:
        for writer in self._writers:
            writer.close()
        self.follow.reseeded.remove(self._reads_on)
        _release(self.follow)

    def __enter__(self) -> Connection:
        return self


def _terminal_progress() -> Progress | None:
    """A progress bar for seeding, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None

    def bar(done: int, total: int) -> None:
        progress_bar(done, total)
        if done >= total:
            print(file=sys.stderr)

    return bar


def _split(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    name = parts.path.strip("/")
    if parts.scheme not in ("http", "https") or not parts.netloc or not name or "/" in name:
        raise InterfaceError(f"{url!r} is not an http(s)://host:port/database URL")
    return f"{parts.scheme}://{parts.netloc}", name
