"""What every handler shares (server/httputil.py): header lookups and JSON responses."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

from shoal.server.httputil import header, json_response


def request_with(headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers})


def test_a_header_is_found_by_its_lower_case_name_and_the_first_of_a_repeat_wins() -> None:
    request = request_with(
        [(b"authorization", b"Bearer first"), (b"x-other", b"1"), (b"authorization", b"Bearer 2")]
    )
    assert header(request, "authorization") == "Bearer first"
    assert header(request, "x-other") == "1"
    assert header(request, "shoal-version") is None
    assert header(request, "authorization") == request.headers.get("authorization")  # Starlette's


def test_a_json_response_sends_its_length_type_and_headers_with_the_body() -> None:
    response = json_response({"rows": [[1, "é"]]}, 409, {"Shoal-Version": "7", "Retry-After": "1"})
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    asyncio.run(response({"type": "http"}, receive, send))
    start, body = sent
    assert start["status"] == 409
    assert body["body"] == '{"rows":[[1,"é"]]}'.encode()
    assert dict(start["headers"]) == {
        b"content-length": str(len(body["body"])).encode(),
        b"content-type": b"application/json",
        b"shoal-version": b"7",
        b"retry-after": b"1",
    }
    assert response.headers["shoal-version"] == "7"  # still read as Starlette's Response
