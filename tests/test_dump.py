"""shoal.dump: SQL that rebuilds a database to the same logical checksum."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import apsw
import pytest

from shoal.dump import Query, dump, dump_text, user_objects
from shoal.engine import Database
from tests.conftest import rows

Copy = Callable[[Database], Database]


def reader(db: Database) -> Query:
    return lambda sql: rows(db, sql)


@pytest.fixture
def copy(tmp_path: Path) -> Iterator[Copy]:
    """Loads a database's dump into a fresh one and checks that the checksums agree."""
    made: list[Database] = []

    def load(db: Database) -> Database:
        fresh = Database(tmp_path / f"copy{len(made)}.db", name="copy")
        made.append(fresh)
        fresh.execute(dump_text(reader(db)))
        assert fresh.checksum() == db.checksum()
        return fresh

    yield load
    for fresh in made:
        fresh.close()


def test_every_value_type_round_trips_exactly(db: Database, copy: Copy) -> None:
    values = [
        None,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        0.1,
        1 / 3,
        -0.0,
        5e-324,
        1.7976931348623157e308,
        1e16,
        float("inf"),
        float("-inf"),
        "",
        'it\'s "quoted"',
        "line\nbreak\r\ttab",
        "nul\0inside",
        "ünïcødé ✓ 🐟",
        "1",
        b"",
        b"\x00\xff'\"",
    ]
    db.execute("CREATE TABLE v(x)")
    db.execute_all([("INSERT INTO v VALUES (?)", (value,)) for value in values])
    fresh = copy(db)
    assert rows(fresh, "SELECT x FROM v ORDER BY rowid") == [(v,) for v in values]
    assert rows(fresh, "SELECT typeof(x) FROM v") == rows(db, "SELECT typeof(x) FROM v")


def test_literals_are_written_as_sqlite_reads_them(db: Database) -> None:
    db.execute(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v);"
        "INSERT INTO t(v) VALUES (NULL), (-7), (2.5), ('a''b'), (x'01ab'), (1e999), (-1e999)"
    )
    assert dump_text(reader(db)).splitlines() == [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v);",
        'INSERT INTO "t"("id","v") VALUES(1,NULL);',
        'INSERT INTO "t"("id","v") VALUES(2,-7);',
        'INSERT INTO "t"("id","v") VALUES(3,2.5);',
        'INSERT INTO "t"("id","v") VALUES(4,\'a\'\'b\');',
        'INSERT INTO "t"("id","v") VALUES(5,X\'01ab\');',
        'INSERT INTO "t"("id","v") VALUES(6,1e999);',
        'INSERT INTO "t"("id","v") VALUES(7,-1e999);',
    ]


def test_random_reals_survive_the_text_round_trip(db: Database, copy: Copy) -> None:
    import random
    import struct

    generator = random.Random(7)
    reals: list[float] = []
    while len(reals) < 2000:
        (real,) = struct.unpack("<d", generator.getrandbits(64).to_bytes(8, "little"))
        if real == real:  # SQLite stores NaN as NULL
            reals.append(real)
    db.execute("CREATE TABLE r(x REAL)")
    db.execute_all([("INSERT INTO r VALUES (?)", (real,)) for real in reals])
    assert rows(copy(db), "SELECT x FROM r ORDER BY rowid") == [(r,) for r in reals]


def test_awkward_identifiers(db: Database, copy: Copy) -> None:
    db.execute(
        '''
        CREATE TABLE "select"("from" INTEGER, "we""ird col" TEXT, "sp ace" REAL, "order");
        CREATE INDEX "idx ""x""" ON "select"("we""ird col");
        CREATE TABLE [bracket name](`back tick`);
        CREATE VIEW "view ""v""" AS SELECT "from" AS "group" FROM "select";
        INSERT INTO "select" VALUES (1, 'a', 1.5, 'x'), (2, 'b', NULL, NULL);
        INSERT INTO [bracket name] VALUES ('y');
        '''
    )
    text = dump_text(reader(db))
    assert 'INSERT INTO "select"(rowid,"from","we""ird col","sp ace","order") VALUES(' in text
    assert 'INSERT INTO "bracket name"(rowid,"back tick") VALUES(1,\'y\');' in text
    copy(db)


