"""Replication bugs the property test found, each pinned by the smallest case."""

from __future__ import annotations

import apsw
import pytest

from shoal.engine import Database, Role
from shoal.errors import DataError, IntegrityError, NotSupportedError, OperationalError
from tests.conftest import Pair, rows


def numbers(n: int) -> str:
    """The start of a statement with `n(i)` counting 1 to n."""
    return f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) "


def count(db: Database, table: str) -> int:
    return int(rows(db, f"SELECT count(*) FROM {table}")[0][0])  # type: ignore[call-overload]


@pytest.mark.parametrize(
    "delete_all",
    [
        "CREATE INDEX i ON t(a); DELETE FROM t",  # prepared right after a schema cut
        "SAVEPOINT s; DELETE FROM t; RELEASE s",  # ... after a savepoint cut
        "PRAGMA user_version = 3; DELETE FROM t",  # ... after a travelling pragma
    ],
    ids=["after-ddl", "after-savepoint", "after-pragma"],
)
def test_delete_without_where_is_captured_row_by_row(pair: Pair, delete_all: str) -> None:
    """SQLite empties a table in one step, with no per-row hook, when a DELETE has no
    WHERE and no session was attached at prepare time; the policy turns that off."""
    pair.leader.execute("CREATE TABLE t(a)")
    pair.leader.execute("INSERT INTO t VALUES (1), (2)")
    pair.leader.execute(delete_all)
    pair.assert_equal()
    assert count(pair.follower, "t") == 0


def test_cached_delete_without_where_is_captured(pair: Pair) -> None:
    """The statement cache must not hand back a program compiled to truncate."""
    pair.leader.execute("CREATE TABLE t(a)")
    pair.leader.execute("CREATE TABLE w(x); DELETE FROM t")  # t is empty here
    pair.leader.execute("INSERT INTO t VALUES (1), (2)")
    pair.leader.execute("DELETE FROM t")
    pair.assert_equal()
    assert count(pair.follower, "t") == 0


def test_drop_still_drops(pair: Pair) -> None:
    """A DROP asks the authorizer for DELETE too; IGNORE there would skip the DROP."""
    pair.leader.execute(
        "CREATE TABLE t(a); CREATE INDEX i ON t(a); CREATE VIEW v AS SELECT a FROM t;"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;"
        "CREATE VIRTUAL TABLE f USING fts5(x)"
    )
    pair.leader.execute("DROP TRIGGER tr; DROP VIEW v; DROP INDEX i; DROP TABLE t; DROP TABLE f")
    pair.assert_equal()
    for db in (pair.leader, pair.follower):
        names = rows(db, "SELECT name FROM sqlite_schema WHERE substr(name, 1, 7) != '_shoal_'")
        assert names == []


def test_update_of_an_autoincrement_key_leaves_sqlite_sequence_alone(pair: Pair) -> None:
    """The changeset carries the new key as an insert, which would move the follower's
    sqlite_sequence; the leader's did not move."""
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v)")
    pair.leader.execute("INSERT INTO t(v) VALUES ('a')")
    pair.leader.execute("UPDATE t SET id = 100")
    pair.assert_equal()
    assert rows(pair.follower, "SELECT name, seq FROM sqlite_sequence") == [("t", 1)]


def test_rows_a_failed_statement_took_back_do_not_move_sqlite_sequence(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT)")
    pair.leader.execute("INSERT INTO t(id) VALUES (1)")
    with pair.leader.transaction() as tx:
        with pytest.raises(IntegrityError):
            tx.execute("INSERT OR FAIL INTO t(id) VALUES (5), (1)")  # keeps 5, then fails
        tx.execute("DELETE FROM t WHERE id = 5")
    pair.assert_equal()
    assert rows(pair.follower, "SELECT seq FROM sqlite_sequence") == rows(
        pair.leader, "SELECT seq FROM sqlite_sequence"
    )


