"""The OpenAPI document against the server it describes: the same routes, and real
calls whose statuses, headers and bodies are all what the document says.

`Contract` makes each call through the document: the status must be listed for the
operation, the body must validate against that status's schema (Draft 2020-12,
`$ref`s resolved in the document's components), the headers it requires must be
there, and a JSON request body must validate against the documented one exactly
when the call is not meant to be malformed.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openapi_spec_validator
import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from starlette.routing import Route
from starlette.testclient import TestClient

from shoal.node.auth import hash_secret
from shoal.node.config import TokenSpec
from shoal.server.openapi import document
from shoal.stream import FrameKind, FrameReader

ADMIN = "admin-secret"
READER = "reader-secret"
ELSEWHERE = "elsewhere-secret"  # admin, but only of a database named "elsewhere"
MAX_STATEMENTS = 10
MAX_BODY = 256 * 1024
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
OUTSIDE_V1 = {"/livez", "/readyz", "/metrics"}

DBS = "/v1/databases"
DB = "/v1/databases/{name}"
QUERY, EXECUTE, REQUEST = f"{DB}/query", f"{DB}/execute", f"{DB}/request"
BACKUP, LOAD = f"{DB}/backup", f"{DB}/load"
LOG, SNAPSHOT = f"{DB}/log", f"{DB}/snapshot"
BEGIN = f"{DB}/transactions"
RUN, COMMIT, ROLLBACK = f"{BEGIN}/{{tx}}", f"{BEGIN}/{{tx}}/commit", f"{BEGIN}/{{tx}}/rollback"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"any:{token}".encode()).decode()}


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator for a schema found anywhere in the document: its `#/components/...`
    references resolve once the components sit beside it in the root."""
    return Draft202012Validator({**schema, "components": doc["components"]})


def resolve(doc: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    """A response (or parameter) object, following its `$ref` into the components."""
    while "$ref" in item:
        node: Any = doc
        for part in item["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        item = node
    return item


class Contract:
    """A client whose every call is checked against the document's operation."""

    def __init__(self, client: TestClient, doc: dict[str, Any]) -> None:
        self.client = client
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()

    def call(
        self,
        method: str,
        template: str,
        status: int,
        *,
        auth: dict[str, str] | None = None,
        malformed: bool = False,
        json: Any = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        name: str = "app",
        tx: str = "no-such-transaction",
    ) -> httpx.Response:
        """Makes the call (on database `name`, transaction `tx` where the path has
        them), checks it, and returns the response."""
        operation = self.doc["paths"][template][method]
        if json is not None:
            body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
            conforms = validator(self.doc, body_schema).is_valid(json)
            assert conforms != malformed, f"request body {json!r}: conforms={conforms}"
        response: httpx.Response = self.client.request(
            method.upper(),
            template.format(name=name, tx=tx),
            headers=bearer(ADMIN) if auth is None else auth,
            json=json,
            content=content,
            params=params,
        )
        assert response.status_code == status, response.text
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template}: {status} is not documented"
        self.check(resolve(self.doc, documented), response)
        self.seen.add((template, method, status))
        return response

    def check(self, documented: dict[str, Any], response: httpx.Response) -> None:
        media = response.headers["content-type"].split(";")[0].strip()
        content = {key.split(";")[0].strip(): value for key, value in documented["content"].items()}
        assert media in content, f"content type {media} is not among {list(content)}"
        if media == "application/json":
            validator(self.doc, content[media]["schema"]).validate(response.json())
        for name, spec in documented.get("headers", {}).items():
            value = response.headers.get(name)
            assert value is not None or not spec["required"], f"header {name} is missing"
            if value is not None:
                typed = int(value) if spec["schema"].get("type") == "integer" else value
                validator(self.doc, spec["schema"]).validate(typed)


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def documented_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, method, _ in operations(doc)}


@pytest.fixture
def doc(api: TestClient) -> dict[str, Any]:
    served = api.get("/v1/openapi.json")
    assert served.status_code == 200
    assert served.json() == document()
    return served.json()  # type: ignore[no-any-return]


@pytest.fixture
def contract(make_api: Any, tmp_path: Path, doc: dict[str, Any]) -> Iterator[Contract]:
    """A node with an admin token and a read-only token, and small limits to hit."""
    reader = TokenSpec("reader", hash_secret(READER), "read", ("*",))
    elsewhere = TokenSpec("elsewhere", hash_secret(ELSEWHERE), "admin", ("elsewhere",))
    client = make_api(
        data_dir=tmp_path / "tokened",
        admin_token=ADMIN,
        tokens=(reader, elsewhere),
        max_statements=MAX_STATEMENTS,
        max_body_bytes=MAX_BODY,
    )
    yield Contract(client, doc)


