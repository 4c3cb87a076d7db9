"""shoal.connect(path): the DB-API 2.0 connection in-process."""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

import shoal
from shoal.engine import Database


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[shoal.Connection]:
    connection = shoal.connect(tmp_path / "app.db")
    connection.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
    connection.commit()
    yield connection
    connection.close()


def test_module_globals() -> None:
    assert (shoal.apilevel, shoal.threadsafety, shoal.paramstyle) == ("2.0", 1, "qmark")
    assert issubclass(shoal.IntegrityError, shoal.DatabaseError)
    assert issubclass(shoal.DatabaseError, shoal.Error)
    assert issubclass(shoal.InterfaceError, shoal.Error)
    assert shoal.STRING == "TEXT" and shoal.NUMBER == "integer" and shoal.BINARY == "BLOB"


def test_writes_are_captured_one_record_per_commit(conn: shoal.Connection) -> None:
    cursor = conn.cursor()
    cursor.execute("INSERT INTO t(name) VALUES (?)", ("a",))
    assert cursor.rowcount == 1 and cursor.lastrowid == 1
    cursor.executemany("INSERT INTO t(name) VALUES (?)", [("b",), ("c",)])
    assert cursor.rowcount == 2
    assert conn.in_transaction and conn.version == 1
    conn.commit()
    assert not conn.in_transaction and conn.version == 2
    assert len(conn.database.records(2)[0].ops) == 1


def test_min_version_is_the_files_newest_or_an_error(conn: shoal.Connection) -> None:
    other = shoal.connect(conn.database.path)  # another writer of the file
    other.execute("INSERT INTO t(name) VALUES ('elsewhere')")
    other.commit()
    assert conn.version == 1 < other.version == 2  # this one has not written since
    read = conn.execute("SELECT name FROM t", min_version=other.version)
    assert read.fetchall() == [("elsewhere",)]
    with pytest.raises(shoal.OperationalError, match="min_version 3 not reached"):
        conn.execute("SELECT name FROM t", min_version=3)
    other.close()


def test_rollback_makes_no_record(conn: shoal.Connection) -> None:
    conn.execute("INSERT INTO t(name) VALUES ('gone')")
    conn.rollback()
    assert conn.version == 1
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_reads_inside_a_transaction_see_its_writes(conn: shoal.Connection) -> None:
    conn.execute("INSERT INTO t(name) VALUES ('mine')")
    assert conn.execute("SELECT name FROM t").fetchall() == [("mine",)]


def test_fetch_methods_and_description(conn: shoal.Connection) -> None:
    with conn:
        conn.executemany("INSERT INTO t(name) VALUES (?)", [(str(i),) for i in range(5)])
    cursor = conn.execute("SELECT id, name FROM t ORDER BY id")
    assert cursor.description is not None
    assert [d[:2] for d in cursor.description] == [("id", "INTEGER"), ("name", "TEXT")]
    assert cursor.rowcount == -1
    assert cursor.fetchone() == (1, "0")
    assert cursor.fetchmany(2) == [(2, "1"), (3, "2")]
    cursor.arraysize = 5
    assert cursor.fetchmany() == [(4, "3"), (5, "4")]
    assert cursor.fetchall() == []
    assert [row[0] for row in conn.execute("SELECT id FROM t")] == [1, 2, 3, 4, 5]


def test_context_manager_commits_or_rolls_back(conn: shoal.Connection) -> None:
    with conn:
        conn.execute("INSERT INTO t(name) VALUES ('kept')")
    with pytest.raises(shoal.IntegrityError), conn:
        conn.execute("INSERT INTO t(id, name) VALUES (99, 'x')")
        conn.execute("INSERT INTO t(id, name) VALUES (99, 'duplicate')")
    assert conn.execute("SELECT name FROM t").fetchall() == [("kept",)]
    assert conn.version == 2


