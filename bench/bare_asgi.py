"""The one-process ceiling that bench/server.py measures `shoal serve` against: a bare
ASGI function under uvicorn, configured as `shoal serve` configures it, doing a shoal
request's work on one raw APSW connection and nothing else.

It answers POST /v1/databases/bench/query and /v1/databases/bench/execute with a
body of {"sql": ..., "params": [...]}, as shoal does, and the same shape of answer;
no auth, routing table, limits, capture, log, versions or thread pools. Whatever
rate it reaches is what one Python process serving HTTP can do on this machine;
the distance from it to `shoal serve` is shoal's own request path.

    python bench/bare_asgi.py --port 8765 --db /tmp/bench.db   # the file must exist
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import apsw
import orjson
import uvicorn

import checkout  # noqa: F401  (first: this checkout's shoal on sys.path)

# isort: split

from shoal.server import wire

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON = (b"content-type", b"application/json")


def make_app(path: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The ASGI function serving the database file at `path` (WAL, synchronous=NORMAL,
    shoal's default), every statement on the event loop in autocommit."""
    conn = apsw.Connection(path)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = NORMAL")
    decode = json.JSONDecoder().decode

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        request = decode(body.decode())
        cursor = conn.execute(request["sql"], request.get("params") or ())
        if scope["path"].endswith("/query"):
            columns = [name for name, _ in cursor.get_description()]
            rows = cursor.fetchall()
            result: dict[str, Any] = {"columns": columns, "rows": rows}
        else:
            result = {"rows_affected": conn.changes(), "last_insert_id": conn.last_insert_rowid()}
        payload = orjson.dumps({"results": [result]})
        headers = [_JSON, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="an existing SQLite file")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.db),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        server_header=False,
        http=wire.Protocol,
        proxy_headers=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