def test_document_is_served_and_its_schemas_are_valid(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)


def test_document_is_valid_openapi(doc: dict[str, Any]) -> None:
    openapi_spec_validator.validate(doc)


def test_routes_and_document_have_the_same_operations(api: TestClient, doc: dict[str, Any]) -> None:
    routed = {
        (route.path, method)
        for route in api.app.routes  # type: ignore[attr-defined]
        if isinstance(route, Route) and (route.path.startswith("/v1/") or route.path in OUTSIDE_V1)
        for method in (route.methods or set()) - {"HEAD"}
    }
    assert routed == documented_operations(doc)


def test_only_probes_and_the_document_are_open(doc: dict[str, Any]) -> None:
    assert doc["security"] == [{"bearer": []}, {"basic": []}]
    open_ = {
        path
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in HTTP_METHODS and op.get("security") == []
    }
    assert open_ == {"/livez", "/readyz", "/v1/openapi.json"}


def probes_and_auth(c: Contract) -> None:
    c.call("get", "/livez", 200, auth={})
    c.call("get", "/readyz", 200, auth={})
    node = c.client.app.state.node  # type: ignore[attr-defined]
    node.ready = False
    try:
        c.call("get", "/readyz", 503, auth={})
    finally:
        node.ready = True
    c.call("get", "/v1/openapi.json", 200, auth={})
    c.call("get", "/metrics", 200, auth=basic(READER))
    c.call("get", "/metrics", 401, auth={})
    c.call("get", DBS, 401, auth={})
    c.call("get", DBS, 401, auth=bearer("not-a-token"))
    listed = c.call("get", DBS, 200, auth=basic(READER))
    assert [d["name"] for d in listed.json()["databases"]] == ["default"]


def databases(c: Contract) -> None:
    created = c.call("post", DBS, 201, json={"name": "app"})
    assert created.headers["location"] == "/v1/databases/app"
    c.call("post", DBS, 409, json={"name": "app"})
    c.call("post", DBS, 400, json={"name": ".hidden"}, malformed=True)
    c.call("post", DBS, 400, json={"name": "x", "size": 1}, malformed=True)
    c.call("post", DBS, 400, content=b"{nope")
    c.call("post", DBS, 403, json={"name": "other"}, auth=bearer(READER))
    c.call("post", DBS, 413, content=b" " * (MAX_BODY + 1))
    page = c.call("get", DBS, 200, params={"limit": "1", "contains": "app"}).json()
    assert [d["name"] for d in page["databases"]] == ["app"] and page["next"] is None
    c.call("get", DBS, 400, params={"limit": "0"})
    assert c.call("get", DB, 200).json()["role"] == "leader"
    c.call("get", DB, 404, name="missing")
    c.call("get", DB, 400, name="-bad")
    c.call("get", DB, 401, auth={})


