"""The OpenAPI 3.1 document of the native API, served at /v1/openapi.json.

It is built by small helpers rather than written as one literal, and takes from
the server whatever the server decides (the database name pattern, the wait
limits, which error type gives which status), so those cannot drift apart.
The rest is checked against real calls by tests/server/test_openapi.py.
"""

from __future__ import annotations

from typing import Any

import shoal
from shoal import errors
from shoal.engine import Role
from shoal.node.node import _NAME as DATABASE_NAME
from shoal.node.node import PAGE_LIMIT
from shoal.server.httputil import AUTHENTICATE, status_of
from shoal.server.native import DEFAULT_WAIT_SECONDS, MAX_WAIT_SECONDS
from shoal.server.querymany import DEFAULT_TIMEOUT_SECONDS as DEFAULT_MANY_SECONDS
from shoal.server.querymany import MAX_TIMEOUT_SECONDS as MAX_MANY_SECONDS

__all__ = ["document"]

Json = dict[str, Any]

# The statuses a failing statement can give: a batch answers with the first
# failure's status and a body that also holds every statement's outcome.
STATEMENT_STATUSES = frozenset({400, 409, 500, 503})

_RESPONSES = {
    400: ("BadRequest", "The request is malformed, or a statement is bad SQL or refused."),
    401: ("Unauthorized", "No credentials, or a token this node does not know."),
    403: ("Forbidden", "The token's scope or database patterns do not allow this."),
    404: ("NotFound", "No such database, or no such open transaction."),
    409: ("Conflict", "The database exists already, or a constraint failed."),
    410: ("Gone", "This copy's log no longer holds the records asked for: seed from a snapshot."),
    413: ("PayloadTooLarge", "The body is over `max_body_bytes`, or has over `max_statements`."),
    500: ("ServerError", "Something that should not happen; the type names it."),
    503: ("ServiceUnavailable", "Retry later: busy, not at `min_version` yet, or stopping."),
}

DESCRIPTION = """\
The native API of a shoal node: databases, statements, interactive transactions,
backups and loads, as JSON.

**Values.** SQL values travel as JSON scalars (null, numbers, strings), except a
BLOB, which is `{"base64": "..."}`, and an infinite REAL, which is
`{"real": "Infinity"}` or `{"real": "-Infinity"}` (JSON has no infinities).
Parameters take the same forms, and `true`/`false`, which bind as 1 and 0.

**Versions.** A database's version counts its committed write transactions.
Database responses carry it in the `Shoal-Version` header; send it back as
`min_version` of a query (or as the `Shoal-Version` request header) to read your
own writes on any copy.

**A cluster.** Any node answers for any database: writes, and reads at the
`weak` (default) or `linearizable` level, are forwarded to the database's
leader; reads at `none` are served by the receiving node's own copy. Every
response names the node that served it in the `Shoal-Node` header.

**Errors.** Every error is `{"error": {"type", "message", "retryable"}}`, where
`type` is the name of a shoal error and `retryable` is true exactly for 503.

**Auth.** A token goes in `Authorization: Bearer <token>`, or as the password of
HTTP basic auth. Scopes are ordered `read` < `write` < `admin`. A node with no
token at all serves loopback clients without credentials, as `admin`, and
answers 401 to every other client.
"""


# -- small builders -----------------------------------------------------------


def ref(name: str, kind: str = "schemas") -> Json:
    return {"$ref": f"#/components/{kind}/{name}"}


def closed(properties: Json, *, optional: tuple[str, ...] = (), **extra: Any) -> Json:
    """An object with exactly these properties, all required but `optional`: the
    handlers reject unknown fields, and responses have no others."""
    required = [name for name in properties if name not in optional]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
        **extra,
    }


def array(items: Json, **extra: Any) -> Json:
    return {"type": "array", "items": items, **extra}


def count(description: str) -> Json:
    return {"type": "integer", "minimum": 0, "description": description}


def json_content(schema: Json) -> Json:
    return {"application/json": {"schema": schema}}


def header(description: str, schema: Json, *, required: bool = True) -> Json:
    return {"description": description, "required": required, "schema": schema}


def version_header(*, required: bool = True) -> Json:
    """`Shoal-Version`: present on every database response, and on batch failures."""
    when = "" if required else " (present when the body is a batch failure)"
    schema = {"type": "integer", "minimum": 0}
    return header(f"The database's version after the request{when}.", schema, required=required)


