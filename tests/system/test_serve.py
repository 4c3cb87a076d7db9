"""Real `shoal serve` processes: defaults, many databases, config, TLS, stopping
cleanly under load (SIGTERM) and crashing under load (SIGKILL) with nothing
acknowledged lost and nothing corrupted."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from shoal.engine import Database, Role
from shoal.node.auth import hash_secret
from tests.harness import Node, Writer, free_port, wait_until
from tests.system.conftest import StartNode


def create(
    node: Node, name: str, schema: str = "CREATE TABLE t(id INTEGER PRIMARY KEY, v)"
) -> None:
    assert httpx.post(f"{node.url}/v1/databases", json={"name": name}).status_code == 201
    response = httpx.post(f"{node.url}/v1/databases/{name}/execute", json={"sql": schema})
    assert response.status_code == 200, response.text


def query(node: Node, name: str, sql: str) -> list[list[object]]:
    response = httpx.post(f"{node.url}/v1/databases/{name}/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["rows"]  # type: ignore[no-any-return]


def test_serve_with_no_arguments_uses_the_documented_defaults(tmp_path: Path) -> None:
    with httpx.Client() as probe:
        try:
            probe.get("http://127.0.0.1:4001/livez", timeout=0.5)
            pytest.fail("something already listens on 127.0.0.1:4001")
        except httpx.TransportError:
            pass
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "shoal", "serve"], cwd=tmp_path, stdout=log, stderr=log
    )
    try:

        def ready() -> bool:
            try:
                return httpx.get("http://127.0.0.1:4001/readyz", timeout=0.5).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 20, "shoal serve on 127.0.0.1:4001")
        assert (tmp_path / "shoal-data" / "databases" / "default.db").exists()
        text = (tmp_path / "serve.log").read_text()
        assert "serves ONLY loopback" in text and "127.0.0.1:4001" in text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        log.close()


def test_many_databases_survive_a_restart(start_node: StartNode, tmp_path: Path) -> None:
    node = start_node("--idle-seconds", "0.5")
    names = [f"tenant-{i:03d}" for i in range(40)]
    with httpx.Client(base_url=node.url) as client:
        for i, name in enumerate(names):
            client.post("/v1/databases", json={"name": name})
            client.post(
                f"/v1/databases/{name}/execute",
                json={
                    "statements": [
                        "CREATE TABLE t(v)",
                        {"sql": "INSERT INTO t VALUES (?)", "params": [i]},
                    ]
                },
            )
        listed = client.get("/v1/databases").json()["databases"]
        assert [d["name"] for d in listed] == ["default", *names]
        # Idle databases are closed, and opened again on demand.
        wait_until(
            lambda: "shoal_databases_open 0" in client.get("/metrics").text, 10, "idle close"
        )
    node.stop()
    node.start()
    for i, name in enumerate(names):
        assert query(node, name, "SELECT v FROM t") == [[i]]


def test_tokens_from_the_config_file_and_bad_values(start_node: StartNode, tmp_path: Path) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text(
        f'[[tokens]]\nname = "ci"\nhash = "{hash_secret("ci-secret")}"\nscope = "write"\n'
    )
    node = start_node("--config", str(config))
    url = f"{node.url}/v1/databases/default/query"
    assert httpx.post(url, json={"sql": "SELECT 1"}).status_code == 401
    ok = httpx.post(url, json={"sql": "SELECT 1"}, headers={"Authorization": "Bearer ci-secret"})
    assert ok.status_code == 200
    for args, message in [
        (["--max-statements", "lots"], "--max-statements: 'lots' is not a valid int"),
        (["--address", "nowhere"], "address 'nowhere' is not HOST:PORT"),
        (["--config", str(tmp_path / "missing.toml")], "cannot read"),
    ]:
        bad = subprocess.run(
            [sys.executable, "-m", "shoal", "serve", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=30,
        )
        assert bad.returncode == 1 and message in bad.stderr, bad.stderr


def test_environment_overrides_the_file_and_flags_override_both(
    start_node: StartNode, tmp_path: Path
) -> None:
    config = tmp_path / "shoal.toml"
    config.write_text("max_statements = 2\n")
    four = {"statements": ["SELECT 1"] * 4}
    env_node = start_node("--config", str(config), env={"SHOAL_MAX_STATEMENTS": "3"})
    assert (
        "over the limit of 3"
        in httpx.post(f"{env_node.url}/v1/databases/default/query", json=four).text
    )
    flag_node = start_node(
        "--config", str(config), "--max-statements", "5", env={"SHOAL_MAX_STATEMENTS": "3"}
    )
    ok = httpx.post(f"{flag_node.url}/v1/databases/default/query", json=four)
    assert ok.status_code == 200


def test_tls(start_node: StartNode, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    data = tmp_path / "tls-node"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shoal",
            "serve",
            "--data-dir",
            str(data),
            "--address",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"https://127.0.0.1:{port}"
        trust = ssl.create_default_context(cafile=str(cert))

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", verify=trust, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 20, "shoal serve over TLS")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).raise_for_status()
    finally:
        process.terminate()
        process.wait(20)


def load_writer(node: Node, threads: int = 4) -> Writer:
    """Threads inserting rows of `load` (an id and 100 random bytes) as fast as the node
    takes them."""
    return Writer(
        [node.url], "load", "INSERT INTO t(id, v) VALUES (?, randomblob(100))", threads=threads
    )


def assert_intact(path: Path, acknowledged: set[int], tmp_path: Path) -> None:
    """Every acknowledged row is there, the file is sound, and the log replays to the
    same logical checksum."""
    with Database(path, name="load") as db:
        ids = {row[0] for row in db.query("SELECT id FROM t").results[0].rows}
        assert acknowledged <= ids, f"{len(acknowledged - ids)} acknowledged writes lost"
        assert db.query("PRAGMA integrity_check").results[0].rows == [("ok",)]
        records = db.log_range(1)
        with Database(tmp_path / "replay.db", name="load", role=Role.FOLLOWER) as follower:
            for raw in records:
                follower.apply(raw)
            assert follower.version == db.version == len(records)
            assert follower.checksum() == db.checksum()


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_under_load_loses_no_acknowledged_write(
    start_node: StartNode, tmp_path: Path, stop: str
) -> None:
    # No archive: the check below replays the whole local log, which archiving trims.
    node = start_node("--archive", "off")
    create(node, "load")
    with load_writer(node) as writer:
        wait_until(lambda: len(writer.acknowledged) > 300, 30, "writes")
        if stop != "SIGKILL":
            node.signal(getattr(signal, stop))
            assert node.wait(30) == 0
            assert "every database closed" in node.log()
        else:
            node.kill()
    acknowledged = set(writer.acknowledged)
    assert len(acknowledged) > 300
    assert_intact(node.data_dir / "databases" / "load.db", acknowledged, tmp_path)
    node.start()  # and it serves again, with everything there
    count = query(node, "load", "SELECT count(*) FROM t")[0][0]
    assert isinstance(count, int) and count >= len(acknowledged)


def test_a_stopping_node_answers_every_connection_it_accepted(start_node: StartNode) -> None:
    """A client sees an answer or a refused connection, never a reset one (which
    leaves it unable to tell whether its write was carried out): neither a queued
    connection nor one accepted but not yet read is dropped by a stop."""
    node = start_node("--archive", "off")
    create(node, "load")
    for stop in range(5):  # a stop without the fix resets one in one to three rounds
        with Writer([node.url], "load", threads=8, first=stop * 1_000_000) as writer:
            wait_until(lambda: len(writer.acknowledged) > 100, 30, "writes")
            node.signal(signal.SIGTERM)
            assert node.wait(30) == 0
            wait_until(lambda: writer.errors["ConnectError"] > 8, 10, "refused connections")
        assert writer.failures == [], writer.failures[:3]
        node.start()


def test_sigterm_lets_in_flight_requests_finish(start_node: StartNode) -> None:
    node = start_node()
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) "
        "SELECT count(*) FROM n"
    )
    result: dict[str, httpx.Response] = {}

    def run() -> None:
        result["r"] = httpx.post(
            f"{node.url}/v1/databases/default/query", json={"sql": slow}, timeout=60
        )

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)  # the query is running (it takes about a second)
    node.signal(signal.SIGTERM)
    thread.join(60)
    assert result["r"].status_code == 200 and result["r"].json()["results"][0]["rows"] == [
        [3000000]
    ]
    assert node.wait(30) == 0


def test_slow_read_neither_blocks_writes_nor_the_event_loop(node: Node) -> None:
    create(node, "busy")
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000) "
        "SELECT count(*) FROM t, n"
    )
    httpx.post(f"{node.url}/v1/databases/busy/execute", json={"sql": "INSERT INTO t VALUES (1, 1)"})
    finished: list[float] = []

    def read() -> None:
        httpx.post(f"{node.url}/v1/databases/busy/query", json={"sql": slow}, timeout=60)
        finished.append(time.monotonic())

    thread = threading.Thread(target=read)
    thread.start()
    time.sleep(0.2)
    write = httpx.post(
        f"{node.url}/v1/databases/busy/execute", json={"sql": "INSERT INTO t VALUES (2, 2)"}
    )
    wrote = time.monotonic()
    assert write.status_code == 200 and httpx.get(f"{node.url}/livez").status_code == 200
    thread.join(60)
    assert finished and wrote < finished[0], "the write waited for the read"


async def post_raw(url: str, path: str, body: dict[str, object]) -> tuple[int, dict[str, Any]]:
    """One POST on a connection of its own, with asyncio streams: httpx's pool is
    too slow with hundreds of connections to show what the server does."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
        + payload
    )
    await writer.drain()
    response = await reader.read()
    writer.close()
    head, _, content = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(content)


