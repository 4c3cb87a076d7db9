"""The log stream and the snapshot against a real `shoal serve`: a copy seeded from
the snapshot and fed the stream equals the node's database while writes go on;
heartbeats come while idle; a stopping node ends its streams saying so."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from shoal.engine import Database
from shoal.record import decode
from shoal.stream import Frame, FrameKind, FrameReader
from tests.harness import Node

DB = "/v1/databases/default"


class Follower:
    """Reads a log stream in a thread, keeping every frame it gets."""

    def __init__(self, url: str, after: int, heartbeat: float = 1.0) -> None:
        self.frames: list[Frame] = []
        self.ended = threading.Event()
        params = {"after": after, "heartbeat": heartbeat}
        self._thread = threading.Thread(target=self._read, args=(url, params), daemon=True)
        self._thread.start()

    def _read(self, url: str, params: dict[str, float]) -> None:
        reader = FrameReader()
        try:
            with httpx.stream("GET", f"{url}{DB}/log", params=params, timeout=30) as response:
                assert response.status_code == 200, response.read()
                for chunk in response.iter_raw():
                    self.frames.extend(reader.feed(chunk))
        finally:
            self.ended.set()

    def records(self) -> list[bytes]:
        return [f.payload for f in list(self.frames) if f.kind is FrameKind.RECORD]

    def wait_for(self, version: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(decode(r).version >= version for r in self.records()):
            assert time.monotonic() < deadline, f"version {version} never arrived"
            time.sleep(0.01)


def execute(node: Node, sql: str) -> int:
    response = httpx.post(f"{node.url}{DB}/execute", json={"sql": sql}, timeout=10)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


def test_a_copy_seeded_from_the_snapshot_and_fed_the_stream_equals_the_node(
    node: Node, tmp_path: Path
) -> None:
    execute(node, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    for i in range(30):
        execute(node, f"INSERT INTO t(v) VALUES ('before {i}')")
    seed = httpx.get(f"{node.url}{DB}/snapshot", timeout=30)
    seeded_at = int(seed.headers["shoal-version"])
    (tmp_path / "seed.db").write_bytes(seed.content)
    follower = Follower(node.url, after=seeded_at)
    for i in range(60):  # while the stream runs: updates and deletes too
        execute(node, f"INSERT INTO t(v) VALUES ('during {i}')")
        if i % 3 == 0:
            execute(node, f"UPDATE t SET v = v || '!' WHERE id = {i + 1}")
        if i % 5 == 0:
            last = execute(node, f"DELETE FROM t WHERE id = {i + 2}")
    follower.wait_for(last)
    with Database.seed(tmp_path / "seed.db", tmp_path / "copy.db") as copy:
        copy.apply_many(follower.records())
        info = httpx.get(f"{node.url}{DB}", params={"checksum": "1"}, timeout=30).json()
        assert (copy.version, copy.checksum()) == (info["version"], info["checksum"])


def test_an_idle_stream_sends_heartbeats_with_the_version(node: Node) -> None:
    version = execute(node, "CREATE TABLE t(a)")
    follower = Follower(node.url, after=version, heartbeat=0.1)
    time.sleep(0.6)
    beats = [f.json() for f in list(follower.frames) if f.kind is FrameKind.HEARTBEAT]
    assert len(beats) >= 3 and beats[-1] == {"version": version}
    assert follower.records() == []
    execute(node, "INSERT INTO t VALUES (1)")
    follower.wait_for(version + 1, timeout=2)


def test_a_stopping_node_ends_its_streams_saying_so(node: Node) -> None:
    follower = Follower(node.url, after=0)
    time.sleep(0.3)
    started = time.monotonic()
    assert node.stop() == 0
    assert follower.ended.wait(5)
    assert time.monotonic() - started < 5  # not held to the shutdown grace period
    end = follower.frames[-1]
    assert end.kind is FrameKind.END
    assert end.json()["error"]["type"] == "Unavailable"
    assert "follow another" in end.json()["error"]["message"]
