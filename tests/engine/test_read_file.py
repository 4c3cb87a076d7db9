"""read_file: one read of a database file nobody holds open, as a reader would run
it; nothing it is sent can change the file, and it leaves no WAL files behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.engine import Database, Limits, Options, read_file
from shoal.errors import Error, OperationalError, StatementTimeout


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = Database(tmp_path / "app.db")
    db.execute("CREATE TABLE t(a)")
    db.execute("INSERT INTO t VALUES (1), (2)")
    db.close()
    return tmp_path / "app.db"


def test_it_reads_and_leaves_only_the_file(path: Path) -> None:
    result = read_file(path, "SELECT sum(a) AS total FROM t WHERE a > ?", (0,), Options())
    assert result[0].columns == ["total"] and result[0].rows == [(3,)]
    assert sorted(p.name for p in path.parent.iterdir()) == ["app.db"]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM t",
        "INSERT INTO t VALUES (3)",
        "CREATE TABLE u(a)",
        "CREATE TEMP TABLE x(a)",
        "DROP TABLE t",
        "PRAGMA user_version = 5",
        "PRAGMA query_only = 0",
        "PRAGMA query_only = 0; DELETE FROM t",
        "ANALYZE",
        "REINDEX",
        "VACUUM",
        "ATTACH 'other.db' AS other",
    ],
)
def test_nothing_it_is_sent_changes_the_file(path: Path, sql: str) -> None:
    with pytest.raises(Error):
        read_file(path, sql, None, Options())
    db = Database(path)
    try:
        assert db.version == 2
        assert db.query("SELECT a FROM t").results[0].rows == [(1,), (2,)]
        assert [r[0] for r in db.query("SELECT name FROM sqlite_schema").results[0].rows] == [
            "_shoal_log",
            "_shoal_meta",
            "t",
        ]
    finally:
        db.close()


def test_limits_hold_and_a_missing_file_is_an_error(path: Path) -> None:
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    with pytest.raises(StatementTimeout):
        read_file(path, endless, None, Options(limits=Limits(statement_seconds=0.2)))
    with pytest.raises(OperationalError):
        read_file(path.with_name("missing.db"), "SELECT 1", None, Options())
    assert not path.with_name("missing.db").exists()