def authenticate_header() -> Json:
    """Sent with every 401, in both error shapes."""
    value = AUTHENTICATE["WWW-Authenticate"]
    return header("The schemes accepted.", {"const": value})


# -- schemas ------------------------------------------------------------------


def value_schemas() -> Json:
    """How SQL values travel, out (Value) and in (Parameter)."""
    base64_text = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
    return {
        "Blob": closed(
            {"base64": {"type": "string", "contentEncoding": "base64", "pattern": base64_text}},
            description="A BLOB, as standard base64 with padding.",
        ),
        "InfiniteReal": closed(
            {"real": {"enum": ["Infinity", "-Infinity"]}},
            description="An infinite REAL (JSON has no infinities).",
        ),
        "Value": {
            "description": "A SQL value in a result row.",
            "anyOf": [{"type": ["null", "number", "string"]}, ref("Blob"), ref("InfiniteReal")],
        },
        "Parameter": {
            "description": "A value bound to a parameter; booleans bind as 1 and 0.",
            "anyOf": [
                {"type": ["null", "boolean", "number", "string"]},
                ref("Blob"),
                ref("InfiniteReal"),
            ],
        },
        "Params": {
            "description": "An array for `?` and `?NNN`, an object for `:name`, `@name` and "
            "`$name` (keys without the prefix), or null for none.",
            "oneOf": [
                array(ref("Parameter")),
                {"type": "object", "additionalProperties": ref("Parameter")},
                {"type": "null"},
            ],
        },
    }


def statements_body(description: str, **fields: Json) -> Json:
    """A body of one statement (`sql`, `params`) or several (`statements`), not both,
    and the endpoint's own fields."""
    return {
        **closed(
            {"sql": {"type": "string"}, "params": ref("Params"), "statements": ref("Statements")}
            | fields,
            optional=("sql", "params", "statements", *fields),
        ),
        "description": description + " `params` goes with `sql`; each of `statements` "
        "carries its own.",
        "oneOf": [{"required": ["sql"]}, {"required": ["statements"]}],
    }


LEVEL: Json = {
    "enum": ["none", "weak", "linearizable", "strong", "auto"],
    "default": "weak",
    "description": "In a cluster: `none` reads the receiving node's copy; `weak` the "
    "leader's; `linearizable` (or `strong`) the leader's once it has confirmed its lease "
    "and that it is at the log's head. `auto` is `weak`.",
}


def query_many_schemas() -> Json:
    """The body and the answer of `POST /v1/query-many`."""
    return {
        "QueryMany": {
            **closed(
                {
                    "databases": array(
                        ref("DatabaseName"), minItems=1, description="The databases to read."
                    ),
                    "pattern": {
                        "type": "string",
                        "minLength": 1,
                        "description": "A glob (`*`, `?`, `[...]`) of the databases to read.",
                    },
                    "sql": {"type": "string", "description": "One statement that reads."},
                    "params": ref("Params"),
                    "aggregate": {
                        "type": "string",
                        "description": "A SELECT over the table `results` of the rows (a "
                        "column `db` first); its result is the answer's rows.",
                    },
                    "level": LEVEL,
                    "timeout": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "default": DEFAULT_MANY_SECONDS,
                        "description": "Seconds for the whole call (at most "
                        f"{MAX_MANY_SECONDS:g}); databases not answered by then are errors.",
                    },
                },
                optional=("databases", "pattern", "params", "aggregate", "level", "timeout"),
            ),
            "oneOf": [{"required": ["databases"]}, {"required": ["pattern"]}],
        },
        "QueryManyResult": closed(
            {
                "columns": array({"type": "string"}, description="`db`, then the statement's."),
                "rows": array(array(ref("Value"))),
                "databases": count("Databases read (those that failed included)."),
                "errors": array(
                    closed({"database": {"type": "string"}, "error": ref("ErrorDetail")}),
                    description="Each database that failed, and why.",
                ),
            }
        ),
    }


