"""uvicorn's HTTP protocol with one write to the socket per response, not two, and
no reset connection when the node stops.

uvicorn writes a response's status line and headers as soon as the app starts the
response, and its body as a second write: two system calls and two TCP segments,
and on loopback a second wake-up of the client. A node answers most requests with
a few hundred bytes, so those writes were the largest single cost of a request
(18% of a node's time under `wrk`, decision 39). `Protocol` is uvicorn's
HTTP protocol with the connection's transport wrapped in `Coalescing`, which holds
what is written during one turn of the event loop and sends it as one write at
the end of that turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["FIRST_REQUEST_SECONDS", "FLUSH_BYTES", "Coalescing", "Protocol"]

FLUSH_BYTES = 64 * 1024  # held no further: a large body goes out, and back-pressure works
FIRST_REQUEST_SECONDS = 2.0  # for a connection accepted as the node stops to send its request


class Coalescing:
    """A transport whose writes within one turn of the event loop go out together.

    Everything else is the wrapped transport's. Closing sends what is held first;
    aborting drops it, as the transport's own abort drops its buffer.
    """

    __slots__ = ("_held", "_loop", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.flush()

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Sends what is held, in one write."""
        if not self._held:
            return
        held, self._held, self._size = self._held, [], 0
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._size = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class Protocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), writing through `Coalescing`, that
    answers the first request of a connection accepted as the server stops.

    uvicorn closes a connection with no request in progress when it stops. One just
    accepted has not been read yet, but its client has likely sent a request
    already, and closing a socket with unread data resets it: the client cannot
    tell whether its request was carried out. So such a connection is given
    `FIRST_REQUEST_SECONDS` for its request, which is answered and then closed.
    """

    _stopping = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(Coalescing(transport, self.loop))  # type: ignore[arg-type]

    def shutdown(self) -> None:
        if self.cycle is not None:  # a request was read: uvicorn knows what to do
            super().shutdown()
            return
        self._stopping = True
        self.loop.call_later(FIRST_REQUEST_SECONDS, self._close_if_unasked)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._stopping and self.cycle is not None:
            self.cycle.keep_alive = False  # answer this one request, then close

    def _close_if_unasked(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()
