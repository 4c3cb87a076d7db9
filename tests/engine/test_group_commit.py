"""Group commit: concurrent one-statement requests share one transaction and record."""

from __future__ import annotations

import threading

import pytest

from shoal.engine import Database
from shoal.engine.group_commit import Request
from shoal.errors import IntegrityError, ReadOnly
from tests.conftest import Pair


def queue(db: Database, *statements: str) -> list[Request]:
    """Queues requests as concurrent callers would, then commits them as one group."""
    requests = [Request(sql, None) for sql in statements]
    db._group.pending.extend(requests)
    with db._writer.lock:
        db._group.commit_pending()
    return requests


def test_a_group_is_one_version_and_a_failure_undoes_only_itself(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u UNIQUE)")
    pair.leader.execute("INSERT INTO t(u) VALUES (0)")
    version = pair.leader.version
    done = queue(
        pair.leader,
        "INSERT INTO t(u) VALUES (1)",
        "INSERT INTO t(u) VALUES (0), (2)",  # fails on its first row; (2) never lands
        "INSERT OR FAIL INTO t(u) VALUES (3), (0)",  # keeps 3, then fails: undone whole
        "UPDATE t SET u = 10 WHERE u = 1 RETURNING u",
    )
    assert [type(r.error) for r in done] == [type(None), IntegrityError, IntegrityError, type(None)]
    assert all(r.done for r in done)
    assert {r.version for r in done} == {version + 1} and pair.leader.version == version + 1
    assert done[3].results is not None and done[3].results[0].rows == [(10,)]
    assert pair.leader.query("SELECT u FROM t ORDER BY u").results[0].rows == [(0,), (10,)]
    pair.assert_equal()


def test_a_request_that_rolls_back_everything_fails_alone(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u UNIQUE)")
    pair.leader.execute("INSERT INTO t(u) VALUES (0)")
    done = queue(
        pair.leader,
        "INSERT INTO t(u) VALUES (1)",
        "INSERT OR ROLLBACK INTO t(u) VALUES (0)",
        "INSERT INTO t(u) VALUES (2)",
    )
    assert done[1].error is not None and "whole transaction" in str(done[1].error)
    assert done[0].error is None and done[2].error is None
    assert pair.leader.query("SELECT u FROM t ORDER BY u").results[0].rows == [(0,), (1,), (2,)]
    pair.assert_equal()


def test_many_threads_writing_lose_nothing(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, writer, n)")
    errors: list[BaseException] = []
    versions: list[int] = []

    def writer(name: int) -> None:
        try:
            for n in range(150):
                outcome = pair.leader.execute("INSERT INTO t(writer, n) VALUES (?, ?)", (name, n))
                versions.append(outcome.version)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert pair.leader.query("SELECT count(*) FROM t").results[0].rows == [(1200,)]
    assert max(versions) == pair.leader.version <= 1 + 1200
    pair.assert_equal()


@pytest.mark.parametrize(
    "sql",
    ["CREATE TABLE x(a)", "PRAGMA user_version = 5", "INSERT INTO t VALUES (1); SELECT 1"],
)
def test_other_requests_run_alone(db: Database, sql: str) -> None:
    db.execute("CREATE TABLE t(a)")
    before = db.version
    db.execute(sql)
    assert db.version == before + 1
    assert db._group.pending == []


def test_a_request_that_failed_before_a_retry_runs_again_cleanly(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u UNIQUE)")
    pair.leader.execute("INSERT INTO t(u) VALUES (0)")
    done = queue(
        pair.leader,
        "INSERT INTO t(u) VALUES (1)",
        "INSERT INTO t(u) VALUES (1)",  # same text: fails now, and again on the retry
        "INSERT OR ROLLBACK INTO t(u) VALUES (0)",
    )
    assert done[0].error is None
    assert isinstance(done[1].error, IntegrityError)
    assert "whole transaction" in str(done[2].error)
    assert pair.leader.query("SELECT u FROM t ORDER BY u").results[0].rows == [(0,), (1,)]
    pair.assert_equal()


def test_every_waiting_request_gets_the_error_when_no_transaction_opens(pair: Pair) -> None:
    done = queue(pair.follower, "INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)")
    assert all(r.done and isinstance(r.error, ReadOnly) for r in done)


def test_one_thread_hands_over_many_requests_at_once(pair: Pair) -> None:
    # What a node's write pool does with the one-statement writes of many requests:
    # the plain ones are one group and one version; the others run as execute would.
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u UNIQUE)")
    version = pair.leader.version
    answers = pair.leader.execute_each(
        [
            ("INSERT INTO t(u) VALUES (?)", (1,)),
            ("INSERT INTO t(u) VALUES (?)", (1,)),  # fails alone
            ("CREATE TABLE s(x)", None),  # a schema change: its own transaction
            ("INSERT INTO t(u) VALUES (2) RETURNING u", None),
        ]
    )
    first, duplicate, created, returned = answers
    assert isinstance(duplicate, IntegrityError)
    assert not isinstance(first, Exception) and not isinstance(returned, Exception)
    assert not isinstance(created, Exception)
    assert first.version == returned.version == version + 1  # one group
    assert created.version == version + 2
    assert returned.results[0].rows == [(2,)]
    assert pair.leader.query("SELECT u FROM t ORDER BY u").results[0].rows == [(1,), (2,)]
    pair.assert_equal()
