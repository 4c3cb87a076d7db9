"""The `shoal` command. Each subcommand parses, calls one library function, formats."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw

import shoal
from shoal.engine import Database
from shoal.errors import Error
from shoal.record import Changeset, Statement, Vacuum
from shoal.record import Sequence as SequenceOp

__all__ = [
    "data_dir_option",
    "env_option",
    "format_table",
    "human_size",
    "main",
    "progress_bar",
    "token_of",
    "token_options",
]

DEFAULT_DATA_DIR = "shoal-data"


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows as an aligned text table with a header rule, as people read them."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(name) for name in columns]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [
        "  ".join(name.ljust(width) for name, width in zip(columns, widths, strict=True)),
        "  ".join("-" * width for width in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def human_size(size: float) -> str:
    """Bytes as people read them: 512 B, 3.4 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def env_option(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    help_text: str,
    default: str | None = None,
    kind: Callable[[str], Any] = str,
) -> None:
    """A flag whose default comes from an environment variable, then `default`;
    its help says both."""
    value = os.environ.get(env) or default
    shown = "" if default is None else f"; default {default}"
    parser.add_argument(
        flag,
        type=kind,
        default=None if value is None else kind(value),
        help=f"{help_text} (env {env}{shown})",
    )


def data_dir_option(
    parser: argparse.ArgumentParser, help_text: str = "the node's data directory"
) -> None:
    """--data-dir, from SHOAL_DATA_DIR, then ./shoal-data, as `shoal serve` takes it."""
    env_option(parser, "--data-dir", "SHOAL_DATA_DIR", help_text, DEFAULT_DATA_DIR, Path)


def token_options(parser: argparse.ArgumentParser) -> None:
    """--token, and --data-dir for the local admin credential sent when there is none."""
    env_option(parser, "--token", "SHOAL_TOKEN", "bearer token")
    data_dir_option(
        parser,
        "the node's data directory, when it runs on this machine: without a token, its "
        "local admin credential is sent",
    )


def token_of(args: argparse.Namespace) -> str | None:
    """The token a command sends: --token (or SHOAL_TOKEN), else the local admin
    credential of the node whose data directory is --data-dir, if this user can read it."""
    from shoal.server.auth import local_admin_secret

    token: str | None = args.token or local_admin_secret(args.data_dir)
    return token


def progress_bar(done: int, total: int) -> None:
    """A progress bar on stderr, redrawn in place: bytes done of the total."""
    width = 30
    filled = width * done // total if total else width
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {human_size(done)} / {human_size(total)}",
        end="",
        file=sys.stderr,
        flush=True,
    )


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return str(value)


def _describe(op: object) -> str:
    if isinstance(op, Changeset):
        return f"changeset {len(op.data)} B"
    if isinstance(op, Statement):
        text = " ".join(op.sql.split())
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(op, SequenceOp):
        return f"sqlite_sequence ({len(op.rows)} rows)"
    if isinstance(op, Vacuum):
        return "VACUUM barrier"
    return type(op).__name__


def _sql(args: argparse.Namespace) -> int:
    with Database(args.database) as db:
        outcome = db.execute(args.sql) if args.write else db.query(args.sql)
        for result in outcome.results:
            if result.columns:
                print(format_table(result.columns, result.rows))
            elif args.write:
                print(f"{result.rows_affected} row(s) changed")
        print(f"version {outcome.version}", file=sys.stderr)
    return 0


def _log(args: argparse.Namespace) -> int:
    with Database(args.database) as db:
        records = db.records(args.start, args.end)
    rows = [
        (
            record.version,
            record.epoch,
            datetime.datetime.fromtimestamp(record.time_ns / 1e9).isoformat(sep=" "),
            "; ".join(_describe(op) for op in record.ops),
        )
        for record in records
    ]
    print(format_table(["version", "epoch", "time", "operations"], rows))
    return 0


def _version(args: argparse.Namespace) -> int:
    sqlite, binding = apsw.sqlite_lib_version(), apsw.apsw_version()
    print(f"shoal {shoal.__version__} (SQLite {sqlite}, APSW {binding})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shoal",
        description="shoal: SQLite that scales out. Every write is captured and logged.",
    )
    parser.add_argument("--version", action="version", version=f"shoal {shoal.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    sql = commands.add_parser(
        "sql",
        help="run SQL on a database file, in-process",
        description="Run SQL on a database file in-process. Reads by default; --write runs the "
        "statements as one captured write transaction.",
    )
    sql.add_argument("database", help="path of the database file (created if missing)")
    sql.add_argument("sql", help="one or more SQL statements")
    sql.add_argument("--write", action="store_true", help="run as one write transaction")
    sql.set_defaults(run=_sql)

    log = commands.add_parser(
        "log",
        help="list the records in a database's embedded log",
        description="List the records of a database's embedded log: version, epoch, commit time "
        "and the operations each carries.",
    )
    log.add_argument("database", help="path of the database file")
    log.add_argument("--start", type=int, default=1, help="first version to list (default 1)")
    log.add_argument("--end", type=int, default=None, help="last version to list (default newest)")
    log.set_defaults(run=_log)

    version = commands.add_parser(
        "version", help="print versions", description="Print shoal's, SQLite's and APSW's versions."
    )
    version.set_defaults(run=_version)

    # Imported here: these modules use format_table from this one.
    from shoal.archive.commands import add_archive_commands
    from shoal.server.commands import add_server_commands
    from shoal.shell import add_shell_command

    add_server_commands(commands)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