def statement_schemas() -> Json:
    """The request bodies that carry statements, one per endpoint's field set."""
    wait: dict[str, Json] = {
        "min_version": {
            "type": ["integer", "null"],
            "description": "Wait until the database reaches this version before reading.",
        },
        "timeout": {
            "type": "number",
            "minimum": 0,
            "default": DEFAULT_WAIT_SECONDS,
            "description": f"Seconds to wait for `min_version` (at most {MAX_WAIT_SECONDS:g}); "
            "then 503 VersionNotReached.",
        },
    }
    wait["level"] = LEVEL | {"description": LEVEL["description"] + " `min_version` overrides it."}
    transaction: dict[str, Json] = {
        "transaction": {
            "type": "boolean",
            "default": True,
            "description": "All statements in one transaction (the first failure rolls back "
            "all, and the rest do not run), or each committed on its own.",
        }
    }
    return {
        "Statement": {
            "description": "SQL text (possibly several statements), or SQL with parameters.",
            "oneOf": [
                {"type": "string"},
                closed({"sql": {"type": "string"}, "params": ref("Params")}, optional=("params",)),
            ],
        },
        "Statements": array(
            ref("Statement"),
            minItems=1,
            description="At most the node's `max_statements` (413 beyond).",
        ),
        "QueryRequest": statements_body("Statements that only read.", **wait),
        "ExecuteRequest": statements_body("Statements that write.", **transaction),
        "MixedRequest": statements_body("Statements that read and write.", **wait, **transaction),
        "TransactionRequest": statements_body("Statements to run in an open transaction."),
        "CreateDatabase": closed(
            {"name": ref("DatabaseName"), "durability": ref("Durability")},
            optional=("durability",),
        ),
    }


def result_schemas() -> Json:
    """What a success returns."""
    version = count("The version after the request.")
    return {
        "DatabaseName": {
            "type": "string",
            "pattern": f"^{DATABASE_NAME.pattern}$",
            "description": "It names a file: letters, digits, `_`, `-`, `.`; not first a dot.",
        },
        "DatabaseInfo": closed(
            {
                "name": ref("DatabaseName"),
                "version": count("Committed write transactions so far."),
                "size_bytes": count("Bytes on disk, write-ahead log included."),
                "open": {"type": "boolean", "description": "Open on this node now."},
                "evicted": {
                    "type": "boolean",
                    "description": "Removed from this node's disk after `evict_seconds` "
                    "closed; its next request restores it from the archive.",
                },
                "epoch": {"type": "integer"},
                "role": {"enum": [role.value for role in Role]},
                "durability": ref("Durability"),
                "leader": {"type": "string", "description": "In a cluster: the leading node."},
                "foreign_keys": {
                    "type": "boolean",
                    "description": "The database's foreign-key setting (`PRAGMA foreign_keys`).",
                },
                "checksum": {
                    "type": "string",
                    "description": "With `?checksum=1`: this copy's logical checksum at `version`.",
                },
                "replicas": array(
                    closed(
                        {
                            "node": {"type": "string"},
                            "version": count("The copy's version, as its node last reported."),
                            "lag": count("Versions behind the newest copy reported."),
                        }
                    ),
                    description="In a cluster's listing: every copy.",
                ),
            },
            optional=(
                "epoch",
                "role",
                "durability",
                "leader",
                "foreign_keys",
                "checksum",
                "replicas",
            ),
            description=(
                "`epoch`, `role` and `foreign_keys` are given for one database, not in lists."
            ),
        ),
        "Durability": {
            "enum": ["sync", "async"],
            "description": "In a cluster: `sync` answers a write once its record is in the "
            "control plane; `async` once committed here, shipping records in batches.",
        },
        "ClusterState": {
            "type": "object",
            "required": ["clustered", "node"],
            "description": "For a node on its own, only `clustered` (false) and `node`.",
            "properties": {
                "clustered": {"type": "boolean"},
                "node": {"type": "string", "description": "The node that answered."},
                "nodes": array(
                    closed(
                        {
                            "id": {"type": "string"},
                            "url": {"type": "string"},
                            "leaving": {"type": "boolean"},
                            "databases": count("Copies it holds."),
                            "leading": count("Databases it leads."),
                        }
                    )
                ),
                "databases": array(
                    closed(
                        {
                            "name": ref("DatabaseName"),
                            "durability": ref("Durability"),
                            "leader": {"type": ["string", "null"]},
                            "epoch": {"type": ["integer", "null"]},
                            "head": count("The version its log ends at."),
                            "replicas": array(
                                closed(
                                    {
                                        "node": {"type": "string"},
                                        "version": count("As of its node's last heartbeat."),
                                        "lag": count("Versions behind the log's head."),
                                        "problem": {
                                            "type": ["string", "null"],
                                            "description": "Why its last re-seed failed "
                                            "(it retries, backing off), until it is well.",
                                        },
                                    }
                                )
                            ),
                        }
                    )
                ),
            },
        },
        "DatabaseList": closed(
            {
                "databases": array(ref("DatabaseInfo")),
                "next": {
                    "type": ["string", "null"],
                    "description": "Pass as `after` for the next page; null on the last.",
                },
            }
        ),
        "NodeStatus": closed(
            {
                "shoal": {"type": "string", "description": "The node's shoal version."},
                "address": {"type": "string"},
                "ready": {"type": "boolean"},
                "uptime_seconds": {"type": "number", "minimum": 0},
                "archive": {
                    "type": ["string", "null"],
                    "description": "Where databases are archived; null when off.",
                },
                "databases": array(ref("DatabaseStatus")),
            },
            description="The node, and every open database the token covers.",
        ),
        "DatabaseStatus": closed(
            {
                "name": ref("DatabaseName"),
                "version": count("Committed write transactions so far."),
                "archive_lag": count("Versions committed and not yet archived."),
                "archive_failures": count("Archive rounds failed in a row."),
                "archive_error": {"type": ["string", "null"], "description": "The last one."},
                "snapshot_version": {
                    "type": ["integer", "null"],
                    "description": "The version of the newest snapshot in the archive.",
                },
                "snapshot_time": {
                    "type": ["number", "null"],
                    "description": "When that version was committed (seconds since 1970).",
                },
            },
            optional=(
                "archive_lag",
                "archive_failures",
                "archive_error",
                "snapshot_version",
                "snapshot_time",
            ),
        ),
        "Dropped": closed({"name": ref("DatabaseName"), "dropped": {"const": True}}),
        "Result": closed(
            {
                "columns": array({"type": "string"}),
                "types": array({"type": ["string", "null"]}, description="Declared types."),
                "rows": array(array(ref("Value"))),
                "rows_affected": count("Rows changed by the statement."),
                "last_insert_id": {"type": ["integer", "null"]},
            },
            description="One statement's outcome.",
        ),
        "BatchResult": closed({"version": version, "results": array(ref("Result"))}),
        "Transaction": closed(
            {
                "id": {"type": "string"},
                "version": count("The version the transaction starts from."),
                "idle_timeout": {
                    "type": "number",
                    "description": "Seconds without a request before it is rolled back.",
                },
                "results": array(
                    ref("Result"), description="The results of the statements sent with it."
                ),
            },
            optional=("results",),
        ),
        "Committed": closed({"version": count("The version of the committed transaction.")}),
        "RolledBack": closed({"rolled_back": {"const": True}}),
    }


