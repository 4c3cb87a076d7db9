"""`shoal token`: a node's access tokens, kept (as hashes) in its data directory."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from shoal.cli.format import local_time, print_table
from shoal.cli.options import data_dir_option

if TYPE_CHECKING:
    from shoal.node.auth import TokenStore

__all__ = ["add_token_commands"]


def _store(args: argparse.Namespace) -> TokenStore:
    from shoal.node.auth import TokenStore  # the server's modules load slowly

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
        (t.name, t.scope, ", ".join(t.databases), local_time(t.created))
        for t in _store(args).list()
    ]
    print_table(["name", "scope", "databases", "created"], rows)
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    _store(args).revoke(args.name)
    print(f"revoked {args.name}; the node stops accepting it within a second")
    return 0


def _token_hash(args: argparse.Namespace) -> int:
    from shoal.node.auth import hash_secret

    print(hash_secret(args.secret))
    return 0


def add_token_commands(commands: Any) -> None:
    """Registers `token` and its actions on the `shoal` parser's subcommands."""
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
