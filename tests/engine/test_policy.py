"""SQL policy: what is refused, with which message, and that nothing changes."""

from __future__ import annotations

import pytest

from shoal.engine import Database
from shoal.errors import Refused


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("ATTACH 'other.db' AS other", "ATTACH is refused"),
        ("DETACH other", "DETACH|no such database"),
        ("SELECT load_extension('evil')", "load_extension"),
        ("PRAGMA journal_mode = DELETE", "journal_mode"),
        ("PRAGMA synchronous = OFF", "synchronous"),
        ("PRAGMA writable_schema = ON", "writable_schema"),
        ("PRAGMA schema_version = 99", "schema_version"),
        ("PRAGMA locking_mode = EXCLUSIVE", "locking_mode"),
        ("BEGIN", "BEGIN is refused"),
        ("COMMIT", "COMMIT is refused"),
        ("SAVEPOINT _shoal_x", "reserved"),
        ("INSERT INTO _shoal_log VALUES (999, x'00')", "belongs to shoal"),
        ("DELETE FROM _shoal_log", "belongs to shoal"),
        ("DROP TABLE _shoal_meta", "reserved for shoal"),
        ("CREATE TABLE _shoal_mine(a)", "reserved for shoal"),
        ("CREATE VIRTUAL TABLE d USING dbstat", "module 'dbstat' is refused"),
    ],
)
def test_refused_with_a_clear_message(db: Database, sql: str, message: str) -> None:
    db.execute("CREATE TABLE t(a)")
    checksum, version = db.checksum(), db.version
    with pytest.raises(Refused, match=message):
        db.execute(sql)
    assert (db.checksum(), db.version) == (checksum, version)


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA table_info(t)",
        "PRAGMA index_list(t)",
        "PRAGMA integrity_check",
        "PRAGMA foreign_key_check",
        "PRAGMA journal_mode",
        "PRAGMA user_version",
        "SELECT * FROM pragma_table_info('t')",
    ],
)
def test_pragmas_that_read_are_allowed(db: Database, sql: str) -> None:
    db.execute("CREATE TABLE t(a)")
    assert db.query(sql).results


def test_log_can_be_read_but_not_written(db: Database) -> None:
    db.execute("CREATE TABLE t(a)")
    assert db.query("SELECT version FROM _shoal_log").results[0].rows == [(1,)]


def test_refusal_inside_a_batch_rolls_back_the_batch(db: Database) -> None:
    db.execute("CREATE TABLE t(a)")
    with pytest.raises(Refused):
        db.execute_all([("INSERT INTO t VALUES (1)", None), ("ATTACH 'x' AS x", None)])
    assert db.query("SELECT count(*) FROM t").results[0].rows == [(0,)]
    assert db.version == 1


@pytest.mark.parametrize(
    "sql",
    [
        "COMMIT",
        "ROLLBACK",
        "BEGIN IMMEDIATE",
        "INSERT INTO _shoal_log(version, record) VALUES (?, ?)",
    ],
)
def test_user_text_equal_to_the_engines_own_statement_is_still_checked(
    db: Database, sql: str
) -> None:
    """The engine ran these very texts already; a cached copy must not skip the policy."""
    db.execute("CREATE TABLE t(a)")
    db.execute("INSERT INTO t VALUES (1)")
    params = (999, b"\x00") if "?" in sql else None
    with pytest.raises(Refused):
        db.execute(sql, params)
    assert db.version == 2
    assert [r.version for r in db.records(1)] == [1, 2]


def test_reader_refuses_begin_after_the_checksum_used_it(db: Database) -> None:
    db.execute("CREATE TABLE t(a)")
    db.checksum()  # runs BEGIN and COMMIT on this thread's reader
    with pytest.raises(Refused):
        db.query("BEGIN")
    db.execute("INSERT INTO t VALUES (1)")
    assert db.query("SELECT count(*) FROM t").results[0].rows == [(1,)]  # not a stale snapshot