def error_detail(**extra: Json) -> Json:
    return closed(
        {
            "type": {"type": "string", "description": "The shoal error's name."},
            "message": {"type": "string"},
            "retryable": {"type": "boolean", "description": "True exactly for 503."},
        }
        | extra
    )


def error_schemas() -> Json:
    return {
        "ErrorDetail": error_detail(),
        "Error": closed({"error": ref("ErrorDetail")}),
        "FailedStatement": error_detail(
            statement=count("The index of the request statement that failed.")
        ),
        "BatchFailure": closed(
            {
                "error": ref("FailedStatement"),
                "version": count("The version after the request."),
                "results": array(
                    {"oneOf": [ref("Result"), ref("ErrorDetail")]},
                    description="Per SQL statement run, its result or its error (a string "
                    "of several statements gives one entry each). In one transaction the "
                    "results before the failure were rolled back; statements run on their "
                    "own stay committed.",
                ),
            },
            description="Some statement failed: the first failure, and every outcome.",
        ),
    }


# -- responses ----------------------------------------------------------------


def error_types() -> dict[int, list[str]]:
    """The shoal error names that give each status, asked of the server's own table.
    An instance made without __init__ is enough: status_of looks only at its class."""
    by_status: dict[int, list[str]] = {}
    for name in errors.__all__:
        kind = getattr(errors, name)
        if isinstance(kind, type) and issubclass(kind, errors.Error):
            by_status.setdefault(status_of(kind.__new__(kind)), []).append(name)
    return by_status