def test_rowids_are_kept_where_no_column_holds_them(db: Database, copy: Copy) -> None:
    db.execute(
        """
        CREATE TABLE plain(v);
        CREATE TABLE shadowed(rowid, v);
        CREATE TABLE alias(id integer primary key, v);
        CREATE TABLE quirk(id INTEGER PRIMARY KEY DESC, v);
        INSERT INTO plain(rowid, v) VALUES (5, 'a'), (9, 'b');
        INSERT INTO shadowed(_rowid_, rowid, v) VALUES (4, 'r', 'c');
        INSERT INTO alias VALUES (3, 'd');
        INSERT INTO quirk(rowid, id, v) VALUES (8, 3, 'e');
        """
    )
    text = dump_text(reader(db))
    assert 'INSERT INTO "plain"(rowid,"v") VALUES(9,\'b\');' in text
    assert 'INSERT INTO "shadowed"(_rowid_,"rowid","v") VALUES(4,\'r\',\'c\');' in text
    assert 'INSERT INTO "alias"("id","v") VALUES(3,\'d\');' in text  # id is the rowid
    assert 'INSERT INTO "quirk"(rowid,"id","v") VALUES(8,3,\'e\');' in text  # id is not
    copy(db)


def test_without_rowid_tables(db: Database, copy: Copy) -> None:
    db.execute(
        "CREATE TABLE kv(k TEXT, n INT, v, PRIMARY KEY (n, k)) WITHOUT ROWID;"
        "CREATE INDEX kv_v ON kv(v);"  # a covering index SQLite would rather scan
        "INSERT INTO kv VALUES ('b', 1, 'x'), ('a', 2, 'y'), ('a', 1, 'z')"
    )
    inserts = [line for line in dump(reader(db)) if line.startswith("INSERT")]
    assert inserts == [
        'INSERT INTO "kv"("k","n","v") VALUES(\'a\',1,\'z\');',
        'INSERT INTO "kv"("k","n","v") VALUES(\'b\',1,\'x\');',
        'INSERT INTO "kv"("k","n","v") VALUES(\'a\',2,\'y\');',
    ]
    copy(db)


def test_generated_columns_are_left_out_of_inserts(db: Database, copy: Copy) -> None:
    db.execute(
        "CREATE TABLE g(a INT, b AS (a * 2), c INT GENERATED ALWAYS AS (a + 1) STORED, d);"
        "INSERT INTO g(a, d) VALUES (1, 'x'), (5, 'y')"
    )
    assert 'INSERT INTO "g"(rowid,"a","d") VALUES(2,5,\'y\');' in dump_text(reader(db))
    fresh = copy(db)
    assert rows(fresh, "SELECT a, b, c, d FROM g") == [(1, 2, 2, "x"), (5, 10, 6, "y")]


def test_indexes_views_and_triggers_follow_every_row(db: Database, copy: Copy) -> None:
    db.execute(
        """
        CREATE TABLE t(id INTEGER PRIMARY KEY, v UNIQUE);
        CREATE TABLE audit(n);
        CREATE INDEX t_v ON t(v DESC);
        CREATE VIEW big AS SELECT * FROM t WHERE id > 1;
        CREATE TRIGGER t_log AFTER INSERT ON t BEGIN INSERT INTO audit VALUES (new.id); END;
        CREATE TRIGGER big_in INSTEAD OF INSERT ON big
            BEGIN INSERT INTO t VALUES (new.id, new.v); END;
        INSERT INTO t VALUES (1, 'a'), (2, 'b');
        """
    )
    statements = list(dump(reader(db)))
    kinds = [s.split("(")[0].split()[1] for s in statements if s.startswith(("CREATE", "INSERT"))]
    tables = ["TABLE", "INTO", "INTO"] * 2
    assert kinds == [*tables, "INDEX", "VIEW", "TRIGGER", "TRIGGER"]
    fresh = copy(db)  # audit holds two rows in both: loading fired no trigger
    assert rows(fresh, "SELECT n FROM audit") == [(1,), (2,)]
    fresh.execute("INSERT INTO big VALUES (3, 'c')")  # and they work afterwards
    assert rows(fresh, "SELECT n FROM audit") == [(1,), (2,), (3,)]


