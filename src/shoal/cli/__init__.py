"""The `shoal` command: one module per group of subcommands, each of which parses
its arguments, calls one library function and prints what it returned."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import shoal
from shoal.cli.archive import add_archive_commands
from shoal.cli.databases import add_database_commands, add_query_many_command
from shoal.cli.files import add_file_commands
from shoal.cli.node import add_node_commands
from shoal.cli.shell import add_shell_command
from shoal.cli.tokens import add_token_commands
from shoal.errors import Error

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal",
        description="shoal: SQLite that scales out. Every write is captured and logged.",
    )
    parser.add_argument("--version", action="version", version=f"shoal {shoal.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_file_commands(commands)
    add_node_commands(commands)
    add_database_commands(commands)
    add_query_many_command(commands)
    add_token_commands(commands)
    add_archive_commands(commands)
    add_shell_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `shoal`: what it can do
        parser.print_help()
        return 0
    try:
        return int(args.run(args))
    except Error as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
