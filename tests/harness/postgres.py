"""PostgreSQL, the control plane of clusters and the benchmarks' peer: a cluster made by
initdb and its server on a free 127.0.0.1 port, stopped and started at will."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.harness.net import free_port, wait_until

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


class PostgresServer:
    """A PostgreSQL cluster made by initdb, and its server: `stop()` and `start()` make
    an outage, with the same port and data when it comes back.

    The cluster lives in a new directory inside `directory`. When we are root,
    initdb and the server run as the `postgres` OS user, which owns that new
    directory; if that user cannot reach `directory` (pytest's `tmp_path` is
    mode 0700 under root), the cluster goes in a new directory under the system
    temporary directory instead, removed by `close()`. Nothing else is removed: the
    caller's directory stays as it was, apart from the cluster left in it.
    Authentication is `trust` (loopback only; the superuser is `postgres`).
    fsync, synchronous_commit and wal_sync_method stay at their defaults: the
    benchmarks compare against PostgreSQL durable as shipped.
    """

    def __init__(self, directory: Path) -> None:
        self.as_postgres = _as_postgres_user()
        self.reachable = _reachable_by_postgres(directory)
        self.cluster = Path(
            tempfile.mkdtemp(prefix="postgres-", dir=directory if self.reachable else None)
        )
        if self.as_postgres:
            os.chmod(self.cluster, 0o700)
            user = pwd.getpwnam(POSTGRES_USER)
            os.chown(self.cluster, user.pw_uid, user.pw_gid)
        self.data, self.log_path = self.cluster / "data", self.cluster / "postgres.log"
        self.port = free_port()
        self.dsn = f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/postgres"
        self.process: subprocess.Popen[bytes] | None = None
        # --no-sync only skips flushing initdb's own files to disk; the server's fsync
        # and synchronous_commit settings are untouched (both on, as shipped).
        subprocess.run(
            [
                *self.as_postgres,
                str(postgres_bin("initdb")),
                *("-D", str(self.data), "-U", POSTGRES_USER, "--auth=trust"),
                *("--encoding=UTF8", "--locale=C", "--no-sync"),
            ],
            cwd=self.cluster,
            check=True,
            capture_output=True,
            text=True,
        )

    def start(self, timeout: float = 30.0) -> None:
        """Starts the server on its port and waits until it accepts connections."""
        log = self.log_path.open("ab")
        process = subprocess.Popen(
            [
                *self.as_postgres,
                str(postgres_bin("postgres")),
                *("-D", str(self.data), "-p", str(self.port), "-k", str(self.cluster)),
                *("-c", "listen_addresses=127.0.0.1"),
            ],
            cwd=self.cluster,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.process = process

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(
                    f"postgres exited early:\n{self.log_path.read_text(errors='replace')}"
                )
            ping = [str(postgres_bin("pg_isready")), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
            return subprocess.run(ping, check=False).returncode == 0

        wait_until(ready, timeout, f"postgres on port {self.port}")

    def postmaster_pid(self) -> int:
        """The server's own process (when we are root, `process` is runuser's): the
        parent of its backends, for counting the CPU they use."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def stop(self) -> None:
        """A fast shutdown (clients disconnected, nothing committed lost); waits for it."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        stop = [str(postgres_bin("pg_ctl")), "stop", "-D", str(self.data), "-m", "fast", "-w"]
        subprocess.run(
            [*self.as_postgres, *stop], cwd=self.cluster, check=False, capture_output=True
        )
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def close(self) -> None:
        """Stops the server; removes the cluster if it is not in the caller's directory."""
        self.stop()
        if not self.reachable:
            shutil.rmtree(self.cluster, ignore_errors=True)


@contextmanager
def postgres_server(directory: Path) -> Iterator[PostgresServer]:
    """A running PostgreSQL on a free 127.0.0.1 port (see `PostgresServer`), closed on
    exit; its `dsn` is for psycopg and `shoal serve --control-plane`."""
    server = PostgresServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.close()


def create_postgres_database(dsn: str, name: str) -> str:
    """Creates database `name` in the PostgreSQL behind `dsn`; returns its DSN."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + "/" + name