def test_begin_commit_and_savepoints_as_sql(conn: shoal.Connection) -> None:
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t(name) VALUES ('a')")
    conn.execute("SAVEPOINT s")
    conn.execute("INSERT INTO t(name) VALUES ('b')")
    conn.execute("ROLLBACK TO s")
    conn.execute("COMMIT")
    assert conn.execute("SELECT name FROM t").fetchall() == [("a",)]
    assert conn.version == 2


def test_autocommit_commits_each_write(tmp_path: Path) -> None:
    conn = shoal.connect(tmp_path / "auto.db", autocommit=True)
    try:
        conn.execute("CREATE TABLE t(a)")
        conn.execute("INSERT INTO t VALUES (1)")
        assert not conn.in_transaction and conn.version == 2
    finally:
        conn.close()


def test_values_round_trip(conn: shoal.Connection) -> None:
    blob = bytes(range(256))
    when = datetime.datetime(2026, 11, 21, 8, 30)
    conn.execute("INSERT INTO t(name, data) VALUES (?, ?)", ("nul\x00", blob))
    conn.execute("INSERT INTO t(name, data) VALUES (:n, :d)", {"n": when, "d": bytearray(b"x")})
    rows = conn.execute("SELECT name, data FROM t ORDER BY id").fetchall()
    assert rows == [("nul\x00", blob), ("2026-11-21 08:30:00", b"x")]


def test_a_point_read_keeps_what_a_cursor_promises(conn: shoal.Connection) -> None:
    """One statement that reads goes straight to the reader: description, rowcount,
    lastrowid, adapted parameters and fetch errors are as on any other path."""
    cursor = conn.cursor()
    cursor.execute("INSERT INTO t(name) VALUES (?)", ("a",))
    conn.commit()
    assert cursor.lastrowid == 1
    cursor.execute("SELECT id, name FROM t WHERE id = ?", (1,))
    assert (cursor.lastrowid, cursor.rowcount) == (1, -1)  # a read leaves lastrowid
    assert [d[:2] for d in cursor.description or ()] == [("id", "INTEGER"), ("name", "TEXT")]
    assert cursor.fetchone() == (1, "a") and cursor.fetchone() is None
    empty = conn.execute("SELECT name FROM t WHERE id = ?", [99])
    assert [d[0] for d in empty.description or ()] == ["name"] and empty.fetchall() == []
    day = datetime.date(2026, 11, 21)
    assert conn.execute("SELECT ?, ?", (day, 1)).fetchone() == ("2026-11-21", 1)
    assert conn.execute("SELECT :d", {"d": day}).fetchone() == ("2026-11-21",)
    with pytest.raises(shoal.ProgrammingError, match="Bad binding"):
        conn.execute("SELECT ?", (object(),))
    with contextlib.closing(shoal.connect(conn.database.path)) as other:
        other.execute("ALTER TABLE t ADD COLUMN extra INT DEFAULT 7")
        other.commit()
    row = conn.execute("SELECT * FROM t WHERE id = ?", (1,))
    assert [d[0] for d in row.description or ()] == ["id", "name", "data", "extra"]
    assert row.fetchone() == (1, "a", None, 7)
    assert not conn.in_transaction
    conn.execute("WITH x(n) AS (SELECT ?) INSERT INTO t(name) SELECT n FROM x", (day,))
    assert conn.in_transaction  # a read that writes after all is a write
    conn.commit()
    assert conn.execute("SELECT name FROM t WHERE id = 2").fetchall() == [("2026-11-21",)]
    conn.close()
    with pytest.raises(shoal.InterfaceError):
        row.fetchone()
    with pytest.raises(shoal.InterfaceError):
        conn.execute("SELECT 1")


def test_errors_are_typed_and_change_nothing(conn: shoal.Connection) -> None:
    with pytest.raises(shoal.ProgrammingError):
        conn.execute("SELEC 1")
    with pytest.raises(shoal.ProgrammingError, match="ATTACH"):
        conn.execute("ATTACH 'x.db' AS x")
    with pytest.raises(shoal.ProgrammingError, match="sequence or a mapping"):
        conn.execute("SELECT ?", "x")  # type: ignore[arg-type]
    conn.rollback()
    assert conn.version == 1


