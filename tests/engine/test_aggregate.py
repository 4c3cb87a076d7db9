"""The outer statement of query-many: it reads the gathered rows and nothing else."""

from __future__ import annotations

import pytest

from shoal.engine.aggregate import aggregate, column_names
from shoal.errors import ResultTooLarge, SQLError, StatementTimeout

ROWS = [("a", 1, "x"), ("b", 2, "y"), ("a", 3, None)]


def run(sql: str, **limits: float) -> list[tuple[object, ...]]:
    settings = {"seconds": 5.0, "max_rows": 100} | limits
    return aggregate(["n", "s"], ROWS, sql, **settings).rows  # type: ignore[arg-type]


def test_the_statement_runs_over_a_table_of_the_rows() -> None:
    assert run("SELECT db, sum(n), count(s) FROM results GROUP BY db ORDER BY db") == [
        ("a", 4, 1),
        ("b", 2, 1),
    ]
    result = aggregate(
        ["n"], [("a", 1)], "SELECT db AS tenant, n FROM results", seconds=1, max_rows=9
    )
    assert result.columns == ["tenant", "n"]
    assert run("SELECT * FROM results WHERE 0") == []


def test_column_names_are_unique_with_db_first() -> None:
    assert column_names(["n", "N", "db", "x"]) == ["db", "n", "N_2", "db_2", "x"]
    assert run("SELECT count(*) FROM results") == [(3,)]


@pytest.mark.parametrize(
    "sql",
    [
        "ATTACH '/tmp/elsewhere.db' AS other",
        "DELETE FROM results",
        "UPDATE results SET n = 0",
        "CREATE TABLE t(a)",
        "PRAGMA table_info(results)",
        "SELECT load_extension('x')",
    ],
)
def test_anything_but_reading_is_refused(sql: str) -> None:
    with pytest.raises(SQLError):
        run(sql)


def test_one_statement_and_it_must_return_rows() -> None:
    with pytest.raises(SQLError, match="one statement"):
        run("SELECT 1; SELECT 2")
    assert run("SELECT ';' FROM results LIMIT 1") == [(";",)]
    with pytest.raises(SQLError):
        run("")


def test_limits_of_time_and_rows() -> None:
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    with pytest.raises(StatementTimeout):
        run(endless, seconds=0.2)
    with pytest.raises(ResultTooLarge):
        run("SELECT * FROM results", max_rows=2)
