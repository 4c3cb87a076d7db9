"""`shoal serve` subprocesses: started on a free 127.0.0.1 port, ready once /readyz
answers, stopped (or killed) on demand."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.harness.net import free_port, wait_until


class Node:
    """One `shoal serve` subprocess: its URL, data directory and process."""

    def __init__(self, data_dir: Path, port: int, args: Sequence[str], env: dict[str, str]):
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.args = list(args)
        self.env = env
        self.log_path = data_dir.parent / f"node-{port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        """Starts the process and waits until /readyz answers 200."""
        command = [
            sys.executable,
            "-m",
            "shoal",
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--address",
            f"127.0.0.1:{self.port}",
            *self.args,
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        log.close()

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"shoal serve exited early:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, timeout, f"shoal serve on port {self.port}")

    def log(self) -> str:
        """What the node printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        """Waits for the process to exit; returns its exit code."""
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within 15 s."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(5)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(5)


@contextmanager
def shoal_node(
    data_dir: Path,
    *args: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[Node]:
    """A running `shoal serve` on a free port with its data in `data_dir`."""
    node = Node(data_dir, port or free_port(), args, env or {})
    node.start()
    try:
        yield node
    finally:
        node.stop()
