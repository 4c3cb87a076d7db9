"""`shoal.connect("http://host:4001/mydb")`: the DB-API over a node's native API.

The same routing as the embedded connection (see `BaseConnection`): reads outside
a transaction go to `/query`; a write opens an interactive transaction on the
server, which holds the database's writer until `commit()` or `rollback()` (or
until it is idle past the node's `transaction_seconds`). Every read asks for
`min_version` = the newest version this connection has seen, so a connection
always reads its own writes, whichever node answers.

Errors come back as the same classes the embedded connection raises: the server
names the class, and the client raises that class from `shoal.errors`.

`query_many` runs one read on many of a node's databases (`POST /v1/query-many`).
"""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

import shoal.errors
from shoal.client.dbapi import BaseConnection
from shoal.engine.execute import Params, Result
from shoal.engine.functions import Function
from shoal.errors import (
    Error,
    InterfaceError,
    NotSupportedError,
    OperationalError,
    Unavailable,
    error_named,
)

__all__ = [
    "Connection",
    "ManyResult",
    "NodeClient",
    "error_from",
    "query_many",
]


def _encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    if isinstance(value, float) and math.isinf(value):
        return {"real": "Infinity" if value > 0 else "-Infinity"}
    return value


def encode_params(params: Params) -> Any:
    if params is None:
        return None
    if isinstance(params, dict):
        return {k: _encode(v) for k, v in params.items()}
    return [_encode(v) for v in params]


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "base64" in value:
            return base64.b64decode(value["base64"])
        if "real" in value:
            return math.inf if value["real"] == "Infinity" else -math.inf
    return value


def result_from(raw: dict[str, Any]) -> Result:
    """A Result from the native API's JSON."""
    return Result(
        description=tuple(zip(raw["columns"], raw["types"], strict=True)),
        rows=[tuple(_decode(v) for v in row) for row in raw["rows"]],
        rows_affected=raw["rows_affected"],
        last_insert_id=raw["last_insert_id"],
    )


def error_from(response: httpx.Response) -> Error:
    """The shoal error a failed response names, or one made from its status."""
    try:
        error = response.json()["error"]
        kind, message = error["type"], error["message"]
    except (ValueError, KeyError, TypeError):
        text = response.text[:500] or response.reason_phrase
        return OperationalError(f"HTTP {response.status_code}: {text}")
    return error_named(kind, message)