def statements(c: Contract) -> None:
    schema = "CREATE TABLE t(id INTEGER PRIMARY KEY, v, b BLOB)"
    inserts = [
        schema,
        {"sql": "INSERT INTO t(v, b) VALUES (?, ?)", "params": [1.5, {"base64": "AAH/"}]},
        {
            "sql": "INSERT INTO t(v, b) VALUES (:v, :b)",
            "params": {"v": {"real": "-Infinity"}, "b": None},
        },
    ]
    done = c.call("post", EXECUTE, 200, json={"statements": inserts}).json()
    assert done["version"] == 1 and done["results"][1]["last_insert_id"] == 1
    read = c.call(
        "post",
        QUERY,
        200,
        json={"sql": "SELECT v, b FROM t WHERE id >= ?", "params": [1], "min_version": 1},
    ).json()
    assert read["results"][0]["rows"] == [[1.5, {"base64": "AAH/"}], [{"real": "-Infinity"}, None]]
    named = {"sql": "SELECT :x, :y", "params": {"x": True, "y": {"base64": ""}}, "timeout": 1}
    assert c.call("post", QUERY, 200, json=named).json()["results"][0]["rows"] == [
        [1, {"base64": ""}]
    ]
    failed = c.call("post", QUERY, 400, json={"sql": "SELECT * FROM missing"}).json()
    assert failed["error"]["statement"] == 0 and failed["error"]["type"] == "SQLError"
    writes = c.call("post", QUERY, 400, json={"statements": ["SELECT 1", "DELETE FROM t"]})
    assert writes.json()["error"] | {"message": ""} == {
        "type": "QueryWrites",
        "message": "",
        "retryable": False,
        "statement": 1,
    }
    late = c.call(
        "post", QUERY, 503, json={"sql": "SELECT 1", "min_version": 10**6, "timeout": 0.05}
    )
    assert late.json()["error"]["type"] == "VersionNotReached"
    c.call("post", QUERY, 400, content=b"{nope")
    c.call("post", QUERY, 400, content=b"[]")
    c.call("post", QUERY, 400, json={"sql": "SELECT 1", "transaction": True}, malformed=True)
    c.call(
        "post",
        QUERY,
        400,
        json={"sql": "SELECT 1", "statements": ["SELECT 2"]},
        malformed=True,
    )
    c.call("post", QUERY, 400, json={"statements": []}, malformed=True)
    c.call(
        "post",
        QUERY,
        400,
        json={"statements": [{"sql": "SELECT 1", "x": 1}]},
        malformed=True,
    )
    c.call(
        "post",
        QUERY,
        400,
        json={"sql": "SELECT ?", "params": [{"base64": "!"}]},
        malformed=True,
    )
    c.call("post", QUERY, 400, json={"sql": "SELECT ?", "params": [[1]]}, malformed=True)
    c.call("post", QUERY, 400, json={"sql": "SELECT 1", "timeout": -1}, malformed=True)
    c.call("post", QUERY, 400, json={"sql": "SELECT 1", "min_version": "1"}, malformed=True)
    c.call("post", QUERY, 413, json={"statements": ["SELECT 1"] * (MAX_STATEMENTS + 1)})
    c.call("post", QUERY, 404, json={"sql": "SELECT 1"}, name="missing")
    c.call("post", QUERY, 200, json={"sql": "SELECT 1"}, auth=basic(READER))

    duplicate = {"statements": ["INSERT INTO t(id) VALUES (1)", "SELECT 1"], "transaction": False}
    conflict = c.call("post", EXECUTE, 409, json=duplicate).json()
    assert [("type" in r) for r in conflict["results"]] == [True, False]
    c.call("post", EXECUTE, 400, json={"sql": "ATTACH 'x' AS y"})
    c.call("post", EXECUTE, 400, json={"sql": "SELECT 1", "transaction": "no"}, malformed=True)
    c.call("post", EXECUTE, 400, json={"sql": "SELECT 1", "min_version": 1}, malformed=True)
    c.call("post", EXECUTE, 403, json={"sql": "DELETE FROM t"}, auth=bearer(READER))
    c.call("post", EXECUTE, 404, json={"sql": "SELECT 1"}, name="missing")

    mixed = {
        "statements": [
            {"sql": "INSERT INTO t(v) VALUES (:v)", "params": {"v": "text"}},
            {"sql": "SELECT count(*) FROM t WHERE v = ?", "params": ["text"]},
        ],
        "transaction": True,
        "min_version": 1,
        "timeout": 2,
    }
    assert c.call("post", REQUEST, 200, json=mixed).json()["results"][1]["rows"] == [[1]]
    c.call("post", REQUEST, 200, json={"sql": "SELECT 1"}, auth=basic(READER))
    c.call("post", REQUEST, 403, json={"sql": "DELETE FROM t"}, auth=basic(READER))
    c.call("post", REQUEST, 409, json={"sql": "INSERT INTO t(id) VALUES (1)"})
    c.call("post", REQUEST, 400, json={"sql": "SELECT 1", "x": 1}, malformed=True)
    c.call("post", REQUEST, 404, json={"sql": "SELECT 1"}, name="missing")


