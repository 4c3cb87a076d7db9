"""Evicting a database from a node's disk, and hydrating it from the archive again.

A database closed for `evict_seconds` whose archive holds every version it has
is removed from disk, and a small marker, `NAME.db.evicted`, stands in for it:
it keeps the database listed, its version known, and its name taken. The next
request for it restores it from the archive (a snapshot and the segments after
it) before it is opened; a restore that ends short of the evicted version is an
error, and the marker stays. Everything here blocks: a node runs it on its
writer threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import apsw

from shoal.archive.base import BlobStore
from shoal.archive.catalog import read_index
from shoal.archive.local import durable_replace
from shoal.archive.restore import plan_restore, restore
from shoal.engine import log as engine_log
from shoal.errors import ArchiveError, InternalError, NotArchived

__all__ = [
    "MARKER_SUFFIX",
    "Evicted",
    "evict",
    "forget",
    "hydrate",
    "marker_of",
    "peek_version",
    "remove",
    "size_on_disk",
]

logger = logging.getLogger("shoal.node")

MARKER_SUFFIX = ".evicted"


@dataclass(frozen=True)
class Evicted:
    """What the marker of an evicted database says."""

    version: int
    size_bytes: int  # on disk when it was evicted
    evicted_ns: int


def marker_of(path: Path) -> Evicted | None:
    """The marker beside the database file `path`, if the database is evicted."""
    try:
        document = json.loads(Path(f"{path}{MARKER_SUFFIX}").read_bytes())
        return Evicted(
            int(document["version"]), int(document["size_bytes"]), int(document["evicted_ns"])
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"the eviction marker of {path.name} is malformed: {exc}") from None


def peek_version(path: Path) -> int:
    """The version of the database file `path`, read without opening it as a node
    does (0 if it cannot be read: a listing shows what it can)."""
    try:
        return _version_of(path)
    except apsw.Error:
        return 0


def _version_of(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.set_busy_timeout(1000)
        return engine_log.head(conn)
    finally:
        conn.close()


def size_on_disk(path: Path) -> int:
    """The database's bytes on disk, its write-ahead log included."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(f"{path}{suffix}").st_size
    return total


def remove(path: Path) -> None:
    """Deletes the database file `path` and its write-ahead log and shared memory."""
    for suffix in ("-wal", "-shm", ""):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def forget(path: Path) -> None:
    """Deletes the marker of the evicted database `path` (it is dropped)."""
    Path(f"{path}{MARKER_SUFFIX}").unlink(missing_ok=True)


def evict(store: BlobStore, path: Path, name: str) -> Evicted | None:
    """Removes the closed database `name` at `path` from disk if the archive holds
    every version of it, leaving its marker; None (and the file stays) if not, or
    if the file cannot be read (it is not this step's to judge it)."""
    if not path.exists():
        return None
    try:
        version = _version_of(path)
        archived = read_index(store, name).head
    except (apsw.Error, NotArchived):
        return None
    if archived < version:
        return None
    evicted = Evicted(version, size_on_disk(path), time.time_ns())
    partial = Path(f"{path}{MARKER_SUFFIX}.partial")
    partial.write_text(json.dumps(evicted.__dict__))
    durable_replace(partial, Path(f"{path}{MARKER_SUFFIX}"))  # first: a crash keeps the file
    remove(path)
    return evicted


def hydrate(store: BlobStore, path: Path, name: str) -> int:
    """Restores the evicted database `name` to `path` from the archive, then drops
    its marker; returns its version. InternalError if the archive gives back less
    than the version evicted (the marker stays: nothing is served short)."""
    evicted = marker_of(path)
    if evicted is None:
        raise ArchiveError(f"{name!r} is not evicted")
    started = time.monotonic()
    plan = plan_restore(read_index(store, name))
    path.with_name(path.name + ".restoring").unlink(missing_ok=True)
    version = restore(store, plan, path)
    if version < evicted.version:
        remove(path)
        raise InternalError(
            f"the archive of {name!r} gives back version {version}, but it was evicted at "
            f"version {evicted.version}; it stays evicted (check the archive: shoal archive verify)"
        )
    forget(path)
    logger.info(
        "%s: hydrated from the archive at version %d (%d bytes in %.2f s)",
        name,
        version,
        plan.download_bytes,
        time.monotonic() - started,
    )
    return version
