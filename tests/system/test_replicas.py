"""Embedded replicas against a real `shoal serve`: seeded once, reads in process,
writes through the node that the writer then reads back, another process reading
what this one wrote, a restart that resumes from the file, a node outage, a 30 s
network cut that the replica catches up from, and a 200 MB seed's progress bar."""

from __future__ import annotations

import contextlib
import logging
import os
import pty
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shoal
from shoal.client.replica import Connection as Replica
from shoal.errors import StaleReplica, Unavailable, VersionNotReached
from shoal.terminal import human_size
from tests.harness import Cluster, Node, TcpProxy, free_port, wait_until
from tests.system.conftest import StartNode


def replica(node: Node, path: Path) -> Replica:
    conn = shoal.connect(path, replica_of=f"{node.url}/default")
    assert isinstance(conn, Replica)
    return conn


def rows(conn: shoal.Connection, sql: str) -> list[tuple[object, ...]]:
    return conn.execute(sql).fetchall()


@pytest.fixture
def table(node: Node) -> Node:
    with contextlib.closing(shoal.connect(f"{node.url}/default")) as conn:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t(v) VALUES ('seeded')")
        conn.commit()
    return node


def test_a_replica_reads_its_own_writes_at_once(table: Node, tmp_path: Path) -> None:
    with contextlib.closing(replica(table, tmp_path / "local.db")) as conn:
        assert conn.version == 1 and rows(conn, "SELECT v FROM t") == [("seeded",)]
        cursor = conn.cursor()
        cursor.execute("INSERT INTO t(v) VALUES ('mine')")
        assert cursor.lastrowid == 2
        conn.commit()  # returns once the local copy has it
        assert conn.version == 2 and rows(conn, "SELECT count(*) FROM t") == [(2,)]
        conn.execute("UPDATE t SET v = 'changed' WHERE id = 1")  # opens a transaction
        conn.rollback()
        assert rows(conn, "SELECT v FROM t WHERE id = 1") == [("seeded",)]
        with contextlib.closing(shoal.connect(f"{table.url}/default")) as other:
            other.execute("INSERT INTO t(v) VALUES ('elsewhere')")
            other.commit()
        assert conn.sync() == 3 and rows(conn, "SELECT v FROM t WHERE id = 3") == [("elsewhere",)]
        assert conn.database.checksum() == table_checksum(table)


def test_a_read_with_min_version_waits_for_another_writers_commit(
    table: Node, tmp_path: Path
) -> None:
    path = tmp_path / "local.db"
    url = f"{table.url}/default"
    with contextlib.closing(shoal.connect(path, replica_of=url, timeout=1)) as conn:
        with contextlib.closing(shoal.connect(url)) as other:
            for n in range(20):  # each read must see the write it names, not race it
                other.execute("INSERT INTO t(v) VALUES (?)", (f"w{n}",))
                other.commit()
                wanted = other.version
                read = conn.execute("SELECT v FROM t WHERE id = ?", (n + 2,), min_version=wanted)
                assert read.fetchone() == (f"w{n}",)
        future = conn.version + 100
        with pytest.raises(VersionNotReached, match=f"min_version {future} not reached"):
            conn.execute("SELECT 1", min_version=future)


def table_checksum(node: Node) -> str:
    info = httpx.get(f"{node.url}/v1/databases/default", params={"checksum": "1"}).json()
    return str(info["checksum"])


READER = """
import sys, shoal
conn = shoal.connect(sys.argv[1], replica_of=sys.argv[2])
conn.wait_for(int(sys.argv[3]), timeout=10)
print(conn.execute("SELECT v FROM t ORDER BY id DESC LIMIT 1").fetchone()[0])
conn.close()
"""


