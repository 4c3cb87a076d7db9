"""Django on an embedded replica of a real `shoal serve`: migrations written
through the node, the ORM reading the local copy with Django's Python functions,
and the copy ending equal to the node's database."""

from __future__ import annotations

from pathlib import Path

import httpx

from shoal.engine import Database, Role
from tests.client.test_django import django, run
from tests.harness import Node


def test_django_on_a_replica_migrates_through_the_node_and_reads_its_copy(
    node: Node, tmp_path: Path
) -> None:
    httpx.post(f"{node.url}/v1/databases", json={"name": "shop"}).raise_for_status()
    copy, database = tmp_path / "copy.db", f"{node.url}/shop"
    applied = django("migrate", db=copy, replica_of=database)
    assert "Applying shop.0002_widen_total_add_note... OK" in applied
    assert "exercised" in django("exercise.py", db=copy, replica_of=database)
    info = httpx.get(f"{node.url}/v1/databases/shop", params={"checksum": "1"}).json()
    with Database(copy, role=Role.FOLLOWER) as replica:
        assert (replica.version, replica.checksum()) == (info["version"], info["checksum"])
    refused = run("test", "shop", "--noinput", db=copy, replica_of=database)
    assert refused.returncode != 0 and "a shoal replica has no test database" in refused.stderr
