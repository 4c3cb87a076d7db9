"""The rqlite dialect: rqlite's bodies, flags, response shapes and status codes.

pyrqlite, a real rqlite client, is driven against a real node in
tests/system/test_rqlite_clients.py; these pin the wire format itself.
"""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

import pytest
from starlette.testclient import TestClient

from shoal.server.rqlite import go_duration

SCHEMA = "CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, age INTEGER, b BLOB)"


@pytest.fixture
def foo(api: TestClient) -> TestClient:
    response = api.post("/db/execute", json=[SCHEMA])
    assert response.json() == {"results": [{}]}
    return api


def test_execute_forms_and_shapes(foo: TestClient) -> None:
    response = foo.post(
        "/db/execute",
        json=[
            ["INSERT INTO foo(name, age) VALUES(?, ?)", "fiona", 20],
            ["INSERT INTO foo(name, age) VALUES(:name, :age)", {"name": "declan", "age": 3}],
            "INSERT INTO foo(name) VALUES('sinead')",
            "UPDATE foo SET age = age + 1",
        ],
    )
    assert response.status_code == 200
    assert response.json()["results"] == [
        {"last_insert_id": 1, "rows_affected": 1},
        {"last_insert_id": 2, "rows_affected": 1},
        {"last_insert_id": 3, "rows_affected": 1},
        {"rows_affected": 3},
    ]


def test_sql_errors_are_inside_a_200_and_transaction_rolls_back(foo: TestClient) -> None:
    plain = foo.post("/db/execute", json=["INSERT INTO foo(id) VALUES(1)", "nonsense"])
    assert plain.status_code == 200
    assert plain.json()["results"][1] == {"error": 'near "nonsense": syntax error'}
    tx = foo.post(
        "/db/execute?transaction",
        json=["INSERT INTO foo(id) VALUES(2)", "INSERT INTO foo(id) VALUES(1)"],
    )
    assert tx.status_code == 200
    assert "UNIQUE constraint failed" in tx.json()["results"][1]["error"]
    ids = foo.get("/db/query", params={"q": "SELECT id FROM foo"}).json()["results"][0]["values"]
    assert ids == [[1]]


def test_query_shapes_types_and_blobs(foo: TestClient) -> None:
    foo.post("/db/execute", json=["INSERT INTO foo VALUES(1, 'fiona', 20, x'0001ff')"])
    standard = foo.get("/db/query", params={"q": "SELECT *, count(*) AS n FROM foo"}).json()
    assert standard["results"] == [
        {
            "columns": ["id", "name", "age", "b", "n"],
            "types": ["integer", "text", "integer", "blob", "integer"],
            "values": [[1, "fiona", 20, base64.b64encode(b"\x00\x01\xff").decode(), 1]],
        }
    ]
    empty = foo.post("/db/query", json=["SELECT name FROM foo WHERE id = 99"]).json()
    assert empty["results"] == [{"columns": ["name"], "types": ["text"]}]
    associative = foo.get(
        "/db/query", params={"associative": "", "blob_array": "", "q": "SELECT b FROM foo"}
    )
    assert associative.json()["results"] == [{"types": {"b": "blob"}, "rows": [{"b": [0, 1, 255]}]}]


def test_timings_pretty_and_levels(foo: TestClient) -> None:
    flags = {"timings": "", "pretty": "", "level": "strong", "q": "SELECT 1"}
    response = foo.get("/db/query", params=flags)
    body = response.json()
    assert isinstance(body["time"], float) and isinstance(body["results"][0]["time"], float)
    assert "\n  " in response.text
    for level in ("none", "weak", "linearizable", "auto"):
        query = {"level": level, "freshness": "1s", "q": "SELECT 1"}
        assert foo.get("/db/query", params=query).is_success
    bad = foo.get("/db/query", params={"level": "eventual", "q": "SELECT 1"})
    assert bad.status_code == 400 and "level" in bad.json()["error"]


def test_query_refuses_writes_per_statement(foo: TestClient) -> None:
    response = foo.post("/db/query", json=["INSERT INTO foo(id) VALUES(5)"])
    assert response.status_code == 200
    assert "writes" in response.json()["results"][0]["error"]