def transactions(c: Contract) -> None:
    begun = c.call("post", BEGIN, 201).json()
    tx = begun["id"]
    c.call("post", RUN, 200, json={"sql": "INSERT INTO t(v) VALUES (?)", "params": [7]}, tx=tx)
    blob = {"sql": "INSERT INTO t(b) VALUES (:b)", "params": {"b": {"base64": "AA=="}}}
    c.call("post", RUN, 200, json={"statements": [blob, "SELECT count(*) FROM t"]}, tx=tx)
    c.call("post", RUN, 409, json={"sql": "INSERT INTO t(id) VALUES (1)"}, tx=tx)
    c.call("post", RUN, 400, json={"sql": "SELECT 1", "transaction": True}, malformed=True, tx=tx)
    c.call("post", RUN, 403, json={"sql": "SELECT 1"}, auth=bearer(READER), tx=tx)
    committed = c.call("post", COMMIT, 200, tx=tx)
    assert int(committed.headers["shoal-version"]) == committed.json()["version"]
    c.call("post", COMMIT, 404, tx=tx)
    c.call("post", RUN, 404, json={"sql": "SELECT 1"}, tx=tx)

    again = c.call("post", BEGIN, 201).json()["id"]
    c.call("post", ROLLBACK, 403, auth=bearer(READER), tx=again)
    c.call("post", ROLLBACK, 200, tx=again)
    c.call("post", ROLLBACK, 404, tx=again)
    c.call("post", BEGIN, 404, name="missing")
    c.call("post", BEGIN, 403, auth=bearer(READER))
    c.call("post", BEGIN, 400, name="-bad")

    # The first statement sent with the begin: one request for both.
    first = {"sql": "INSERT INTO t(v) VALUES (?)", "params": [8]}
    with_first = c.call("post", BEGIN, 201, json=first).json()
    assert with_first["results"][0]["rows_affected"] == 1
    c.call("post", ROLLBACK, 200, tx=with_first["id"])
    # A failing one begins nothing: the error, and the writer free at once.
    failed = c.call("post", BEGIN, 409, json={"sql": "INSERT INTO t(id) VALUES (1)"}).json()
    assert failed["error"]["type"] == "IntegrityError" and "id" not in failed
    c.call("post", BEGIN, 400, json={"sql": "SELECT 1", "level": "none"}, malformed=True)
    c.call("post", BEGIN, 413, json={"statements": ["SELECT 1"] * (MAX_STATEMENTS + 1)})
    free = c.call("post", BEGIN, 201, json={"sql": "SELECT count(*) FROM t WHERE v = 8"}).json()
    assert free["results"][0]["rows"] == [[0]]  # the rolled back 8 is not there
    c.call("post", ROLLBACK, 200, tx=free["id"])
    c.call("post", COMMIT, 401, auth={})


def copies(c: Contract) -> None:
    file = c.call("get", BACKUP, 200)
    assert file.content.startswith(b"SQLite format 3\x00")
    dump = c.call("get", BACKUP, 200, params={"format": "sql"}, auth=basic(READER))
    assert "CREATE TABLE t" in dump.text
    c.call("get", BACKUP, 400, params={"format": "xml"})
    c.call("get", BACKUP, 404, name="missing")

    c.call("post", DBS, 201, json={"name": "copy"})
    c.call("post", LOAD, 200, content=file.content, name="copy")
    loaded = c.call("post", LOAD, 200, content=b"BEGIN;\nCREATE TABLE u(x);\nCOMMIT;\n")
    assert loaded.json()["results"][0]["rows_affected"] == 0
    c.call("post", LOAD, 400, content=b"INSERT INTO missing VALUES (1);")
    c.call("post", LOAD, 400, content=b"")
    c.call("post", LOAD, 409, content=b"INSERT INTO t(id) VALUES (1);")
    c.call("post", LOAD, 403, content=b"SELECT 1;", auth=bearer(READER))
    c.call("post", LOAD, 413, content=b"-" * (MAX_BODY + 1))
    c.call("post", LOAD, 404, content=b"SELECT 1;", name="missing")


def replication(c: Contract) -> None:
    version = c.call("post", EXECUTE, 200, json={"sql": "INSERT INTO t(v) VALUES (0)"})
    head = version.json()["version"]
    streamed = c.call("get", LOG, 200, params={"after": "1", "until": "3"}, auth=basic(READER))
    assert [f.kind for f in FrameReader().feed(streamed.content)] == [FrameKind.RECORD] * 2
    c.call("get", LOG, 400, params={"after": "-1"})
    c.call("get", LOG, 404, name="missing")
    node = c.client.app.state.node  # type: ignore[attr-defined]
    node._open["app"].db.truncate_log(below=head)
    c.call("get", LOG, 410, params={"after": "1"})
    seed = c.call("get", SNAPSHOT, 200, auth=basic(READER))
    assert seed.content.startswith(b"SQLite format 3\x00")
    c.call("get", SNAPSHOT, 400, name="-bad")
    c.call("get", SNAPSHOT, 404, name="missing")


