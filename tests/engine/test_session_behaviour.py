"""Pins the session-extension behaviour through APSW that capture and apply rely on.

Each was checked on SQLite 3.54 before shoal was built on it; a later SQLite or
APSW could change any of them, and then these tests say which.
"""

from __future__ import annotations

import apsw
import pytest


@pytest.fixture
def conn() -> apsw.Connection:
    connection = apsw.Connection(":memory:")
    return connection


def changes(conn: apsw.Connection, sql: str, *, rowid: bool = True) -> list[tuple[str, str]]:
    session = apsw.Session(conn, "main")
    if rowid:
        session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
    session.attach()
    for _ in conn.execute(sql):
        pass
    found = [(change.name, change.op) for change in apsw.Changeset.iter(session.changeset())]
    session.close()
    return found


def test_sqlite_is_new_enough() -> None:
    major, minor = (int(part) for part in apsw.sqlite_lib_version().split(".")[:2])
    assert (major, minor) >= (3, 54)


def test_tables_without_primary_key_need_the_rowid_option(conn: apsw.Connection) -> None:
    conn.execute("CREATE TABLE loose(a)")
    assert changes(conn, "INSERT INTO loose VALUES (1)", rowid=False) == []
    assert changes(conn, "INSERT INTO loose VALUES (2)") == [("loose", "INSERT")]


def test_sqlite_sequence_is_never_in_a_changeset(conn: apsw.Connection) -> None:
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY AUTOINCREMENT, v)")
    assert changes(conn, "INSERT INTO t(v) VALUES (1)") == [("t", "INSERT")]


def test_fts5_shadow_tables_are_in_the_changeset(conn: apsw.Connection) -> None:
    conn.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    tables = {name for name, _ in changes(conn, "INSERT INTO docs VALUES ('hello world')")}
    assert {"docs_data", "docs_content", "docs_docsize"} <= tables


def test_generated_columns_are_left_out(conn: apsw.Connection) -> None:
    conn.execute("CREATE TABLE g(id INTEGER PRIMARY KEY, a, b GENERATED ALWAYS AS (a * 2) STORED)")
    session = apsw.Session(conn, "main")
    session.attach()
    conn.execute("INSERT INTO g(id, a) VALUES (1, 3)")
    new_rows = [change.new for change in apsw.Changeset.iter(session.changeset())]
    assert new_rows == [(1, 3)]  # id and a; b is recomputed on apply


def test_disabled_triggers_do_not_fire_on_apply(conn: apsw.Connection) -> None:
    for ddl in ("CREATE TABLE t(id INTEGER PRIMARY KEY)", "CREATE TABLE fired(n)"):
        conn.execute(ddl)
    session = apsw.Session(conn, "main")
    session.attach("t")
    conn.execute("INSERT INTO t VALUES (1)")
    changeset = session.changeset()
    follower = apsw.Connection(":memory:")
    follower.execute("CREATE TABLE t(id INTEGER PRIMARY KEY); CREATE TABLE fired(n)")
    follower.execute("CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO fired VALUES (1); END")
    follower.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 0)
    apsw.Changeset.apply(changeset, follower)
    assert follower.execute("SELECT count(*) FROM fired").fetchall() == [(0,)]


def test_rolled_back_savepoint_leaves_nothing(conn: apsw.Connection) -> None:
    conn.execute("CREATE TABLE t(a)")
    sql = "BEGIN; SAVEPOINT s; INSERT INTO t VALUES (1); ROLLBACK TO s; RELEASE s; COMMIT"
    assert changes(conn, sql) == []


def test_changeset_for_a_missing_table_is_skipped_silently(conn: apsw.Connection) -> None:
    """Why apply guards every table: SQLite itself would not complain."""
    conn.execute("CREATE TABLE t(a)")
    session = apsw.Session(conn, "main")
    session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
    session.attach()
    conn.execute("INSERT INTO t VALUES (1)")
    apsw.Changeset.apply(session.changeset(), apsw.Connection(":memory:"))  # no error


def test_create_table_as_select_rows_are_not_captured(conn: apsw.Connection) -> None:
    """Why capture cuts at DDL and ships a new table's rows itself."""
    conn.execute("CREATE TABLE src(a)")
    conn.execute("INSERT INTO src VALUES (1)")
    assert changes(conn, "CREATE TABLE copy AS SELECT * FROM src") == []


def test_authorizer_sees_ddl_and_can_deny_attach(conn: apsw.Connection) -> None:
    seen: list[int] = []

    def authorizer(code: int, *args: object) -> int:
        seen.append(code)
        return apsw.SQLITE_DENY if code == apsw.SQLITE_ATTACH else apsw.SQLITE_OK

    conn.authorizer = authorizer
    conn.execute("CREATE TABLE t(a)")
    assert apsw.SQLITE_CREATE_TABLE in seen
    with pytest.raises(apsw.AuthError):
        conn.execute("ATTACH ':memory:' AS other")


def test_statement_cache_skips_the_authorizer_unless_flags_differ(conn: apsw.Connection) -> None:
    """Why user statements are prepared with their own flags (execute.USER_PREPARE_FLAGS)."""
    calls: list[int] = []
    conn.authorizer = lambda code, *args: calls.append(code) or apsw.SQLITE_OK
    conn.execute("SELECT 1")
    calls.clear()
    conn.execute("SELECT 1")
    assert calls == []  # served from the cache: no authorizer
    conn.cursor().execute("SELECT 1", prepare_flags=apsw.SQLITE_PREPARE_PERSISTENT)
    assert calls  # other flags: prepared again, authorized again


def test_exec_trace_hands_each_statements_text(conn: apsw.Connection) -> None:
    texts: list[str] = []
    cursor = conn.cursor()
    cursor.exec_trace = lambda _cursor, sql, _bindings: texts.append(sql.strip()) or True
    for _ in cursor.execute("CREATE TABLE t(a); INSERT INTO t VALUES (1); SELECT * FROM t"):
        pass
    assert texts == ["CREATE TABLE t(a);", "INSERT INTO t VALUES (1);", "SELECT * FROM t"]


def test_rowid_mode_records_a_stray_insert_when_its_hash_grows(conn: apsw.Connection) -> None:
    """The SQLite bug engine/rowid_tables.py works around. If this starts failing,
    SQLite has fixed it: the workaround can go, and docs/sql-features.md changes."""
    conn.execute("CREATE TABLE loose(a, b)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
        "INSERT INTO loose(a) SELECT i FROM n"
    )
    found = changes(conn, "UPDATE loose SET b = 1")
    assert found.count(("loose", "UPDATE")) == 300
    assert found.count(("loose", "INSERT")) == 2  # at the growths, 128 and 256 rows


def test_size_estimate_counts_every_row_touched(conn: apsw.Connection) -> None:
    """rowid_tables relies on the estimate growing by at least 12 bytes for each row
    of a one-column table without primary key, even rows inserted then deleted."""
    conn.execute("CREATE TABLE loose(a)")
    session = apsw.Session(conn, "main")
    session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
    session.config(apsw.SQLITE_SESSION_OBJCONFIG_SIZE, 1)
    session.attach()
    for rowid in range(1, 129):
        conn.execute("INSERT INTO loose(rowid, a) VALUES (?, NULL)", (rowid,))
        conn.execute("DELETE FROM loose WHERE rowid = ?", (rowid,))
    assert session.changeset_size >= 128 * 12
    session.close()
