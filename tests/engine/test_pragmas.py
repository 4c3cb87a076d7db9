"""Pragmas as ORMs and applications send them: what restates shoal's settings or
tunes one connection succeeds as in SQLite; foreign-key enforcement is the
database's setting, changed by a record of its own; the rest is refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apsw
import pytest

from shoal.engine import Database, Options, Role
from shoal.engine.pragmas import foreign_keys_request
from shoal.errors import IntegrityError, QueryWrites, Refused
from shoal.record import Statement
from tests.conftest import Pair

# What Django sends on every connection, and what applications commonly set.
SUCCEEDING = [
    "PRAGMA foreign_keys = OFF",
    "PRAGMA legacy_alter_table = OFF",
    "PRAGMA busy_timeout = 1000",
    "PRAGMA cache_size = -20000",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA mmap_size = 268435456",
    "PRAGMA journal_mode = WAL",
    "PRAGMA journal_mode = wal",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA main.synchronous = 1",
    "PRAGMA synchronous(normal)",
]


def raw_sqlite_rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """What plain SQLite returns for `sql` on a WAL file at synchronous = NORMAL."""
    conn = apsw.Connection(str(tmp_path / "raw.db"))
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("sql", SUCCEEDING)
@pytest.mark.parametrize("how", ["query", "execute"])
def test_pragmas_that_restate_or_tune_succeed_as_in_sqlite(
    db: Database, tmp_path: Path, sql: str, how: str
) -> None:
    db.execute("CREATE TABLE t(a)")
    checksum, version = db.checksum(), db.version
    outcome = getattr(db, how)(sql)
    assert outcome.results[0].rows == raw_sqlite_rows(tmp_path, sql)
    assert (db.checksum(), db.version, outcome.version) == (checksum, version, version)
    assert db.query("PRAGMA journal_mode").results[0].rows == [("wal",)]


@pytest.mark.parametrize("sql", ["PRAGMA optimize", "PRAGMA optimize(0xfffe)"])
def test_optimize_succeeds_and_gathers_no_statistics_of_one_copy(db: Database, sql: str) -> None:
    db.execute("CREATE TABLE t(a)")
    db.execute("CREATE INDEX t_a ON t(a)")
    db.execute("INSERT INTO t VALUES (1), (2)")
    for how in (db.query, db.execute):
        assert how(sql).results[0].rows == []
    tables = db.query("SELECT name FROM sqlite_schema WHERE name LIKE 'sqlite_stat%'")
    assert (tables.results[0].rows, db.version) == ([], 3)


def test_matching_pragmas_succeed_inside_a_transaction(db: Database) -> None:
    """SQLite itself refuses `synchronous` inside a transaction, even unchanged."""
    db.execute("CREATE TABLE t(a)")
    with db.transaction() as tx:
        for sql in SUCCEEDING:
            tx.execute(sql)
        tx.execute("INSERT INTO t VALUES (1)")
    assert db.version == 2


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        ("PRAGMA journal_mode = DELETE", "journal_mode = WAL"),
        ("PRAGMA journal_mode = MEMORY", "journal_mode = WAL"),
        ("PRAGMA synchronous = OFF", "synchronous = NORMAL"),
        ("PRAGMA synchronous = FULL", "synchronous = NORMAL"),
        ("PRAGMA legacy_alter_table = ON", "legacy_alter_table = OFF"),
        ("PRAGMA foreign_keys = maybe", "must be ON or OFF"),
    ],
)
@pytest.mark.parametrize("how", ["query", "execute"])
def test_pragmas_that_would_change_durability_or_replication_are_refused_by_name(
    db: Database, sql: str, names: str, how: str
) -> None:
    db.execute("CREATE TABLE t(a)")
    with pytest.raises(Refused, match=names):
        getattr(db, how)(sql)
    assert db.version == 1
    assert db.query("PRAGMA synchronous").results[0].rows == [(2,)]  # a reader's own
    with db.transaction() as tx:  # the writer's, unchanged
        assert tx.execute("PRAGMA synchronous")[0].rows == [(1,)]
        assert tx.execute("PRAGMA journal_mode")[0].rows == [("wal",)]


def test_synchronous_full_is_what_a_full_database_restates(tmp_path: Path) -> None:
    with Database(tmp_path / "full.db", options=Options(synchronous="full")) as db:
        db.execute("PRAGMA synchronous = FULL")
        with pytest.raises(Refused, match="synchronous = FULL"):
            db.execute("PRAGMA synchronous = NORMAL")


def orphan_insert(db: Database) -> None:
    db.execute("INSERT INTO child(parent) VALUES (99)")


def with_tables(db: Database) -> Database:
    db.execute("CREATE TABLE parent(id INTEGER PRIMARY KEY)")
    db.execute("CREATE TABLE child(id INTEGER PRIMARY KEY, parent REFERENCES parent(id))")
    return db


def test_foreign_keys_are_off_by_default_as_in_sqlite(db: Database) -> None:
    with_tables(db)
    assert not db.foreign_keys
    assert db.query("PRAGMA foreign_keys").results[0].rows == [(0,)]
    orphan_insert(db)


def test_turning_foreign_keys_on_is_a_write_that_every_client_then_sees(db: Database) -> None:
    with_tables(db)
    outcome = db.execute("PRAGMA foreign_keys = ON")
    assert (outcome.version, db.foreign_keys) == (3, True)
    assert db.records(3)[0].ops == (
        Statement("INSERT OR REPLACE INTO _shoal_meta(key, value) VALUES ('foreign_keys', 1)"),
    )
    assert db.query("PRAGMA foreign_keys").results[0].rows == [(1,)]
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        orphan_insert(db)
    assert db.execute("PRAGMA foreign_keys = 1").version == 3  # restated: no record
    db.execute("PRAGMA foreign_keys = OFF")
    orphan_insert(db)
    assert db.version == 5
    assert db.query("PRAGMA foreign_keys").results[0].rows == [(0,)]


def test_a_read_that_would_change_the_setting_is_sent_back_as_a_write(db: Database) -> None:
    """The same text was judged a no-op a moment before: a cached statement must
    not carry that verdict past the change of setting."""
    db.execute("PRAGMA foreign_keys = ON")
    assert db.query("PRAGMA foreign_keys = ON").results[0].rows == []
    db.execute("PRAGMA foreign_keys = OFF")
    with pytest.raises(QueryWrites):
        db.query("PRAGMA foreign_keys = ON")
    with pytest.raises(Refused, match="outside any transaction"), db.transaction() as tx:
        tx.execute("PRAGMA foreign_keys = ON")
    assert not db.foreign_keys


def test_changing_the_setting_inside_a_transaction_is_refused_and_changes_nothing(
    db: Database,
) -> None:
    with_tables(db)
    with pytest.raises(Refused, match="alone, as its own request"):
        db.execute_all([("INSERT INTO parent VALUES (1)", None), ("PRAGMA foreign_keys=ON", None)])
    assert (db.version, db.foreign_keys) == (2, False)
    assert db.query("SELECT count(*) FROM parent").results[0].rows == [(0,)]


def test_the_setting_survives_a_reopen_and_options_can_set_it(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with Database(path) as db:
        db.execute("PRAGMA foreign_keys = ON")
    with Database(path) as db:
        assert db.foreign_keys  # Options(foreign_keys=None) keeps the database's
    with Database(path, options=Options(foreign_keys=False)) as db:
        assert (db.foreign_keys, db.version) == (False, 2)  # a record of its own
    with Database(path, options=Options(foreign_keys=False)) as db:
        assert db.version == 2


def test_the_setting_travels_to_a_follower_that_enforces_it_once_it_leads(pair: Pair) -> None:
    with_tables(pair.leader)
    pair.leader.execute("PRAGMA foreign_keys = ON")
    pair.leader.execute("INSERT INTO parent VALUES (1)")
    pair.assert_equal()
    assert pair.follower.foreign_keys
    assert pair.follower.query("PRAGMA foreign_keys").results[0].rows == [(1,)]
    pair.follower.promote(epoch=2)
    with pytest.raises(IntegrityError):
        orphan_insert(pair.follower)
    pair.follower.execute("INSERT INTO child(parent) VALUES (1)")


def test_a_follower_applies_with_foreign_keys_off_whatever_the_setting(pair: Pair) -> None:
    """The leader's cascades are in its changesets; enforcing again would refuse them."""
    with_tables(pair.leader)
    pair.leader.execute("PRAGMA foreign_keys = ON")
    pair.leader.execute("INSERT INTO parent VALUES (1)")
    pair.leader.execute("INSERT INTO child(parent) VALUES (1)")
    pair.sync()
    pair.leader.execute("PRAGMA foreign_keys = OFF")
    pair.leader.execute("DELETE FROM parent")  # leaves an orphan, allowed with it off
    pair.leader.execute("PRAGMA foreign_keys = ON")
    pair.assert_equal()
    assert pair.follower.role is Role.FOLLOWER and pair.follower.foreign_keys


