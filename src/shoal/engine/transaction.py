"""A write transaction: the statements it runs on a database's one writer, what
capture makes of them, and the one record its commit logs.

A transaction holds the writer from the moment `Database.transaction()` takes it
(that is where the lock is acquired and `BEGIN IMMEDIATE` runs) until `commit()`
or `rollback()` gives it back. It knows its database only as a `Host`: the four
things it asks of it are named there."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

import apsw

from shoal.engine import log
from shoal.engine.capture import Capture, SequenceRows
from shoal.engine.execute import Deadline, Limits, Params, Result, run
from shoal.engine.policy import Policy
from shoal.errors import Error, OperationalError, from_apsw
from shoal.record import Op, Record, Vacuum, encode

__all__ = ["CommitHook", "Host", "Transaction", "Writer"]


class CommitHook(Protocol):
    """Where a leader's records go besides its own log: a cluster's control plane.

    Both calls run with the writer held, so records arrive one at a time, in order.
    """

    def before_commit(self, version: int, record: bytes) -> None:
        """Called after the record is logged locally and before COMMIT; raising
        rolls the transaction back (a `sync` database appends here)."""
        ...

    def after_commit(self, version: int, record: bytes) -> None:
        """Called once the transaction is committed (an `async` database queues here)."""
        ...


@dataclass(frozen=True, eq=False)
class Writer:
    """A database's one write connection, what runs statements on it, and the lock
    that gives it to one transaction at a time. The lock is re-entrant: group
    commit and `set_foreign_keys` hold it around the transactions they open."""

    conn: apsw.Connection
    policy: Policy
    deadline: Deadline
    limits: Limits
    lock: threading.RLock


class Host(Protocol):
    """What a transaction asks of the database whose writer it holds."""

    commit_hook: CommitHook | None

    def _record(self, version: int, ops: tuple[Op, ...]) -> Record:
        """The record of `ops` at `version`, stamped with the database's name and epoch."""
        ...

    def _committed(self, version: int, sequence: SequenceRows | None) -> None:
        """The database's state after a commit, told while the writer is still held."""
        ...

    def _advanced(self, version: int) -> None:
        """A new version, told once the writer is free again."""
        ...


class Transaction:
    """The one open write transaction of a database; holds the writer until it ends."""

    def __init__(self, host: Host, writer: Writer, base: int, capture: Capture) -> None:
        self._host = host
        self._writer = writer
        self._base = base  # the version the transaction began at
        self._capture = capture
        self.version = base
        self._barrier = False
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    def execute(self, sql: str, params: Params = None) -> list[Result]:
        """Runs `sql` in the transaction. A failing statement undoes only itself,
        unless SQLite rolls back the whole transaction (INSERT OR ROLLBACK, a full
        disk): then the transaction ends, and the error says so."""
        self._check_open()
        writer = self._writer
        try:
            return run(
                writer.conn,
                writer.policy,
                writer.deadline,
                sql,
                params,
                writer.limits,
                self._capture.before_statement,
            )
        except Error as exc:
            if writer.conn.getautocommit() or self._capture.broken:
                self.rollback()
                exc.args = (f"{exc}; the whole transaction was rolled back",)
            raise

    def execute_isolated(self, sql: str, params: Params = None) -> list[Result]:
        """Runs one plain statement (no schema, pragma or savepoint) in a savepoint
        of its own, so that its failure undoes it whole and nothing else.

        Capture needs no cut here: a plain statement adds no operation while it
        runs, and the session's changes follow the savepoint's rollback."""
        conn, policy = self._writer.conn, self._writer.policy
        with policy.trusted():
            conn.execute("SAVEPOINT _shoal_request")
        try:
            results = self.execute(sql, params)
        except Error:
            if self._open:
                with policy.trusted():
                    conn.execute("ROLLBACK TO _shoal_request")
                    conn.execute("RELEASE _shoal_request")
            raise
        with policy.trusted():
            conn.execute("RELEASE _shoal_request")
        return results

    def add_barrier(self) -> None:
        self._barrier = True

    def run_trusted(self, sql: str) -> None:
        """Runs one of the engine's own statements, and logs it as an operation."""
        self._check_open()
        with self._writer.policy.trusted():
            self._writer.conn.execute(sql)
        self._capture.add_statement(sql)

    def commit(self) -> int:
        """Commits; returns the new version (unchanged when nothing was written)."""
        self._check_open()
        host, conn = self._host, self._writer.conn
        try:
            with self._writer.policy.trusted():
                ops, sequence = self._capture.finish()
                if self._barrier:
                    ops.append(Vacuum())
                version, raw = self._base, b""
                if ops:
                    version += 1
                    raw = encode(host._record(version, tuple(ops)))
                    log.append(conn, version, raw)
                    if host.commit_hook is not None:
                        host.commit_hook.before_commit(version, raw)
                conn.execute("COMMIT")
        except BaseException as exc:
            self.rollback()
            if isinstance(exc, apsw.Error):
                raise from_apsw(exc) from None
            raise
        host._committed(version, sequence)
        self.version = version
        try:
            if raw and host.commit_hook is not None:
                host.commit_hook.after_commit(version, raw)
        finally:
            self._end()
        if raw:
            host._advanced(version)
        return version

    def rollback(self) -> None:
        """Undoes everything; produces no record and no version."""
        if not self._open:
            return
        self._capture.discard()
        try:
            if not self._writer.conn.getautocommit():
                with self._writer.policy.trusted():
                    self._writer.conn.execute("ROLLBACK")
        finally:
            self._end()

    def _end(self) -> None:
        if self._open:
            self._open = False
            self._writer.lock.release()

    def _check_open(self) -> None:
        if not self._open:
            raise OperationalError("the transaction has ended")

    def __enter__(self) -> Transaction:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._open:
            return  # committed or rolled back explicitly inside the block
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