def test_sqlite_sequence_rows_created_in_another_order_checksum_equal(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE b(id INTEGER PRIMARY KEY AUTOINCREMENT)")
    pair.leader.execute("CREATE TABLE a(id INTEGER PRIMARY KEY AUTOINCREMENT)")
    pair.leader.execute("INSERT INTO b DEFAULT VALUES")
    pair.leader.execute("INSERT INTO a DEFAULT VALUES")
    pair.assert_equal()


def test_insert_or_rollback_ends_the_transaction_and_says_so(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u UNIQUE)")
    pair.leader.execute("INSERT INTO t(u) VALUES (1)")
    version = pair.leader.version
    tx = pair.leader.transaction()
    tx.execute("INSERT INTO t(u) VALUES (2)")
    with pytest.raises(IntegrityError, match="whole transaction was rolled back"):
        tx.execute("INSERT OR ROLLBACK INTO t(u) VALUES (1)")
    assert not tx.is_open
    with pytest.raises(OperationalError, match="has ended"):
        tx.execute("INSERT INTO t(u) VALUES (3)")
    tx.rollback()  # harmless
    assert pair.leader.version == version
    assert rows(pair.leader, "SELECT u FROM t") == [(1,)]
    pair.leader.execute("INSERT INTO t(u) VALUES (4)")  # the writer is free again
    pair.assert_equal()


def test_full_autoincrement_rolls_back_the_whole_transaction(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT)")
    pair.leader.execute("INSERT INTO t(id) VALUES (9223372036854775807)")
    pair.leader.execute("CREATE TABLE c(x)")
    version = pair.leader.version
    tx = pair.leader.transaction()
    tx.execute("INSERT INTO c VALUES ('lost')")
    with pytest.raises(OperationalError, match=r"full.*whole transaction"):
        tx.execute("INSERT INTO t DEFAULT VALUES")
    assert not tx.is_open
    assert pair.leader.version == version
    assert len(pair.leader.log_range(version + 1)) == 0
    assert count(pair.leader, "c") == 0
    pair.assert_equal()


@pytest.mark.parametrize("rows_updated", [127, 128, 300, 1000])
def test_updating_many_rows_of_a_table_without_primary_key(pair: Pair, rows_updated: int) -> None:
    """SQLite's session records a stray INSERT when its hash grows mid-UPDATE."""
    pair.leader.execute("CREATE TABLE t(a, b)")
    pair.leader.execute(numbers(rows_updated) + "INSERT INTO t(a) SELECT i FROM n")
    pair.leader.execute("UPDATE t SET b = a * 2")
    pair.assert_equal()


def test_rows_changed_again_after_many_changes_in_one_transaction(pair: Pair) -> None:
    """A row changed before and after the session's hash grew got two entries."""
    pair.leader.execute("CREATE TABLE t(a, b)")
    pair.leader.execute("INSERT INTO t(a) VALUES (1), (2)")
    with pair.leader.transaction() as tx:
        tx.execute("UPDATE t SET b = 1 WHERE rowid = 1")
        tx.execute("DELETE FROM t WHERE rowid = 2")
        tx.execute("INSERT INTO t(rowid, a) VALUES (5000, 0)")
        for i in range(300):
            tx.execute("INSERT INTO t(a) VALUES (?)", (i,))
        tx.execute("UPDATE t SET b = 2 WHERE rowid = 1")
        tx.execute("DELETE FROM t WHERE rowid = 5000")
    pair.assert_equal()


def test_trigger_changing_rows_inserted_earlier_in_the_statement(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(a, b)")
    pair.leader.execute("CREATE TABLE source(x)")
    pair.leader.execute(
        "CREATE TRIGGER fill AFTER INSERT ON source BEGIN INSERT INTO t(a) VALUES (new.x); END;"
        "CREATE TRIGGER again AFTER INSERT ON source WHEN new.x = 200 "
        "BEGIN UPDATE t SET b = 'again' WHERE a < 5; END"
    )
    pair.leader.execute(numbers(300) + "INSERT INTO source SELECT i FROM n")
    pair.assert_equal()
    assert rows(pair.follower, "SELECT count(*) FROM t WHERE b = 'again'") == [(4,)]


def test_replace_deleting_rows_inserted_earlier_in_the_statement(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(u UNIQUE, v)")
    pair.leader.execute("INSERT INTO t VALUES (-1, 'kept'), (150, 'replaced')")
    pair.leader.execute(numbers(300) + "INSERT OR REPLACE INTO t(u, v) SELECT i % 200, i FROM n")
    pair.assert_equal()
    assert count(pair.follower, "t") == 201


def test_what_cannot_be_told_apart_is_refused_and_changes_nothing(pair: Pair) -> None:
    """A row updated before and after a growth, in one statement, ends with two
    UPDATEs; which one starts from the row as it was is not known, so shoal refuses."""
    pair.leader.execute("CREATE TABLE t(v)")
    pair.leader.execute("INSERT INTO t(rowid, v) VALUES (1, 'old')")
    pair.leader.execute("CREATE TABLE source(i)")
    pair.leader.execute(
        "CREATE TRIGGER fill AFTER INSERT ON source BEGIN "
        "UPDATE t SET v = 'changed ' || new.i WHERE rowid = 1 AND new.i IN (1, 299);"
        "INSERT INTO t(v) VALUES (new.i); END"
    )
    version, checksum = pair.leader.version, pair.leader.checksum()
    with pytest.raises(NotSupportedError, match="primary key"):
        pair.leader.execute(numbers(300) + "INSERT INTO source SELECT i FROM n")
    assert (pair.leader.version, pair.leader.checksum()) == (version, checksum)
    pair.assert_equal()


def test_text_that_is_not_utf8(pair: Pair) -> None:
    pair.leader.execute("CREATE TABLE t(a)")
    pair.leader.execute("INSERT INTO t VALUES (CAST(x'aa' AS TEXT)), (CAST(x'ab' AS TEXT))")
    pair.assert_equal()
    with pytest.raises(DataError, match="not valid UTF-8"):
        pair.follower.query("SELECT a FROM t")
    assert rows(pair.follower, "SELECT CAST(a AS BLOB) FROM t ORDER BY rowid") == [
        (b"\xaa",),
        (b"\xab",),
    ]
    before = pair.leader.checksum()
    pair.leader.execute("UPDATE t SET a = CAST(x'ac' AS TEXT) WHERE rowid = 2")
    assert pair.leader.checksum() != before  # the bytes are hashed, not lost


def test_a_key_change_in_a_table_keyed_by_text_leaves_copies_checksum_equal(pair: Pair) -> None:
    # Alembic's version table: `UPDATE alembic_version SET version_num = '0002'`. The
    # session records it as a delete and an insert by key, so the follower's row gets
    # a new hidden rowid; the rows, by their key, are the same (decision 32).
    pair.leader.execute("CREATE TABLE v(num TEXT PRIMARY KEY, note)")
    pair.leader.execute("INSERT INTO v VALUES ('0001', 'first'), ('0000', 'zero')")
    pair.leader.execute("UPDATE v SET num = '0002' WHERE num = '0001'")
    pair.assert_equal()
    assert rows(pair.follower, "SELECT num, note FROM v ORDER BY num") == rows(
        pair.leader, "SELECT num, note FROM v ORDER BY num"
    )
    # A difference in the rows themselves is still seen.
    pair.follower.close()
    raw = apsw.Connection(str(pair.follower.path))
    raw.execute("UPDATE v SET note = 'changed' WHERE num = '0002'")
    raw.close()
    follower = Database(pair.follower.path, name="app", role=Role.FOLLOWER)
    try:
        assert follower.checksum() != pair.leader.checksum()
    finally:
        follower.close()
