"""An application's Python functions hold on every connection of a database, run
in its writes as in its reads, and replicate by the rows they changed."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from shoal.engine import Database
from shoal.engine.functions import Function
from shoal.errors import FunctionFailed, ProgrammingError, SQLError
from tests.conftest import Pair


def in_thread(call: Callable[[], Any]) -> Any:
    """What `call` returns or raises when run by a thread of its own (a new reader)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(call())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def rows(db: Database, sql: str) -> list[tuple[Any, ...]]:
    return db.query(sql).results[0].rows


class Total:
    def __init__(self) -> None:
        self.total = 0

    def step(self, value: int) -> None:
        self.total += value

    def finalize(self) -> int:
        return self.total


def test_a_function_holds_on_the_writer_and_every_reader(pair: Pair) -> None:
    db = pair.leader
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    db.execute("INSERT INTO t(v) VALUES (1), (2), (3)")
    assert rows(db, "SELECT v FROM t ORDER BY id") == [(1,), (2,), (3,)]  # this thread's reader
    db.register(Function("twice", 1, scalar=lambda v: 2 * v, deterministic=True))
    db.register(Function("total", 1, aggregate=Total))
    assert rows(db, "SELECT twice(v) FROM t ORDER BY id") == [(2,), (4,), (6,)]
    assert in_thread(lambda: rows(db, "SELECT total(v) FROM t")) == [(6,)]
    db.execute("UPDATE t SET v = twice(v)")  # on the writer
    assert rows(db, "SELECT total(v) FROM t") == [(12,)]
    # The follower has no such function: it applies the rows the update changed.
    pair.assert_equal()
    assert rows(pair.follower, "SELECT v FROM t ORDER BY id") == [(2,), (4,), (6,)]


def test_a_later_registration_replaces_and_none_removes(pair: Pair) -> None:
    db = pair.leader
    db.register(Function("answer", 0, scalar=lambda: 1))
    assert rows(db, "SELECT answer()") == [(1,)]
    db.register(Function("ANSWER", 0, scalar=lambda: 42))  # names ignore case
    assert rows(db, "SELECT answer()") == [(42,)]
    assert in_thread(lambda: rows(db, "SELECT answer()")) == [(42,)]
    assert len(db.functions()) == 1
    db.register(Function("answer", 0))
    with pytest.raises(SQLError, match="no such function: answer"):
        rows(db, "SELECT answer()")
    with pytest.raises(SQLError, match="no such function: answer"):
        in_thread(lambda: rows(db, "SELECT answer()"))


def test_a_function_that_raises_undoes_its_statement_only(pair: Pair) -> None:
    db = pair.leader
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER)")
    db.register(Function("inverse", 1, scalar=lambda v: 1 / v))
    version = db.version
    with pytest.raises(FunctionFailed, match=r"inverse\(\) raised ZeroDivisionError: division"):
        db.execute("INSERT INTO t(v) VALUES (inverse(0))")
    assert db.version == version and rows(db, "SELECT count(*) FROM t") == [(0,)]
    with db.transaction() as tx:
        tx.execute("INSERT INTO t(v) VALUES (1)")
        with pytest.raises(FunctionFailed):
            tx.execute("INSERT INTO t(v) VALUES (inverse(0))")
    assert rows(db, "SELECT v FROM t") == [(1,)]  # the transaction went on without it

    class Broken(Total):
        def finalize(self) -> int:
            raise ValueError("no total today")

    db.register(Function("broken", 1, aggregate=Broken))
    with pytest.raises(FunctionFailed, match=r"broken\(\) raised ValueError: no total today"):
        rows(db, "SELECT broken(v) FROM t")


@pytest.mark.parametrize(
    ("name", "narg", "message"),
    [("", 1, "1 to 255 bytes"), ("f" * 256, 1, "1 to 255 bytes"), ("f", -2, "narg must be")],
)
def test_a_bad_registration_is_refused_before_anything_changes(
    pair: Pair, name: str, narg: int, message: str
) -> None:
    with pytest.raises(ProgrammingError, match=message):
        pair.leader.register(Function(name, narg, scalar=abs))
    assert pair.leader.functions() == []
