"""A database per tenant on one real node: 10,000 of them created, listed a page at
a time, a sample written, and read all at once by query-many with a damaged one
among them, while the node keeps its open files bounded."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.harness import Node
from tests.system.conftest import StartNode

TENANTS = 10_000
CLIENTS = 8


def name_of(index: int) -> str:
    return f"tenant-{index:05d}"


def create_all(url: str) -> None:
    def create(first: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for index in range(first, TENANTS, CLIENTS):
                response = client.post("/v1/databases", json={"name": name_of(index)})
                assert response.status_code == 201, response.text

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(create, range(CLIENTS)))


def test_ten_thousand_databases_on_one_node(start_node: StartNode) -> None:
    node: Node = start_node("--max-open-databases", "100", "--archive", "off")
    create_all(node.url)
    client = httpx.Client(base_url=node.url, timeout=120)

    listed, after = [], ""
    while True:
        page = client.get("/v1/databases", params={"after": after, "limit": 1000}).json()
        listed += [d["name"] for d in page["databases"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert listed == ["default", *(name_of(i) for i in range(TENANTS))]

    sample = random.Random(17).sample(range(TENANTS), 50)
    for index in sample:
        body = {
            "statements": [
                "CREATE TABLE t(v)",
                {"sql": "INSERT INTO t VALUES (?)", "params": [index]},
            ]
        }
        assert client.post(f"/v1/databases/{name_of(index)}/execute", json=body).status_code == 200

    written = client.post(
        "/v1/query-many",
        json={"databases": [name_of(i) for i in sample], "sql": "SELECT v FROM t"},
    ).json()
    assert written["errors"] == []
    assert sorted(row[1] for row in written["rows"]) == sorted(sample)

    # A database the node has closed, its file damaged on disk: that one fails, alone.
    damaged = name_of(next(i for i in range(TENANTS) if i not in sample))
    path = node.data_dir / "databases" / f"{damaged}.db"
    with open(path, "r+b") as file:
        file.write(b"this is not a SQLite database")
    everything = client.post(
        "/v1/query-many",
        json={"pattern": "tenant-*", "sql": "SELECT count(*) AS objects FROM sqlite_schema"},
    ).json()
    assert everything["databases"] == TENANTS
    assert [e["database"] for e in everything["errors"]] == [damaged]
    assert everything["errors"][0]["error"]["type"] in ("OperationalError", "InternalError")
    assert len(everything["rows"]) == TENANTS - 1

    open_files = len(os.listdir(f"/proc/{node.process.pid}/fd"))
    assert open_files < 2_000, open_files  # bounded by max_open_databases, not by 10,000
    assert client.get("/readyz").status_code == 200
    client.close()
