"""Real services for system tests and benchmarks: shoal nodes and PostgreSQL.

Everything here starts a real process on a free 127.0.0.1 port, waits for it by
polling (never by a fixed sleep), and stops it when the `with` block ends.
`tests/system/conftest.py` turns these into fixtures; `bench/` imports them too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

__all__ = ["Node", "free_port", "postgres", "postgres_bin", "shoal_node", "wait_until"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: object, timeout: float = 15.0, what: str = "condition") -> None:
    """Polls `condition()` until it is true, or fails after `timeout` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


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


POSTGRES_USER = "postgres"  # the OS user PostgreSQL runs as when we are root; also the superuser


def postgres_bin(program: str = "postgres") -> Path:
    """A PostgreSQL program from Debian's newest /usr/lib/postgresql/N/bin."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{program}"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise FileNotFoundError(
            f"PostgreSQL's {program} not found in /usr/lib/postgresql/*/bin; "
            "install it with: apt-get install postgresql"
        )
    return candidates[-1]


def _as_postgres_user() -> list[str]:
    """The command prefix that runs a program as the `postgres` OS user when we are root.

    PostgreSQL refuses to run as root; as any other user it runs as that user.
    """
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", POSTGRES_USER, "--"]


def _reachable_by_postgres(directory: Path) -> bool:
    """Whether the `postgres` OS user can reach `directory` (every parent searchable)."""
    prefix = _as_postgres_user()
    if not prefix:
        return True
    return subprocess.run([*prefix, "test", "-x", str(directory)], check=False).returncode == 0


@contextmanager
def postgres(directory: Path) -> Iterator[str]:
    """A running PostgreSQL on a free 127.0.0.1 port; yields its DSN for psycopg.

    The cluster lives in a new directory inside `directory`. When we are root,
    initdb and the server run as the `postgres` OS user, which owns that new
    directory; if that user cannot reach `directory` (pytest's `tmp_path` is
    mode 0700 under root), the cluster goes in a new directory under the system
    temporary directory instead, removed on exit. Nothing else is removed: the
    caller's directory stays as it was, apart from the cluster left in it.
    Authentication is `trust` (loopback only; the superuser is `postgres`).
    fsync, synchronous_commit and wal_sync_method stay at their defaults: the
    benchmarks compare against PostgreSQL durable as shipped.
    """
    as_postgres = _as_postgres_user()
    reachable = _reachable_by_postgres(directory)
    cluster = Path(tempfile.mkdtemp(prefix="postgres-", dir=directory if reachable else None))
    if as_postgres:
        os.chmod(cluster, 0o700)
        user = pwd.getpwnam(POSTGRES_USER)
        os.chown(cluster, user.pw_uid, user.pw_gid)
    data, log_path, port = cluster / "data", cluster / "postgres.log", free_port()

    def run_as_postgres(*command: str) -> None:
        subprocess.run(
            [*as_postgres, *command], cwd=cluster, check=True, capture_output=True, text=True
        )

    # --no-sync only skips flushing initdb's own files to disk; the server's fsync
    # and synchronous_commit settings are untouched (both on, as shipped).
    run_as_postgres(
        str(postgres_bin("initdb")),
        *("-D", str(data), "-U", POSTGRES_USER, "--auth=trust", "--encoding=UTF8"),
        *("--locale=C", "--no-sync"),
    )
    log = log_path.open("ab")
    process = subprocess.Popen(
        [
            *as_postgres,
            str(postgres_bin("postgres")),
            *("-D", str(data), "-p", str(port), "-k", str(cluster)),
            *("-c", "listen_addresses=127.0.0.1"),
        ],
        cwd=cluster,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"postgres exited early:\n{log_path.read_text(errors='replace')}")
        ping = [str(postgres_bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(ping, check=False).returncode == 0

    try:
        wait_until(ready, 30.0, f"postgres on port {port}")
        yield f"postgresql://{POSTGRES_USER}@127.0.0.1:{port}/postgres"
    finally:
        if process.poll() is None:
            stop = [str(postgres_bin("pg_ctl")), "stop", "-D", str(data), "-m", "fast", "-w"]
            subprocess.run([*as_postgres, *stop], cwd=cluster, check=False, capture_output=True)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if not reachable:
            shutil.rmtree(cluster, ignore_errors=True)
