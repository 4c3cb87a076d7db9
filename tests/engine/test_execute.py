"""Execute and query: parameters, results, versions, limits, timeouts and bad SQL."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from shoal.engine import Database, Limits, Options
from shoal.engine.execute import FETCH_CHUNK, CutShort
from shoal.errors import (
    IntegrityError,
    ProgrammingError,
    ReadOnly,
    ResultTooLarge,
    SQLError,
    StatementTimeout,
)


@pytest.fixture
def people(db: Database) -> Database:
    db.execute("CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT NOT NULL, age INT)")
    db.execute("INSERT INTO people(name, age) VALUES ('ada', 36), ('alan', 41)")
    return db


def test_positional_and_named_parameters(people: Database) -> None:
    people.execute("INSERT INTO people(name, age) VALUES (?, ?)", ("grace", 85))
    people.execute(
        "INSERT INTO people(name, age) VALUES (:name, :age)", {"name": "edsger", "age": 72}
    )
    rows = people.query("SELECT name FROM people WHERE age > :min ORDER BY age", {"min": 50})
    assert rows.results[0].rows == [("edsger",), ("grace",)]


def test_result_shape(people: Database) -> None:
    outcome = people.execute("INSERT INTO people(name, age) VALUES ('barbara', 77)")
    assert outcome.version == 3
    assert outcome.results[0].rows_affected == 1
    assert outcome.results[0].last_insert_id == 3
    result = people.query("SELECT id, name, age, age * 2 AS double FROM people WHERE id = 1")
    assert result.version == 3
    only = result.results[0]
    assert only.columns == ["id", "name", "age", "double"]
    assert only.types == ["INTEGER", "TEXT", "INT", None]
    assert only.rows == [(1, "ada", 36, 72)]


def test_empty_result_keeps_its_columns(people: Database) -> None:
    result = people.query("SELECT name, age FROM people WHERE 0").results[0]
    assert (result.columns, result.rows) == (["name", "age"], [])


def test_a_readers_remembered_descriptions_follow_the_schema(people: Database) -> None:
    """A reader remembers each statement's columns while the file is unchanged;
    DDL, from this database's writer or another connection's, shows at once."""
    star = "SELECT * FROM people WHERE id = ?"
    columns, rows = people.read_one(star, (1,))
    assert (columns, rows) == (
        (("id", "INTEGER"), ("name", "TEXT"), ("age", "INT")),
        [(1, "ada", 36)],
    )
    assert people.read_one(star, (2,))[0] is columns  # remembered
    people.execute("ALTER TABLE people ADD COLUMN email TEXT")
    assert people.read_one(star, (1,)) == (
        (("id", "INTEGER"), ("name", "TEXT"), ("age", "INT"), ("email", "TEXT")),
        [(1, "ada", 36, None)],
    )
    with Database(people.path) as other:  # another writer of the file
        other.execute("ALTER TABLE people RENAME COLUMN email TO mail")
    assert people.query(star, (99,)).results[0].columns == ["id", "name", "age", "mail"]
    assert people.read_one(star, (1,))[0][3] == ("mail", "TEXT")


def test_read_one_answers_as_query_does(people: Database) -> None:
    assert people.read_one("SELECT name FROM people WHERE 0") == ((("name", "TEXT"),), [])
    assert people.read_one("VALUES (1, 'x')") == (
        (("column1", None), ("column2", None)),
        [(1, "x")],
    )
    with pytest.raises(ReadOnly, match="execute"):
        people.read_one("WITH x(n) AS (SELECT 1) DELETE FROM people")
    with pytest.raises(ProgrammingError):
        people.read_one("SELECT name FROM people WHERE id = ?", (1, 2))
    assert people.read_one("SELECT count(*) FROM people") == ((("count(*)", None),), [(2,)])
    limited = Database(people.path, options=Options(limits=Limits(max_rows=1)))
    try:
        with pytest.raises(ResultTooLarge):
            limited.read_one("SELECT name FROM people")
        assert limited.read_one("SELECT name FROM people WHERE id = 1")[1] == [("ada",)]
    finally:
        limited.close()


def test_a_failed_read_leaves_the_reader_ready_and_current(people: Database) -> None:
    """A thread's reader reuses one cursor for point reads: a read that fails
    halfway must not leave it in a statement that pins an old snapshot."""
    many = Limits(statement_seconds=0.05)
    forever = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"
    )
    with pytest.raises(StatementTimeout):
        people.query(forever, limits=many)
    with pytest.raises(ProgrammingError):
        people.query("SELECT name FROM people WHERE id = ?", (1, 2))
    people.execute("INSERT INTO people(name, age) VALUES ('grace', 85)")
    assert people.query("SELECT count(*) FROM people").results[0].rows == [(3,)]
    result = people.query("SELECT name FROM people WHERE id = ?", (99,)).results[0]
    assert (result.columns, result.rows) == (["name"], [])


def test_several_statements_are_one_transaction_with_a_result_each(people: Database) -> None:
    outcome = people.execute(
        "UPDATE people SET age = age + 1; SELECT count(*) FROM people; "
        "DELETE FROM people WHERE id = 2"
    )
    assert [r.rows_affected for r in outcome.results] == [2, 0, 1]
    assert outcome.results[1].rows == [(2,)]
    assert outcome.version == 3  # one transaction, one version


def test_failure_rolls_back_every_statement_and_makes_no_version(people: Database) -> None:
    with pytest.raises(IntegrityError, match="NOT NULL"):
        people.execute_all(
            [
                ("INSERT INTO people(name) VALUES ('kept?')", None),
                ("INSERT INTO people(name) VALUES (NULL)", None),
            ]
        )
    assert people.version == 2
    assert people.query("SELECT count(*) FROM people").results[0].rows == [(2,)]
    assert len(people.log_range(1)) == 2


def test_reads_and_rollbacks_make_no_record(people: Database) -> None:
    people.query("SELECT * FROM people")
    people.execute("SELECT * FROM people")  # a read through the writer
    with people.transaction() as tx:
        tx.execute("INSERT INTO people(name) VALUES ('gone')")
        tx.rollback()
    people.execute("UPDATE people SET age = age WHERE 0")
    assert people.version == 2
    assert [r.version for r in people.records(1)] == [1, 2]


@pytest.mark.parametrize(
    ("sql", "params", "error", "message"),
    [
        ("SELEC 1", None, SQLError, "syntax error"),
        ("SELECT * FROM missing", None, SQLError, "no such table"),
        ("SELECT ?", (1, 2), ProgrammingError, "bindings"),
        ("SELECT :a", {"b": 1}, ProgrammingError, "a"),
        ("SELECT ?", ({"not": "bindable"},), ProgrammingError, "dict|type|bind"),
    ],
)
def test_bad_sql_is_a_clear_error(
    people: Database, sql: str, params: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        people.query(sql, params)  # type: ignore[arg-type]
    with pytest.raises(error, match=message):
        people.execute(sql, params)  # type: ignore[arg-type]
    assert people.version == 2


def test_query_refuses_writes(people: Database) -> None:
    with pytest.raises(ReadOnly, match="execute"):
        people.query("DELETE FROM people")
    assert people.query("SELECT count(*) FROM people").results[0].rows == [(2,)]


def test_a_read_never_waits_for_the_writer(people: Database) -> None:
    done = threading.Event()
    with people.transaction() as tx:
        tx.execute("INSERT INTO people(name) VALUES ('uncommitted')")

        def read() -> None:
            rows = people.query("SELECT count(*) FROM people").results[0].rows
            assert rows == [(2,)]  # the open transaction is invisible
            done.set()

        reader = threading.Thread(target=read)
        reader.start()
        reader.join(5)
        assert done.is_set(), "the read waited for the open write transaction"


def test_statement_time_limit_interrupts(tmp_path: Path) -> None:
    slow = Database(tmp_path / "slow.db", options=Options(limits=Limits(statement_seconds=0.2)))
    try:
        forever = (
            "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) SELECT count(*) FROM c"
        )
        started = time.monotonic()
        with pytest.raises(StatementTimeout, match=r"0\.2 s"):
            slow.query(forever)
        assert time.monotonic() - started < 5
        with pytest.raises(StatementTimeout):
            slow.execute(f"CREATE TABLE x AS {forever}")
        assert slow.version == 0
        assert slow.query("SELECT 1").results[0].rows == [(1,)]  # still usable
    finally:
        slow.close()


@pytest.mark.parametrize("statements", ["one", "two"])
def test_result_limits_hold_exactly_across_fetched_chunks(db: Database, statements: str) -> None:
    # One read statement is fetched in chunks of rows, checked after each; several
    # are collected row by row: the limits must mean the same on both paths.
    rows = 3 * FETCH_CHUNK + 7
    numbers = f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows}) "
    sql = numbers + "SELECT i, 'abcd' FROM n" + ("" if statements == "one" else "; SELECT 1")
    exact = db.query(sql, limits=Limits(max_rows=rows, max_bytes=rows * 12))
    assert len(exact.results[0].rows) == rows and exact.results[0].rows[-1] == (rows, "abcd")
    with pytest.raises(ResultTooLarge, match=f"more than {rows - 1} rows"):
        db.query(sql, limits=Limits(max_rows=rows - 1))
    with pytest.raises(ResultTooLarge, match=f"larger than {rows * 12 - 1} bytes"):
        db.query(sql, limits=Limits(max_bytes=rows * 12 - 1))  # each row: 8 + 4 bytes


@pytest.mark.parametrize("limits", [Limits(max_rows=10), Limits(statement_seconds=0.05)])
def test_a_read_stopped_before_its_last_statement_leaves_the_reader_usable(
    db: Database, limits: Limits
) -> None:
    # The reader's cursor is reused; stopped with statements still to run, it used
    # to refuse every later read on its thread ("remaining sql statements").
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    with pytest.raises((ResultTooLarge, StatementTimeout)):
        db.query(endless + "SELECT i FROM n; SELECT 1", limits=limits)
    assert db.query("SELECT 2", limits=limits).results[0].rows == [(2,)]
    assert db.query("SELECT 3; SELECT 4").results[1].rows == [(4,)]


def test_a_brief_read_is_cut_short_and_the_reader_goes_on(tmp_path: Path) -> None:
    limited = Database(tmp_path / "b.db", options=Options(limits=Limits(statement_seconds=1)))
    unlimited = Database(tmp_path / "u.db")
    long = "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 1000000) "
    try:
        with limited.briefly(0.01):
            assert limited.query("SELECT 1").results[0].rows == [(1,)]
            with pytest.raises(CutShort):
                limited.query(long + "SELECT count(*) FROM c")
        with limited.briefly(0.01):  # the reader is ready for the next brief read
            assert limited.query("SELECT 2").results[0].rows == [(2,)]
        # Outside, the same read runs to its end under the database's own limit.
        assert limited.query(long + "SELECT count(*) FROM c").results[0].rows == [(1000000,)]
        with limited.briefly(10), pytest.raises(StatementTimeout, match=r"\b1 s"):
            limited.query(
                "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c) "
                "SELECT count(*) FROM c"
            )  # the shorter limit is the statement's
        with pytest.raises(CutShort), unlimited.briefly(10):
            pass  # nothing would bound a read on a database without a time limit
        # The time is the whole block's, not each statement's: many quick reads in a
        # row (one request's statements) are cut short too, between two of them.
        with pytest.raises(CutShort), limited.briefly(0.05):
            for _ in range(1_000_000):
                limited.query("SELECT 1")
    finally:
        limited.close()
        unlimited.close()


@pytest.mark.parametrize(
    ("limits", "message"),
    [(Limits(max_rows=10), "more than 10 rows"), (Limits(max_bytes=1000), "1000 bytes")],
)
def test_result_size_limits(db: Database, limits: Limits, message: str) -> None:
    db.execute("CREATE TABLE t(a)")
    db.execute_all([("INSERT INTO t VALUES (?)", ("x" * 50,)) for _ in range(100)])
    with pytest.raises(ResultTooLarge, match=message):
        db.query("SELECT a FROM t", limits=limits)
    assert len(db.query("SELECT a FROM t LIMIT 5", limits=limits).results[0].rows) == 5