def test_a_change_by_another_process_is_enforced_at_the_next_write(tmp_path: Path) -> None:
    """Two openers of one file, as two worker processes of an application are."""
    with Database(tmp_path / "app.db") as first, Database(tmp_path / "app.db") as second:
        with_tables(first)
        second.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(IntegrityError):
            orphan_insert(first)
        assert first.query("PRAGMA foreign_keys").results[0].rows == [(1,)]
        second.execute("PRAGMA foreign_keys = OFF")
        orphan_insert(first)


def test_a_snapshot_and_a_seeded_copy_carry_the_setting(db: Database, tmp_path: Path) -> None:
    db.execute("PRAGMA foreign_keys = ON")
    db.snapshot(tmp_path / "snap.db")
    with Database.seed(tmp_path / "snap.db", tmp_path / "copy.db") as copy:
        assert copy.foreign_keys


@pytest.mark.parametrize(
    ("sql", "wanted"),
    [
        ("PRAGMA foreign_keys = ON", True),
        ("pragma main.foreign_keys=1;", True),
        ("PRAGMA foreign_keys('off')", False),
        ('PRAGMA "foreign_keys" = false ; ', False),
        ("PRAGMA foreign_keys", None),
        ("PRAGMA foreign_keys = maybe", None),
        ("PRAGMA legacy_alter_table = OFF", None),
        ("PRAGMA foreign_keys = ON; DELETE FROM t", None),
    ],
)
def test_foreign_keys_request_reads_one_statement_only(sql: str, wanted: bool | None) -> None:
    assert foreign_keys_request(sql) is wanted


