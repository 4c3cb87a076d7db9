"""Clients: the DB-API 2.0 connection, embedded (in-process) or remote (a node)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from shoal.archive.archiver import ArchivePolicy
from shoal.archive.base import BlobStore
from shoal.client import embedded, remote, replica
from shoal.client.dbapi import BaseConnection
from shoal.engine import Options
from shoal.errors import InterfaceError

__all__ = ["connect"]


def connect(
    database: str | os.PathLike[str],
    *,
    token: str | None = None,
    autocommit: bool = False,
    name: str | None = None,
    options: Options | None = None,
    timeout: float = 60.0,
    archive: str | BlobStore | None = None,
    archive_policy: ArchivePolicy | None = None,
    replica_of: str | Sequence[str] | None = None,
    max_lag_seconds: float | None = None,
) -> BaseConnection:
    """Opens a DB-API 2.0 connection.

    `database` is a file path (created when missing), ":memory:" (a scratch file,
    removed on close), or a node's URL "http(s)://host:4001/mydb" (`token` is its
    bearer token, by default $SHOAL_TOKEN; `timeout` bounds each HTTP request). Both
    kinds behave alike: a write opens a transaction that `commit()` ends as one
    record and one version; `autocommit=True` commits every write statement on its
    own.

    For a file, `archive` ("s3://bucket/prefix", "file:///path", a folder, or a
    BlobStore) runs the archiver inside the application: continuous backup, with
    point-in-time restore by `shoal restore`, and no server.

    With `replica_of` (a node's database URL, or several nodes' for the same
    database) the file is an embedded replica: seeded from the node when new, kept
    in step by a background thread, read in process; writes go to the node, and
    `commit()` returns once the local copy has them (docs/embedded.md). With
    `max_lag_seconds`, a read waits that long for news from a node when the copy
    has heard none for longer, then raises StaleReplica.
    """
    if isinstance(database, str) and database.startswith(("http://", "https://")):
        if name is not None or options is not None or archive is not None:
            raise InterfaceError(
                "name, options and archive apply to files; a node archives its own databases"
            )
        return remote.Connection(database, token=token, autocommit=autocommit, timeout=timeout)
    if replica_of is not None:
        if name is not None or options is not None or archive is not None:
            raise InterfaceError("name, options and archive do not apply to a replica")
        return replica.Connection(
            database,
            replica_of,
            token=token,
            autocommit=autocommit,
            timeout=timeout,
            max_lag_seconds=max_lag_seconds,
        )
    if token is not None:
        raise InterfaceError("a token is for a node's URL, not a database file")
    return embedded.Connection(
        database,
        autocommit=autocommit,
        name=name,
        options=options,
        archive=archive,
        archive_policy=archive_policy,
    )
