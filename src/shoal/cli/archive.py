"""`shoal restore` and `shoal archive ls|verify`: a database's archive."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path
from typing import Any

from shoal.archive.base import BlobStore
from shoal.archive.catalog import Index, archived_databases, read_index, read_tombstone
from shoal.archive.restore import RestorePlan, iso_time, plan_restore, restore, verify
from shoal.cli.format import local_time, print_table
from shoal.cli.options import archive_option
from shoal.errors import InvalidRequest, NotArchived
from shoal.terminal import human_size, progress_bar

__all__ = ["add_archive_commands", "parse_time"]

_SEGMENT_KINDS = {0: "segment", 1: "merged"}  # a round's segment; compaction's


def _store(url: str) -> BlobStore:
    from shoal.archive.stores import open_store

    return open_store(url)


def parse_time(text: str) -> int:
    """An ISO 8601 time ('2026-11-21T10:30:00Z'; local time without a zone) or Unix
    seconds, as nanoseconds since the epoch."""
    try:
        return int(float(text) * 1e9)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"--to-time {text!r} is not a time such as 2026-11-21T10:30:00Z or Unix seconds"
        ) from None
    return int(moment.timestamp() * 1e9)


def _when(time_ns: int) -> str:
    return local_time(time_ns / 1e9)


def _describe(plan: RestorePlan) -> list[str]:
    target = (
        f"version {plan.version}"
        if plan.version is not None
        else f"time {_when(plan.time_ns)}"
        if plan.time_ns is not None
        else "the newest archived version"
    )
    base = (
        f"snapshot at version {plan.snapshot.version} ({human_size(plan.snapshot.size)})"
        if plan.snapshot
        else "an empty database"
    )
    lines = [f"restore {plan.database!r} to {target}", f"  from {base}"]
    if plan.segments:
        first, last = plan.segments[0], plan.segments[-1]
        lines.append(
            f"  then {len(plan.segments)} segment(s), versions {first.first}..{last.last} "
            f"({human_size(sum(s.size for s in plan.segments))})"
        )
    lines.append(f"  downloading {human_size(plan.download_bytes)} in all")
    return lines


def _index(store: BlobStore, database: str) -> Index:
    """`database`'s index; if there is none, an error that says what the archive holds."""
    try:
        return read_index(store, database)
    except NotArchived:
        raise NotArchived(database, archived_databases(store)) from None


def _dropped_note(store: BlobStore, database: str) -> str | None:
    tombstone = read_tombstone(store, database)
    if tombstone is None:
        return None
    return (
        f"{database!r} was dropped at {iso_time(tombstone.time_ns)}, at version "
        f"{tombstone.version}: nothing restores it on its own"
    )


def _restore(args: argparse.Namespace) -> int:
    store = _store(args.archive)
    time_ns = parse_time(args.to_time) if args.to_time else None
    plan = plan_restore(_index(store, args.database), version=args.to_version, time_ns=time_ns)
    if note := _dropped_note(store, args.database):
        print(f"note: {note}; restoring it as asked", file=sys.stderr)
    for line in _describe(plan):
        print(line, file=sys.stderr)
    if args.dry_run:
        return 0
    started = time.monotonic()
    version = restore(
        store,
        plan,
        args.output,
        workers=args.workers,
        progress=None if args.quiet else progress_bar,
    )
    if not args.quiet:
        print(file=sys.stderr)
    print(
        f"restored {args.database!r} at version {version} to {args.output} "
        f"in {time.monotonic() - started:.1f} s (integrity_check ok)"
    )
    return 0


def _ls(args: argparse.Namespace) -> int:
    store = _store(args.archive)
    index = _index(store, args.database)
    rows: list[tuple[Any, ...]] = [
        ("snapshot", s.version, s.version, _when(s.time_ns), human_size(s.size), s.key)
        for s in index.snapshots
    ]
    rows += [
        (_SEGMENT_KINDS[s.level], s.first, s.last, _when(s.last_time_ns), human_size(s.size), s.key)
        for s in index.segments
    ]
    rows.sort(key=lambda row: (row[1], row[0]))
    print_table(["kind", "from", "to", "time", "size", "key"], rows)
    print(f"newest archived version: {index.head}", file=sys.stderr)
    if note := _dropped_note(store, args.database):
        print(note, file=sys.stderr)
    return 0


def _verify(args: argparse.Namespace) -> int:
    store = _store(args.archive)
    index = _index(store, args.database)
    problems = verify(store, index)
    for key, problem in problems:
        print(f"FAIL {key}: {problem}")
    count = len(index.snapshots) + len(index.segments)
    print(f"{count - len(problems)} of {count} object(s) ok", file=sys.stderr)
    return 1 if problems else 0


def add_archive_commands(commands: Any) -> None:
    """Registers `restore` and `archive` on the `shoal` parser's subcommands."""
    restore_parser = commands.add_parser(
        "restore",
        help="restore a database from the archive, to any version or time",
        description="Restore a database from its archive into a new file: the nearest "
        "snapshot, then its log replayed to the version or time asked (default: the "
        "newest). Downloads in parallel, verifies every object, ends with integrity_check.",
    )
    restore_parser.add_argument("database", help="the database's name")
    archive_option(restore_parser)
    target = restore_parser.add_mutually_exclusive_group()
    target.add_argument("--to-version", type=int, help="restore up to this version")
    target.add_argument("--to-time", help="restore as of this time (ISO 8601, or Unix seconds)")
    target.add_argument("--latest", action="store_true", help="the newest version (default)")
    restore_parser.add_argument(
        "--output", type=Path, required=True, help="the new file (never overwritten)"
    )
    restore_parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    restore_parser.add_argument("--workers", type=int, default=4, help="parallel downloads (4)")
    restore_parser.add_argument("--quiet", action="store_true", help="no progress bar")
    restore_parser.set_defaults(run=_restore)

    archive = commands.add_parser(
        "archive",
        help="list and verify what the archive holds",
        description="Inspect a database's archive: its snapshots and log segments.",
    )
    actions = archive.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="ls or verify"
    )
    for name, run, text in (
        ("ls", _ls, "list snapshots and segments with versions and times"),
        ("verify", _verify, "download and check every object"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("database", help="the database's name")
        archive_option(action)
        action.set_defaults(run=run)
