"""SQL policy: what is refused, with which message, and that nothing changes."""

from __future__ import annotations

import pytest

from shoal.engine import Database
from shoal.engine.sqltext import Kind, classify
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
    # Runs BEGIN and COMMIT on this thread's reader; twice, so that the second
    # BEGIN is prepared against the schema as it is now and could be reused.
    db.checksum()
    db.checksum()
    with pytest.raises(Refused):
        db.query("BEGIN")
    assert db.query("SELECT count(*) FROM t").results[0].rows == [(0,)]
    db.execute("INSERT INTO t VALUES (1)")
    assert db.query("SELECT count(*) FROM t").results[0].rows == [(1,)]  # not a stale snapshot


def test_the_engine_caches_only_reads_and_pragmas_on_a_reader(db: Database) -> None:
    """Point reads on a reader are prepared without USER_PREPARE_FLAGS, so they share
    the statement cache with what the engine ran there trusted. That is safe only
    while every such cached statement is one a user may run (a read) or one that
    never reaches a point read (a PRAGMA)."""
    db.execute("CREATE TABLE t(a)")
    db.execute("INSERT INTO t VALUES (1)")
    db.checksum()
    db.checksum()
    db.records(0)
    db.file_version()
    db.set_foreign_keys(False)
    db.query("PRAGMA table_info(t)")  # configures the reader; a PRAGMA, so flagged
    cached = db._reader().conn.cache_stats(True)["entries"]
    engine = [e["query"] for e in cached if e["prepare_flags"] == 0]
    assert engine  # the engine did run statements here
    assert all(classify(sql) in (Kind.READ, Kind.PRAGMA) for sql in engine), engine
