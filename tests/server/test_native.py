"""The native API, /v1: databases, statements, transactions, versions and bad input."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from shoal.archive.catalog import read_tombstone
from shoal.archive.local import FolderStore
from tests.harness import wait_until

DB = "/v1/databases/app"


@pytest.fixture
def app_db(api: TestClient) -> TestClient:
    assert api.post("/v1/databases", json={"name": "app"}).status_code == 201
    response = api.post(
        f"{DB}/execute", json={"sql": "CREATE TABLE t(id INTEGER PRIMARY KEY, v, b BLOB)"}
    )
    assert response.status_code == 200, response.text
    return api


def rows(api: TestClient, sql: str, **extra: Any) -> list[list[Any]]:
    response = api.post(f"{DB}/query", json={"sql": sql, **extra})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["rows"]  # type: ignore[no-any-return]


def test_databases_are_created_listed_inspected_and_dropped(api: TestClient) -> None:
    created = api.post("/v1/databases", json={"name": "tenant-1"})
    assert created.status_code == 201
    assert created.json()["version"] == 0 and created.headers["location"].endswith("/tenant-1")
    assert api.post("/v1/databases", json={"name": "tenant-1"}).status_code == 409
    names = [d["name"] for d in api.get("/v1/databases").json()["databases"]]
    assert names == ["default", "tenant-1"]
    info = api.get("/v1/databases/tenant-1").json()
    assert info["role"] == "leader" and info["size_bytes"] > 0
    assert info["foreign_keys"] is False
    turned_on = api.post("/v1/databases/tenant-1/execute", json={"sql": "PRAGMA foreign_keys=ON"})
    assert turned_on.json()["version"] == 1
    assert api.get("/v1/databases/tenant-1").json()["foreign_keys"] is True
    assert api.delete("/v1/databases/tenant-1").json() == {"name": "tenant-1", "dropped": True}
    missing = api.get("/v1/databases/tenant-1")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "DatabaseNotFound"
    assert api.delete("/v1/databases/default").status_code == 400


def test_databases_are_listed_a_page_at_a_time(api: TestClient) -> None:
    for name in ("t-03", "t-01", "T-02", "other"):
        assert api.post("/v1/databases", json={"name": name}).status_code == 201

    def page(**query: Any) -> tuple[list[str], str | None]:
        response = api.get("/v1/databases", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        return [d["name"] for d in body["databases"]], body["next"]

    assert page() == (["T-02", "default", "other", "t-01", "t-03"], None)
    assert page(limit=2) == (["T-02", "default"], "default")
    assert page(limit=2, after="default") == (["other", "t-01"], "t-01")
    assert page(limit=2, after="t-01") == (["t-03"], None)
    assert page(contains="t-0") == (["T-02", "t-01", "t-03"], None)
    assert page(contains="T-0", limit=2, after="T-02") == (["t-01", "t-03"], None)
    assert page(after="zzz") == ([], None)
    for bad in ({"limit": "0"}, {"limit": "1001"}, {"limit": "x"}, {"offset": "3"}):
        refused = api.get("/v1/databases", params=bad)
        assert refused.status_code == 400, bad
        assert refused.json()["error"]["type"] == "InvalidRequest"


@pytest.mark.parametrize(
    "name", ["../etc", "a/b", ".hidden", "", "x" * 129, "a b", "café", "a\\b", "..", "a\x00"]
)
def test_hostile_database_names_are_refused(api: TestClient, name: str) -> None:
    response = api.post("/v1/databases", json={"name": name})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "InvalidRequest"
    assert [d["name"] for d in api.get("/v1/databases").json()["databases"]] == ["default"]


def test_execute_and_query_with_params_blobs_and_versions(app_db: TestClient) -> None:
    api = app_db
    response = api.post(
        f"{DB}/execute",
        json={
            "statements": [
                {"sql": "INSERT INTO t(v, b) VALUES (?, ?)", "params": [1.5, {"base64": "AAH/"}]},
                {"sql": "INSERT INTO t(v) VALUES (:v)", "params": {"v": "two"}},
                {"sql": "INSERT INTO t(v) VALUES (?)", "params": [{"real": "-Infinity"}]},
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2 and response.headers["shoal-version"] == "2"
    assert [r["last_insert_id"] for r in body["results"]] == [1, 2, 3]
    assert rows(app_db, "SELECT id, v, b FROM t ORDER BY id") == [
        [1, 1.5, {"base64": "AAH/"}],
        [2, "two", None],
        [3, {"real": "-Infinity"}, None],
    ]
    result = api.post(f"{DB}/query", json={"sql": "SELECT v AS value FROM t LIMIT 0"}).json()
    assert result["results"][0]["columns"] == ["value"] and result["version"] == 2


def test_transaction_is_all_or_nothing_by_default(app_db: TestClient) -> None:
    response = app_db.post(
        f"{DB}/execute",
        json={"statements": ["INSERT INTO t(id) VALUES (1)", "INSERT INTO t(id) VALUES (1)"]},
    )
    assert response.status_code == 409
    body = response.json()
    assert body["error"]["type"] == "IntegrityError" and body["error"]["statement"] == 1
    assert body["version"] == 1
    assert rows(app_db, "SELECT count(*) FROM t") == [[0]]


def test_without_transaction_each_statement_stands_alone(app_db: TestClient) -> None:
    response = app_db.post(
        f"{DB}/execute",
        json={
            "transaction": False,
            "statements": [
                "INSERT INTO t(id) VALUES (1)",
                "NOT SQL",
                "INSERT INTO t(id) VALUES (2)",
            ],
        },
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["type"] == "SQLError" and body["error"]["statement"] == 1
    assert body["results"][1]["type"] == "SQLError"
    assert body["results"][2]["last_insert_id"] == 2
    assert rows(app_db, "SELECT id FROM t ORDER BY id") == [[1], [2]]


def test_mixed_request_reads_its_own_writes(app_db: TestClient) -> None:
    response = app_db.post(
        f"{DB}/request",
        json={"statements": ["INSERT INTO t(v) VALUES ('x')", "SELECT count(*) FROM t"]},
    )
    assert response.status_code == 200
    assert response.json()["results"][1]["rows"] == [[1]]


def test_query_refuses_writes(app_db: TestClient) -> None:
    response = app_db.post(f"{DB}/query", json={"sql": "INSERT INTO t(v) VALUES (1)"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "QueryWrites"
    assert rows(app_db, "SELECT count(*) FROM t") == [[0]]


def test_min_version_waits_then_fails_clearly(app_db: TestClient) -> None:
    assert rows(app_db, "SELECT 1", min_version=1) == [[1]]
    response = app_db.post(
        f"{DB}/query", json={"sql": "SELECT 1", "min_version": 9, "timeout": 0.1}
    )
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "VersionNotReached" and error["retryable"] is True
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[]", "must be a JSON object"),
        (b'{"sql": 1}', "a statement is a string"),
        (b'{"sql": "SELECT 1", "bogus": 1}', "unknown field(s) in the request: bogus"),
        (b'{"statements": []}', "non-empty array"),
        (b'{"sql": "SELECT ?", "params": [[1]]}', "request.params[0]: list is not a SQL value"),
        (b'{"sql": "SELECT ?", "params": [{"base64": "%%"}]}', "not valid base64"),
        (b'{"sql": "SELECT ?", "params": 5}', "must be an array or an object"),
        (b'{"sql": "SELECT 1", "min_version": "x"}', "'min_version' must be an integer"),
        (b'{"sql": "SELEKT 1"}', 'near "SELEKT"'),
        (b'{"sql": "SELECT ?", "params": [1, 2]}', "bindings"),
        (b'{"sql": "SELECT ?", "params": [99999999999999999999]}', "too big"),
        (b'{"sql": "ATTACH \'x.db\' AS x"}', "ATTACH is refused"),
    ],
)
def test_malformed_requests_are_4xx_naming_the_problem(
    app_db: TestClient, body: bytes, message: str
) -> None:
    before = app_db.get(f"{DB}").json()["version"]
    response = app_db.post(f"{DB}/request", content=body)
    assert 400 <= response.status_code < 500, response.text
    assert message in response.json()["error"]["message"]
    assert app_db.get(f"{DB}").json()["version"] == before


def test_limits_give_clear_errors(make_api: Any) -> None:
    api = make_api(max_body_bytes=1000, max_statements=3, max_result_rows=5, statement_seconds=0.2)
    big = api.post("/v1/databases/default/query", json={"sql": "SELECT '" + "x" * 2000 + "'"})
    assert big.status_code == 413 and big.json()["error"]["type"] == "RequestTooLarge"
    many = api.post("/v1/databases/default/query", json={"statements": ["SELECT 1"] * 4})
    assert many.status_code == 413 and "over the limit of 3" in many.text
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    rows_limit = api.post(
        "/v1/databases/default/query", json={"sql": endless + "SELECT i FROM n LIMIT 10"}
    )
    assert rows_limit.status_code == 400 and rows_limit.json()["error"]["type"] == "ResultTooLarge"
    slow = api.post("/v1/databases/default/query", json={"sql": endless + "SELECT count(*) FROM n"})
    assert slow.status_code == 400 and slow.json()["error"]["type"] == "StatementTimeout"


# A statement that counts to 20 million: it takes a good while, whatever runs it.
COUNTING = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000000) "


def answered_meanwhile(api: TestClient, slow: Callable[[], Any]) -> Any:
    """`slow()`'s answer, once a quick read sent while it ran was answered before it:
    what the event loop starts, it must hand to a thread once it takes a while."""
    answer: list[Any] = []
    running = threading.Thread(target=lambda: answer.append(slow()))
    running.start()
    try:
        time.sleep(0.2)  # well into the slow request
        assert rows(api, "SELECT 1") == [[1]]
        assert running.is_alive(), "the slow request ended first: nothing was held back"
    finally:
        running.join(60)
    return answer[0]


def test_a_long_read_does_not_hold_back_other_requests(app_db: TestClient) -> None:
    # Two statements: cut short before the second, the loop's reader must go on.
    both = COUNTING + "SELECT count(*) FROM n; SELECT 1"
    assert answered_meanwhile(app_db, lambda: rows(app_db, both)) == [[20000000]]


def test_a_long_write_does_not_hold_back_other_requests_and_lands_once(
    app_db: TestClient,
) -> None:
    # Cut short, a write started on the event loop is rolled back whole, then runs
    # again on a thread.
    long = "INSERT INTO t(v) " + COUNTING + "SELECT count(*) FROM n"
    answer = answered_meanwhile(app_db, lambda: app_db.post(f"{DB}/execute", json={"sql": long}))
    assert answer.status_code == 200, answer.text
    assert rows(app_db, "SELECT v FROM t") == [[20000000]]  # once, not twice


def test_concurrent_writes_are_answered_each_for_itself(app_db: TestClient) -> None:
    # Writes waiting at once reach the write pool together and are committed as one
    # group: a failure there is its request's alone, and nothing is lost.
    def insert(i: int) -> Any:
        body = {"sql": "INSERT INTO t(id, v) VALUES (?, ?)", "params": [i % 40, i]}
        return app_db.post(f"{DB}/execute", json=body)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(insert, range(41)))  # 0 and 40 collide
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 40 + [409], statuses
    failed = next(a for a in answers if a.status_code == 409)
    assert failed.json()["error"]["type"] == "IntegrityError"
    assert rows(app_db, "SELECT count(*), min(id), max(id) FROM t") == [[40, 0, 39]]


def test_interactive_transaction_commit_and_rollback(app_db: TestClient) -> None:
    api = app_db
    begun = api.post(f"{DB}/transactions")
    assert begun.status_code == 201
    tx = f"{DB}/transactions/{begun.json()['id']}"
    assert api.post(tx, json={"sql": "INSERT INTO t(v) VALUES ('in tx')"}).status_code == 200
    inside = api.post(tx, json={"sql": "SELECT count(*) FROM t"}).json()["results"][0]["rows"]
    assert inside == [[1]]
    assert rows(api, "SELECT count(*) FROM t") == [[0]]  # not committed yet
    failed = api.post(tx, json={"sql": "INSERT INTO t(id) VALUES (1)"})
    assert failed.status_code == 409  # undoes only itself
    committed = api.post(f"{tx}/commit")
    assert committed.json() == {"version": 2}
    assert rows(api, "SELECT v FROM t") == [["in tx"]]
    assert api.post(f"{tx}/commit").status_code == 404

    second = f"{DB}/transactions/{api.post(f'{DB}/transactions').json()['id']}"
    api.post(second, json={"sql": "DELETE FROM t"})
    assert api.post(f"{second}/rollback").json() == {"rolled_back": True}
    assert rows(api, "SELECT count(*) FROM t") == [[1]]


def test_idle_interactive_transaction_expires_and_frees_the_writer(make_api: Any) -> None:
    api = make_api(transaction_seconds=0.3)
    base = "/v1/databases/default"
    tx = api.post(f"{base}/transactions").json()["id"]
    api.post(f"{base}/transactions/{tx}", json={"sql": "CREATE TABLE x(a)"})
    # A write waits for the transaction to expire, then goes through.
    assert api.post(f"{base}/execute", json={"sql": "CREATE TABLE y(a)"}).status_code == 200
    assert api.post(f"{base}/transactions/{tx}/commit").status_code == 404
    tables = api.post(
        f"{base}/query", json={"sql": "SELECT name FROM sqlite_schema WHERE name IN ('x', 'y')"}
    )
    assert tables.json()["results"][0]["rows"] == [["y"]]


def test_unknown_routes_and_methods(api: TestClient) -> None:
    assert api.get("/v1/nothing").status_code == 404
    assert api.get("/v1/nothing").json()["error"]["type"] == "NotFound"
    assert api.put("/v1/databases").status_code == 405


def test_the_busiest_routes_skip_the_router_and_answer_as_it_would(app_db: TestClient) -> None:
    """query, execute and request are found without the router (decision 42): the
    same answers, path parameters and metrics labels as through it."""
    query = {"sql": "SELECT 1"}
    assert app_db.post(f"{DB}/query", json=query).json()["results"][0]["rows"] == [[1]]
    assert app_db.post(f"{DB}/request", json=query).status_code == 200
    assert app_db.post("/v1/databases/nope/query", json=query).status_code == 404
    assert app_db.post("/v1/databases//query", json=query).status_code == 404
    assert app_db.post(f"{DB}/query/more", json=query).status_code == 404
    assert app_db.post("/v1/databases/a%2Fb/query", json=query).status_code == 404
    assert app_db.get(f"{DB}/query").status_code == 405
    metrics = app_db.get("/metrics").text
    label = 'shoal_http_requests_total{method="POST",route="/v1/databases/{name}/%s",status="%d"}'
    assert label % ("query", 200) in metrics
    assert label % ("request", 200) in metrics
    assert label % ("query", 404) in metrics


def test_probes_metrics_and_openapi(app_db: TestClient) -> None:
    assert app_db.get("/livez").text == "ok\n"
    assert app_db.get("/readyz").status_code == 200
    metrics = app_db.get("/metrics").text
    assert 'shoal_http_requests_total{method="POST",route="/v1/databases/{name}/execute"' in metrics
    assert 'shoal_database_version{database="app"} 1' in metrics
    assert app_db.get("/v1/openapi.json").json()["openapi"].startswith("3.1")


def test_backup_and_load_round_trip(app_db: TestClient) -> None:
    api = app_db
    api.post(f"{DB}/execute", json={"sql": "INSERT INTO t(v, b) VALUES ('it''s', x'00ff')"})
    dump = api.get(f"{DB}/backup", params={"format": "sql"})
    assert dump.status_code == 200 and "INSERT INTO" in dump.text
    copy = api.get(f"{DB}/backup")
    assert copy.content.startswith(b"SQLite format 3\x00")
    api.post("/v1/databases", json={"name": "from-sql"})
    api.post("/v1/databases", json={"name": "from-file"})
    loaded = api.post("/v1/databases/from-sql/load", content=dump.content)
    assert loaded.status_code == 200, loaded.text
    assert api.post("/v1/databases/from-file/load", content=copy.content).status_code == 200
    for name in ("from-sql", "from-file"):
        got = api.post(f"/v1/databases/{name}/query", json={"sql": "SELECT v, b FROM t"}).json()
        assert got["results"][0]["rows"] == [["it's", {"base64": "AP8="}]]
    broken = api.post("/v1/databases/from-file/load", content=b"SQLite format 3\x00garbage")
    assert broken.status_code == 400
    assert api.post("/v1/databases/from-file/load", content=b"\xff\xfe").status_code == 400


def test_failed_statement_index_counts_request_statements(app_db: TestClient) -> None:
    response = app_db.post(
        f"{DB}/query", json={"statements": ["SELECT 1; SELECT 2", "SELECT * FROM nope"]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["statement"] == 1
    assert len(response.json()["results"]) == 3  # one entry per SQL statement run


def test_params_belong_inside_statements(app_db: TestClient) -> None:
    response = app_db.post(f"{DB}/query", json={"statements": ["SELECT ?"], "params": [1]})
    assert response.status_code == 400 and "each with its own params" in response.text


def test_nothing_is_created_while_the_node_stops(api: TestClient, tmp_path: Any) -> None:
    api.app.state.node.closing = True  # type: ignore[attr-defined]
    try:
        response = api.post("/v1/databases", json={"name": "late"})
    finally:
        api.app.state.node.closing = False  # type: ignore[attr-defined]
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert not (tmp_path / "data" / "databases" / "late.db").exists()


def test_an_idle_database_is_evicted_and_its_next_request_restores_it(
    make_api: Any, tmp_path: Path
) -> None:
    api = make_api(idle_seconds=0.2, evict_seconds=0.3, archive_seconds=0.1)
    names = ["tenant-a", "tenant-b", "tenant-c"]
    for name in names:
        assert api.post("/v1/databases", json={"name": name}).status_code == 201
        body = {"statements": ["CREATE TABLE t(v)", f"INSERT INTO t VALUES ('{name}')"]}
        assert api.post(f"/v1/databases/{name}/execute", json=body).status_code == 200
    files = tmp_path / "data" / "databases"

    def listed() -> dict[str, dict[str, Any]]:
        return {d["name"]: d for d in api.get("/v1/databases").json()["databases"]}

    def all_evicted() -> bool:
        found = listed()
        return all(found[name]["evicted"] for name in names)

    wait_until(all_evicted, 20, "the tenants evicted")
    assert not (files / "tenant-a.db").exists() and listed()["tenant-a"]["version"] == 1
    assert api.post("/v1/databases", json={"name": "tenant-a"}).status_code == 409

    restored = api.post("/v1/databases/tenant-a/query", json={"sql": "SELECT v FROM t"})
    assert restored.json()["results"][0]["rows"] == [["tenant-a"]]
    assert listed()["tenant-a"]["evicted"] is False
    assert (files / "tenant-a.db").exists()
    many = api.post("/v1/query-many", json={"databases": names, "sql": "SELECT v FROM t"}).json()
    assert sorted(row[1] for row in many["rows"]) == names and many["errors"] == []

    wait_until(all_evicted, 20, "the tenants evicted again")
    assert api.delete("/v1/databases/tenant-c").status_code == 200
    assert "tenant-c" not in listed()
    assert not list(files.glob("tenant-c.db*"))
    tombstone = read_tombstone(FolderStore(tmp_path / "data" / "archive"), "tenant-c")
    assert tombstone is not None and tombstone.version == 1  # dropped without a restore
    assert api.post("/v1/databases", json={"name": "tenant-c"}).status_code == 201


def test_a_marker_a_crash_left_beside_its_file_goes_with_the_drop(
    make_api: Any, tmp_path: Path
) -> None:
    """Eviction writes the marker, then removes the file: a crash between leaves
    both, and the file wins; dropping the database removes both."""
    api = make_api(archive_seconds=0.1)
    assert api.post("/v1/databases", json={"name": "crashed"}).status_code == 201
    files = tmp_path / "data" / "databases"
    (files / "crashed.db.evicted").write_text('{"version": 0, "size_bytes": 0, "evicted_ns": 0}')
    listed = api.get("/v1/databases").json()["databases"]
    assert [d["evicted"] for d in listed if d["name"] == "crashed"] == [False]
    assert api.delete("/v1/databases/crashed").status_code == 200
    assert not list(files.glob("crashed.db*"))
    assert "crashed" not in [d["name"] for d in api.get("/v1/databases").json()["databases"]]
