"""Auth: every endpoint, every scope, missing and wrong tokens, patterns, basic auth,
the local admin credential, and tokens that work as soon as they are made."""

from __future__ import annotations

import asyncio
import base64
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from shoal.node.auth import (
    LOCAL_ADMIN_FILE,
    Authenticator,
    Scope,
    TokenStore,
    credentials,
    hash_secret,
    local_admin_secret,
)
from shoal.node.config import TokenSpec

OPEN, READ, WRITE, ADMIN = None, Scope.READ, Scope.WRITE, Scope.ADMIN

# (method, path, body, scope needed); "app" exists, "doomed" exists and may be dropped.
ENDPOINTS: list[tuple[str, str, Any, Scope | None]] = [
    ("GET", "/livez", None, OPEN),
    ("GET", "/readyz", None, OPEN),
    ("GET", "/v1/openapi.json", None, OPEN),
    ("GET", "/metrics", None, READ),
    ("GET", "/v1/databases", None, READ),
    ("POST", "/v1/databases", {"name": "fresh"}, ADMIN),
    ("GET", "/v1/databases/app", None, READ),
    ("DELETE", "/v1/databases/doomed", None, ADMIN),
    ("POST", "/v1/databases/app/query", {"sql": "SELECT 1"}, READ),
    ("POST", "/v1/databases/app/execute", {"sql": "CREATE TABLE IF NOT EXISTS t(a)"}, WRITE),
    ("POST", "/v1/databases/app/request", {"sql": "SELECT 1"}, READ),
    ("POST", "/v1/databases/app/request", {"sql": "INSERT INTO t VALUES (1)"}, WRITE),
    ("GET", "/v1/databases/app/backup", None, READ),
    ("GET", "/v1/databases/app/log?after=0&until=0", None, READ),
    ("GET", "/v1/databases/app/snapshot", None, READ),
    ("POST", "/v1/databases/app/load", "CREATE TABLE IF NOT EXISTS u(a);", ADMIN),
    ("POST", "/v1/databases/app/transactions", None, WRITE),
    ("POST", "/v1/databases/app/transactions/nope", {"sql": "SELECT 1"}, WRITE),
    ("POST", "/v1/databases/app/transactions/nope/commit", None, WRITE),
    ("POST", "/v1/databases/app/transactions/nope/rollback", None, WRITE),
    ("POST", "/db/execute?db=app", ["CREATE TABLE IF NOT EXISTS t(a)"], WRITE),
    ("GET", "/db/query?db=app&q=SELECT%201", None, READ),
    ("POST", "/db/query?db=app", ["SELECT 1"], READ),
    ("POST", "/db/request?db=app", ["SELECT 1"], READ),
    ("POST", "/db/request?db=app", ["CREATE TABLE IF NOT EXISTS t(a)"], WRITE),
    ("GET", "/db/backup?db=app", None, READ),
    ("POST", "/db/load?db=app", "CREATE TABLE IF NOT EXISTS u(a);", ADMIN),
    ("GET", "/status", None, READ),
    ("GET", "/nodes", None, READ),
    ("POST", "/v1/query-many", {"pattern": "*", "sql": "SELECT 1"}, READ),
    ("GET", "/ui", None, READ),
    ("GET", "/ui/app.js", None, READ),
]
# No database named: a token limited to some databases gets through (and sees those).
PER_DATABASE = {
    "/metrics",
    "/v1/databases",
    "/status",
    "/nodes",
    "/v1/query-many",
    "/ui",
    "/ui/app.js",
}


def make_tokens(data_dir: Path) -> dict[str, str]:
    """A token per scope on every database, and an admin one limited to other-*."""
    store = TokenStore(data_dir)
    secrets = {
        "read": store.create("reader", "read", ("*",)),
        "write": store.create("writer", "write", ("*",)),
        "admin": store.create("admin", "admin", ("*",)),
        "other": store.create("other", "admin", ("other-*",)),
    }
    store.close()
    return secrets


