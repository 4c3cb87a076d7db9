"""One write per response: what a turn of the event loop writes goes out together.

The transport below records what reaches it; every system test runs the real
thing (shoal serve on uvloop or asyncio, over TCP and TLS).
"""

from __future__ import annotations

import asyncio
from typing import Any

from shoal.server.wire import FLUSH_BYTES, Coalescing


class Recorded:
    """The transport under the wrapper: what was written, and whether it closed."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> Any:
        return f"info {name}"


def wrapped() -> tuple[Coalescing, Recorded]:
    transport = Recorded()
    return Coalescing(transport, asyncio.get_running_loop()), transport  # type: ignore[arg-type]


async def next_turn() -> None:
    await asyncio.sleep(0)


def test_the_writes_of_one_turn_go_out_as_one() -> None:
    async def main() -> None:
        wire, transport = wrapped()
        wire.write(b"HTTP/1.1 200 OK\r\n\r\n")
        wire.write(b'{"ok":true}')
        assert transport.writes == [] and wire.get_write_buffer_size() == 30
        await next_turn()
        assert transport.writes == [b'HTTP/1.1 200 OK\r\n\r\n{"ok":true}']
        wire.writelines([b"a", b"b"])
        await next_turn()
        assert transport.writes[1:] == [b"ab"]
        assert wire.get_extra_info("peername") == "info peername"  # the rest is the transport's

    asyncio.run(main())


def test_a_large_body_goes_out_at_once() -> None:
    async def main() -> None:
        wire, transport = wrapped()
        wire.write(b"head")
        wire.write(b"x" * FLUSH_BYTES)  # the transport's own back-pressure must see it
        assert transport.writes == [b"head" + b"x" * FLUSH_BYTES]
        await next_turn()
        assert len(transport.writes) == 1

    asyncio.run(main())


def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    async def main() -> None:
        wire, transport = wrapped()
        wire.write(b"last words")
        wire.close()
        assert transport.writes == [b"last words"] and transport.closed
        wire.write(b"after the end")
        await next_turn()
        assert transport.writes == [b"last words"]  # a closing transport takes no more

        wire, transport = wrapped()
        wire.write(b"never sent")
        wire.abort()
        await next_turn()
        assert transport.writes == [] and transport.aborted

    asyncio.run(main())
