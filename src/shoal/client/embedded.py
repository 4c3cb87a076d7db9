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

from shoal.client.dbapi import BaseConnection, Cursor
from shoal.engine import Database, Options, Transaction
from shoal.engine.execute import Params, Result

__all__ = ["Connection", "Cursor"]


class Connection(BaseConnection):
    """A PEP 249 connection to a database file, with capture and the embedded log."""

    def __init__(
        self,
        database: str | os.PathLike[str],
        *,
        autocommit: bool = False,
        name: str | None = None,
        options: Options | None = None,
    ) -> None:
        super().__init__(autocommit=autocommit)
        self._scratch: str | None = None
        path = os.fspath(database)
        if path == ":memory:":
            self._scratch = tempfile.mkdtemp(prefix="shoal-memory-")
            path = str(Path(self._scratch) / "memory.db")
        self.database = Database(path, name=name, options=options)

    @property
    def version(self) -> int:
        """The database's version: the number of its last committed write transaction."""
        return self.database.version

    def _read(self, sql: str, params: Params) -> list[Result]:
        return self.database.query(sql, params).results

    def _write(self, sql: str, params: Params) -> list[Result]:
        return self.database.execute(sql, params).results

    def _begin(self) -> Transaction:
        return self.database.transaction()

    def _close_backend(self) -> None:
        self.database.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Connection:
        return self
