"""`shoal db`: create, list, inspect, drop, back up and load a node's databases."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from shoal.cli.format import format_table, print_table
from shoal.cli.options import node_client, remote_options
from shoal.errors import InvalidRequest
from shoal.terminal import human_size, progress_bar

__all__ = ["add_database_commands", "add_query_many_command"]


def _db_list(args: argparse.Namespace) -> int:
    """A page of databases (all of them with --all), and how to ask for the next."""
    client = node_client(args)
    query = {"after": args.after, "limit": args.limit, "contains": args.contains}
    databases: list[dict[str, Any]] = []
    while True:
        page = client.call(
            "GET", "/v1/databases?" + urlencode({k: v for k, v in query.items() if v})
        )
        databases += page["databases"]
        if page["next"] is None or not args.all:
            break
        query["after"] = page["next"]
    rows = [(d["name"], d["version"], human_size(d["size_bytes"]), _state(d)) for d in databases]
    print_table(["name", "version", "size", "state"], rows)
    if page["next"] is not None:
        print(f"more: shoal db list --after {page['next']} (or --all)", file=sys.stderr)
    return 0


def _state(database: dict[str, Any]) -> str:
    """open, closed, or evicted (from this node's disk, restored on its next request)."""
    if database.get("evicted"):
        return "evicted"
    return "open" if database["open"] else "closed"


def _query_many(args: argparse.Namespace) -> int:
    """The rows of every matching database (or the aggregate's), then the failures."""
    found = node_client(args).query_many(
        args.sql,
        pattern=args.pattern,
        aggregate=args.aggregate,
        level=args.level,
        timeout=args.timeout,
    )
    if found.columns:  # none when no database answered
        print_table(found.columns, found.rows)
    failed = [(name, type(exc).__name__, str(exc)) for name, exc in found.errors.items()]
    if failed:
        print(file=sys.stderr)
        print(format_table(["database", "error", "message"], failed), file=sys.stderr)
    print(f"{found.databases} databases read, {len(failed)} failed", file=sys.stderr)
    return 1 if failed else 0


def add_query_many_command(commands: Any) -> None:
    """Registers `query-many` on the `shoal` parser's subcommands."""
    many = commands.add_parser(
        "query-many",
        help="run one read on every database whose name matches a pattern",
        description="Run one read-only statement on every database matching PATTERN that "
        "the token may read, wherever each is led, and print the rows with each "
        "database's name first; the databases that failed follow on stderr, and the "
        "exit status is 1 if any did.",
    )
    many.add_argument("pattern", help="a glob of database names, such as 'tenant-*'")
    many.add_argument("sql", help="the statement (SELECT, VALUES or EXPLAIN)")
    many.add_argument(
        "--aggregate",
        help="a statement over the table 'results' of the rows (a column 'db' first), "
        "such as 'SELECT db, sum(total) FROM results GROUP BY db'",
    )
    many.add_argument(
        "--level", choices=("none", "weak", "linearizable"), help="read consistency (weak)"
    )
    many.add_argument("--timeout", type=float, help="seconds for the whole call (30)")
    many.set_defaults(run=_query_many)
    remote_options(many)


def _db_create(args: argparse.Namespace) -> int:
    body = {"name": args.name}
    if args.durability:
        body["durability"] = args.durability
    info = node_client(args).call("POST", "/v1/databases", body)
    print(f"created {info['name']} (version {info['version']})")
    return 0


def _db_info(args: argparse.Namespace) -> int:
    info = node_client(args).call("GET", f"/v1/databases/{args.name}")
    info["size_bytes"] = human_size(info["size_bytes"])
    print_table(["field", "value"], list(info.items()))
    return 0


def _db_drop(args: argparse.Namespace) -> int:
    if not args.yes:
        raise InvalidRequest(f"dropping deletes {args.name!r} and its files; add --yes to do it")
    node_client(args).call("DELETE", f"/v1/databases/{args.name}")
    print(f"dropped {args.name}")
    return 0


def with_progress(transfer: Callable[[Any], Any], quiet: bool = False) -> Any:
    """Runs `transfer(progress)` with the progress bar when stderr is a terminal
    (and `quiet` is not asked for)."""
    progress = progress_bar if sys.stderr.isatty() and not quiet else None
    done = transfer(progress)
    if progress is not None:
        print(file=sys.stderr)  # past the bar
    return done


def _db_backup(args: argparse.Namespace) -> int:
    from shoal.client.transfer import backup

    client = node_client(args)
    done = with_progress(
        lambda progress: backup(
            client, args.name, args.file, kind=args.format, overwrite=args.force, progress=progress
        )
    )
    print(
        f"backed up {args.name} at version {done.version} to {args.file} "
        f"({done.kind}, {human_size(done.size)})"
    )
    return 0


def _db_load(args: argparse.Namespace) -> int:
    from shoal.client.transfer import load

    client = node_client(args)
    done = with_progress(lambda progress: load(client, args.name, args.file, progress=progress))
    print(
        f"loaded {args.file} ({done.kind}, {human_size(done.size)}) into {args.name}: "
        f"now at version {done.version}"
    )
    return 0


def _add_db_files(actions: Any) -> None:
    backup = actions.add_parser(
        "backup",
        help="copy a database to a file (SQLite, or SQL with --format sql)",
        description="Copy a database to a file, consistent while writes go on: a SQLite "
        "file (a shoal database at the version shown) or a SQL script. The file is "
        "written under a temporary name and renamed once complete.",
    )
    backup.add_argument("name", help="the database's name")
    backup.add_argument("file", type=Path, help="the file to write")
    backup.add_argument(
        "--format",
        choices=("sqlite", "sql"),
        default="sqlite",
        help="sqlite (default): a SQLite database file; sql: a SQL script",
    )
    backup.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    backup.set_defaults(run=_db_backup)
    load = actions.add_parser(
        "load",
        help="load a SQLite file (replacing the contents) or a SQL script into a database",
        description="Load a file into an existing database as one write transaction: a "
        "SQLite database file replaces its contents; SQL text runs on them. Which it is "
        "comes from the file's first bytes. A load the node refuses changes nothing.",
    )
    load.add_argument("name", help="the database's name (create it first: db create)")
    load.add_argument("file", type=Path, help="a SQLite database file or a SQL script")
    load.set_defaults(run=_db_load)


def add_database_commands(commands: Any) -> None:
    """Registers `db` and its actions on the `shoal` parser's subcommands."""
    db = commands.add_parser(
        "db",
        help="create, list, inspect, drop, back up and load a node's databases",
        description="Manage the databases of a running node over its HTTP API.",
    )
    actions = db.add_subparsers(
        dest="action",
        required=True,
        metavar="ACTION",
        help="list, create, info, drop, backup or load",
    )
    listing = actions.add_parser(
        "list",
        help="list databases, a page at a time",
        description="List databases by name, a page at a time; the next page's command "
        "is printed when there is one.",
    )
    listing.add_argument("--after", default="", help="list the names after this one")
    listing.add_argument(
        "--limit", type=int, help="databases per page (by default, as many as the node sends)"
    )
    listing.add_argument("--contains", default="", help="only names containing this text")
    listing.add_argument("--all", action="store_true", help="every page, not just the first")
    listing.set_defaults(run=_db_list)
    for name, run, text in (
        ("create", _db_create, "create an empty database"),
        ("info", _db_info, "show a database's version, size and role"),
        ("drop", _db_drop, "delete a database and its files"),
    ):
        action = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        action.add_argument("name", help="the database's name")
        if name == "drop":
            action.add_argument("--yes", action="store_true", help="confirm: the data is deleted")
        if name == "create":
            action.add_argument(
                "--durability",
                choices=("sync", "async"),
                help="in a cluster: sync (the default) logs each write in the control plane "
                "before answering; async ships writes within a short window",
            )
        action.set_defaults(run=run)
    _add_db_files(actions)
    for action in actions.choices.values():
        remote_options(action)
