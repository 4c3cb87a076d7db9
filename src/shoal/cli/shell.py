"""`shoal shell`: an interactive SQL shell over any shoal DB-API connection.

It uses only the DB-API (cursor, execute, fetchall, description, commit,
rollback) and the connection's `version`, so it works the same in-process and
against a server.
Each statement commits on its own, as in sqlite3's shell, unless the user opens
a transaction with BEGIN, which then lasts until COMMIT or ROLLBACK.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import apsw

import shoal
from shoal.cli.format import format_table
from shoal.cli.options import DEFAULT_URL, token_of, token_options
from shoal.dump import dump, user_objects
from shoal.engine.sqltext import leading_keyword, split_statements
from shoal.errors import Error

__all__ = ["MODES", "add_shell_command", "run_shell"]

PROMPT = "shoal> "
CONTINUE = "  ...> "
MODES = ("table", "csv", "json")
HISTORY_LENGTH = 1000

_HELP = """\
.dump                the schema and rows as SQL that recreates them, in one transaction
.exit                leave the shell (also .quit)
.help                this list
.mode table|csv|json how results are printed
.quit                leave the shell (also .exit)
.read FILE           run the SQL statements (and dot-commands) in FILE
.schema [TABLE]      the CREATE statements of every object, or of TABLE and its indexes
.tables              the names of the tables and views
.timer on|off        print how long each statement took"""

Reader = Callable[[bool], str | None]
"""Returns the next line, or None at the end; the flag says a statement is unfinished."""


class UsageError(Exception):
    """A dot-command that is unknown or given the wrong arguments."""


class _Shell:
    """The state a session keeps between lines: output mode, timer, failures."""

    def __init__(
        self, connection: Any, stdout: TextIO, stderr: TextIO, mode: str, timer: bool
    ) -> None:
        self.connection = connection
        self.stdout = stdout
        self.stderr = stderr
        self.mode = mode
        self.timer = timer
        self.failed = False
        self.done = False
        self.in_transaction = False  # opened by the user's BEGIN: do not commit per statement

    def feed(self, read: Reader, interactive: bool) -> None:
        """Runs lines until the reader ends or .quit: dot-commands where a statement
        would start, SQL once apsw.complete says the statement is complete."""
        pending = ""
        while not self.done:
            try:
                line = read(bool(pending))
            except KeyboardInterrupt:
                if not interactive:
                    raise
                self.stdout.write("\n")  # Ctrl-C drops the unfinished statement
                pending = ""
                continue
            if line is None:
                break
            if not pending and line.lstrip().startswith("."):
                self.guard(self.command, line.strip())
            elif pending or line.strip():
                pending += line if line.endswith("\n") else line + "\n"
                if apsw.complete(pending):
                    self.run_sql(pending)
                    pending = ""
        if pending:
            self.run_sql(pending)  # the last statement may lack its ';'

    def guard(self, action: Callable[[str], None], text: str) -> None:
        """Runs one command or statement, reporting an error instead of stopping."""
        try:
            action(text)
        except (Error, OSError, UsageError) as exc:
            self.failed = True
            _report(exc, self.stderr)

    def run_sql(self, text: str) -> None:
        for statement in split_statements(text):
            self.guard(self.run_statement, statement)

    def run_statement(self, sql: str) -> None:
        started = time.perf_counter()
        cursor = self.connection.cursor()
        try:
            cursor.execute(sql)
        except Error:
            if not self.in_transaction:  # release the writer that a failed write took
                self.connection.rollback()
            raise
        rows = cursor.fetchall() if cursor.description else None
        self._track_transaction(sql)
        if not self.in_transaction:
            self.connection.commit()
        elapsed = time.perf_counter() - started
        if rows is not None:
            self.show([column[0] for column in cursor.description], rows)
        if self.timer:
            self.print(f"time: {elapsed:.3f} s")

    def _track_transaction(self, sql: str) -> None:
        keyword = leading_keyword(sql)
        if keyword == "BEGIN":
            self.in_transaction = True
        elif keyword in ("COMMIT", "END") or (
            keyword == "ROLLBACK" and "TO" not in sql.upper().split()
        ):
            self.in_transaction = False

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """The dumper's and the schema commands' way to read."""
        cursor = self.connection.cursor()
        cursor.execute(sql)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        return rows

    def show(self, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        if self.mode == "csv":
            writer = csv.writer(self.stdout, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([_csv_value(value) for value in row] for row in rows)
        elif self.mode == "json":
            objects = (
                "{"
                + ", ".join(
                    f"{_json_text(c)}: {_json_text(v)}" for c, v in zip(columns, row, strict=True)
                )
                + "}"
                for row in rows
            )
            self.print("[" + ",\n ".join(objects) + "]")
        else:
            self.print(format_table(columns, rows))

    def print(self, text: str) -> None:
        self.stdout.write(text + "\n")

    def command(self, line: str) -> None:
        try:
            name, *args = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{exc}: {line}") from None
        match name, args:
            case ".help", []:
                self.print(_HELP)
            case ".tables", []:
                objects = user_objects(self.query)
                for table in sorted(o.name for o in objects if o.type in ("table", "view")):
                    self.print(table)
            case ".schema", [] | [_]:
                wanted = args[0].lower() if args else None
                for o in user_objects(self.query):
                    if wanted is None or o.table.lower() == wanted:
                        self.print(f"{o.sql};")
            case ".dump", []:
                self.print("BEGIN;")
                for statement in dump(self.query):
                    self.print(statement)
                self.print("COMMIT;")
            case ".read", [path]:
                with open(path, encoding="utf-8") as file:
                    self.feed(_stream_reader(file), interactive=False)
            case ".mode", [mode] if mode in MODES:
                self.mode = mode
            case ".timer", ["on" | "off" as state]:
                self.timer = state == "on"
            case ((".quit" | ".exit"), []):
                self.done = True
            case _:
                usage = [u for u in _HELP.splitlines() if u.split()[0] == name]
                if not usage:
                    raise UsageError(f"unknown command {name}; .help lists them")
                raise UsageError(f"usage: {usage[0]}")


def _report(exc: BaseException, stderr: TextIO) -> None:
    stderr.write(f"error: {type(exc).__name__}: {exc}\n")


def _csv_value(value: Any) -> Any:
    """NULL as an empty field, blobs in base64: csv has no types."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value


