"""Point-in-time restore: the nearest snapshot at or before the target, then replay.

The plan comes from the index (and one listing for the newest segments, which
it may not name yet). Segments are downloaded in parallel, a few ahead of replay,
and the snapshot streams to disk, so memory stays bounded whatever the sizes.
Each object is verified before use; replay applies each segment's records in
one transaction through the engine's own `apply_many`, so the result is checked
record by record, and it ends with `PRAGMA integrity_check`. The output is
written beside its final name and renamed into place only when all of that
passed: a failed restore leaves nothing behind.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice, takewhile
from pathlib import Path
from typing import TypeVar

from shoal.archive.base import BlobStore
from shoal.archive.catalog import Index
from shoal.archive.local import durable_replace
from shoal.archive.objects import Kind, SegmentEntry, SnapshotEntry, open_segment, unpack_file
from shoal.engine import Database, Role
from shoal.errors import ArchiveError, CorruptObject, OperationalError, ReseedRequired
from shoal.record import decode

__all__ = ["Progress", "RestorePlan", "iso_time", "plan_restore", "restore", "verify"]

T = TypeVar("T")
R = TypeVar("R")

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes in all) as objects arrive."""


@dataclass(frozen=True)
class RestorePlan:
    database: str
    snapshot: SnapshotEntry | None  # None: replay from an empty database
    segments: list[SegmentEntry] = field(default_factory=list)
    version: int | None = None  # restore up to this version ...
    time_ns: int | None = None  # ... or up to this commit time (None: the newest)

    @property
    def download_bytes(self) -> int:
        return (self.snapshot.size if self.snapshot else 0) + sum(s.size for s in self.segments)


def plan_restore(
    index: Index, *, version: int | None = None, time_ns: int | None = None
) -> RestorePlan:
    """Which objects restore `index.database` to `version`, to `time_ns`, or to the
    newest archived state; ArchiveError when the archive cannot reach that point."""
    if version is not None and time_ns is not None:
        raise ArchiveError("restore to a version or to a time, not both")
    if version is not None and not 0 <= version <= index.head:
        raise ArchiveError(
            f"version {version} is not in the archive of {index.database!r} "
            f"(it holds up to version {index.head})"
        )

    def usable(snapshot: SnapshotEntry) -> bool:
        if version is not None:
            return snapshot.version <= version
        if time_ns is not None:
            return snapshot.time_ns <= time_ns
        return True

    candidates = [s for s in index.snapshots if usable(s)]
    snapshot = candidates[-1] if candidates else None
    start = snapshot.version + 1 if snapshot else 1
    end = version if version is not None else index.head
    segments = [s for s in index.segments if s.last >= start and s.first <= end]
    if time_ns is not None:
        segments = [s for s in segments if s.first_time_ns <= time_ns]
        if snapshot is None and not segments:
            raise ArchiveError(_before_the_first(index, time_ns))
    reached = start - 1
    for segment in segments:
        if segment.first > reached + 1:
            break
        reached = max(reached, segment.last)
    needed = end if time_ns is None else min(end, segments[-1].last if segments else reached)
    if reached < needed:
        raise ArchiveError(
            f"the archive of {index.database!r} has a gap after version {reached}: "
            f"it cannot be replayed to version {needed}"
        )
    return RestorePlan(index.database, snapshot, segments, version, time_ns)


