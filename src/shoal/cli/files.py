"""`shoal sql`, `shoal log` and `shoal version`: a database file, in this process."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import apsw

import shoal
from shoal.cli.format import local_time, print_table
from shoal.engine import Database
from shoal.record import Changeset, Statement, Vacuum
from shoal.record import Sequence as SequenceOp

__all__ = ["add_file_commands"]


def _sql(args: argparse.Namespace) -> int:
    with Database(args.database) as db:
        outcome = db.execute(args.sql) if args.write else db.query(args.sql)
        for result in outcome.results:
            if result.columns:
                print_table(result.columns, result.rows)
            elif args.write:
                print(f"{result.rows_affected} row(s) changed")
        print(f"version {outcome.version}", file=sys.stderr)
    return 0


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


def _log(args: argparse.Namespace) -> int:
    with Database(args.database) as db:
        records = db.records(args.start, args.end)
    rows = [
        (
            record.version,
            record.epoch,
            local_time(record.time_ns / 1e9, timespec="auto"),
            "; ".join(_describe(op) for op in record.ops),
        )
        for record in records
    ]
    print_table(["version", "epoch", "time", "operations"], rows)
    return 0


def _version(args: argparse.Namespace) -> int:
    sqlite, binding = apsw.sqlite_lib_version(), apsw.apsw_version()
    print(f"shoal {shoal.__version__} (SQLite {sqlite}, APSW {binding})")
    return 0


def add_file_commands(commands: Any) -> None:
    """Registers `sql`, `log` and `version` on the `shoal` parser's subcommands."""
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