def test_insert_or_rollback_ends_the_transaction_as_in_sqlite3(conn: shoal.Connection) -> None:
    conn.execute("CREATE UNIQUE INDEX name_once ON t(name)")
    conn.execute("INSERT INTO t(name) VALUES ('a')")
    conn.commit()
    version = conn.version
    conn.execute("INSERT INTO t(name) VALUES ('b')")
    with pytest.raises(shoal.IntegrityError, match="whole transaction was rolled back"):
        conn.execute("INSERT OR ROLLBACK INTO t(name) VALUES ('a')")
    assert not conn.in_transaction
    conn.commit()  # nothing to commit, as in sqlite3
    assert conn.version == version
    conn.execute("INSERT INTO t(name) VALUES ('c')")
    conn.commit()
    assert conn.execute("SELECT name FROM t ORDER BY name").fetchall() == [("a",), ("c",)]


def test_closed_connection_and_cursor(conn: shoal.Connection) -> None:
    cursor = conn.cursor()
    cursor.close()
    with pytest.raises(shoal.InterfaceError):
        cursor.execute("SELECT 1")
    conn.close()
    with pytest.raises(shoal.InterfaceError):
        conn.cursor()


def test_close_rolls_back_uncommitted_work(tmp_path: Path) -> None:
    conn = shoal.connect(tmp_path / "c.db")
    conn.execute("CREATE TABLE t(a)")
    conn.commit()
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    db = Database(tmp_path / "c.db")
    try:
        assert db.query("SELECT count(*) FROM t").results[0].rows == [(0,)]
        assert db.version == 1
    finally:
        db.close()


def test_memory_database_is_a_scratch_file() -> None:
    conn = shoal.connect(":memory:")
    conn.execute("CREATE TABLE t(a)")
    conn.commit()
    scratch = conn.database.path
    assert scratch.exists()
    conn.close()
    assert not scratch.exists()


def test_the_log_replays_onto_a_follower(conn: shoal.Connection, tmp_path: Path) -> None:
    with conn:
        conn.executemany("INSERT INTO t(name) VALUES (?)", [("x",), ("y",)])
    follower = Database(tmp_path / "follower.db", name="app")
    follower.demote()
    try:
        for raw in conn.database.log_range(1):
            follower.apply(raw)
        assert follower.checksum() == conn.database.checksum()
    finally:
        follower.close()


def test_a_with_query_that_only_reads_opens_no_transaction(conn: shoal.Connection) -> None:
    assert conn.execute("WITH x(n) AS (SELECT 1) SELECT n FROM x").fetchall() == [(1,)]
    assert not conn.in_transaction
    conn.execute("CREATE TABLE w(a)")
    conn.execute("WITH x(n) AS (SELECT 2) INSERT INTO w SELECT n FROM x")
    assert conn.in_transaction
    conn.commit()
    assert conn.execute("SELECT a FROM w").fetchall() == [(2,)]


def connect_as_django_does(conn: shoal.Connection) -> None:
    """What Django's SQLite backend runs on each new connection and around a
    migration (its disable/enable_constraint_checking), with the pragmas other
    applications set, each checked as Django checks it."""
    cursor = conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA legacy_alter_table = OFF")
    assert cursor.execute("PRAGMA busy_timeout = 2000").fetchall() == [(2000,)]
    assert cursor.execute("PRAGMA journal_mode = WAL").fetchall() == [("wal",)]
    for tuning in ("synchronous = NORMAL", "cache_size = -8000", "temp_store = MEMORY"):
        assert cursor.execute(f"PRAGMA {tuning}").description is None  # as in SQLite
    assert cursor.execute("PRAGMA foreign_keys").fetchone() == (1,)
    assert not conn.in_transaction
    cursor.execute("PRAGMA foreign_keys = OFF")  # a migration begins
    assert cursor.execute("PRAGMA foreign_keys").fetchone() == (0,)
    cursor.execute("PRAGMA foreign_keys = ON")  # and ends
    assert cursor.execute("PRAGMA foreign_keys").fetchone() == (1,)


