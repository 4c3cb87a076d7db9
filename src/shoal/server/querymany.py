"""`POST /v1/query-many`: one read-only statement on many databases at once.

The databases are named (`"databases": [...]`) or matched by a glob
(`"pattern": "tenant-*"`) among those the caller's token may read. Each runs the
statement where a query to it would run: at its leader (at most `PARALLEL` at a
time), or here (`_ReadsHere`), within the call's `timeout`. The rows come back
tagged with the database's name, or, with `"aggregate"`, the result of that
statement over a table `results` of them (engine.aggregate). A database that
fails is reported in `errors` with its error; the call itself fails only for a
bad request.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response

from shoal.cluster.routing import Leader, Need
from shoal.engine import Result
from shoal.engine.aggregate import aggregate, column_names
from shoal.engine.sqltext import split_statements
from shoal.errors import (
    Error,
    Forbidden,
    InternalError,
    InvalidRequest,
    QueryWrites,
    RequestTooLarge,
    ResultTooLarge,
    Unavailable,
    error_named,
)
from shoal.node.auth import Grant, Scope
from shoal.node.node import check_name
from shoal.server.httputil import authorize, error_body, header, json_response, node_of, read_json
from shoal.server.native import decode_params, decode_values, result_json
from shoal.server.port import ServedNode
from shoal.server.routing import EPOCH, HOPS, level_of
from shoal.server.statements import Statement, is_read_only

__all__ = ["query_many"]

logger = logging.getLogger("shoal.server")

PARALLEL = 32  # databases read at their leaders at once, by one call
CHUNK = 100  # databases read here one after another on one thread
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 300.0
_FIELDS = frozenset({"databases", "pattern", "sql", "params", "aggregate", "level", "timeout"})

Answer = Result | Error
Futures = dict[str, "asyncio.Future[Answer]"]


async def query_many(request: Request) -> Response:
    grant = await authorize(request, Scope.READ, None)
    node = node_of(request)
    body = await read_json(request)
    call = _Call.parse(body)
    names, refused = _chosen(call, await node.database_names(), grant)
    limit = node.settings.max_query_many
    if len(names) + len(refused) > limit:
        raise RequestTooLarge(
            f"{len(names) + len(refused)} databases is over the node's limit of {limit} "
            "a call (max_query_many); narrow the pattern"
        )
    answers: dict[str, Answer] = dict(refused)
    answers.update(await _gather(request, call, names))
    columns, rows, errors = _union(answers)
    max_rows = node.settings.max_result_rows
    if len(rows) > max_rows:
        raise ResultTooLarge(
            f"the databases returned {len(rows)} rows in all, over the limit of {max_rows} "
            "(max_result_rows); aggregate them, or narrow the statement"
        )
    result = Result(description=tuple((name, None) for name in columns), rows=rows)
    if call.aggregate is not None and columns:
        result = await node.read(  # on a thread: it may run up to the statement time limit
            aggregate,
            columns[1:],
            rows,
            call.aggregate,
            seconds=node.settings.statement_seconds,
            max_rows=max_rows,
        )
    answer = {
        "columns": result.columns,
        "rows": result_json(result)["rows"],
        "databases": len(answers),
        "errors": [{"database": name, **error_body(exc)} for name, exc in errors],
    }
    return json_response(answer)


@dataclass(frozen=True)
class _Call:
    """A query-many request, checked."""

    statement: Statement
    params: Any  # as sent, to forward to a leader
    names: list[str] | None
    pattern: str | None
    aggregate: str | None
    level: str
    timeout: float

    @classmethod
    def parse(cls, body: Any) -> _Call:
        if not isinstance(body, dict):
            raise InvalidRequest("the request body must be a JSON object")
        unknown = body.keys() - _FIELDS
        if unknown:
            raise InvalidRequest(f"unknown field(s) in the request: {', '.join(sorted(unknown))}")
        if ("databases" in body) == ("pattern" in body):
            raise InvalidRequest("give either 'databases' (a list of names) or 'pattern' (a glob)")
        names, pattern = body.get("databases"), body.get("pattern")
        if names is not None and (
            not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names)
        ):
            raise InvalidRequest("'databases' must be a non-empty array of names")
        if pattern is not None and (not isinstance(pattern, str) or not pattern):
            raise InvalidRequest("'pattern' must be a glob such as \"tenant-*\"")
        sql, outer = body.get("sql"), body.get("aggregate")
        if not isinstance(sql, str):
            raise InvalidRequest("the request needs 'sql': the statement to run on each database")
        if outer is not None and not isinstance(outer, str):
            raise InvalidRequest("'aggregate' must be a statement over the table 'results'")
        if len(list(split_statements(sql))) != 1:
            raise InvalidRequest("'sql' must be one statement; query-many runs it on each database")
        statement = Statement(sql, decode_params(body.get("params"), "params"))
        if not is_read_only([statement]):
            raise QueryWrites("query-many runs statements that read (SELECT, VALUES, EXPLAIN)")
        timeout = body.get("timeout", DEFAULT_TIMEOUT_SECONDS)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise InvalidRequest("'timeout' must be a number of seconds, more than 0")
        return cls(
            statement,
            body.get("params"),
            None if names is None else [check_name(n) for n in dict.fromkeys(names)],
            pattern,
            outer,
            level_of(body.get("level")),
            min(float(timeout), MAX_TIMEOUT_SECONDS),
        )


def _chosen(
    call: _Call, existing: list[str], grant: Grant
) -> tuple[list[str], list[tuple[str, Error]]]:
    """The databases to read; and those named that the token does not cover, each
    with its refusal (a pattern matches only those it covers)."""
    if call.pattern is not None:
        pattern = call.pattern
        return [n for n in existing if fnmatch.fnmatchcase(n, pattern) and grant.covers(n)], []
    assert call.names is not None
    refused: list[tuple[str, Error]] = []
    for name in call.names:
        if not grant.covers(name):
            refused.append((name, Forbidden(f"the token does not cover database {name!r}")))
    return [n for n in call.names if grant.covers(n)], refused


async def _gather(request: Request, call: _Call, names: list[str]) -> dict[str, Answer]:
    """Each database's result or error; those with none within the call's timeout
    get Unavailable. Every task here may be cancelled: the reads that run on a
    thread belong to `_ReadsHere`, whose task the node waits for when it stops."""
    here = _ReadsHere(node_of(request), call)
    forwards = asyncio.Semaphore(PARALLEL)

    async def one(name: str) -> Answer:
        try:
            return await _read(request, call, name, here, forwards)
        except Error as exc:
            return exc
        except Exception:
            logger.exception("query-many on %s failed", name)
            return InternalError(f"reading {name!r} failed; the node's log has the cause")

    tasks = {name: asyncio.ensure_future(one(name)) for name in names}
    if tasks:
        await asyncio.wait(tasks.values(), timeout=call.timeout)
    answers: dict[str, Answer] = {}
    for name, task in tasks.items():
        if task.done():
            answers[name] = task.result()
        else:
            task.cancel()
            answers[name] = Unavailable(f"no answer within the call's timeout of {call.timeout} s")
    return answers


class _ReadsHere:
    """The reads this node serves itself. A database the node holds open is read
    through it at once; the others are taken from the tasks that ask for them in
    chunks of CHUNK, each chunk read on one thread without opening them, one chunk
    at a time (Node.read_files): threads reading many small files at once only
    contend for the GIL and the directory (decision 48). Each answer goes to its
    task as it is read."""

    def __init__(self, node: ServedNode, call: _Call) -> None:
        self.node, self.call = node, call
        self.waiting: Futures = {}
        self.draining = False

    async def read(self, name: str) -> Answer:
        statement = self.call.statement
        if self.node.holds(name):
            # A task of the node's: its caller may give up, but a read on a thread
            # cannot be called back, and its database must stay open under it.
            reading = self.node.background(
                self.node.read_one(name, statement.sql, statement.params)
            )
            return await asyncio.shield(reading)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.waiting[name] = answer
        if not self.draining:
            self.draining = True
            self.node.background(self._drain())
        return await answer

    async def _drain(self) -> None:
        statement, loop = self.call.statement, asyncio.get_running_loop()
        try:
            while self.waiting:
                chunk = dict(itertools.islice(self.waiting.items(), CHUNK))
                for name in chunk:
                    del self.waiting[name]
                wanted = [name for name, answer in chunk.items() if not answer.done()]

                def each(
                    name: str, result: Answer, chunk: dict[str, asyncio.Future[Answer]] = chunk
                ) -> None:
                    loop.call_soon_threadsafe(_settle, chunk[name], result)

                try:
                    await self.node.read_files(wanted, statement.sql, statement.params, each)
                except Error as exc:  # the node stops
                    for name in wanted:
                        _settle(chunk[name], exc)
        finally:
            self.draining = False


def _settle(answer: asyncio.Future[Answer], result: Answer) -> None:
    if not answer.done():  # its caller may have given up
        answer.set_result(result)


async def _read(
    request: Request, call: _Call, name: str, here: _ReadsHere, forwards: asyncio.Semaphore
) -> Answer:
    """The statement's result on `name`, read here or at its leader; a leader that
    cannot be reached is waited out, as routing does for one database's requests."""
    node = node_of(request)
    need = Need(write=False, level=call.level)
    at_least = 0
    while True:
        leader = await node.route(name, need, at_least)
        if leader is None:
            return await here.read(name)
        try:
            async with forwards:
                return await _read_at(request, call, name, leader)
        except httpx.ConnectError:
            at_least = leader.epoch + 1  # gone: wait for the next leader


