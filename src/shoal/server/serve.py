"""Running a node: uvicorn on the configured address, with a clean stop on SIGTERM.

uvicorn owns the signals: on SIGTERM or SIGINT it stops accepting connections
(without resetting one already queued, see shoal.server.listener), lets in-flight
requests and those on just-accepted connections finish (up to `GRACE_SECONDS`),
then runs the app's lifespan end, which finishes queued writes, rolls back
interactive transactions and closes every database file. A node in a cluster
first hands its leases over and leaves the cluster while it still serves, so that
requests that reach it meanwhile are forwarded to the new leaders rather than
refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import socket
import sys
from types import FrameType

import uvicorn

import shoal
from shoal.errors import Error
from shoal.node.auth import LOCAL_ADMIN_FILE, is_loopback
from shoal.node.config import Settings
from shoal.server import listener, wire
from shoal.server.app import create_app
from shoal.server.port import ServedNode

__all__ = ["serve"]

GRACE_SECONDS = 30
ACCEPT_SECONDS = 1.0  # at most, to accept what is queued when the node stops

OPEN_WARNING = """\
**********************************************************************
WARNING: no token is configured, so this node serves ONLY loopback
clients (127.0.0.1, ::1), each with full admin rights. Create a token
with `shoal token create NAME --scope admin` to serve anyone else;
from then on every client needs a token, loopback ones too.
**********************************************************************"""


class _Server(uvicorn.Server):
    """uvicorn's server, but the node first ends its log streams (uvicorn would wait
    for those long responses) and leaves its cluster, if any, before serving stops."""

    node: ServedNode | None = None
    leaving: asyncio.Task[None] | None = None
    _asked = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        node = self.node
        if self._asked or node is None:
            super().handle_exit(sig, frame)  # a second signal stops at once
            return
        self._asked = True
        loop = asyncio.get_event_loop()

        async def leave_then_stop() -> None:
            try:
                await node.leave()
            finally:
                super(_Server, self).handle_exit(sig, frame)

        def start_leaving() -> None:
            self.leaving = loop.create_task(leave_then_stop())

        loop.call_soon_threadsafe(start_leaving)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stops listening without resetting a queued connection: new ones are
        dropped (their clients are refused on their next try), the queued ones
        accepted and answered, and only then is the socket closed."""
        listening = [sock for server in self.servers for sock in server.sockets]
        if all(listener.drop_new_connections(sock) for sock in listening):
            await listener.until_accepted(listening, ACCEPT_SECONDS)
        await super().shutdown(sockets)


def open_files_limit() -> int:
    """Raises this process's limit on open files to the most it may have (the hard
    limit, which only the administrator raises), and returns it: in a cluster a
    node keeps every copy it holds open, about four files each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def serve(settings: Settings) -> int:
    """Serves until SIGTERM or SIGINT; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    open_files_limit()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per forwarded request
    scheme = "https" if settings.tls_cert else "http"

    def announce(node: ServedNode) -> None:
        server.node = node
        print(
            f"shoal {shoal.__version__} serving {scheme}://{settings.address} "
            f"with data in {settings.data_dir}",
            file=sys.stderr,
            flush=True,
        )
        print(
            f"local admin credential (for the shoal CLI on this machine): "
            f"{(settings.data_dir / LOCAL_ADMIN_FILE).absolute()}",
            file=sys.stderr,
            flush=True,
        )
        if node.auth.open:
            print(OPEN_WARNING, file=sys.stderr, flush=True)
            if not is_loopback(settings.host):
                print(
                    f"WARNING: listening on {settings.host}, but without tokens every "
                    "non-loopback client gets 401.",
                    file=sys.stderr,
                    flush=True,
                )

    failures: list[Error] = []
    # A node that cannot start says why in one line (below), not in uvicorn's traceback.
    logging.getLogger("uvicorn.error").addFilter(lambda _: not failures)
    try:
        listening = listener.listen(settings.host, settings.port)
    except OSError as exc:
        print(
            f"error: shoal cannot listen on {settings.address}: {exc.strerror or exc}"
            f"{listener.holder(settings.port)}; choose another with --address HOST:PORT",
            file=sys.stderr,
        )
        return 1

    server: _Server
    config = uvicorn.Config(
        create_app(settings, announce, failures.append),
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACE_SECONDS,
        server_header=False,
        http=wire.Protocol,  # one write per response (decision 39)
        proxy_headers=False,  # the peer's own address decides loopback-only access
        backlog=4096,
    )
    server = _Server(config)
    # uvicorn handles SIGTERM and SIGINT itself, then raises the signal again once it
    # has shut down; with these handlers in place that second raise is a no-op, so a
    # clean stop exits 0 after saying so, rather than dying of the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    with contextlib.suppress(SystemExit):  # uvicorn exits 3 when the app cannot start
        server.run(sockets=[listening])
    if not server.started:
        why = "".join(f": {type(e).__name__}: {' '.join(str(e).split())}" for e in failures[:1])
        print(f"error: shoal could not start{why}", file=sys.stderr)
        return 1
    print("shoal stopped: every database closed", file=sys.stderr, flush=True)
    return 0