def assert_foreign_keys_enforced(conn: shoal.Connection) -> None:
    """An orphan is refused, and a transaction cannot turn enforcement off."""
    conn.execute("CREATE TABLE IF NOT EXISTS parent(id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE IF NOT EXISTS child(id, parent REFERENCES parent(id))")
    conn.commit()
    with pytest.raises(shoal.IntegrityError, match="FOREIGN KEY"):
        conn.execute("INSERT INTO child VALUES (1, 99)")
    conn.rollback()
    conn.execute("INSERT INTO parent VALUES (1)")
    with pytest.raises(shoal.ProgrammingError, match="outside any transaction"):
        conn.execute("PRAGMA foreign_keys = OFF")
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM parent").fetchall() == [(0,)]


def stored(path: Path) -> tuple[int, bool]:
    """The file's version and foreign-key setting, as a new opener finds them."""
    with Database(path) as db:
        return db.version, db.foreign_keys


def test_what_django_sends_on_connect_works_and_foreign_keys_hold(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with contextlib.closing(shoal.connect(path)) as first:
        connect_as_django_does(first)
    with contextlib.closing(shoal.connect(path)) as second:
        before = stored(path)
        second.execute("PRAGMA foreign_keys = ON")  # restated: no record
        assert stored(path) == before and before[1]
        connect_as_django_does(second)
        assert_foreign_keys_enforced(second)


class Median:
    """An aggregate as sqlite3 takes one: made per group, stepped, finalized."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: float) -> None:
        self.values.append(value)

    def finalize(self) -> float | None:
        ordered = sorted(self.values)
        return ordered[len(ordered) // 2] if ordered else None


def test_functions_and_aggregates_as_in_sqlite3(conn: shoal.Connection) -> None:
    conn.executemany("INSERT INTO t(name) VALUES (?)", [("b",), ("a",), ("c",)])
    conn.commit()
    conn.create_function("shout", 1, lambda text: text.upper() + "!", deterministic=True)
    conn.create_aggregate("median_id", 1, Median)
    assert conn.execute("SELECT shout(name) FROM t ORDER BY id").fetchall() == [
        ("B!",),
        ("A!",),
        ("C!",),
    ]
    assert conn.execute("SELECT median_id(id) FROM t").fetchone() == (2,)
    conn.execute("UPDATE t SET name = shout(name) WHERE id = 1")  # in a write transaction
    conn.commit()
    assert conn.execute("SELECT name FROM t WHERE id = 1").fetchone() == ("B!",)
    conn.create_function("shout", 1, None)
    with pytest.raises(shoal.ProgrammingError, match="no such function: shout"):
        conn.execute("SELECT shout(name) FROM t")
    conn.create_function("boom", 0, lambda: 1 // 0)
    with pytest.raises(shoal.OperationalError, match=r"boom\(\) raised ZeroDivisionError"):
        conn.execute("SELECT boom()")


def test_isolation_level_is_autocommit_in_sqlite3s_words(conn: shoal.Connection) -> None:
    assert conn.isolation_level == "" and not conn.autocommit
    conn.execute("INSERT INTO t(name) VALUES ('pending')")
    conn.isolation_level = None  # commits the open transaction, as sqlite3 does
    assert conn.autocommit and not conn.in_transaction
    conn.rollback()
    assert conn.execute("SELECT name FROM t").fetchall() == [("pending",)]
    conn.isolation_level = "IMMEDIATE"
    assert conn.isolation_level == "" and not conn.autocommit
    with pytest.raises(shoal.ProgrammingError, match="isolation_level must be None or one of"):
        conn.isolation_level = "SNAPSHOT"
    assert not conn.autocommit


def test_cursor_takes_a_factory(conn: shoal.Connection) -> None:
    class Tagged(shoal.Cursor):
        tag = "mine"

    cursor = conn.cursor(factory=Tagged)
    assert isinstance(cursor, Tagged) and cursor.execute("SELECT 1").fetchone() == (1,)