class NodeClient:
    """Keep-alive HTTP to one node, with its token; JSON in, JSON out, errors raised."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout: float | httpx.Timeout = 60.0
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            follow_redirects=True,  # a node without a copy sends a replica to one with it
        )
        self.last_version: int | None = None

    def call(
        self, method: str, path: str, body: Any = None, *, timeout: float | None = None
    ) -> Any:
        """The JSON answer of one request (`timeout`: seconds to wait for it, when the
        client's own is not enough)."""
        with self.stream(method, path, json=body, timeout=timeout) as response:
            response.read()
            return response.json()

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives (backups), sending `content` as
        it is produced (loads); a failed answer is raised as the error it names."""
        wait: Any = httpx.USE_CLIENT_DEFAULT if timeout is None else timeout
        try:
            with self._http.stream(
                method, path, json=json, content=content, headers=headers, timeout=wait
            ) as response:
                version = response.headers.get("shoal-version")
                if version is not None:
                    self.last_version = int(version)
                if response.status_code >= 400:
                    response.read()
                    raise error_from(response)
                yield response
        except httpx.ConnectError as exc:  # nothing was sent: safe to retry
            raise Unavailable(f"cannot reach {self.base_url}: {exc}; retry") from None
        except httpx.TransportError as exc:
            raise OperationalError(f"cannot reach {self.base_url}: {exc}") from None

    def query_many(
        self,
        sql: str,
        params: Params = None,
        *,
        pattern: str | None = None,
        databases: Sequence[str] | None = None,
        aggregate: str | None = None,
        level: str | None = None,
        timeout: float | None = None,
    ) -> ManyResult:
        """Runs the read-only `sql` on every database matching the glob `pattern` (or
        named in `databases`) that the token may read; with `aggregate`, a statement
        over a table `results` of the rows (a column `db` first)."""
        body: dict[str, Any] = {"sql": sql, "params": encode_params(params)}
        optional = {
            "pattern": pattern,
            "databases": None if databases is None else list(databases),
            "aggregate": aggregate,
            "level": level,
            "timeout": timeout,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        # The node answers within the call's timeout (and an aggregate's time after
        # it): the client waits longer than that, never less than it would anyway.
        wait = None if timeout is None else max(timeout + 10.0, self._http.timeout.read or 0.0)
        return many_result(self.call("POST", "/v1/query-many", body, timeout=wait))

    def close(self) -> None:
        self._http.close()


class _RemoteTransaction:
    """An interactive transaction on the server, begun by its first statement (one
    request for both), as SQLite's deferred BEGIN takes the writer only when a
    statement needs it."""

    def __init__(self, client: NodeClient, path: str) -> None:
        self._client = client
        self._database_path = path
        self.path: str | None = None  # the transaction's, once begun
        self._open = True

    @property
    def is_open(self) -> bool:
        return self._open

    def execute(self, sql: str, params: Params = None) -> list[Result]:
        statement = {"sql": sql, "params": encode_params(params)}
        if self.path is None:  # a failure here began nothing: the next statement begins
            created = self._client.call("POST", f"{self._database_path}/transactions", statement)
            self.path = f"{self._database_path}/transactions/{created['id']}"
            return [result_from(r) for r in created["results"]]
        try:
            body = self._client.call("POST", self.path, statement)
        except Error as exc:
            if "whole transaction was rolled back" in str(exc) or isinstance(
                exc, shoal.errors.TransactionNotFound
            ):
                self._open = False
            raise
        return [result_from(r) for r in body["results"]]

    def commit(self) -> int:
        """The committed version (the newest seen, if no statement ever ran)."""
        self._open = False
        if self.path is None:
            return self._client.last_version or 0
        return int(self._client.call("POST", f"{self.path}/commit")["version"])

    def rollback(self) -> None:
        if self._open:
            self._open = False
            if self.path is not None:
                self._client.call("POST", f"{self.path}/rollback")


@dataclass(frozen=True)
class ManyResult:
    """What `query_many` gathered: the rows, each with its database's name first
    (or the aggregate's rows), how many databases were read, and the error of each
    that failed."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    databases: int
    errors: dict[str, Error]


def query_many(
    url: str,
    sql: str,
    params: Params = None,
    *,
    pattern: str | None = None,
    databases: Sequence[str] | None = None,
    aggregate: str | None = None,
    level: str | None = None,
    timeout: float | None = None,
    token: str | None = None,
) -> ManyResult:
    """Runs the read-only `sql` on many databases of the node at `url`
    ("http://host:4001"), wherever each is led: `NodeClient.query_many`. `token`
    is the node's bearer token, by default $SHOAL_TOKEN."""
    client = NodeClient(url, token or os.environ.get("SHOAL_TOKEN") or None)
    try:
        return client.query_many(
            sql,
            params,
            pattern=pattern,
            databases=databases,
            aggregate=aggregate,
            level=level,
            timeout=timeout,
        )
    finally:
        client.close()


def many_result(raw: dict[str, Any]) -> ManyResult:
    """A ManyResult from the answer of `POST /v1/query-many`."""
    return ManyResult(
        columns=raw["columns"],
        rows=[tuple(_decode(v) for v in row) for row in raw["rows"]],
        databases=raw["databases"],
        errors={
            e["database"]: error_named(e["error"]["type"], e["error"]["message"])
            for e in raw["errors"]
        },
    )


class Connection(BaseConnection):
    """A PEP 249 connection to one database of a shoal node."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        autocommit: bool = False,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(autocommit=autocommit)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InterfaceError(f"{url!r} is not an http(s)://host:port/database URL")
        self.name = parts.path.strip("/") or "default"
        if "/" in self.name:
            raise InterfaceError(f"{url!r}: the path must be one database name")
        if token is None:  # as the CLI does
            token = os.environ.get("SHOAL_TOKEN") or None
        self.client = NodeClient(f"{parts.scheme}://{parts.netloc}", token, timeout)
        self.path = f"/v1/databases/{quote(self.name, safe='')}"

    @property
    def version(self) -> int:
        """The newest version of the database this connection has seen."""
        return self.client.last_version or 0

    def _statement(self, sql: str, params: Params) -> dict[str, Any]:
        return {"sql": sql, "params": encode_params(params)}

    def _read(self, sql: str, params: Params, min_version: int | None) -> list[Result]:
        body = self._statement(sql, params)
        at_least = max(self.client.last_version or 0, min_version or 0)
        if at_least:
            body["min_version"] = at_least
        response = self.client.call("POST", f"{self.path}/query", body)
        return [result_from(r) for r in response["results"]]

    def _write(self, sql: str, params: Params) -> list[Result]:
        response = self.client.call("POST", f"{self.path}/execute", self._statement(sql, params))
        return [result_from(r) for r in response["results"]]

    def _begin(self) -> _RemoteTransaction:
        return _RemoteTransaction(self.client, self.path)

    def _close_backend(self) -> None:
        self.client.close()

    def _register(self, function: Function) -> None:
        raise NotSupportedError(
            f"cannot register {function.name}(): the node runs this connection's SQL in "
            "its own process, which has no Python functions of yours; register it on a "
            "file or an embedded replica (shoal.connect(path, replica_of=URL))"
        )

    def __enter__(self) -> Connection:
        return self
