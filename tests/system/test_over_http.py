"""Auth and bad input against a real `shoal serve` process, over real HTTP.

The same checks as tests/server/ run in-process; here they go through uvicorn's
own parsing, limits and connection handling.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.node.auth import Scope
from tests.harness import shoal_node
from tests.server.test_auth import ENDPOINTS, bearer, check_endpoint, make_tokens


@pytest.fixture(scope="module")
def secured_node(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    data = tmp_path_factory.mktemp("secured") / "data"
    secrets = make_tokens(data)
    args = (
        "--transaction-seconds",
        "0.2",
        "--max-body-bytes",
        "100000",
        "--max-statements",
        "50",
        "--statement-seconds",
        "0.5",
        "--max-result-rows",
        "1000",
    )
    with shoal_node(data, *args) as node, httpx.Client(base_url=node.url, timeout=30) as client:
        admin = bearer(secrets["admin"])
        for name in ("app", "doomed"):
            assert client.post("/v1/databases", json={"name": name}, headers=admin).is_success
        yield client, secrets


@pytest.mark.parametrize(("method", "path", "body", "needed"), ENDPOINTS)
def test_every_endpoint_every_scope_over_http(
    secured_node: tuple[httpx.Client, dict[str, str]],
    method: str,
    path: str,
    body: Any,
    needed: Scope | None,
) -> None:
    check_endpoint(*secured_node, method, path, body, needed)


RECURSIVE = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "

BAD_INPUT: list[tuple[str, str, bytes, int, str]] = [
    ("POST", "/v1/databases/app/query", b"{oops", 400, "not valid JSON"),
    ("POST", "/v1/databases/app/query", b'{"sql": "SELEKT 1"}', 400, "syntax error"),
    (
        "POST",
        "/v1/databases/app/query",
        b'{"sql": "SELECT ?", "params": [[1]]}',
        400,
        "not a SQL value",
    ),
    (
        "POST",
        "/v1/databases/app/execute",
        b'{"sql": "ATTACH \'x\' AS x"}',
        400,
        "ATTACH is refused",
    ),
    (
        "POST",
        "/v1/databases/app/query",
        b'{"sql": "' + b"x" * 100_001 + b'"}',
        413,
        "over the limit",
    ),
    (
        "POST",
        "/v1/databases/app/query",
        b'{"statements": [' + b'"SELECT 1",' * 50 + b'"SELECT 1"]}',
        413,
        "limit of 50",
    ),
    (
        "POST",
        "/v1/databases/app/query",
        b'{"sql": "' + RECURSIVE.encode() + b'SELECT count(*) FROM n"}',
        400,
        "StatementTimeout",
    ),
    (
        "POST",
        "/v1/databases/app/query",
        b'{"sql": "' + RECURSIVE.encode() + b'SELECT i FROM n"}',
        400,
        "ResultTooLarge",
    ),
    ("POST", "/v1/databases", b'{"name": "../../etc/passwd"}', 400, "invalid database name"),
    ("GET", "/v1/databases/..%2F..%2Fetc", b"", 404, "Not Found"),  # no route matches
    ("POST", "/db/execute?db=app", b"[1, 2]", 400, "a statement is a string"),
    ("POST", "/db/execute?db=app&transaction", b'{"not": "a list"}', 400, "JSON array"),
    ("POST", "/db/query?db=app&level=bogus", b'["SELECT 1"]', 400, "level"),
    ("POST", "/db/execute?db=..", b'["SELECT 1"]', 400, "invalid database name"),
    ("PUT", "/db/execute", b"[]", 405, "Method Not Allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_INPUT)
def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    secured_node: tuple[httpx.Client, dict[str, str]],
    method: str,
    path: str,
    body: bytes,
    status: int,
    message: str,
) -> None:
    client, secrets = secured_node
    admin = bearer(secrets["admin"])

    def state() -> list[tuple[str, int]]:
        listing = client.get("/v1/databases", headers=admin).json()["databases"]
        return [(d["name"], d["version"]) for d in listing]  # sizes move with archiving

    before = state()
    response = client.request(method, path, content=body, headers=admin)
    assert response.status_code == status, response.text
    assert message in response.text
    assert state() == before
    assert not Path("/etc/passwd.db").exists()
