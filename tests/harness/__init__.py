"""Real services for system tests and benchmarks: shoal nodes and clusters, PostgreSQL,
SeaweedFS (S3), Chromium (for the dashboard), a TCP proxy that cuts a client off from
one of them, and a writer that writes through it all.

Everything here starts a real process (the proxy and the writer: threads) on a free
127.0.0.1 port, waits for it by polling (never by a fixed sleep), and stops it when the
`with` block ends. tests/conftest.py and tests/system/conftest.py turn these into
fixtures; bench/ imports them too.
"""

from tests.harness.browser import chromium
from tests.harness.cluster import Cluster, CopyState, shoal_cluster
from tests.harness.net import free_port, wait_until
from tests.harness.nodes import Node, shoal_node
from tests.harness.postgres import (
    PostgresServer,
    create_postgres_database,
    postgres_bin,
    postgres_server,
)
from tests.harness.proxy import TcpProxy
from tests.harness.s3 import S3Endpoint, make_bucket, seaweedfs, weed_bin
from tests.harness.writer import Ack, Writer

__all__ = [
    "Ack",
    "Cluster",
    "CopyState",
    "Node",
    "PostgresServer",
    "S3Endpoint",
    "TcpProxy",
    "Writer",
    "chromium",
    "create_postgres_database",
    "free_port",
    "make_bucket",
    "postgres_bin",
    "postgres_server",
    "seaweedfs",
    "shoal_cluster",
    "shoal_node",
    "wait_until",
    "weed_bin",
]