async def _read_at(request: Request, call: _Call, name: str, leader: Leader) -> Answer:
    """The statement's result on `name`, asked of its leader with the caller's
    credentials; httpx.ConnectError when the leader cannot be reached."""
    body = {"sql": call.statement.sql, "params": call.params, "level": call.level}
    headers = {HOPS: "1", EPOCH: str(leader.epoch)}
    authorization = header(request, "authorization")
    if authorization is not None:
        headers["Authorization"] = authorization
    peers: httpx.AsyncClient = request.app.state.peers
    url = f"{leader.url}/v1/databases/{name}/query"
    try:
        answer = await peers.post(url, json=body, headers=headers)
    except httpx.ConnectError:
        raise
    except httpx.HTTPError as exc:
        return Unavailable(
            f"the leader of {name!r} at {leader.url} went away before answering "
            f"({type(exc).__name__}); retry"
        )
    try:
        found = answer.json()
        if answer.status_code != 200:
            return error_named(found["error"]["type"], found["error"]["message"])
        result = found["results"][0]
        rows = [tuple(decode_values(row, "rows")) for row in result["rows"]]
        return Result(description=tuple((name, None) for name in result["columns"]), rows=rows)
    except (ValueError, KeyError, TypeError, IndexError):
        return Unavailable(
            f"the leader of {name!r} at {leader.url} answered {answer.status_code} "
            "with a body that is not shoal's; retry"
        )


def _union(
    answers: dict[str, Answer],
) -> tuple[list[str], list[tuple[Any, ...]], list[tuple[str, Error]]]:
    """The rows of every database that answered, by database name, each with the
    name first; and the errors. A database whose columns differ from the first
    one's is an error."""
    columns: list[str] | None = None
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[str, Error]] = []
    for name in sorted(answers):
        answer = answers[name]
        if isinstance(answer, Error):
            errors.append((name, answer))
            continue
        if columns is None:
            columns = answer.columns
        elif answer.columns != columns:
            errors.append(
                (name, InvalidRequest(f"its columns {answer.columns} differ from {columns}"))
            )
            continue
        rows += [(name, *row) for row in answer.rows]
    return ([] if columns is None else column_names(columns)), rows, errors
