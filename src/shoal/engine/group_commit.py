"""Group commit: concurrent one-statement write requests share one transaction, one
record and one version, each in a savepoint of its own so that a failing request
undoes only itself.

Whoever holds the writer commits every request queued so far, in groups of at most
MAX_GROUP; a caller whose request a group already carried finds it done. A group
cut short (a brief run out of time, see execute.Deadline) is rolled back and its
requests wait again: the caller that ran it gets `CutShort` for each of its own
requests not yet committed, to run them again elsewhere, and the others' go with
the next group. (Groups before the cut stay committed: their requests are done.)"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from shoal.engine.execute import CutShort, Params, Result
from shoal.engine.sqltext import Kind, classify, is_single_statement
from shoal.errors import Error

__all__ = ["MAX_GROUP", "GroupCommit", "groupable"]

MAX_GROUP = 64  # requests committed together, at most


def groupable(sql: str) -> bool:
    """Whether `sql` may share a transaction: one plain statement (no schema
    change, pragma or savepoint)."""
    return is_single_statement(sql) and classify(sql) in (Kind.READ, Kind.WRITE)


class GroupTransaction(Protocol):
    """What a group needs of the write transaction it runs in (engine.Transaction)."""

    version: int

    @property
    def is_open(self) -> bool: ...

    def execute(self, sql: str, params: Params = None) -> list[Result]: ...

    def execute_isolated(self, sql: str, params: Params = None) -> list[Result]: ...

    def commit(self) -> int: ...

    def rollback(self) -> None: ...


@dataclass(eq=False)
class Request:
    """One single-statement request waiting for a group commit."""

    sql: str
    params: Params
    results: list[Result] | None = None
    error: BaseException | None = None
    version: int = 0
    done: bool = False

    def run(self, tx: GroupTransaction, *, isolated: bool) -> None:
        try:
            if isolated:
                self.results = tx.execute_isolated(self.sql, self.params)
            else:
                self.results = tx.execute(self.sql, self.params)
        except Error as exc:
            self.error = exc
            if not isolated:
                tx.rollback()


class GroupCommit:
    """The queue of one database's waiting requests.

    `write_lock` is the writer's (re-entrant: the transactions a group opens take
    it again); `begin` opens a write transaction; `version` is the database's
    version, reported to a group's requests when no transaction could open."""

    def __init__(
        self,
        write_lock: threading.RLock,
        begin: Callable[[], GroupTransaction],
        version: Callable[[], int],
    ) -> None:
        self._write_lock = write_lock
        self._begin = begin
        self._version = version
        self._lock = threading.Lock()
        self.pending: list[Request] = []

    def submit(self, sql: str, params: Params) -> tuple[int, list[Result]]:
        """Runs one request, alone or with others queued meanwhile: the version
        that carried it and its results, or its error raised."""
        answer = self.submit_many([(sql, params)])[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def submit_many(
        self, statements: list[tuple[str, Params]]
    ) -> list[tuple[int, list[Result]] | BaseException]:
        """`submit` for several requests from one thread at once: each one's version
        and results, or its error (`CutShort` for one a brief run did not commit)."""
        requests = [Request(sql, params) for sql, params in statements]
        with self._lock:
            self.pending += requests
        with self._write_lock:
            if not all(request.done for request in requests):
                try:
                    self.commit_pending()
                except CutShort:
                    with self._lock:
                        self.pending = [r for r in self.pending if r not in requests]
        answers: list[tuple[int, list[Result]] | BaseException] = []
        for request in requests:
            if not request.done:
                answers.append(CutShort())
            elif request.error is not None:
                answers.append(request.error)
            else:
                assert request.results is not None
                answers.append((request.version, request.results))
        return answers

    def commit_pending(self) -> None:
        """Runs the queued requests, one transaction per round (the writer is held)."""
        while True:
            with self._lock:
                batch, self.pending = self.pending[:MAX_GROUP], self.pending[MAX_GROUP:]
            if not batch:
                return
            try:
                retry = self._commit_group(batch)
            except CutShort:
                with self._lock:
                    self.pending[:0] = batch
                raise
            with self._lock:
                self.pending[:0] = retry

    def _commit_group(self, batch: list[Request]) -> list[Request]:
        """One transaction for `batch`; returns the requests to run again, if SQLite
        rolled the transaction back because of another one."""
        tx: GroupTransaction | None = None
        retry: list[Request] = []
        try:
            tx = self._begin()
            for request in batch:
                request.run(tx, isolated=len(batch) > 1)
                if not tx.is_open:
                    retry = [other for other in batch if other is not request]
                    break
            if tx.is_open:
                tx.commit()
        except CutShort:
            if tx is not None:
                tx.rollback()
            for request in batch:
                request.results = request.error = None
            raise
        except BaseException as exc:
            if tx is not None:
                tx.rollback()
            for request in batch:
                request.error = request.error or exc
            retry = []
        for request in batch:
            if request in retry:
                request.results = request.error = None
            else:
                request.version, request.done = (tx.version if tx else self._version()), True
        return retry