SAMPLE_BODIES = {
    "createDatabase": {"name": "new"},
    "query": {"sql": "SELECT 1"},
    "execute": {"sql": "SELECT 1"},
    "request": {"sql": "SELECT 1"},
    "runInTransaction": {"sql": "SELECT 1"},
    "queryMany": {"pattern": "*", "sql": "SELECT 1"},
    "beginTransaction": {"sql": "SELECT 1"},
}
# The operations that answer 503 while the node stops (a transaction already open
# is not refused: it ends with the node).
STOPPING = {
    "getDatabase",
    "dropDatabase",
    "query",
    "execute",
    "request",
    "backup",
    "load",
    "beginTransaction",
    "followLog",
    "snapshot",
}
# Documented statuses the scenario cannot reach without a fault, besides every 500.
NEEDS_A_FAULT = {
    (DBS, "post", 503),  # stopping: but the database is created anyway (a server bug)
    (RUN, "post", 503),  # Busy or I/O errors inside an open transaction
    (COMMIT, "post", 409),  # a deferred constraint: the node runs without foreign keys
    (COMMIT, "post", 503),  # Busy or I/O errors at COMMIT
    (LOG, "get", 301),  # a cluster node holding no copy (routing's redirect)
    (SNAPSHOT, "get", 301),
}


def sample(c: Contract, path: str, method: str, op: dict[str, Any], status: int, **kw: Any) -> None:
    """Calls an operation on database "app" with a valid body, when it takes one."""
    body = SAMPLE_BODIES.get(op["operationId"])
    if body is not None:
        kw["json"] = body
    elif "requestBody" in op:
        kw["content"] = b"SELECT 1;"
    c.call(method, path, status, **kw)


def refusals(c: Contract) -> None:
    """Every operation that needs a token refuses none (401), one that does not cover
    the database (403), and a body over the limit (413); and answers 503 while the
    node stops."""
    for path, method, op in operations(c.doc):
        if op.get("security") == []:
            continue
        sample(c, path, method, op, 401, auth={})
        if "{name}" in path:
            sample(c, path, method, op, 403, auth=bearer(ELSEWHERE))
        if "requestBody" in op:
            oversized = b" " * (MAX_BODY + 1)
            c.call(method, path, 413, content=oversized)
    node = c.client.app.state.node  # type: ignore[attr-defined]
    node.closing = True
    try:
        for path, method, op in operations(c.doc):
            if op["operationId"] in STOPPING:
                sample(c, path, method, op, 503)
    finally:
        node.closing = False


def drops(c: Contract) -> None:
    c.call("delete", DB, 403, name="copy", auth=bearer(READER))
    assert c.call("delete", DB, 200, name="copy").json() == {"name": "copy", "dropped": True}
    c.call("delete", DB, 404, name="copy")
    c.call("delete", DB, 400, name="default")
    c.call("get", "/metrics", 200)
    status = c.call("get", "/v1/status", 200, auth=basic(READER)).json()
    assert status["ready"] is True and {d["name"] for d in status["databases"]} >= {"default"}
    c.call("get", "/v1/status", 401, auth={})
    alone = c.call("get", "/v1/cluster", 200, auth=basic(READER)).json()
    assert alone["clustered"] is False and alone["node"]
    c.call("get", "/v1/cluster", 401, auth={})


def query_many(c: Contract) -> None:
    many = "/v1/query-many"
    found = c.call("post", many, 200, json={"pattern": "*", "sql": "SELECT 1 AS one"}).json()
    assert found["columns"] == ["db", "one"] and ["app", 1] in found["rows"]
    c.call("post", many, 200, json={"databases": ["app", "nope"], "sql": "SELECT 1"})
    c.call("post", many, 400, json={"sql": "SELECT 1"}, malformed=True)
    c.call("post", many, 400, json={"pattern": "*", "sql": "DELETE FROM t"})


def test_every_operation_answers_as_documented(contract: Contract) -> None:
    steps = (probes_and_auth, databases, statements, query_many, transactions, copies, replication)
    for step in (*steps, refusals, drops):
        step(contract)
    documented = documented_operations(contract.doc)
    succeeded = {(path, method.upper()) for path, method, status in contract.seen if status < 300}
    assert succeeded == documented
    unexercised = {
        (path, method, int(status))
        for path, method, op in operations(contract.doc)
        for status in op["responses"]
        if status != "500" and (path, method, int(status)) not in contract.seen
    }
    assert unexercised == NEEDS_A_FAULT


def test_a_wrong_document_fails_the_contract(contract: Contract) -> None:
    """The checks bite: a schema missing a field the server sends, or a status the
    document leaves out, is caught."""
    broken = copy.deepcopy(contract.doc)
    del broken["components"]["schemas"]["Result"]["properties"]["last_insert_id"]
    with pytest.raises(ValidationError):
        Contract(contract.client, broken).call(
            "post", QUERY, 200, json={"sql": "SELECT 1"}, name="default"
        )
    del broken["paths"][DB]["get"]["responses"]["404"]
    with pytest.raises(AssertionError, match="404 is not documented"):
        Contract(contract.client, broken).call("get", DB, 404, name="missing")
