"""POST /v1/query-many on one node: rows tagged by database, the aggregate, errors
per database, limits and auth. The cluster's forwarding is in tests/system."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from shoal.node.auth import TokenStore
from tests.server.test_native import answered_meanwhile

MANY = "/v1/query-many"
SLOW_VIEW = (
    "CREATE VIEW w AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
    "SELECT max(x) AS n FROM c"
)


def tenants(api: TestClient, count: int, headers: dict[str, str] | None = None) -> None:
    """Databases t-0 .. t-(count-1), each with orders (i, 10), and x-other with none."""
    for i in range(count):
        name = f"t-{i}"
        assert api.post("/v1/databases", json={"name": name}, headers=headers).status_code == 201
        body = {
            "statements": [
                "CREATE TABLE orders(amount, note)",
                {"sql": "INSERT INTO orders VALUES (?, x'00ff'), (10, NULL)", "params": [i]},
            ]
        }
        api.post(f"/v1/databases/{name}/execute", json=body, headers=headers)
    api.post("/v1/databases", json={"name": "x-other"}, headers=headers)


def many(api: TestClient, status: int = 200, **body: Any) -> Any:
    response = api.post(MANY, json=body)
    assert response.status_code == status, response.text
    return response.json()


def test_rows_come_tagged_with_their_database_and_failures_apart(api: TestClient) -> None:
    tenants(api, 3)
    found = many(api, pattern="*", sql="SELECT sum(amount) AS total, max(note) FROM orders")
    assert found["columns"] == ["db", "total", "max(note)"]
    assert found["rows"] == [
        ["t-0", 10, {"base64": "AP8="}],
        ["t-1", 11, {"base64": "AP8="}],
        ["t-2", 12, {"base64": "AP8="}],
    ]
    assert found["databases"] == 5  # default and x-other have no table
    assert {e["database"]: e["error"]["type"] for e in found["errors"]} == {
        "default": "SQLError",
        "x-other": "SQLError",
    }
    named = many(api, databases=["t-2", "t-0", "t-2", "nope"], sql="SELECT ? AS v", params=[7])
    assert named["rows"] == [["t-0", 7], ["t-2", 7]] and named["databases"] == 3
    assert named["errors"][0]["database"] == "nope"
    assert named["errors"][0]["error"]["type"] == "DatabaseNotFound"
    none = many(api, pattern="zzz*", sql="SELECT 1")
    assert none == {"columns": [], "rows": [], "databases": 0, "errors": []}


def test_an_aggregate_runs_over_the_gathered_rows(api: TestClient) -> None:
    tenants(api, 4)
    found = many(
        api,
        pattern="t-*",
        sql="SELECT amount FROM orders",
        aggregate="SELECT db, sum(amount) AS total FROM results GROUP BY db "
        "ORDER BY total DESC LIMIT 2",
    )
    assert found["columns"] == ["db", "total"]
    assert found["rows"] == [["t-3", 13], ["t-2", 12]] and found["errors"] == []
    refused = many(api, 400, pattern="t-*", sql="SELECT 1", aggregate="DELETE FROM results")
    assert refused["error"]["type"] == "SQLError"


def test_a_slow_aggregate_does_not_hold_back_other_requests(make_api: Any) -> None:
    api = make_api(statement_seconds=1.5)
    api.post("/v1/databases", json={"name": "app"})
    endless = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    body = {"pattern": "app", "sql": "SELECT 1", "aggregate": endless}
    answer = answered_meanwhile(api, lambda: api.post(MANY, json=body))
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "StatementTimeout"


def test_a_database_whose_columns_differ_is_an_error_of_its_own(api: TestClient) -> None:
    tenants(api, 2)
    api.post("/v1/databases/x-other/execute", json={"sql": "CREATE TABLE orders(amount, b, c)"})
    found = many(api, pattern="*-*", sql="SELECT * FROM orders")
    assert [row[0] for row in found["rows"]] == ["t-0", "t-0", "t-1", "t-1"]
    assert found["errors"][0]["database"] == "x-other"
    assert "differ" in found["errors"][0]["error"]["message"]


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        ({"sql": "SELECT 1"}, "InvalidRequest"),
        ({"pattern": "*", "databases": ["t-0"], "sql": "SELECT 1"}, "InvalidRequest"),
        ({"pattern": "*", "sql": "DELETE FROM orders"}, "QueryWrites"),
        ({"pattern": "*", "sql": "SELECT 1; SELECT 2"}, "InvalidRequest"),
        ({"pattern": "*", "sql": "SELECT 1", "extra": 1}, "InvalidRequest"),
        ({"pattern": "", "sql": "SELECT 1"}, "InvalidRequest"),
        ({"databases": [], "sql": "SELECT 1"}, "InvalidRequest"),
        ({"databases": ["../etc"], "sql": "SELECT 1"}, "InvalidRequest"),
        ({"databases": [3], "sql": "SELECT 1"}, "InvalidRequest"),
        ({"pattern": "*", "sql": 1}, "InvalidRequest"),
        ({"pattern": "*", "sql": "SELECT 1", "timeout": 0}, "InvalidRequest"),
        ({"pattern": "*", "sql": "SELECT 1", "level": "strongest"}, "InvalidRequest"),
        ({"pattern": "*", "sql": "SELECT 1", "params": {"a": [1]}}, "InvalidRequest"),
        ([], "InvalidRequest"),
    ],
)
def test_bad_requests_are_refused_whole_and_change_nothing(
    api: TestClient, body: Any, kind: str
) -> None:
    tenants(api, 1)
    refused = api.post(MANY, json=body)
    assert refused.status_code == 400 and refused.json()["error"]["type"] == kind
    rows = many(api, pattern="t-0", sql="SELECT count(*) FROM orders")["rows"]
    assert rows == [["t-0", 2]]
    assert api.post(MANY, content=b"{nope").json()["error"]["type"] == "InvalidRequest"


def test_limits_on_databases_and_rows(make_api: Any) -> None:
    api = make_api(max_query_many=3, max_result_rows=5)
    tenants(api, 3)
    over = many(api, 413, pattern="*", sql="SELECT 1")
    assert (
        over["error"]["type"] == "RequestTooLarge" and "max_query_many" in over["error"]["message"]
    )
    too_many_rows = many(api, 400, pattern="t-*", sql="SELECT * FROM orders")
    assert too_many_rows["error"]["type"] == "ResultTooLarge"
    counted = many(api, pattern="t-*", sql="SELECT count(*) FROM orders")
    assert len(counted["rows"]) == 3


def test_a_database_slower_than_the_call_is_reported_and_the_rest_answer(make_api: Any) -> None:
    api = make_api(statement_seconds=3)
    for name, view in (("fast", "CREATE VIEW w AS SELECT 1 AS n"), ("slow", SLOW_VIEW)):
        api.post("/v1/databases", json={"name": name})
        api.post(f"/v1/databases/{name}/execute", json={"sql": view})
    started = time.monotonic()
    found = many(api, databases=["fast", "slow"], sql="SELECT n FROM w", timeout=0.5)
    assert time.monotonic() - started < 2.5
    assert found["rows"] == [["fast", 1]]
    assert found["errors"][0]["database"] == "slow"
    assert found["errors"][0]["error"]["type"] == "Unavailable"


def test_only_databases_the_token_may_read(make_api: Any, tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "data")
    tenant = store.create("tenant", "read", ("t-*",))
    admin = store.create("admin", "admin", ("*",))
    store.close()
    api = make_api(host="192.0.2.10")
    tenants(api, 2, headers={"Authorization": f"Bearer {admin}"})
    as_tenant = {"Authorization": f"Bearer {tenant}"}
    everything = {"pattern": "*", "sql": "SELECT count(*) FROM orders"}
    found = api.post(MANY, json=everything, headers=as_tenant).json()
    assert [row[0] for row in found["rows"]] == ["t-0", "t-1"] and found["errors"] == []
    named = {"databases": ["t-1", "x-other"], "sql": "SELECT 1"}
    found = api.post(MANY, json=named, headers=as_tenant).json()
    assert found["rows"] == [["t-1", 1]]
    assert found["errors"][0]["error"]["type"] == "Forbidden"
    assert api.post(MANY, json=everything).status_code == 401


def open_names(api: TestClient, at_most: int) -> list[str]:
    """The databases the node holds open, once at most `at_most` (closing is soon after)."""
    node = api.app.state.node  # type: ignore[attr-defined]
    deadline = time.monotonic() + 5
    while len(node.names()) > at_most and time.monotonic() < deadline:
        time.sleep(0.02)
    names: list[str] = node.names()
    return names


def test_open_databases_stay_under_the_limit_and_query_many_opens_none(make_api: Any) -> None:
    api = make_api(max_open_databases=3)
    tenants(api, 8)
    held = open_names(api, 3)
    assert len(held) <= 3
    found = many(api, pattern="t-*", sql="SELECT sum(amount) FROM orders")
    assert [row[1] for row in found["rows"]] == [10 + i for i in range(8)]
    assert open_names(api, 3) == held  # the closed ones were read without opening them
    directory = api.app.state.node.directory  # type: ignore[attr-defined]
    left = {path.name.split(".db")[0] for path in directory.glob("*.db-*")}
    assert left <= set(held)  # WAL files only for databases still open
    # A closed database opens again on its next request, with its data.
    closed = next(f"t-{i}" for i in range(8) if f"t-{i}" not in held)
    rows = api.post(f"/v1/databases/{closed}/query", json={"sql": "SELECT count(*) FROM orders"})
    assert rows.json()["results"][0]["rows"] == [[2]]
    assert closed in open_names(api, 3)
