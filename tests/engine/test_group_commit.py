"""Group commit: concurrent one-statement requests share one transaction and record."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import pytest

from shoal.engine import Database, Options
from shoal.engine.execute import CutShort, Limits
from shoal.engine.group_commit import MAX_GROUP, Request
from shoal.engine.transaction import CommitHook
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


# One statement that takes a while and inserts one row: what a brief write is cut on.
LONG_INSERT = (
    "INSERT INTO t(v) WITH RECURSIVE n(i) AS "
    "(SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) SELECT count(*) FROM n"
)


def limited(path: Path, **options: Any) -> Database:
    """A database whose statements have a time limit: brief runs need one."""
    db = Database(path, options=Options(limits=Limits(statement_seconds=60), **options))
    db.execute("CREATE TABLE t(v)")
    return db


def test_a_brief_group_cut_short_is_undone_whole_and_others_wait_for_the_next(
    tmp_path: Path,
) -> None:
    # What a node's event loop does with plain writes: cut short, the group rolls
    # back whole, its caller takes its own requests elsewhere, and a request another
    # caller queued meanwhile is neither answered with the cut nor lost.
    db = limited(tmp_path / "a.db")
    version = db.version
    other = Request("INSERT INTO t(v) VALUES ('other')", None)
    db._group.pending.append(other)
    with db.briefly(0.01, write=True):
        answers = db.execute_each(
            [("INSERT INTO t(v) VALUES ('first')", None), (LONG_INSERT, None)]
        )
    assert [type(answer) for answer in answers] == [CutShort, CutShort]
    assert db.version == version
    assert db.query("SELECT count(*) FROM t").results[0].rows == [(0,)]
    assert db._group.pending == [other] and not other.done
    db.execute("INSERT INTO t(v) VALUES ('next')")  # the writer is free again
    assert other.done and other.error is None
    rows = db.query("SELECT v FROM t ORDER BY rowid").results[0].rows
    assert rows == [("other",), ("next",)]
    db.close()


def test_a_brief_write_does_not_start_where_it_would_wait(tmp_path: Path) -> None:
    db = limited(tmp_path / "a.db")
    held, release = threading.Event(), threading.Event()

    def hold_the_writer() -> None:
        with db.transaction():
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_writer)
    holder.start()
    try:
        held.wait(10)
        with pytest.raises(CutShort), db.briefly(1, write=True):
            pytest.fail("ran while another thread held the writer")
    finally:
        release.set()
        holder.join(10)
    with db.briefly(1, write=True):
        db.execute("INSERT INTO t(v) VALUES (1)")
    db.commit_hook = cast(CommitHook, object())  # a cluster's leader: appends elsewhere
    with pytest.raises(CutShort), db.briefly(1, write=True):
        pytest.fail("ran with a commit hook")
    db.close()
    full = limited(tmp_path / "full.db", synchronous="full")
    with pytest.raises(CutShort), full.briefly(1, write=True):
        pytest.fail("ran where a commit waits for the disk")
    full.close()


def test_groups_committed_before_a_cut_are_answered_and_only_the_rest_runs_again(
    tmp_path: Path,
) -> None:
    # More requests than one group takes: the first group commits, the second is cut
    # short on its long statement. Running "everything" again would write the first
    # group's rows twice; what comes back says which requests are done.
    db = limited(tmp_path / "a.db")
    insert = "INSERT INTO t(v) VALUES (?)"
    statements = [(insert, (i,)) for i in range(MAX_GROUP + 1)]
    statements += [(LONG_INSERT, None)] + [(insert, (i,)) for i in range(MAX_GROUP + 1, 70)]
    with db.briefly(0.05, write=True):
        answers = db.execute_each(statements)
    committed = [i for i, answer in enumerate(answers) if not isinstance(answer, CutShort)]
    assert committed == list(range(MAX_GROUP))
    assert db.query("SELECT count(*) FROM t").results[0].rows == [(MAX_GROUP,)]
    rest = [statements[i] for i in range(MAX_GROUP, len(statements)) if statements[i][0] == insert]
    again = db.execute_each(rest)  # the cut ones, but for the long one, on a thread
    assert not any(isinstance(answer, (CutShort, Exception)) for answer in again)
    values = [v for (v,) in db.query("SELECT v FROM t ORDER BY v").results[0].rows]
    assert values == list(range(70))  # each once
    db.close()
