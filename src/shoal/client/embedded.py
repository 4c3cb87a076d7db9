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

from shoal.archive.archiver import ArchivePolicy, Archiver
from shoal.archive.base import BlobStore
from shoal.archive.rounds import BackgroundArchiver
from shoal.archive.stores import open_store
from shoal.client.dbapi import BaseConnection, Cursor
from shoal.engine import Database, Options, Transaction
from shoal.engine.execute import Params, Result
from shoal.engine.functions import Function
from shoal.errors import VersionNotReached

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
        archive: str | BlobStore | None = None,
        archive_policy: ArchivePolicy | None = None,
    ) -> None:
        super().__init__(autocommit=autocommit)
        self._scratch: str | None = None
        path = os.fspath(database)
        if path == ":memory:":
            self._scratch = tempfile.mkdtemp(prefix="shoal-memory-")
            path = str(Path(self._scratch) / "memory.db")
        self.database = Database(path, name=name, options=options)
        self.archiver: BackgroundArchiver | None = None
        if archive is not None:
            store = open_store(archive) if isinstance(archive, str) else archive
            self.archiver = BackgroundArchiver(Archiver(self.database, store, archive_policy))
        self._local_reads = self.database

    @property
    def version(self) -> int:
        """The database's version: the number of its last committed write transaction."""
        return self.database.version

    def _read(self, sql: str, params: Params, min_version: int | None) -> list[Result]:
        if min_version is not None and min_version > self.database.version:
            head = self.database.file_version()  # another process may have written it
            if min_version > head:
                raise VersionNotReached(min_version, head, 0)
        return self.database.read(sql, params)

    def _write(self, sql: str, params: Params) -> list[Result]:
        return self.database.execute(sql, params).results

    def _begin(self) -> Transaction:
        return self.database.transaction()

    def _register(self, function: Function) -> None:
        self.database.register(function)

    def _close_backend(self) -> None:
        if self.archiver is not None:
            self.archiver.close()  # a last round: what was committed reaches the archive
            self.archiver.rounds.archiver.store.close()
        self.database.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> Connection:
        return self