def error_response(status: int, *, batch: bool) -> Json:
    """One error status: the Error body (or a batch failure), its type among those the
    server gives that status, `retryable` as the server sets it, and its headers."""
    when = _RESPONSES[status][1]
    types = error_types().get(status, [])
    kind = {"enum": types} if status != 500 else {"type": "string"}
    envelope = {"oneOf": [ref("Error"), ref("BatchFailure")]} if batch else ref("Error")
    detail = {"properties": {"type": kind, "retryable": {"const": status == 503}}}
    schema = {"allOf": [envelope, {"properties": {"error": detail}}]}
    headers: Json = {}
    if status == 401:
        headers["WWW-Authenticate"] = authenticate_header()
    if status == 503:
        headers["Retry-After"] = header(
            "Seconds to wait (not sent with a batch failure).",
            {"type": "integer"},
            required=not batch,
        )
    if batch:
        headers["Shoal-Version"] = version_header(required=False)
    listed = ", ".join(types) if status != 500 else "InternalError, or an unexpected error's name"
    also = " Or a statement failed: the batch failure." if batch else ""
    response = {"description": f"{when}{also} Types: {listed}.", "content": json_content(schema)}
    return response | ({"headers": headers} if headers else {})


def response_name(status: int, *, batch: bool) -> str:
    return ("Batch" if batch else "") + _RESPONSES[status][0]


def error_responses() -> Json:
    plain = {response_name(s, batch=False): error_response(s, batch=False) for s in _RESPONSES}
    batch = {
        response_name(s, batch=True): error_response(s, batch=True) for s in STATEMENT_STATUSES
    }
    return plain | dict(sorted(batch.items()))


def responses(success: Json, *statuses: int, batch: bool = False) -> Json:
    """The success response, and references to the shared error responses."""
    failures = {
        str(status): ref(
            response_name(status, batch=batch and status in STATEMENT_STATUSES), "responses"
        )
        for status in statuses
    }
    return success | failures


def ok(
    schema: str,
    description: str,
    *,
    status: int = 200,
    versioned: bool = True,
    headers: Json | None = None,
) -> Json:
    """A JSON success response, with `Shoal-Version` when it is about one database."""
    all_headers = ({"Shoal-Version": version_header()} if versioned else {}) | (headers or {})
    response = {"description": description, "content": json_content(ref(schema))}
    return {str(status): response | ({"headers": all_headers} if all_headers else {})}


def text(description: str, media_type: str = "text/plain") -> Json:
    return {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}


