"""`shoal serve`, `shoal db` and `shoal token`: parse, call one function, print."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shoal.errors import InvalidRequest

__all__ = ["add_server_commands"]

DEFAULT_URL = "http://127.0.0.1:4001"


def _serve(args: argparse.Namespace) -> int:
    from shoal.server.config import load_settings, settable_fields
    from shoal.server.serve import serve

    flags = {f.name: getattr(args, f.name) for f in settable_fields()}
    settings = load_settings(args.config, os.environ, flags)
    return serve(settings)


def _client(args: argparse.Namespace) -> Any:
    from shoal.cli import token_of
    from shoal.client.remote import NodeClient

    return NodeClient(args.url, token_of(args))


def _table(columns: list[str], rows: list[tuple[Any, ...]]) -> None:
    from shoal.cli import format_table

    print(format_table(columns, rows))


def _db_list(args: argparse.Namespace) -> int:
    listing = _client(args).call("GET", "/v1/databases")["databases"]
    from shoal.cli import human_size

    rows = [(d["name"], d["version"], human_size(d["size_bytes"]), d["open"]) for d in listing]
    _table(["name", "version", "size", "open"], rows)
    return 0


def _status(args: argparse.Namespace) -> int:
    status = _client(args).call("GET", "/v1/status")
    state = "ready" if status["ready"] else "not ready"
    print(
        f"shoal {status['shoal']} at {status['address']}: {state}, "
        f"up {status['uptime_seconds']:.0f} s, archive {status['archive'] or 'off'}"
    )
    rows = [
        (
            d["name"],
            d["version"],
            d.get("archive_lag", "-"),
            d.get("archive_failures", "-"),
            d.get("archive_error") or "",
        )
        for d in status["databases"]
    ]
    _table(["database", "version", "archive lag", "failures", "last error"], rows)
    return 0


def _db_create(args: argparse.Namespace) -> int:
    body = {"name": args.name}
    if args.durability:
        body["durability"] = args.durability
    info = _client(args).call("POST", "/v1/databases", body)
    print(f"created {info['name']} (version {info['version']})")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    state = _client(args).call("GET", "/v1/cluster")
    if not state["clustered"]:
        print(f"{args.url} is a single node (no --control-plane): see `shoal status`")
        return 0
    nodes = [
        (n["id"], n["url"], "leaving" if n["leaving"] else "live", n["databases"], n["leading"])
        for n in state["nodes"]
    ]
    _table(["node", "url", "state", "databases", "leading"], nodes)
    print()
    rows = []
    for d in state["databases"]:
        copies = ", ".join(
            f"{r['node']}@{r['version']}" + (f" (lag {r['lag']})" if r["lag"] else "")
            for r in d["replicas"]
        )
        rows.append(
            (d["name"], d["durability"], d["leader"] or "-", d["epoch"] or "-", d["head"], copies)
        )
    _table(["database", "durability", "leader", "epoch", "log head", "copies (version, lag)"], rows)
    problems = [
        (d["name"], r["node"], r["problem"])
        for d in state["databases"]
        for r in d["replicas"]
        if r.get("problem")
    ]
    if problems:
        print()
        _table(["database", "node", "problem (retrying, with backoff)"], problems)
    return 0


def _db_info(args: argparse.Namespace) -> int:
    info = _client(args).call("GET", f"/v1/databases/{args.name}")
    from shoal.cli import human_size

    info["size_bytes"] = human_size(info["size_bytes"])
    _table(["field", "value"], list(info.items()))
    return 0


def _db_drop(args: argparse.Namespace) -> int:
    if not args.yes:
        raise InvalidRequest(f"dropping deletes {args.name!r} and its files; add --yes to do it")
    _client(args).call("DELETE", f"/v1/databases/{args.name}")
    print(f"dropped {args.name}")
    return 0


def _with_progress(transfer: Callable[[Any], Any]) -> Any:
    """Runs `transfer(progress)` with the progress bar when stderr is a terminal."""
    from shoal.cli import progress_bar

    progress = progress_bar if sys.stderr.isatty() else None
    done = transfer(progress)
    if progress is not None:
        print(file=sys.stderr)  # past the bar
    return done


def _db_backup(args: argparse.Namespace) -> int:
    from shoal.cli import human_size
    from shoal.client.transfer import backup

    client = _client(args)
    done = _with_progress(
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
    from shoal.cli import human_size
    from shoal.client.transfer import load

    client = _client(args)
    done = _with_progress(lambda progress: load(client, args.name, args.file, progress=progress))
    print(
        f"loaded {args.file} ({done.kind}, {human_size(done.size)}) into {args.name}: "
        f"now at version {done.version}"
    )
    return 0


def _store(args: argparse.Namespace) -> Any:
    from shoal.server.auth import TokenStore

    return TokenStore(args.data_dir)


def _token_create(args: argparse.Namespace) -> int:
    patterns = tuple(args.database or ["*"])
    secret = _store(args).create(args.name, args.scope, patterns, replace=args.replace)
    print(secret)
    print(
        f"token {args.name!r} ({args.scope} on {', '.join(patterns)}) "
        f"{'made or given a new secret' if args.replace else 'created'}; "
        "this is the only time its secret is shown",
        file=sys.stderr,
    )
    return 0


def _token_list(args: argparse.Namespace) -> int:
    rows = [
        (
            t.name,
            t.scope,
            ", ".join(t.databases),
            datetime.datetime.fromtimestamp(t.created).isoformat(sep=" ", timespec="seconds"),
        )
        for t in _store(args).list()
    ]
    _table(["name", "scope", "databases", "created"], rows)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    _store(args).revoke(args.name)
    print(f"revoked {args.name}; the node stops accepting it within a second")
    return 0


def _token_hash(args: argparse.Namespace) -> int:
    from shoal.server.auth import hash_secret

    print(hash_secret(args.secret))
    return 0


def _remote_options(parser: argparse.ArgumentParser) -> None:
    from shoal.cli import env_option, token_options

    env_option(parser, "--url", "SHOAL_URL", "the node's URL", DEFAULT_URL)
    token_options(parser)


def _add_serve(commands: Any) -> None:
    from shoal.server.config import Settings, env_name, settable_fields

    serve = commands.add_parser(
        "serve",
        help="run a node: many databases over HTTP (native and rqlite APIs)",
        description="Run a node serving its databases over HTTP: the native API under /v1 and "
        "the rqlite API under /db. Settings come from defaults, then --config, then SHOAL_* "
        "environment variables, then these flags. SIGTERM or SIGINT stops it cleanly.",
    )
    serve.add_argument("--config", type=Path, help="a TOML file of settings (keys as below)")
    defaults = Settings()
    for f in settable_fields():
        default = getattr(defaults, f.name)
        shown = "" if default is None else f"; default {default}"
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (env {env_name(f.name)}{shown})"
        if f.type == "bool":
            serve.add_argument(
                flag, dest=f.name, action="store_const", const="true", help=help_text
            )
        else:
            serve.add_argument(flag, dest=f.name, metavar=f.name.upper(), help=help_text)
    serve.set_defaults(run=_serve)


def _add_db(commands: Any) -> None:
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
    listing = actions.add_parser("list", help="list databases", description="List databases.")
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
        _remote_options(action)


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


def _add_token(commands: Any) -> None:
    from shoal.cli import data_dir_option

    token = commands.add_parser(
        "token",
        help="create, list and revoke access tokens",
        description="Manage a node's access tokens in its data directory; works while the "
        "node runs. Only a hash of each token is stored.",
    )
    actions = token.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="create, list, revoke or hash"
    )
    create = actions.add_parser(
        "create",
        help="make a token and print its secret (shown once)",
        description="Make a token and print its secret; only its hash is kept.",
    )
    create.add_argument("name", help="a name for the token (unique)")
    create.add_argument(
        "--scope",
        choices=["read", "write", "admin"],
        default="read",
        help="read; write (also read); admin (also create, drop, load). Default read",
    )
    create.add_argument(
        "--database",
        action="append",
        help="a database name pattern it covers, such as 'tenant-*' (repeatable; default *)",
    )
    create.add_argument(
        "--replace",
        action="store_true",
        help="if a token of that name exists, give it a new secret, scope and patterns "
        "(its old secret stops working within a second)",
    )
    create.set_defaults(run=_token_create)
    listing = actions.add_parser("list", help="list tokens", description="List tokens.")
    listing.set_defaults(run=_token_list)
    revoke = actions.add_parser("revoke", help="revoke a token", description="Revoke a token.")
    revoke.add_argument("name", help="the token's name")
    revoke.set_defaults(run=_token_revoke)
    for action in (create, listing, revoke):
        data_dir_option(action)
    hashed = actions.add_parser(
        "hash",
        help="print a secret's hash, for [[tokens]] in a config file",
        description="Print the hash of a secret, to put in a [[tokens]] entry of the TOML file.",
    )
    hashed.add_argument("secret", help="the token's secret")
    hashed.set_defaults(run=_token_hash)


def _add_status(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="show a node's databases, versions and archive lag",
        description="Show a running node's state: each open database's version, and how "
        "far its archive is behind (versions not yet archived, failed rounds in a row).",
    )
    _remote_options(status)
    status.set_defaults(run=_status)


def _add_cluster(commands: Any) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="show a cluster's nodes, databases, leaders, versions and lag",
        description="Inspect the cluster that a node belongs to.",
    )
    actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION", help="status")
    status = actions.add_parser(
        "status",
        help="nodes, and each database's leader, log head and copies",
        description="Show the live nodes, and for each database its durability, leader, "
        "epoch, the version its log ends at, and each copy's version and lag.",
    )
    _remote_options(status)
    status.set_defaults(run=_cluster_status)


def add_server_commands(commands: Any) -> None:
    """Registers `serve`, `status`, `cluster`, `db` and `token` on the `shoal` parser."""
    _add_serve(commands)
    _add_status(commands)
    _add_cluster(commands)
    _add_db(commands)
    _add_token(commands)