def test_unified_request_endpoint(foo: TestClient) -> None:
    response = foo.post(
        "/db/request?transaction",
        json=["INSERT INTO foo(id, name) VALUES(7, 'x')", "SELECT id, name FROM foo"],
    )
    assert response.json()["results"] == [
        {"last_insert_id": 7, "rows_affected": 1},
        {"columns": ["id", "name"], "types": ["integer", "text"], "values": [[7, "x"]]},
    ]


def test_queued_writes_are_acknowledged_then_applied_in_order(foo: TestClient) -> None:
    first = foo.post("/db/execute?queue", json=["INSERT INTO foo(id) VALUES(1)"]).json()
    assert first["results"] == [] and first["sequence_number"] == 1
    waited = foo.post(
        "/db/execute?queue&wait&timeout=5s", json=["UPDATE foo SET age = 42 WHERE id = 1"]
    ).json()
    assert waited["sequence_number"] == 2
    values = foo.get("/db/query", params={"q": "SELECT id, age FROM foo"}).json()
    assert values["results"][0]["values"] == [[1, 42]]


def test_databases_by_query_parameter(api: TestClient) -> None:
    api.post("/v1/databases", json={"name": "other"})
    api.post("/db/execute?db=other", json=["CREATE TABLE o(a)"])
    sql = "SELECT name FROM sqlite_schema WHERE name NOT LIKE '\\_shoal%' ESCAPE '\\'"

    def tables(db: str | None) -> Any:
        return api.get("/db/query", params={"q": sql, **({"db": db} if db else {})})

    assert tables("other").json()["results"][0]["values"] == [["o"]]
    assert "values" not in tables(None).json()["results"][0]
    missing = tables("nope")
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]
    assert tables("../x").status_code == 400


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"a": 1}', b"[]", b"[1]", b"[[]]", b"[[1, 2]]", b'[["SELECT ?", {"a": [{}]}]]'],
)
def test_malformed_bodies_are_400(foo: TestClient, body: bytes) -> None:
    response = foo.post("/db/execute", content=body)
    assert response.status_code == 400 and response.json()["error"]


def test_methods_not_allowed_are_405(foo: TestClient) -> None:
    assert foo.get("/db/execute").status_code == 405
    assert foo.delete("/db/query").status_code == 405


def test_status_nodes_and_readyz(api: TestClient) -> None:
    status = api.get("/status").json()
    assert status["store"]["raft"]["state"] == "Leader"
    nodes = api.get("/nodes").json()
    (entry,) = nodes.values()
    assert entry["leader"] is True and entry["reachable"] is True
    assert api.get("/nodes?ver=2").json()["nodes"][0]["leader"] is True
    assert api.get("/readyz").text.startswith("[+]node ok")


def test_backup_and_load(foo: TestClient, tmp_path: Any) -> None:
    foo.post("/db/execute", json=["INSERT INTO foo(id, name) VALUES(1, 'a''b')"])
    file = foo.get("/db/backup")
    path = tmp_path / "backup.db"
    path.write_bytes(file.content)
    with sqlite3.connect(path) as plain:  # any SQLite tool can open it
        assert plain.execute("SELECT name FROM foo").fetchall() == [("a'b",)]
    dump = foo.get("/db/backup?fmt=sql").text
    assert 'INSERT INTO "foo"' in dump
    foo.post("/db/execute", json=["DELETE FROM foo"])
    assert foo.post("/db/load", content=file.content).status_code == 200
    got = foo.get("/db/query", params={"q": "SELECT name FROM foo"}).json()
    assert got["results"][0]["values"] == [["a'b"]]
    compressed = foo.get("/db/backup?compress")
    assert compressed.status_code == 200


def test_go_durations() -> None:
    assert go_duration("1h30m", "t") == 5400
    assert go_duration("250ms", "t") == 0.25
    for bad in ("", "10", "1x", "s", "1s2"):
        with pytest.raises(Exception, match="duration"):
            go_duration(bad, "t")


def test_queued_writes_to_a_missing_database_are_refused_at_once(api: TestClient) -> None:
    response = api.post("/db/execute?queue&db=nope", json=["CREATE TABLE t(a)"])
    assert response.status_code == 404