def _json_text(value: Any) -> str:
    """A JSON value: blobs as base64 strings; infinities as 1e999, the JSON number
    that reads back as infinity (json.dumps would write Infinity, which is not JSON)."""
    if isinstance(value, float):
        if math.isinf(value):
            return "1e999" if value > 0 else "-1e999"
        return repr(value)
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode("ascii")
    return json.dumps(value, ensure_ascii=False)


def run_shell(
    connection: Any,
    *,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    interactive: bool,
    history_file: Path | None,
    mode: str = "table",
    timer: bool = False,
) -> int:
    """Reads statements and dot-commands until the end of input or .quit.

    Returns 0, or 1 when input was piped and any statement or command failed (so
    scripts can tell); an interactive user has seen the errors already.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    shell = _Shell(connection, stdout, stderr, mode, timer)
    if not interactive:
        shell.feed(_stream_reader(stdin), interactive=False)
        return 1 if shell.failed else 0
    shell.print(
        f"shoal {shoal.__version__}, database version {connection.version}. "
        "Enter .help for the commands; end statements with ';'."
    )
    if stdin is sys.stdin and stdout is sys.stdout:
        with _history(history_file) as remember:
            shell.feed(_console_reader(remember), interactive=True)
    else:
        shell.feed(_stream_reader(stdin, prompts=stdout), interactive=True)
    return 0


def _stream_reader(stream: TextIO, prompts: TextIO | None = None) -> Reader:
    """Reads lines of a file or a pipe, prompting on `prompts` if given."""

    def read(continuing: bool) -> str | None:
        if prompts is not None:
            prompts.write(CONTINUE if continuing else PROMPT)
            prompts.flush()
        return stream.readline() or None

    return read


def _console_reader(remember: Callable[[str], None]) -> Reader:
    """input() edits the line with readline when the console is a terminal."""

    def read(continuing: bool) -> str | None:
        try:
            line = input(CONTINUE if continuing else PROMPT)
        except EOFError:
            sys.stdout.write("\n")
            return None
        if line.strip():
            remember(line)
        return line + "\n"

    return read


@contextlib.contextmanager
def _history(path: Path | None) -> Iterator[Callable[[str], None]]:
    """Loads the history before the session and saves it after. It yields the way
    to add a line, which works even when input() bypasses readline (no terminal)."""
    try:
        import readline  # here, not at the top: importing it may write to a terminal
    except ImportError:  # Windows: no line editing, no history
        yield lambda line: None
        return
    readline.set_auto_history(False)
    readline.clear_history()
    if path is not None:
        with contextlib.suppress(OSError):  # missing or unreadable: start afresh
            readline.read_history_file(path)
    try:
        yield readline.add_history
    finally:
        if path is not None:
            readline.set_history_length(HISTORY_LENGTH)
            with contextlib.suppress(OSError):  # history is a convenience, not data
                readline.write_history_file(path)


def add_shell_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Registers `shoal shell TARGET` on the shoal command's subcommands."""
    shell = commands.add_parser(
        "shell",
        help="an interactive SQL shell on a database file or a server",
        description="An interactive SQL shell on a database file (in-process) or a shoal "
        "server. Each statement commits on its own unless opened with BEGIN. Dot-commands "
        "(.help lists them) show tables and schema, dump, read files and set the output "
        "mode. With piped input it prints no prompts and exits 1 if any statement failed.",
    )
    shell.add_argument(
        "target",
        help="a database file path, a server URL (http://host:4001/db), or a bare name (db): "
        "that database on the node at $SHOAL_URL (default http://127.0.0.1:4001)",
    )
    token_options(shell)  # for a server only
    shell.add_argument(
        "--mode", choices=MODES, default="table", help="how results are printed (default table)"
    )
    shell.add_argument("--timer", action="store_true", help="print how long each statement took")
    shell.set_defaults(run=_shell_command)