def _before_the_first(index: Index, time_ns: int) -> str:
    """Why a restore to `time_ns` is refused: the archive's first state is later."""
    times = [s.time_ns for s in index.snapshots]
    times += [s.first_time_ns for s in index.segments[:1] if s.first == 1]
    second = 1_000_000_000
    first = -(-min(times) // second) * second if times else 0  # the next whole second
    earliest = f" is {iso_time(first)}" if times else " is not archived yet"
    return (
        f"{iso_time(time_ns)} is before the first state of {index.database!r} the archive "
        f"holds: restoring to it would give an empty database. The earliest it can give"
        f"{earliest}; restore to that time or later, or to --to-version 0 for the empty "
        "database"
    )


def iso_time(time_ns: int) -> str:
    """A time as ISO 8601 in UTC, to the second ('2026-11-21T09:30:00Z')."""
    moment = datetime.datetime.fromtimestamp(time_ns / 1e9, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def restore(
    store: BlobStore,
    plan: RestorePlan,
    output: Path,
    *,
    workers: int = 4,
    progress: Progress | None = None,
) -> int:
    """Carries out `plan` into a new file `output`; returns the version restored."""
    if output.exists():
        raise OperationalError(f"{output} exists; restore never overwrites a file")
    partial = output.with_name(output.name + ".restoring")
    for leftover in _sidecars(partial):
        leftover.unlink(missing_ok=True)
    total, done = plan.download_bytes, 0

    def advance(size: int) -> None:
        nonlocal done
        done += size
        if progress is not None:
            progress(done, total)

    try:
        with ThreadPoolExecutor(workers) as pool:
            segments = _ahead(pool, lambda s: store.get(s.key)[0], plan.segments, 2 * workers)
            if plan.snapshot is not None:
                download = Path(f"{partial}.download")
                store.get_file(plan.snapshot.key, download)
                unpack_file(plan.snapshot.key, Kind.SNAPSHOT, download, partial)
                download.unlink()
                advance(plan.snapshot.size)
            version = _replay(plan, partial, zip(plan.segments, segments, strict=True), advance)
        _check_integrity(partial)
        durable_replace(partial, output)  # the snapshot was a plain copy: sync it
    finally:
        for leftover in _sidecars(partial):
            leftover.unlink(missing_ok=True)
    return version


def _ahead(
    pool: ThreadPoolExecutor, fetch: Callable[[T], R], items: Iterable[T], window: int
) -> Iterator[R]:
    """`fetch` of each item in order, at most `window` running ahead of the consumer
    (Executor.map would download everything at once, into memory). The first
    window starts now, so segments download while the snapshot does."""
    waiting = iter(items)
    pending = deque(pool.submit(fetch, item) for item in islice(waiting, window))

    def results() -> Iterator[R]:
        while pending:
            done = pending.popleft().result()
            pending.extend(pool.submit(fetch, item) for item in islice(waiting, 1))
            yield done

    return results()


def _replay(
    plan: RestorePlan,
    path: Path,
    downloads: Iterator[tuple[SegmentEntry, bytes]],
    advance: Callable[[int], None],
) -> int:
    with Database(path, name=plan.database, role=Role.FOLLOWER) as db:
        for entry, data in downloads:
            first, records = open_segment(entry.key, data)
            start = max(0, db.version + 1 - first)  # segments may overlap what is applied
            end = len(records) if plan.version is None else max(0, plan.version + 1 - first)
            wanted = records[start:end]
            if plan.time_ns is not None and entry.last_time_ns > plan.time_ns:
                wanted = _committed_by(wanted, plan.time_ns)
            try:
                db.apply_many(wanted)
            except ReseedRequired as exc:
                raise ArchiveError(
                    f"the archive of {plan.database!r} cannot be replayed past version "
                    f"{exc.version - 1}: record {exc.version} is a VACUUM barrier and no "
                    "snapshot after it is archived yet"
                ) from None
            advance(entry.size)
            if start + len(wanted) < len(records):
                break  # the target is reached: what follows is after it
        return db.version


def _committed_by(records: list[bytes], time_ns: int) -> list[bytes]:
    """The records up to the first committed after `time_ns`."""
    return list(takewhile(lambda raw: decode(raw).time_ns <= time_ns, records))


def _check_integrity(path: Path) -> None:
    with Database(path) as db:
        rows = db.query("PRAGMA integrity_check").results[0].rows
    if rows != [("ok",)]:
        raise CorruptObject(f"the restored database fails integrity_check: {rows[0][0]}")


def _sidecars(path: Path) -> list[Path]:
    return [Path(f"{path}{suffix}") for suffix in ("", "-wal", "-shm", ".download")]


def verify(store: BlobStore, index: Index) -> list[tuple[str, str]]:
    """Downloads every object the index names and checks it; (key, problem) pairs."""
    problems = []
    for entry in index.snapshots:
        with tempfile.TemporaryDirectory(prefix="shoal-verify-") as tmp:
            download = Path(tmp) / "snapshot"
            try:
                store.get_file(entry.key, download)
                unpack_file(entry.key, Kind.SNAPSHOT, download, Path(os.devnull))
            except (CorruptObject, ArchiveError) as exc:
                problems.append((entry.key, str(exc)))
    for segment in index.segments:
        try:
            first, records = open_segment(segment.key, store.get(segment.key)[0])
            if (first, first + len(records) - 1) != (segment.first, segment.last):
                problems.append((segment.key, "holds other versions than its index entry"))
        except (CorruptObject, ArchiveError) as exc:
            problems.append((segment.key, str(exc)))
    return problems