SCHEMA_PRAGMAS = [
    'PRAGMA main.foreign_key_list("child")',
    'PRAGMA main.table_xinfo("child")',
    'PRAGMA main.index_list("child")',
]


def _describe(db: Database) -> list[list[tuple[Any, ...]]]:
    return [db.read(sql)[0].rows for sql in SCHEMA_PRAGMAS]


def test_schema_pragmas_on_a_reader_see_ddl_committed_since(pair: Pair) -> None:
    # A temp-schema pragma first loads the reader's schema, then DDL commits on the
    # writer (on the leader) or through apply (on the follower). SQLite answers
    # foreign_key_list from its loaded copy, so without a refresh it said [].
    for db in (pair.leader, pair.follower):
        db.read('PRAGMA temp.table_info("child")')
        assert _describe(db) == [[], [], []]
    pair.leader.execute(
        "CREATE TABLE parent(id INTEGER PRIMARY KEY);"
        "CREATE TABLE child(id INTEGER PRIMARY KEY, parent REFERENCES parent(id) UNIQUE)"
    )
    pair.sync()
    for db in (pair.leader, pair.follower):
        fks, columns, indexes = _describe(db)
        assert [(fk[2], fk[3], fk[4]) for fk in fks] == [("parent", "parent", "id")]
        assert [column[1] for column in columns] == ["id", "parent"]
        assert len(indexes) == 1