def test_hundreds_of_concurrent_clients(node: Node) -> None:
    create(node, "crowd")
    path = "/v1/databases/crowd"

    async def client(i: int) -> int:
        status, written = await post_raw(
            node.url,
            f"{path}/execute",
            {"sql": "INSERT INTO t(id, v) VALUES (?, ?)", "params": [i, i]},
        )
        _, read = await post_raw(
            node.url,
            f"{path}/query",
            {
                "sql": "SELECT v FROM t WHERE id = ?",
                "params": [i],
                "min_version": written["version"],
            },
        )
        assert read["results"][0]["rows"] == [[i]]
        return status

    async def crowd() -> list[int]:
        return await asyncio.gather(*(client(i) for i in range(300)))

    assert asyncio.run(crowd()) == [200] * 300
    assert query(node, "crowd", "SELECT count(*) FROM t") == [[300]]


def serve_and_fail(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", "serve", "--data-dir", str(tmp_path / "d"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_busy_port_is_refused_before_anything_is_announced(node: Node, tmp_path: Path) -> None:
    done = serve_and_fail(tmp_path, "--address", f"127.0.0.1:{node.port}")
    assert done.returncode == 1
    assert "serving" not in done.stderr and "Errno" not in done.stderr, done.stderr
    assert f"cannot listen on 127.0.0.1:{node.port}: Address already in use" in done.stderr
    assert f"held by process {node.process.pid}" in done.stderr  # type: ignore[union-attr]


def test_an_unreachable_control_plane_at_start_is_one_line(tmp_path: Path) -> None:
    done = serve_and_fail(
        tmp_path,
        "--address",
        f"127.0.0.1:{free_port()}",
        "--control-plane",
        f"postgresql://postgres@127.0.0.1:{free_port()}/postgres",
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert "error: shoal could not start: ControlPlaneUnavailable: " in done.stderr
