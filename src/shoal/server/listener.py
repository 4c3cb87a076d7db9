"""The node's listening socket: binding it, naming who holds a port, and closing it
without resetting a connection.

Closing a listening socket resets every connection still in its accept queue: the
client's connect() succeeded, it sent its request, and it reads ECONNRESET, so it
cannot tell whether the request was carried out. A stopping node therefore first
makes the kernel drop new connection attempts (a socket filter that keeps nothing:
the client's SYN goes unanswered, it tries again a second later and is refused, an
error that says nothing was sent), then accepts what is queued, and only then
closes the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

__all__ = ["drop_new_connections", "holder", "listen", "queued_connections", "until_accepted"]

_SO_ATTACH_FILTER = 26  # Linux; Python's socket module does not name it
_DROP_EVERYTHING = struct.pack("HBBI", 0x06, 0, 0, 0)  # BPF_RET | BPF_K with 0: keep nothing
_TCPI_UNACKED = struct.Struct("I")  # a listening socket's accept queue length, at offset 24


class Socket(Protocol):
    """What is used of a socket here: `socket.socket` and asyncio's TransportSocket."""

    def setsockopt(self, level: int, option: int, value: bytes, /) -> None: ...
    def getsockopt(self, level: int, option: int, size: int, /) -> bytes: ...


def listen(host: str, port: int) -> socket.socket:
    """The node's socket, bound before anything is announced (OSError if the address
    is taken or not this machine's)."""
    family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    listening = socket.socket(family, kind)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(address)
    except OSError:
        listening.close()
        raise
    return listening


def holder(port: int) -> str:
    """' (held by process PID: COMMAND)' for the local process listening on `port`,
    where /proc tells; else ''."""
    try:
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                    inodes.add(f"socket:[{fields[9]}]")
        for fd in Path("/proc").glob("[0-9]*/fd/*"):
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    pid = fd.parent.parent.name
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                    return f" (held by process {pid}: {command.decode(errors='replace').strip()})"
    except (OSError, ValueError, IndexError):
        pass
    return ""


def drop_new_connections(listening: Socket) -> bool:
    """Makes the kernel drop connection attempts to `listening` from now on, and
    leaves those already queued to be accepted. False where this cannot be done
    (not Linux): closing then resets what is queued, as it would anyway."""
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(_DROP_EVERYTHING)  # the kernel copies it
    fprog = struct.pack("HL", 1, ctypes.addressof(program))  # struct sock_fprog
    try:
        listening.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError:
        return False
    return True


def queued_connections(listening: Socket) -> int:
    """How many connections wait in `listening`'s accept queue (0 where the kernel
    does not say)."""
    try:
        info = listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    except (OSError, AttributeError):
        return 0
    return _TCPI_UNACKED.unpack_from(info, 24)[0] if len(info) >= 28 else 0


async def until_accepted(sockets: Sequence[Socket], timeout: float) -> None:
    """Returns once the event loop has accepted every queued connection of `sockets`,
    or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while any(queued_connections(s) for s in sockets) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
