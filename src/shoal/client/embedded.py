"""`shoal.connect("app.db")`: the DB-API in-process, over the engine.

It behaves like `sqlite3` in its default (legacy) transaction mode: a statement
that writes opens a transaction, `commit()` ends it and produces one record, and
reads outside a transaction go to a reader connection so they never wait for the
writer. Differences from `sqlite3` are listed in docs/embedded.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shoal.client.dbapi import Cursor
from shoal.engine import Database, Options, Transaction
from shoal.engine.execute import Params, Result
from shoal.engine.sqltext import Kind, classify, leading_keyword
from shoal.errors import InterfaceError, ReadOnly, Refused

__all__ = ["Connection", "Cursor", "connect"]

_READ_FIRST = frozenset({Kind.READ, Kind.PRAGMA})


class Connection:
    """A PEP 249 connection to a database file, with capture and the embedded log."""

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        autocommit: bool = False,
        name: str | None = None,
        options: Options | None = None,
    ) -> None:
        self._scratch: str | None = None
        path = os.fspath(database)
        if path == ":memory:":
            self._scratch = tempfile.mkdtemp(prefix="shoal-memory-")
            path = str(Path(self._scratch) / "memory.db")
        self.database = Database(path, name=name, options=options)
        self.autocommit = autocommit
        self._tx: Transaction | None = None
        self._closed = False

    @property
    def in_transaction(self) -> bool:
        return self._tx is not None

    @property
    def version(self) -> int:
        """The database's version: the number of its last committed write transaction."""
        return self.database.version

    def cursor(self) -> Cursor:
        self.check_open()
        return Cursor(self)

    def execute(self, sql: str, parameters: Params = None) -> Cursor:
        """A shortcut, as in sqlite3: a new cursor with `sql` executed."""
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: list[Params]) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def commit(self) -> None:
        """Commits the open transaction, if any: one record, one new version."""
        self.check_open()
        tx, self._tx = self._tx, None
        if tx is not None:
            tx.commit()

    def rollback(self) -> None:
        """Rolls the open transaction back, if any: no record, no version."""
        self.check_open()
        tx, self._tx = self._tx, None
        if tx is not None:
            tx.rollback()

    def close(self) -> None:
        """Rolls back anything uncommitted (as sqlite3 does) and closes the database."""
        if self._closed:
            return
        if self._tx is not None:
            self._tx.rollback()
            self._tx = None
        self.database.close()
        self._closed = True
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def check_open(self) -> None:
        if self._closed:
            raise InterfaceError("the connection is closed")

    def run(self, sql: str, params: Params) -> list[Result]:
        """Routes one request: to the open transaction, a reader, or a new transaction."""
        self.check_open()
        kind = classify(sql)
        if kind is Kind.TRANSACTION:
            return self._transaction_statement(sql, params)
        if self._tx is not None:
            return self._in_transaction(sql, params)
        if kind in _READ_FIRST:
            try:
                return self.database.query(sql, params).results
            except ReadOnly:
                pass  # it writes after all (a PRAGMA that sets, WITH ... INSERT)
        if kind is Kind.VACUUM or self.autocommit:
            return self.database.execute(sql, params).results
        self._tx = self.database.transaction()
        return self._in_transaction(sql, params)

    def _in_transaction(self, sql: str, params: Params) -> list[Result]:
        """Runs in the open transaction, forgetting it if SQLite rolled it back."""
        assert self._tx is not None
        try:
            return self._tx.execute(sql, params)
        finally:
            if not self._tx.is_open:
                self._tx = None

    def _transaction_statement(self, sql: str, params: Params) -> list[Result]:
        """BEGIN, COMMIT and ROLLBACK map to the connection; savepoints run inside."""
        keyword = leading_keyword(sql)
        if keyword in ("COMMIT", "END"):
            self.commit()
        elif keyword == "ROLLBACK" and " TO " not in f" {sql.upper()} ":
            self.rollback()
        elif keyword == "BEGIN":
            if self._tx is not None:
                raise Refused("cannot BEGIN: a transaction is already open")
            self._tx = self.database.transaction()
        else:  # SAVEPOINT, RELEASE, ROLLBACK TO
            if self._tx is None:
                self._tx = self.database.transaction()
            return self._in_transaction(sql, params)
        return [Result()]

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Commits on success and rolls back on error; does not close (as sqlite3)."""
        if exc_type is None:
            self.commit()
        else:
            self.rollback()


def connect(
    database: str | os.PathLike[str],
    *,
    autocommit: bool = False,
    name: str | None = None,
    options: Options | None = None,
) -> Connection:
    """Opens a DB-API 2.0 connection.

    `database` is a file path (created when missing) or ":memory:" (a scratch
    file, removed on close). Later versions accept "http://host:4001/db" for a
    server. `autocommit=True` commits every write statement on its own.
    """
    if isinstance(database, str) and database.startswith(("http://", "https://")):
        raise InterfaceError(
            "connecting to a shoal server needs shoal serve and the remote client, "
            "which this version does not have yet"
        )
    return Connection(database, autocommit=autocommit, name=name, options=options)