def query_parameter(name: str, schema: Json, description: str) -> Json:
    """An optional parameter of the query string."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def json_body(schema: str) -> Json:
    return {"required": True, "content": json_content(ref(schema))}


# -- operations ---------------------------------------------------------------


def operation(
    operation_id: str,
    tag: str,
    summary: str,
    answers: Json,
    *,
    scope: str | None = None,
    body: Json | None = None,
    parameters: list[Json] | None = None,
    description: str = "",
) -> Json:
    """One operation; with no `scope` it is open to anyone (no credentials)."""
    op: Json = {"operationId": operation_id, "tags": [tag], "summary": summary}
    if scope is None:
        op["security"] = []
    else:
        description = f"{description}\n\nScope: `{scope}`.".strip()
        op["x-shoal-scope"] = scope
    if description:
        op["description"] = description
    if parameters:
        op["parameters"] = parameters
    if body:
        op["requestBody"] = body
    return op | {"responses": answers}


def statements_operation(
    operation_id: str, summary: str, body: str, scope: str, description: str, *statuses: int
) -> Json:
    """An endpoint that runs statements and answers with a batch."""
    success = ok(
        "BatchResult", "Every statement succeeded: one result per SQL statement, in order."
    )
    return operation(
        operation_id,
        "statements",
        summary,
        responses(success, *statuses, batch=True),
        scope=scope,
        body=json_body(body),
        description=description,
    )


def probe_paths() -> Json:
    readiness = "`[+]` lines for what is ready, `[-]` for what is not."
    return {
        "/livez": {
            "get": operation("livez", "operations", "The process is up.", {"200": text("`ok`")})
        },
        "/readyz": {
            "get": operation(
                "readyz",
                "operations",
                "The node serves requests.",
                {"200": text(readiness), "503": text("Starting or stopping. " + readiness)},
            )
        },
        "/metrics": {
            "get": operation(
                "metrics",
                "operations",
                "Prometheus metrics: requests by route and status, open databases, versions.",
                {
                    "200": text("Prometheus text format 0.0.4.", "text/plain; version=0.0.4"),
                    "401": {
                        "description": "No credentials, or an unknown token.",
                        "headers": {"WWW-Authenticate": authenticate_header()},
                        "content": json_content(ref("Error")),
                    },
                },
                scope="read",
            )
        },
        "/v1/openapi.json": {
            "get": operation(
                "openapi",
                "operations",
                "This document.",
                {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": json_content({"type": "object"}),
                    }
                },
            )
        },
    }


def database_paths() -> Json:
    base = "/v1/databases/{name}"
    return {
        "/v1/status": {
            "get": operation(
                "nodeStatus",
                "operations",
                "The node, and each open database's version and archive lag.",
                responses(ok("NodeStatus", "The node's status.", versioned=False), 401, 500),
                scope="read",
            )
        },
        "/v1/cluster": {
            "get": operation(
                "clusterState",
                "operations",
                "The cluster's nodes, and each database's leader, log head and copies.",
                responses(ok("ClusterState", "The cluster.", versioned=False), 401, 500),
                scope="read",
                parameters=[
                    query_parameter(
                        "databases",
                        {"type": "string", "enum": ["false", "0"]},
                        "Leave the databases out: the nodes alone (each database costs a "
                        "read of its log head in the control plane).",
                    )
                ],
            )
        },
        "/v1/databases": {
            "get": operation(
                "listDatabases",
                "databases",
                "Lists the databases the token covers, a page at a time.",
                responses(
                    ok("DatabaseList", "A page of databases, by name.", versioned=False),
                    *(400, 401, 500),
                ),
                scope="read",
                parameters=[
                    query_parameter("after", {"type": "string"}, "List the names after this one."),
                    query_parameter(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": PAGE_LIMIT},
                        f"Databases per page ({PAGE_LIMIT} unless fewer are asked for).",
                    ),
                    query_parameter(
                        "contains",
                        {"type": "string"},
                        "Only names containing this text, in any case.",
                    ),
                ],
            ),
            "post": operation(
                "createDatabase",
                "databases",
                "Creates an empty database.",
                responses(
                    ok(
                        "DatabaseInfo",
                        "Created.",
                        status=201,
                        headers={"Location": header("The database's URL.", {"type": "string"})},
                    ),
                    *(400, 401, 403, 409, 413, 500, 503),
                ),
                scope="admin",
                body=json_body("CreateDatabase"),
            ),
        },
        base: {
            "parameters": [ref("DatabaseName", "parameters")],
            "get": operation(
                "getDatabase",
                "databases",
                "Describes one database.",
                responses(ok("DatabaseInfo", "The database."), 400, 401, 403, 404, 500, 503),
                scope="read",
                parameters=[
                    query_parameter(
                        "checksum",
                        {"type": "string", "enum": ["1", "true"]},
                        "Add this node's copy's logical checksum (it reads every row).",
                    )
                ],
            ),
            "delete": operation(
                "dropDatabase",
                "databases",
                "Deletes a database, once requests using it are done.",
                responses(ok("Dropped", "Dropped.", versioned=False), 400, 401, 403, 404, 500, 503),
                scope="admin",
                description="The `default` database cannot be dropped (400).",
            ),
        },
    }


def statement_paths() -> Json:
    base = "/v1/databases/{name}"
    name = [ref("DatabaseName", "parameters")]
    return {
        f"{base}/query": {
            "parameters": name,
            "post": statements_operation(
                "query",
                "Runs statements that read.",
                "QueryRequest",
                "read",
                "Each statement runs on its own; one that writes fails with QueryWrites.",
                *(400, 401, 403, 404, 413, 500, 503),
            ),
        },
        f"{base}/execute": {
            "parameters": name,
            "post": statements_operation(
                "execute",
                "Runs statements that write.",
                "ExecuteRequest",
                "write",
                "",
                *(400, 401, 403, 404, 409, 413, 500, 503),
            ),
        },
        f"{base}/request": {
            "parameters": name,
            "post": statements_operation(
                "request",
                "Runs statements that read and write.",
                "MixedRequest",
                "read",
                "A statement that writes needs scope `write`. In one transaction every "
                "statement runs on the writer, so reads see the "
                "writes before them; otherwise reads go to a reader.",
                *(400, 401, 403, 404, 409, 413, 500, 503),
            ),
        },
    }


def query_many_paths() -> Json:
    return {
        "/v1/query-many": {
            "post": operation(
                "queryMany",
                "statements",
                "Runs one read on many databases; rows tagged with each one's name.",
                responses(
                    ok(
                        "QueryManyResult",
                        "The rows, and each database that failed.",
                        versioned=False,
                    ),
                    *(400, 401, 413, 500),
                ),
                scope="read",
                body=json_body("QueryMany"),
                description="Only the databases the token may read: a pattern matches no "
                "others, and a named one it does not cover is an error in `errors`. At "
                "most the node's `max_query_many` databases (413 beyond), and "
                "`max_result_rows` rows gathered (400 beyond).",
            )
        }
    }


def replication_paths() -> Json:
    base = "/v1/databases/{name}"
    name = [ref("DatabaseName", "parameters")]

    def version_parameter(key: str, description: str) -> Json:
        return query_parameter(key, {"type": "integer", "minimum": 0}, description)

    moved = {
        "301": {
            "description": "This node holds no copy: the same request at a node that does.",
            "headers": {"Location": header("That node's URL for it.", {"type": "string"})},
        }
    }
    stream = {
        "description": "Frames until the client goes, `until` is reached, or the node "
        "stops (an end frame): each `kind u8 | length u32 | payload`, kind 1 a record "
        '(the next version), 2 a heartbeat (JSON `{"version": N}`, this copy\'s), 3 the '
        "end (JSON, the error that ended it). The record format document has the bytes.",
        "headers": {
            "Shoal-Version": header("This copy's version as the stream began.", {"type": "integer"})
        },
        "content": {
            "application/vnd.shoal.log": {
                "schema": {"type": "string", "contentMediaType": "application/vnd.shoal.log"}
            }
        },
    }
    seed = {
        "description": "A SQLite file of this copy (its log trimmed to the newest record): "
        "seed from it, then follow the log after its version.",
        "headers": {"Shoal-Version": version_header()},
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "contentMediaType": "application/vnd.sqlite3"}
            }
        },
    }
    return {
        f"{base}/log": {
            "parameters": name,
            "get": operation(
                "followLog",
                "replication",
                "Streams the records after a version, as this copy gets them.",
                responses({"200": stream} | moved, 400, 401, 403, 404, 410, 500, 503),
                scope="read",
                parameters=[
                    version_parameter("after", "Send the records after this version (0)."),
                    version_parameter(
                        "until", "End once this version is sent (never, by default)."
                    ),
                    query_parameter(
                        "heartbeat",
                        {"type": "number", "minimum": 0.05, "maximum": 60},
                        "Seconds without a record before a heartbeat (1).",
                    ),
                ],
                description="Served by any node from its own copy, so replicas need not "
                "all follow the leader. 410 when this copy's log no longer holds the "
                "record after `after`.",
            ),
        },
        f"{base}/snapshot": {
            "parameters": name,
            "get": operation(
                "snapshot",
                "replication",
                "Downloads this copy to seed a replica from.",
                responses({"200": seed} | moved, 400, 401, 403, 404, 500, 503),
                scope="read",
            ),
        },
    }


def copy_paths() -> Json:
    base = "/v1/databases/{name}"
    name = [ref("DatabaseName", "parameters")]
    sqlite_file = {"type": "string", "contentMediaType": "application/vnd.sqlite3"}
    backup = {
        "description": "A consistent copy: a SQLite file (its log trimmed to the newest "
        "record), or a SQL dump.",
        "headers": {
            "Shoal-Version": version_header(),
            "Content-Disposition": header(
                "`attachment; filename=<name>.db`, for a SQLite file.",
                {"type": "string"},
                required=False,
            ),
        },
        "content": {
            "application/octet-stream": {"schema": sqlite_file},
            "application/sql": {"schema": {"type": "string"}},
        },
    }
    load_body = {
        "required": True,
        "description": "A SQLite file (it replaces every table and view), or a UTF-8 SQL "
        "script (its BEGIN and COMMIT lines are skipped). The bytes decide, not the "
        "Content-Type.",
        "content": {
            "application/octet-stream": {"schema": sqlite_file},
            "application/sql": {"schema": {"type": "string"}},
        },
    }
    return {
        f"{base}/backup": {
            "parameters": name,
            "get": operation(
                "backup",
                "backup",
                "Downloads the database.",
                responses({"200": backup}, 400, 401, 403, 404, 500, 503),
                scope="read",
                parameters=[
                    ref("BackupFormat", "parameters"),
                    query_parameter(
                        "noleader",
                        {"type": "string"},
                        "In a cluster: this node's own copy, not the leader's.",
                    ),
                ],
            ),
        },
        f"{base}/load": {
            "parameters": name,
            "post": operation(
                "load",
                "backup",
                "Loads a SQLite file or a SQL script as one write transaction.",
                responses(
                    ok("BatchResult", "Loaded: one result, `rows_affected` the total."),
                    *(400, 401, 403, 404, 409, 413, 500, 503),
                    batch=True,
                ),
                scope="admin",
                body=load_body,
            ),
        },
    }


def transaction_paths() -> Json:
    base = "/v1/databases/{name}/transactions"
    name = [ref("DatabaseName", "parameters")]
    both = [*name, ref("TransactionId", "parameters")]
    return {
        base: {
            "parameters": name,
            "post": operation(
                "beginTransaction",
                "transactions",
                "Opens a write transaction, once the database's writer is free.",
                responses(
                    ok("Transaction", "Open.", status=201),
                    *(400, 401, 403, 404, 409, 413, 500, 503),
                    batch=True,
                ),
                scope="write",
                body={"required": False, "content": json_content(ref("TransactionRequest"))},
                description="It holds the writer until committed, rolled back, or idle for "
                "`idle_timeout` seconds (then rolled back). Only its token may use it. "
                "Statements in the body (optional) run in it at once, saving the first "
                "statement a round trip; if one fails, the transaction is rolled back and "
                "the answer is that statement's error, as from running statements.",
            ),
        },
        f"{base}/{{tx}}": {
            "parameters": both,
            "post": statements_operation(
                "runInTransaction",
                "Runs statements in the transaction.",
                "TransactionRequest",
                "write",
                "They see its earlier writes. A failing statement undoes only itself, unless "
                "SQLite ended the whole transaction (the message says so; it is then gone).",
                *(400, 401, 403, 404, 409, 413, 500, 503),
            ),
        },
        f"{base}/{{tx}}/commit": {
            "parameters": both,
            "post": operation(
                "commitTransaction",
                "transactions",
                "Commits: one record, one version. The transaction ends whatever the outcome.",
                responses(ok("Committed", "Committed."), 401, 403, 404, 409, 500, 503),
                scope="write",
            ),
        },
        f"{base}/{{tx}}/rollback": {
            "parameters": both,
            "post": operation(
                "rollbackTransaction",
                "transactions",
                "Rolls back and ends the transaction.",
                responses(ok("RolledBack", "Rolled back.", versioned=False), 401, 403, 404, 500),
                scope="write",
            ),
        },
    }


def parameters() -> Json:
    return {
        "DatabaseName": {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": ref("DatabaseName"),
        },
        "TransactionId": {
            "name": "tx",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "The `id` that beginTransaction returned.",
        },
        "BackupFormat": {
            "name": "format",
            "in": "query",
            "required": False,
            "schema": {"enum": ["sqlite", "sql", "binary"], "default": "sqlite"},
            "description": "`sqlite` (or rqlite's name, `binary`): a SQLite file; `sql`: a dump.",
        },
    }


def security_schemes() -> Json:
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `shoal token create`, the configuration, or the "
            "node's admin token.",
        },
        "basic": {
            "type": "http",
            "scheme": "basic",
            "description": "The token as the password; the user name is ignored.",
        },
    }


def document() -> dict[str, Any]:
    """The whole document; cheap enough to build on each request."""
    schemas = (
        value_schemas()
        | statement_schemas()
        | query_many_schemas()
        | result_schemas()
        | error_schemas()
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "shoal", "version": shoal.__version__, "description": DESCRIPTION},
        "security": [{"bearer": []}, {"basic": []}],
        "tags": [
            {"name": "databases", "description": "Create, list, inspect and drop."},
            {"name": "statements", "description": "Run SQL; each answers with a batch."},
            {"name": "transactions", "description": "Interactive: begin, run, commit."},
            {"name": "backup", "description": "Whole-database copies out and in."},
            {"name": "replication", "description": "Follow a database: its log and a seed."},
            {"name": "operations", "description": "Probes, metrics and this document."},
        ],
        "paths": probe_paths()
        | database_paths()
        | statement_paths()
        | query_many_paths()
        | copy_paths()
        | replication_paths()
        | transaction_paths(),
        "components": {
            "schemas": schemas,
            "responses": error_responses(),
            "parameters": parameters(),
            "securitySchemes": security_schemes(),
        },
    }