def test_fts5_is_dumped_as_its_rows_without_shadow_tables(db: Database, copy: Copy) -> None:
    db.execute(
        "CREATE VIRTUAL TABLE docs USING fts5(title, body);"
        "CREATE TABLE docs_notes(n);"  # named like a shadow table, but the user's own
        "INSERT INTO docs(rowid, title, body) VALUES (4, 'fish', 'a shoal of fish'),"
        " (9, 'birds', 'a flock');"
        "INSERT INTO docs_notes VALUES ('kept')"
    )
    text = dump_text(reader(db))
    assert "CREATE VIRTUAL TABLE docs USING fts5(title, body);" in text
    assert 'INSERT INTO "docs"(rowid,"title","body") VALUES(4,\'fish\',\'a shoal of fish\');' in (
        text
    )
    assert "docs_data" not in text and "docs_content" not in text
    assert "CREATE TABLE docs_notes(n);" in text
    assert [o.name for o in user_objects(reader(db))] == ["docs", "docs_notes"]
    fresh = copy(db)  # the same shadow rows too, as the rows were written in one go
    assert rows(fresh, "SELECT rowid FROM docs WHERE docs MATCH 'shoal'") == [(4,)]


def test_fts5_written_over_many_transactions_searches_the_same(
    db: Database, tmp_path: Path
) -> None:
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    for body in ("one two", "two three", "three four"):
        db.execute("INSERT INTO docs(body) VALUES (?)", (body,))
    db.execute("DELETE FROM docs WHERE rowid = 1")
    with Database(tmp_path / "fresh.db") as fresh:
        fresh.execute(dump_text(reader(db)))
        # Not the same checksum: FTS5's segments record how the index was written.
        for word in ("one", "two", "three", "four"):
            search = f"SELECT rowid, body FROM docs WHERE docs MATCH '{word}'"
            assert rows(fresh, search) == rows(db, search)


def test_autoincrement_counters_are_restored(db: Database, copy: Copy) -> None:
    db.execute(
        "CREATE TABLE s(id INTEGER PRIMARY KEY AUTOINCREMENT, v);"
        "CREATE TABLE unused(id INTEGER PRIMARY KEY AUTOINCREMENT);"
        "INSERT INTO s(v) VALUES ('a'), ('b'), ('c');"
        "DELETE FROM s WHERE id >= 2"
    )
    statements = list(dump(reader(db)))
    at = statements.index("DELETE FROM sqlite_sequence;")
    assert statements[at + 1 :] == ["INSERT INTO sqlite_sequence(name, seq) VALUES('s', 3);"]
    fresh = copy(db)
    assert fresh.execute("INSERT INTO s(v) VALUES ('d')").results[0].last_insert_id == 4


def test_user_version_and_application_id(db: Database, copy: Copy) -> None:
    assert "PRAGMA" not in dump_text(reader(db))  # zero is the default: nothing to say
    db.execute("PRAGMA user_version = 42")
    db.execute("PRAGMA application_id = 7")
    assert list(dump(reader(db)))[-2:] == [
        "PRAGMA user_version = 42;",
        "PRAGMA application_id = 7;",
    ]
    fresh = copy(db)
    assert rows(fresh, "PRAGMA user_version") == [(42,)]


def test_shoal_and_sqlite_tables_are_left_out(db: Database) -> None:
    assert list(dump(reader(db))) == []  # only _shoal_log and _shoal_meta exist
    db.execute("CREATE TABLE t(a PRIMARY KEY, b UNIQUE); INSERT INTO t VALUES (1, 2); ANALYZE")
    text = dump_text(reader(db))
    assert "_shoal_" not in text and "sqlite_" not in text


def test_every_statement_is_complete_and_ends_with_a_semicolon(db: Database) -> None:
    db.execute(
        "CREATE TABLE t(a); INSERT INTO t VALUES ('x;\ny'), ('-- not a comment');"
        "CREATE TRIGGER tr AFTER DELETE ON t BEGIN SELECT 1; SELECT 2; END"
    )
    statements = list(dump(reader(db)))
    assert len(statements) == 4
    for statement in statements:
        assert statement.endswith(";") and apsw.complete(statement), statement
        assert not apsw.complete(statement[:-1]), statement  # one statement, not two