def _shell_command(args: argparse.Namespace) -> int:
    try:
        connection = _connect(args)
    except Error as exc:
        _report(exc, sys.stderr)
        return 1
    interactive = sys.stdin.isatty()
    try:
        return run_shell(
            connection,
            stdin=sys.stdin,
            stdout=sys.stdout,
            stderr=sys.stderr,
            interactive=interactive,
            history_file=Path.home() / ".shoal_history" if interactive else None,
            mode=args.mode,
            timer=args.timer,
        )
    except KeyboardInterrupt:  # Ctrl-C while a statement runs
        return 130
    finally:
        connection.close()


def _connect(args: argparse.Namespace) -> Any:
    """The token goes to servers only: a file refuses one, and $SHOAL_TOKEN may be set."""
    target = shell_target(args.target)
    if target.startswith(("http://", "https://")):
        return shoal.connect(target, token=token_of(args))
    return shoal.connect(target)


def shell_target(target: str) -> str:
    """What `shoal shell TARGET` opens: a URL or a file as given, and a bare name that
    is no existing file (`notes`) as that database on the node at $SHOAL_URL (or
    the default node), rather than a new file called `notes`."""
    bare = not any(mark in target for mark in ("/", os.sep, ".", ":"))
    if bare and not Path(target).exists():
        base = os.environ.get("SHOAL_URL") or DEFAULT_URL
        return f"{base.rstrip('/')}/{target}"
    return target
