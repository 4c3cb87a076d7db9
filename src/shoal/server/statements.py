"""Running a request's statements on a database: the work both API dialects share.

A request is a list of statements and a choice: all in one transaction (the
first failure rolls everything back) or each on its own (a failure is that
statement's alone). The outcome keeps one item per statement, a Result or the
Error it raised, so each dialect can report it in its own shape. One error is
raised instead: a write refused because this copy does not lead, before
anything committed, so that routing can send the whole request to the leader.
These functions block on SQLite: the HTTP layer runs them on the node's thread
pools.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from shoal.engine import Database, Outcome, Result
from shoal.engine.execute import CutShort, Params
from shoal.engine.group_commit import groupable
from shoal.engine.sqltext import Kind, classify
from shoal.errors import Error, NotLeader, QueryWrites, ReadOnly

__all__ = [
    "Batch",
    "Statement",
    "Write",
    "is_brief",
    "is_read_only",
    "run_execute",
    "run_query",
    "run_request",
    "run_writes",
]


@dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    params: Params = None


@dataclass
class Batch:
    """One item per SQL statement run (a Result or an Error), the request statement
    it came from (a string may hold several), its time in seconds; and the version."""

    version: int
    items: list[Result | Error] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    first_error: tuple[int, Error] | None = None
    """The first failure and the index of the request statement that raised it."""

    def add(self, item: Result | Error, origin: int, started: float) -> None:
        if self.first_error is None and isinstance(item, Error):
            self.first_error = origin, item
        self.items.append(item)
        self.origins.append(origin)
        self.seconds.append(time.perf_counter() - started)

    def extend(self, results: list[Result], origin: int, started: float) -> None:
        """Results of one statement string (several when it held several statements)."""
        for result in results or [Result()]:
            self.add(result, origin, started)

    def merge(self, other: Batch, origin: int) -> None:
        """Appends the items of a batch run for request statement `origin` alone."""
        if self.first_error is None and other.first_error is not None:
            self.first_error = origin, other.first_error[1]
        self.version = max(self.version, other.version)
        self.items += other.items
        self.origins += [origin] * len(other.items)
        self.seconds += other.seconds


def is_read_only(statements: list[Statement]) -> bool:
    """True when every statement reads (SELECT, VALUES, EXPLAIN), by its first keyword."""
    return all(classify(s.sql) is Kind.READ for s in statements)


def _each(
    db: Database,
    statements: list[Statement],
    run: Callable[[Statement], Outcome],
    stop: bool,
    started_at: float | None = None,
) -> Batch:
    """Runs each statement with `run`; after a failure, goes on unless `stop`.
    (`started_at`: when the one statement's work began, if `run` only reports it.)"""
    batch = Batch(db.version)
    for origin, statement in enumerate(statements):
        started = time.perf_counter() if started_at is None else started_at
        try:
            outcome = run(statement)
        except Error as exc:
            if not batch.items and _not_leading(exc):
                raise
            batch.add(exc, origin, started)
            if stop:
                break
            continue
        batch.version = max(batch.version, outcome.version)
        batch.extend(outcome.results, origin, started)
    return batch


def run_query(db: Database, statements: list[Statement]) -> Batch:
    """Each statement on this thread's reader; a statement that writes fails alone."""
    return _each(db, statements, lambda s: db.query(s.sql, s.params), stop=False)


def run_execute(db: Database, statements: list[Statement], *, transaction: bool) -> Batch:
    """Writes: all in one transaction, or each statement its own (group-committed)."""
    if transaction and len(statements) > 1:
        return _in_one_transaction(db, statements)
    return _each(db, statements, lambda s: db.execute(s.sql, s.params), stop=transaction)


Write = tuple[list[Statement], bool]
"""A write request: its statements, and whether they are one transaction."""


def is_brief(write: Write) -> bool:
    """Whether a write request is one plain statement: group-committed in a savepoint,
    so a cut rolls it back whole and it may run again (Node.write_together)."""
    statements, _ = write
    return len(statements) == 1 and groupable(statements[0].sql)


def run_writes(db: Database, writes: list[Write]) -> list[Batch | Exception]:
    """Several requests' writes in one call on the write pool (Node.write_together):
    those of one statement each a transaction of its own, group-committed together
    (Database.execute_each); the others in turn. Each request's Batch, or what it
    raised (CutShort, in a brief run, for one not committed: it may run again)."""
    single = [index for index, (statements, _) in enumerate(writes) if len(statements) == 1]
    started = time.perf_counter()
    outcomes = dict(
        zip(
            single,
            db.execute_each([(s.sql, s.params) for i in single for s in writes[i][0]]),
            strict=True,
        )
    )
    answers: list[Batch | Exception] = []
    for index, (statements, transaction) in enumerate(writes):
        try:
            if index in outcomes:
                answered = partial(_answered, outcomes[index])
                answers.append(_each(db, statements, answered, True, started))
            else:
                answers.append(run_execute(db, statements, transaction=transaction))
        except Exception as exc:  # refused for not leading: routing sends it on
            answers.append(exc)
    return answers


def _answered(outcome: Outcome | Error | CutShort, statement: Statement) -> Outcome:
    """`statement`'s outcome, already known (raised, when it failed or was cut short)."""
    if isinstance(outcome, (Error, CutShort)):
        raise outcome
    return outcome


def run_request(db: Database, statements: list[Statement], *, transaction: bool) -> Batch:
    """Reads and writes mixed. In one transaction everything runs on the writer, so
    reads see the writes before them; otherwise reads go to a reader."""
    if is_read_only(statements):
        return run_query(db, statements)
    if transaction:
        return run_execute(db, statements, transaction=True)
    batch = Batch(db.version)
    for origin, statement in enumerate(statements):
        one, started = [statement], time.perf_counter()
        try:
            if is_read_only(one):
                part = run_query(db, one)
            else:
                part = run_execute(db, one, transaction=False)
        except Error as exc:  # refused for not leading: after the first, it is this one's
            if not batch.items:
                raise
            part = Batch(db.version)
            part.add(exc, 0, started)
        batch.merge(part, origin)
    return batch


def _in_one_transaction(db: Database, statements: list[Statement]) -> Batch:
    """All statements or none. On the first failure the rest do not run and the
    results before it are reported, though rolled back (as rqlite does)."""
    batch = Batch(db.version)
    with db.transaction() as tx:
        for origin, statement in enumerate(statements):
            started = time.perf_counter()
            try:
                results = tx.execute(statement.sql, statement.params)
            except Error as exc:
                batch.add(exc, origin, started)
                tx.rollback()
                return batch
            batch.extend(results, origin, started)
        started = time.perf_counter()
        try:
            batch.version = tx.commit()
        except Error as exc:  # refused at commit: it belongs to the last statement
            if _not_leading(exc):
                raise
            batch.add(exc, len(statements) - 1, started)
    return batch


def _not_leading(exc: Error) -> bool:
    """A write refused because this copy does not (or no longer) lead its database."""
    return isinstance(exc, NotLeader | ReadOnly) and not isinstance(exc, QueryWrites)