@pytest.fixture
def secured(make_api: Any, tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    """A node with the tokens of make_tokens, and databases app and doomed."""
    secrets = make_tokens(tmp_path / "data")
    # Not loopback: tokens are the only way in. Transactions expire fast, since each
    # allowed scope begins one and the next must wait for the writer.
    api = make_api(host="192.0.2.10", transaction_seconds=0.2)
    for name in ("app", "doomed"):
        api.post("/v1/databases", json={"name": name}, headers=bearer(secrets["admin"]))
    return api, secrets


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def call(api: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    if isinstance(body, str):
        return api.request(method, path, content=body, headers=headers)
    return api.request(method, path, json=body, headers=headers)


def check_endpoint(
    api: Any, secrets: dict[str, str], method: str, path: str, body: Any, needed: Scope | None
) -> None:
    """No token and a wrong one get 401; each scope gets through exactly when it is
    enough; a token whose patterns miss the database gets 403. `api` is a TestClient
    or an httpx.Client on a real node (tests/system/test_auth_over_http.py)."""
    missing = call(api, method, path, body, {})
    wrong = call(api, method, path, body, bearer("shoal_not-a-real-token"))
    if needed is None:
        assert missing.status_code == 200 and wrong.status_code == 200
        return
    for response in (missing, wrong):
        assert response.status_code == 401, response.text
        assert "Basic" in response.headers["www-authenticate"]
    for scope in (READ, WRITE, ADMIN):
        response = call(api, method, path, body, bearer(secrets[scope.name.lower()]))
        if scope >= needed:
            assert response.status_code not in (401, 403), (scope, response.text)
        else:
            assert response.status_code == 403, (scope, response.text)
            assert "needs" in response.text
    limited = call(api, method, path, body, bearer(secrets["other"]))
    if path.split("?")[0] in PER_DATABASE and (method, path) != ("POST", "/v1/databases"):
        assert limited.status_code not in (401, 403)
    else:
        assert limited.status_code == 403 and "does not cover" in limited.text


@pytest.mark.parametrize(("method", "path", "body", "needed"), ENDPOINTS)
def test_every_endpoint_every_scope(
    secured: tuple[TestClient, dict[str, str]],
    method: str,
    path: str,
    body: Any,
    needed: Scope | None,
) -> None:
    check_endpoint(*secured, method, path, body, needed)


def test_listing_shows_only_covered_databases(
    secured: tuple[TestClient, dict[str, str]],
) -> None:
    api, secrets = secured
    api.post("/v1/databases", json={"name": "other-1"}, headers=bearer(secrets["admin"]))
    api.post("/v1/databases", json={"name": "other-2"}, headers=bearer(secrets["admin"]))
    listed = api.get("/v1/databases", headers=bearer(secrets["other"])).json()["databases"]
    assert [d["name"] for d in listed] == ["other-1", "other-2"]
    # A page counts only what the token sees: "default" sorts first, unseen.
    first = api.get("/v1/databases?limit=1", headers=bearer(secrets["other"])).json()
    assert [d["name"] for d in first["databases"]] == ["other-1"] and first["next"] == "other-1"


def test_basic_auth_carries_the_token_as_password(
    secured: tuple[TestClient, dict[str, str]],
) -> None:
    api, secrets = secured
    basic = base64.b64encode(f"anyone:{secrets['read']}".encode()).decode()
    ok = api.get("/db/query?q=SELECT%201", headers={"Authorization": f"Basic {basic}"})
    assert ok.status_code == 200
    junk = api.get("/db/query?q=SELECT%201", headers={"Authorization": "Basic %%%"})
    assert junk.status_code == 401


def test_without_tokens_only_loopback_is_served(make_api: Any) -> None:
    remote = make_api(host="192.0.2.10")
    refused = remote.get("/v1/databases")
    assert refused.status_code == 401 and "only loopback" in refused.text
    assert make_api(host="::1").get("/v1/databases").status_code == 200


def test_configured_and_admin_tokens(make_api: Any) -> None:
    spec = TokenSpec("ci", hash_secret("ci-secret"), "write", ("app*",))
    api = make_api(host="192.0.2.10", tokens=(spec,), admin_token="root-secret")
    assert api.post(
        "/v1/databases", json={"name": "app1"}, headers=bearer("root-secret")
    ).is_success
    ci = bearer("ci-secret")
    assert api.post("/v1/databases/app1/execute", json={"sql": "SELECT 1"}, headers=ci).is_success
    assert api.post("/v1/databases", json={"name": "app2"}, headers=ci).status_code == 403


def test_revoked_token_stops_working_within_seconds(
    secured: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    api, secrets = secured
    assert api.get("/v1/databases", headers=bearer(secrets["read"])).status_code == 200
    store = TokenStore(tmp_path / "data")
    store.revoke("reader")
    store.close()
    deadline = time.monotonic() + 5
    while api.get("/v1/databases", headers=bearer(secrets["read"])).status_code != 401:
        assert time.monotonic() < deadline, "revocation not seen within 5 s"
        time.sleep(0.05)


def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    secret = store.create("t", "read", ("*",))
    store.close()
    assert secret.encode() not in (tmp_path / "node.db").read_bytes()
    assert hash_secret(secret).encode() in (tmp_path / "node.db").read_bytes()


def test_credentials_parsing() -> None:
    assert credentials("Bearer abc") == "abc"
    assert credentials(None) is None
    assert credentials("Basic " + base64.b64encode(b"u:p").decode()) == "p"
    with pytest.raises(Exception, match="unsupported"):
        credentials("Digest xyz")


def test_credentials_are_checked_before_the_body_is_read(
    secured: tuple[TestClient, dict[str, str]],
) -> None:
    api, _ = secured
    for path in ("/v1/databases", "/v1/databases/app/request", "/db/request"):
        assert api.post(path, content=b"[").status_code == 401


def test_a_new_token_works_at_once(
    secured: tuple[TestClient, dict[str, str]], tmp_path: Path
) -> None:
    api, _ = secured
    store = TokenStore(tmp_path / "data")  # another connection, as `shoal token create` is
    fresh = store.create("fresh", "read", ("*",))
    store.close()
    assert api.get("/v1/databases", headers=bearer(fresh)).status_code == 200  # no wait


def test_refusals_share_reloads_of_the_token_file(tmp_path: Path) -> None:
    """However many requests are refused at once, at most one re-read runs and one waits."""
    refreshes = 0

    async def offload(call: Callable[[], None]) -> None:
        nonlocal refreshes
        refreshes += 1
        await asyncio.sleep(0.01)  # long enough for every refusal below to queue up
        call()

    async def many_refusals() -> None:
        auth = Authenticator(
            TokenStore(tmp_path),
            (),
            "root",
            local_admin="local",
            data_dir=tmp_path,
            offload=offload,
        )
        await asyncio.gather(*(auth.reload() for _ in range(100)))

    asyncio.run(many_refusals())
    assert refreshes == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "192.0.2.10"])
def test_a_refusal_for_no_token_says_what_to_do(make_api: Any, tmp_path: Path, host: str) -> None:
    make_tokens(tmp_path / "data")
    api = make_api(host=host)
    for response in (api.get("/v1/databases"), api.get("/db/query?q=SELECT%201")):
        assert response.status_code == 401
        text = response.text
        assert "--token" in text and "SHOAL_TOKEN" in text and "shoal token create" in text
        data_dir = str((tmp_path / "data").absolute())
        # Only a client that may be on the node's machine learns where its data is.
        assert (data_dir in text and "--data-dir" in text) == (host == "127.0.0.1")
    wrong = api.get("/v1/databases", headers=bearer("shoal_wrong"))
    assert wrong.status_code == 401 and "--token" in wrong.text and "revoked" in wrong.text


def test_the_local_admin_credential(make_api: Any, tmp_path: Path) -> None:
    """Written at each start, 0600, admin from loopback only, never served, and it
    neither opens a node with tokens nor closes one without."""
    data = tmp_path / "data"
    make_tokens(data)
    api = make_api()
    path = data / LOCAL_ADMIN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = local_admin_secret(data)
    assert secret is not None and secret.encode() not in (data / "node.db").read_bytes()
    local = bearer(secret)
    assert api.get("/v1/databases").status_code == 401  # loopback needs a token now
    assert api.post("/v1/databases", json={"name": "made"}, headers=local).status_code == 201
    for path_ in (
        f"/{LOCAL_ADMIN_FILE}",
        f"/v1/databases/{LOCAL_ADMIN_FILE}",
        f"/v1/databases/{LOCAL_ADMIN_FILE}/backup",
        f"/db/backup?db={LOCAL_ADMIN_FILE}",
        "/v1/status",
        "/status",
        "/nodes",
        "/metrics",
        "/v1/openapi.json",
    ):
        assert secret not in api.get(path_, headers=local).text, path_
    remote = make_api(host="192.0.2.10")  # a second start, seen from another machine
    restarted = local_admin_secret(data)
    assert restarted is not None and restarted != secret
    refused = remote.get("/v1/databases", headers=bearer(restarted))
    assert refused.status_code == 401 and "loopback only" in refused.text


def test_the_local_admin_credential_leaves_a_node_without_tokens_open(make_api: Any) -> None:
    api = make_api()
    assert api.get("/v1/databases").status_code == 200
