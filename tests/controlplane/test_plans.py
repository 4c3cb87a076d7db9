"""The control plane's statements read what they need, however many keys there
are (10,000 databases: 20,000 keys).

Purging expired keys, which every key-value write does under the one lock all
key-value writes take, read every key: the clock is a volatile function, so the
planner called it for each row. A write took 10 ms, a three-node cluster's
writes queued behind one another, and nodes' lease renewals waited in that queue
until their leases lapsed.
"""

from __future__ import annotations

import json
from pathlib import Path

import apsw
import psycopg

from shoal.controlplane.postgres import PostgresControlPlane
from shoal.controlplane.sql import EXPIRED
from shoal.controlplane.sqlite import SQLiteControlPlane

MANY = 20_000


def test_on_postgresql_the_purge_reads_only_keys_with_a_ttl(postgres_dsn: str) -> None:
    PostgresControlPlane(postgres_dsn).close()  # the tables and indexes
    with psycopg.connect(postgres_dsn) as conn:  # rolled back at the end
        conn.execute(
            "INSERT INTO shoal_kv (key, value, revision) "
            "SELECT 'test-expiry/' || n, '\\x00'::bytea, 0 FROM generate_series(1, %s) AS n",
            (MANY,),
        )
        plan = conn.execute(f"EXPLAIN (FORMAT JSON) DELETE FROM shoal_kv WHERE {EXPIRED}")
        text = json.dumps(plan.fetchone())
        conn.rollback()
    assert "shoal_kv_expiring" in text and "Seq Scan" not in text, text


def test_on_sqlite_the_purge_reads_only_keys_with_a_ttl(tmp_path: Path) -> None:
    SQLiteControlPlane(tmp_path / "control.db").close()
    conn = apsw.Connection(str(tmp_path / "control.db"))
    conn.create_scalar_function("shoal_now", lambda: 0.0, 0)
    plan = conn.execute(f"EXPLAIN QUERY PLAN DELETE FROM shoal_kv WHERE {EXPIRED}").fetchall()
    conn.close()
    assert any("INDEX shoal_kv_expiring" in str(row) for row in plan), plan
