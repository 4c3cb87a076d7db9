"""The log stream and the snapshot, in-process: a bounded stream (`until`) is the
log's own records, in order; bad parameters and a truncated log are clear errors
before anything streams. Live following is in tests/system/test_logstream.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from starlette.testclient import TestClient

from shoal.record import decode
from shoal.stream import FrameKind, FrameReader

LOG = "/v1/databases/default/log"


def write(api: TestClient, *statements: str) -> int:
    response = api.post("/v1/databases/default/execute", json={"statements": list(statements)})
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def frames(api: TestClient, **params: int) -> list[tuple[FrameKind, bytes]]:
    response = api.get(LOG, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.shoal.log"
    return [(f.kind, f.payload) for f in FrameReader().feed(response.content)]


def test_a_bounded_stream_is_the_logs_records_in_order(api: TestClient) -> None:
    write(api, "CREATE TABLE t(a)")
    for i in range(100):  # more than one batch
        write(api, f"INSERT INTO t VALUES ({i})")
    got = frames(api, after=3, until=101)
    assert {kind for kind, _ in got} == {FrameKind.RECORD}
    assert [decode(payload).version for _, payload in got] == list(range(4, 102))
    assert frames(api, after=5, until=5) == []


def test_bad_parameters_are_refused_by_name(api: TestClient) -> None:
    for query, says in (
        ("after=-1", "?after= must be a version"),
        ("after=x", "?after= must be a version"),
        ("until=1.5", "?until= must be a version"),
        ("heartbeat=0", "?heartbeat= must be seconds from 0.05 to 60"),
        ("heartbeat=nan", "?heartbeat= must be seconds"),
    ):
        response = api.get(f"{LOG}?{query}")
        assert response.status_code == 400, query
        assert response.json()["error"]["type"] == "InvalidRequest"
        assert says in response.json()["error"]["message"]
    assert api.get("/v1/databases/nosuch/log").status_code == 404


def test_a_truncated_log_is_410_saying_to_seed_from_a_snapshot(api: TestClient) -> None:
    write(api, "CREATE TABLE t(a)")
    for i in range(5):
        version = write(api, f"INSERT INTO t VALUES ({i})")
    db = api.app.state.node._open["default"].db  # type: ignore[attr-defined]
    db.truncate_log(below=4)
    refused = api.get(LOG, params={"after": 1})
    assert refused.status_code == 410
    error = refused.json()["error"]
    assert error["type"] == "LogTruncated" and "/snapshot" in error["message"]
    assert [decode(p).version for _, p in frames(api, after=3, until=version)] == [4, 5, 6]


def test_a_snapshot_is_a_database_at_its_version(api: TestClient, tmp_path: Path) -> None:
    write(api, "CREATE TABLE t(a)", "INSERT INTO t VALUES (1)")
    version = write(api, "INSERT INTO t VALUES (2)")
    response = api.get("/v1/databases/default/snapshot")
    assert response.status_code == 200 and response.headers["shoal-version"] == str(version)
    path = tmp_path / "seed.db"
    path.write_bytes(response.content)
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT a FROM t ORDER BY a").fetchall() == [(1,), (2,)]
        assert conn.execute("SELECT max(version) FROM _shoal_log").fetchone() == (version,)
