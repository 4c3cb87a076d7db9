"""The node's listening socket: a stop drops new connection attempts and keeps the
queued ones to be accepted."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator

import pytest

from shoal.server.listener import drop_new_connections, queued_connections, until_accepted

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filter")


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock
    sock.close()


def connect(listening: socket.socket, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(listening.getsockname(), timeout=timeout)


@linux_only
def test_queued_connections_are_counted(listening: socket.socket) -> None:
    clients = [connect(listening) for _ in range(3)]
    assert queued_connections(listening) == 3
    listening.accept()[0].close()
    assert queued_connections(listening) == 2
    for client in clients:
        client.close()


@linux_only
def test_after_the_filter_new_attempts_go_unanswered_and_queued_ones_stay(
    listening: socket.socket,
) -> None:
    queued = connect(listening)
    assert drop_new_connections(listening)
    with pytest.raises(TimeoutError):  # the SYN is dropped: no handshake, no reset
        connect(listening, timeout=0.3)
    accepted, _ = listening.accept()
    queued.sendall(b"ping")
    assert accepted.recv(4) == b"ping"
    accepted.close()
    queued.close()


@linux_only
def test_until_accepted_returns_once_the_queue_is_empty(listening: socket.socket) -> None:
    clients = [connect(listening) for _ in range(2)]
    accepted: list[socket.socket] = []

    async def accept_then_wait() -> None:
        loop = asyncio.get_running_loop()
        listening.setblocking(False)
        waiting = asyncio.create_task(until_accepted([listening], timeout=5))
        for _ in clients:
            accepted.append((await loop.sock_accept(listening))[0])
        await asyncio.wait_for(waiting, 2)

    asyncio.run(accept_then_wait())
    assert queued_connections(listening) == 0
    for sock in [*clients, *accepted]:
        sock.close()


@linux_only
def test_until_accepted_gives_up_after_its_timeout(listening: socket.socket) -> None:
    client = connect(listening)
    asyncio.run(asyncio.wait_for(until_accepted([listening], timeout=0.05), 2))
    client.close()