def test_another_process_reads_a_write_given_its_version(table: Node, tmp_path: Path) -> None:
    with contextlib.closing(replica(table, tmp_path / "a.db")) as writer:
        writer.execute("INSERT INTO t(v) VALUES ('for b')")
        writer.commit()
        token = writer.version
        read = subprocess.run(
            [
                sys.executable,
                "-c",
                READER,
                str(tmp_path / "b.db"),
                f"{table.url}/default",
                str(token),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "for b"


def test_a_restarted_replica_resumes_from_its_file(
    table: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.replica")
    path = tmp_path / "local.db"
    replica(table, path).close()
    assert sum("seeded" in r.message for r in caplog.records) == 1
    with contextlib.closing(shoal.connect(f"{table.url}/default")) as other:
        other.execute("INSERT INTO t(v) VALUES ('while closed')")
        other.commit()
    with contextlib.closing(replica(table, path)) as conn:
        assert conn.sync() == 2
        assert rows(conn, "SELECT v FROM t WHERE id = 2") == [("while closed",)]
    assert sum("seeded" in r.message for r in caplog.records) == 1  # no second download


def test_with_the_node_down_reads_go_on_and_writes_say_so(
    start_node: StartNode, tmp_path: Path
) -> None:
    node = start_node(data_dir=tmp_path / "node")
    with contextlib.closing(shoal.connect(f"{node.url}/default")) as conn:
        conn.execute("CREATE TABLE t(v)")
        conn.commit()
    conn = replica(node, tmp_path / "local.db")
    try:
        assert node.stop() == 0
        assert rows(conn, "SELECT count(*) FROM t") == [(0,)]
        with pytest.raises(Unavailable, match=r"cannot reach .*; retry"):
            conn.execute("INSERT INTO t VALUES (1)")
        conn.rollback()
        node.start()
        with contextlib.closing(shoal.connect(f"{node.url}/default")) as other:
            other.execute("INSERT INTO t VALUES ('back')")
            other.commit()
        assert conn.sync(timeout=15) == 2
        assert rows(conn, "SELECT v FROM t") == [("back",)]
    finally:
        conn.close()


def test_max_lag_refuses_reads_once_no_node_was_heard_from_for_longer(
    start_node: StartNode, tmp_path: Path
) -> None:
    node = start_node(data_dir=tmp_path / "node")
    url = f"{node.url}/default"
    with pytest.raises(shoal.InterfaceError, match="must be over 1 s"):
        shoal.connect(tmp_path / "local.db", replica_of=url, max_lag_seconds=0.5)
    conn = shoal.connect(tmp_path / "local.db", replica_of=url, max_lag_seconds=1.5)
    try:
        assert rows(conn, "SELECT 1") == [(1,)]
        time.sleep(2)  # idle: heartbeats keep it fresh
        assert rows(conn, "SELECT 1") == [(1,)]
        node.kill()
        time.sleep(2)
        with pytest.raises(StaleReplica, match="heard from no node for"):
            conn.execute("SELECT 1")
        node.start()
        conn.sync(timeout=15)  # following again
        assert rows(conn, "SELECT 1") == [(1,)]
    finally:
        conn.close()


def test_a_replica_url_must_name_one_database(tmp_path: Path) -> None:
    with pytest.raises(shoal.InterfaceError, match="host:port/database"):
        shoal.connect(tmp_path / "x.db", replica_of="http://127.0.0.1:1")
    with pytest.raises(shoal.InterfaceError, match="more than one database"):
        shoal.connect(tmp_path / "x.db", replica_of=["http://a:1/one", "http://b:1/two"])
    with pytest.raises(shoal.OperationalError, match="cannot seed replica"):
        shoal.connect(tmp_path / "x.db", replica_of="http://127.0.0.1:9/default")
    assert not (tmp_path / "x.db").exists()


def test_a_vacuum_on_the_node_makes_the_replica_reseed_and_carry_on(
    table: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shoal.replica")
    with contextlib.closing(replica(table, tmp_path / "local.db")) as conn:
        conn.create_function("shout", 1, str.upper)  # kept on the re-seeded copy
        conn.execute("INSERT INTO t(v) VALUES ('before')")
        conn.commit()
        with contextlib.closing(shoal.connect(f"{table.url}/default", autocommit=True)) as other:
            other.execute("VACUUM")
            other.execute("INSERT INTO t(v) VALUES ('after')")
        assert conn.sync(timeout=15) == 4
        assert rows(conn, "SELECT shout(v) FROM t ORDER BY id") == [
            ("SEEDED",),
            ("BEFORE",),
            ("AFTER",),
        ]
        assert conn.database.checksum() == table_checksum(table)
    assert any("re-seeding" in r.message and "VACUUM" in r.message for r in caplog.records)


WRITER = """
import contextlib, pathlib, sys, time, shoal
conn = shoal.connect(sys.argv[1], replica_of=sys.argv[3:])
key, stop = 1_000_000, pathlib.Path(sys.argv[2])
while not stop.exists():
    key += 1
    try:
        conn.execute("INSERT INTO t(id) VALUES (?)", (key,))
        conn.commit()
        print(key, flush=True)
    except shoal.Error:
        with contextlib.suppress(shoal.Error):
            conn.rollback()
        time.sleep(0.05)
conn.close()
"""


def test_replicas_writing_in_a_loop_through_a_handover_and_a_failover_lose_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Three nodes on PostgreSQL; two application processes (this one and another),
    each with a replica that knows all three nodes. The leader hands over (SIGTERM),
    then the next one is killed (SIGKILL), while both write."""
    admin = httpx.post(f"{cluster['n1'].url}/v1/databases", json={"name": "app"}, timeout=30)
    assert admin.status_code == 201, admin.text
    urls = [f"{url}/app" for url in cluster.urls()]
    with contextlib.closing(shoal.connect(urls[0])) as setup:
        setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        setup.commit()
    conn = shoal.connect(tmp_path / "local.db", replica_of=urls)
    stop_file = tmp_path / "stop"
    other = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "other.db"), str(stop_file), *urls],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    acknowledged: list[int] = []
    stop = threading.Event()

    def write() -> None:
        key = 0
        while not stop.is_set():
            key += 1
            try:
                conn.execute("INSERT INTO t(id) VALUES (?)", (key,))
                conn.commit()
                acknowledged.append(key)
            except shoal.Error:
                with contextlib.suppress(shoal.Error):
                    conn.rollback()
                time.sleep(0.05)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(acknowledged) > 20, 30, "the first writes")
        first = cluster.leader("app")
        assert cluster.stop(first) == 0
        seen = len(acknowledged)
        wait_until(lambda: len(acknowledged) > seen + 20, 30, "writes after the handover")
        second = cluster.leader("app")
        cluster.kill(second)
        seen = len(acknowledged)
        wait_until(lambda: len(acknowledged) > seen + 20, 60, "writes after the failover")
    finally:
        stop.set()
        stop_file.touch()
        writer.join(30)
        out, err = other.communicate(timeout=60)
    try:
        theirs = [int(line) for line in out.split()]
        assert other.returncode == 0, err
        assert acknowledged and theirs, "a process wrote nothing"
        conn.sync(timeout=30)
        local = {row[0] for row in rows(conn, "SELECT id FROM t")}
        assert set(acknowledged) | set(theirs) <= local  # every acknowledged write
        leader = cluster.leader("app")
        info = httpx.get(
            f"{cluster[leader].url}/v1/databases/app", params={"checksum": "1"}, timeout=30
        ).json()
        assert (conn.version, conn.database.checksum()) == (info["version"], info["checksum"])
    finally:
        conn.close()


def test_fifty_replicas_follow_one_database(table: Node, tmp_path: Path) -> None:
    replicas = [replica(table, tmp_path / f"r{i}.db") for i in range(50)]
    try:
        with contextlib.closing(shoal.connect(f"{table.url}/default")) as conn:
            for i in range(20):
                conn.execute("INSERT INTO t(v) VALUES (?)", (f"row {i}",))
                conn.commit()
        checksum = table_checksum(table)
        for copy in replicas:
            assert copy.sync(timeout=30) == 21
            assert copy.database.checksum() == checksum
    finally:
        for copy in replicas:
            copy.close()


def test_a_dead_first_node_is_passed_over_for_seeding_following_and_writes(
    table: Node, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/default"
    with contextlib.closing(
        shoal.connect(tmp_path / "local.db", replica_of=[dead, f"{table.url}/default"])
    ) as conn:
        conn.execute("INSERT INTO t(v) VALUES ('past the dead one')")
        conn.commit()
        assert conn.sync() == 2
        assert rows(conn, "SELECT v FROM t WHERE id = 2") == [("past the dead one",)]


KEYS = st.integers(min_value=1, max_value=12)
VALUES = st.one_of(
    st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=8), st.binary(max_size=8)
)
STATEMENTS = st.one_of(
    st.tuples(st.just("INSERT OR REPLACE INTO p(k, v) VALUES (?, ?)"), st.tuples(KEYS, VALUES)),
    st.tuples(st.just("UPDATE p SET v = ? WHERE k >= ?"), st.tuples(VALUES, KEYS)),
    st.tuples(st.just("DELETE FROM p WHERE k = ?"), st.tuples(KEYS)),
    st.tuples(st.just("INSERT INTO log(at) VALUES (?)"), st.tuples(VALUES)),
)
TRANSACTIONS = st.lists(
    st.tuples(st.lists(STATEMENTS, min_size=1, max_size=4), st.booleans()),  # (statements, commit?)
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(transactions=TRANSACTIONS)
def test_random_transactions_leave_the_replica_equal_to_the_node_at_every_version(
    node: Node, tmp_path_factory: pytest.TempPathFactory, transactions: list[Any]
) -> None:
    url = f"{node.url}/default"
    with contextlib.closing(shoal.connect(url)) as writer:
        writer.execute("CREATE TABLE IF NOT EXISTS p(k INTEGER PRIMARY KEY, v)")
        writer.execute("CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY, at)")
        writer.commit()
        path = tmp_path_factory.mktemp("replica") / "copy.db"
        with contextlib.closing(shoal.connect(path, replica_of=url)) as copy:
            for statements, commit in transactions:
                for sql, params in statements:
                    writer.execute(sql, params)
                if not commit:
                    writer.rollback()
                    continue
                writer.commit()
                info = httpx.get(
                    f"{node.url}/v1/databases/default", params={"checksum": "1"}
                ).json()
                assert info["version"] == writer.version  # no other writer: the node is at it
                copy.wait_for(writer.version, timeout=10)
                assert copy.version == writer.version
                assert copy.database.checksum() == info["checksum"]


@pytest.mark.slow
def test_a_replica_cut_off_for_30_s_catches_up_without_a_second_download(
    table: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The replica reaches the node only through a proxy, cut for 30 s while another
    client goes on writing to the node. Meanwhile the replica reads its own copy, as
    it was, and its writes are Unavailable; once healed it follows on from its own
    version to the node's version and checksum, in the same file, seeded once."""
    caplog.set_level(logging.INFO, logger="shoal.replica")
    path = tmp_path / "local.db"
    with (
        TcpProxy(table.port) as proxy,
        contextlib.closing(shoal.connect(path, replica_of=f"{proxy.url}/default")) as conn,
        contextlib.closing(shoal.connect(f"{table.url}/default", autocommit=True)) as other,
    ):
        other.execute("INSERT INTO t(v) VALUES ('before the cut')")
        conn.wait_for(other.version, timeout=10)
        before, inode = conn.version, path.stat().st_ino
        assert before == 2

        def cut_off() -> None:
            """Nothing reaches the node through the proxy: the copy stays as it was."""
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{proxy.url}/readyz")
            assert conn.version == before
            assert rows(conn, "SELECT count(*), max(v) FROM t") == [(2, "seeded")]
            with pytest.raises(Unavailable, match=r"cannot reach .*; retry"):
                conn.execute("INSERT INTO t(v) VALUES ('through the replica')")
            conn.rollback()

        proxy.cut()
        cut_at = time.monotonic()
        written, checks = 0, 0
        while (elapsed := time.monotonic() - cut_at) < 30:  # the node takes writes all along
            other.execute("INSERT INTO t(v) VALUES (?)", (f"written while cut off: {written}",))
            written += 1
            if elapsed >= checks:  # about once a second
                cut_off()
                checks += 1
        cut_off()
        assert checks >= 20 and written > 300, (checks, written)
        node_side = httpx.get(f"{table.url}/v1/databases/default", params={"checksum": "1"})
        head = node_side.json()
        assert head["version"] == before + written == other.version

        proxy.heal()
        healed_at = time.monotonic()
        assert conn.sync(timeout=30) == head["version"]
        caught_up = time.monotonic() - healed_at
        assert conn.database.checksum() == head["checksum"]
        assert rows(conn, "SELECT count(*) FROM t") == [(2 + written,)]
        conn.execute("INSERT INTO t(v) VALUES ('through the replica, healed')")
        conn.commit()
        assert conn.version == head["version"] + 1
    assert path.stat().st_ino == inode  # the same file: followed on, not replaced
    messages = [r.getMessage() for r in caplog.records]
    assert sum("seeded" in m for m in messages) == 1, messages  # the first seed only
    assert not [m for m in messages if "re-seeding" in m]
    print(f"{written} writes in the 30 s cut; caught up {caught_up:.2f} s after the heal")


SEEDER = """
import sys, shoal
conn = shoal.connect(sys.argv[1], replica_of=sys.argv[2])
print(conn.version, conn.database.checksum())
conn.close()
"""
BAR = re.compile(rb"\[([#.]{30})\] ([\d.]+ [KMG]?i?B) / ([\d.]+ [KMG]?i?B)")


def bytes_of(size: bytes) -> float:
    """What human_size printed ("12.0 MiB"), in bytes, to its 0.1 unit."""
    number, unit = size.decode().split()
    return float(number) * 1024 ** ["B", "KiB", "MiB", "GiB"].index(unit)


@pytest.mark.slow
def test_a_replica_seeded_from_a_200_mb_database_draws_its_progress_on_a_terminal(
    start_node: StartNode, tmp_path: Path
) -> None:
    """200 MiB of random blobs (they do not compress), written through the node's API
    in four transactions; a replica of it made by another process, whose stderr is a
    terminal (a pty), draws the bar from its first MiB to the whole file, and holds
    the node's database. (The file is some 400 MiB: the snapshot keeps, free, the
    pages its log's records held.)"""
    node = start_node(data_dir=tmp_path / "node")
    copy = tmp_path / "replica" / "copy.db"
    copy.parent.mkdir()
    try:
        with httpx.Client(base_url=f"{node.url}/v1/databases", timeout=60) as http:

            def execute(sql: str) -> None:
                response = http.post("/default/execute", json={"sql": sql})
                assert response.status_code == 200, response.text

            execute("CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB)")
            for _ in range(4):
                execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50) "
                    "INSERT INTO big(b) SELECT randomblob(1048576) FROM n"
                )
            sql = "SELECT count(*), sum(length(b)) FROM big"
            sizes = http.post("/default/query", json={"sql": sql}).json()
            assert sizes["results"][0]["rows"] == [[200, 200 * 2**20]]
            info = http.get("/default", params={"checksum": "1"}).json()
        master, terminal = pty.openpty()
        seeder = subprocess.Popen(
            [sys.executable, "-c", SEEDER, str(copy), f"{node.url}/default"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal,
        )
        os.close(terminal)
        drawn = bytearray()

        def read_the_terminal() -> None:
            with contextlib.suppress(OSError):  # EIO: the seeder has closed it
                while chunk := os.read(master, 1 << 16):
                    drawn.extend(chunk)

        reader = threading.Thread(target=read_the_terminal)
        reader.start()
        try:
            out, _ = seeder.communicate(timeout=60)
        finally:
            seeder.kill()
            reader.join(10)
            os.close(master)
        assert seeder.returncode == 0, bytes(drawn[-2000:])
        version, checksum = out.decode().split()
        assert (int(version), checksum) == (info["version"], info["checksum"])
        bars = BAR.findall(drawn)
        assert len(bars) > 100, bytes(drawn[-2000:])  # a bar for each MiB
        assert {total for _, _, total in bars} == {human_size(copy.stat().st_size).encode()}
        total = bytes_of(bars[0][2])
        done = [bytes_of(size) for _, size, _ in bars]
        assert total >= 200 * 2**20 and done == sorted(done)
        assert done[0] <= 2**20 and len({d for d in done if d < total}) > 100
        assert bars[-1][:2] == (b"#" * 30, bars[-1][2])  # full, at the whole file
        assert drawn.endswith(b"\n")  # and the line ended there
    finally:
        node.stop()
        shutil.rmtree(tmp_path / "node")
        shutil.rmtree(copy.parent)


def test_two_connections_to_one_replica_file_share_its_follower(
    table: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A connection pool (SQLAlchemy's) opens several connections to one file. Each
    # used to follow the stream on its own, so the second to apply a version found
    # it applied already and re-seeded the file under the first.
    path = tmp_path / "pooled.db"
    caplog.set_level(logging.INFO, logger="shoal.replica")
    first, second = replica(table, path), replica(table, path)
    try:
        assert first.follow is second.follow
        for n in range(20):
            conn = (first, second)[n % 2]
            conn.execute("INSERT INTO t(v) VALUES (?)", (f"pooled {n}",))
            conn.commit()
            assert rows(first, "SELECT count(*) FROM t") == [(n + 2,)]
            assert rows(second, "SELECT count(*) FROM t") == [(n + 2,)]
        first.close()
        conn = replica(table, path)  # the second still follows; a third joins it
        conn.execute("INSERT INTO t(v) VALUES ('after a close')")
        conn.commit()
        assert second.version == conn.version == 22
        conn.close()
    finally:
        first.close()
        second.close()
    assert "re-seeding" not in caplog.text
    assert caplog.text.count("seeded") == 1
