"""A network fault between a client and a service: a TCP proxy to cut."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from contextlib import suppress

from tests.harness.net import free_port


class TcpProxy:
    """A TCP proxy from a free 127.0.0.1 port (`url`) to `target_port` on 127.0.0.1:
    point a client at it to cut that client off from a service that stays up.

    `cut()` closes every open connection (both ends) and refuses new ones: the port
    stays bound but stops listening, so a connect is refused, as by a host that is
    down, and nothing gets through; `heal()` accepts again. Threads, stdlib only
    (and Linux, which keeps an explicitly bound port through a listening socket's
    shutdown). `with TcpProxy(port) as proxy:` starts it and stops it on exit.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0  # connections accepted and forwarded, in all
        self._listener = socket.socket()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._is_cut = False
        self._stopped = False
        self._listening = threading.Event()

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        # SO_REUSEADDR: heal() listens again beside the cut connections' TIME_WAIT.
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))  # a port of its own: kept when cut
        self._listener.listen()
        self._listening.set()
        self._spawn(self._accept)

    def cut(self) -> None:
        """Closes every open connection and refuses new ones, until `heal()`."""
        with self._lock:
            self._is_cut = True
            self._listening.clear()
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # stops listening: refused
            dropped, self._open = self._open, set()
        _close(*dropped)

    def heal(self) -> None:
        """Accepts and forwards connections again."""
        with self._lock:
            self._is_cut = False
            self._listener.listen()
            self._listening.set()

    def stop(self) -> None:
        """Closes the port and every connection; waits for the threads."""
        with self._lock:
            self._stopped = True
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listening.set()
            dropped, self._open = self._open, set()
        _close(*dropped)
        for thread in self._threads:
            thread.join(5)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="tcp-proxy", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:  # cut (or stopped): wait until it listens again
                self._listening.wait()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                _close(client)  # the service is down: so is the connection
                continue
            with self._lock:
                if self._is_cut or self._stopped:  # cut since it was accepted
                    _close(client, upstream)
                    continue
                self._open |= {client, upstream}
                self.accepted += 1
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        """Copies `source` to `sink`; when either closes, closes both."""
        with suppress(OSError):
            while data := source.recv(1 << 16):
                sink.sendall(data)
        with self._lock:
            self._open -= {source, sink}
        _close(source, sink)


def _close(*sockets: socket.socket) -> None:
    """Shuts down (waking a thread blocked reading it) and closes each socket."""
    for sock in sockets:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
