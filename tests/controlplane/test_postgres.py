"""What only the PostgreSQL control plane does: its pool of connections."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

from shoal.controlplane.postgres import POOL_SIZE, PostgresControlPlane


def test_a_write_with_a_ttl_does_not_wait_for_a_connection(postgres_dsn: str) -> None:
    """A node's lease renewal waited for one of the pool's connections behind its
    replicas' statements (in a failover of thousands, for seconds) and the lease
    lapsed. A write with a TTL has a connection of its own."""
    plane = PostgresControlPlane(postgres_dsn)
    release = threading.Event()

    def hold_a_connection() -> None:
        plane._read(lambda cursor: release.wait(10))

    with ThreadPoolExecutor(POOL_SIZE + 2) as holders, ThreadPoolExecutor(2) as pool:
        busy = [holders.submit(hold_a_connection) for _ in range(POOL_SIZE + 2)]
        try:
            renewal = pool.submit(plane.put, "test-pool/node", b"n1", ttl=5.0)
            done, _ = wait([renewal], timeout=5)
            assert renewal in done, "the renewal waited for the pool"
            assert renewal.result() > 0
            other = pool.submit(plane.put, "test-pool/other", b"x")
            done, _ = wait([other], timeout=0.5)
            assert other not in done  # the pool's writes do wait: the test holds them all
        finally:
            release.set()
        wait(busy)
        assert other.result() > 0
    plane.close()
