"""Running a request's statements (server/statements.py) on a copy that stops
leading: what may go to the new leader whole, and what must be reported."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shoal.engine import Database, Outcome, Result, Role
from shoal.errors import ReadOnly
from shoal.server.statements import Batch, Statement, run_execute, run_request

INSERT = Statement("INSERT INTO t(v) VALUES (1)")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "app.db", name="app")
    database.execute("CREATE TABLE t(v)")
    yield database
    database.close()


def demoted_after_first_write(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease moves on right after the first write commits."""
    execute = db.execute

    def then_demote(sql: str, params: Any = None) -> Outcome:
        outcome = execute(sql, params)
        db.demote()
        return outcome

    monkeypatch.setattr(db, "execute", then_demote)


def test_a_write_refused_before_anything_committed_is_raised_for_routing(db: Database) -> None:
    """Nothing of it ran: the whole request may go to the leader."""
    db.demote()
    assert db.role is Role.FOLLOWER
    for transaction in (True, False):
        with pytest.raises(ReadOnly):
            run_execute(db, [INSERT, INSERT], transaction=transaction)
        with pytest.raises(ReadOnly):
            run_request(db, [INSERT, INSERT], transaction=transaction)


@pytest.mark.parametrize("run", [run_execute, run_request])
def test_a_refusal_after_a_committed_statement_is_that_statements_error(
    db: Database, monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    """Sending the request again would write its first statement twice."""
    demoted_after_first_write(db, monkeypatch)
    batch = run(db, [INSERT, INSERT], transaction=False)
    assert batch.first_error is not None
    index, error = batch.first_error
    assert index == 1 and isinstance(error, ReadOnly)
    assert db.query("SELECT count(*) FROM t").results[0].rows == [(1,)]


def test_a_batch_names_its_first_error_and_the_statement_it_came_from() -> None:
    batch = Batch(3)
    batch.add(Result(), 0, 0.0)
    assert batch.first_error is None
    first, second = ReadOnly("first"), ReadOnly("second")
    batch.add(first, 1, 0.0)
    batch.add(second, 2, 0.0)
    assert batch.first_error == (1, first)


def test_a_merged_batch_reports_its_error_at_the_merging_statement() -> None:
    batch = Batch(1)
    batch.add(Result(), 0, 0.0)
    part = Batch(2)
    error = ReadOnly("refused")
    part.add(Result(), 0, 0.0)
    part.add(error, 0, 0.0)
    batch.merge(part, 4)
    assert batch.first_error == (4, error)
    assert batch.origins == [0, 4, 4] and batch.version == 2
