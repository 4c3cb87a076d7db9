"""Embedded replicas: point reads against raw APSW and PostgreSQL, and replication lag.

In one run, on this machine:

- a point read through an embedded replica's DB-API connection (`shoal.connect(path,
  replica_of=...)`), against raw APSW reading a copy of the same file and against
  PostgreSQL over loopback (psycopg, one prepared statement), one thread each; the
  replica and raw APSW alternate over several rounds and each reports its median,
  so a drift of the machine during the run weighs on both alike;
- replication lag: from a write's commit on a real `shoal serve` (its HTTP
  response) to the row being visible in the replica's process, idle (one write at
  a time) and under load (a writer thread committing as fast as it can);
- a write-through transaction (`commit()` returns once the local copy has it)
  against the same INSERT sent to the node over HTTP;
- the node's CPU while idle with 0, 10 and 50 replicas following it (its process's
  user + system time over the window, as a share of one core).

    python bench/replica.py                  # defaults: 2 s per measurement
    python bench/replica.py --seconds 5 --rows 100000
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import apsw
import httpx
import psycopg

import checkout  # noqa: F401  (first: this checkout's shoal, bench and tests on sys.path)

# isort: split

from bench.common import Step, ratio, table, threaded_rate
from tests.harness import Node, postgres_server, shoal_node

import shoal
from shoal.client.replica import Connection as Replica

SELECT = "SELECT v FROM t WHERE id = ?"


def load(url: str, rows: int) -> None:
    with contextlib.closing(shoal.connect(url)) as conn:
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        data = [(i, f"row {i}") for i in range(rows)]
        conn.executemany("INSERT INTO t(id, v) VALUES (?, ?)", data)
        conn.commit()


def one_thread(step: Step, seconds: float, close: Callable[[], None] = lambda: None) -> float:
    return threaded_rate(lambda _: (step, close), 1, seconds)


def reads_of(read: Callable[[int], object], rows: int) -> Step:
    """A step of 100 point reads at random keys, the same keys for every contender."""
    rng = random.Random(1)

    def step() -> int:
        for _ in range(100):
            read(rng.randrange(rows))
        return 100

    return step


def replica_reads(conn: Replica, rows: int, seconds: float) -> float:
    return one_thread(reads_of(lambda key: conn.execute(SELECT, (key,)).fetchone(), rows), seconds)


def apsw_reads(path: Path, rows: int, seconds: float) -> float:
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    step = reads_of(lambda key: db.execute(SELECT, (key,)).fetchall(), rows)
    return one_thread(step, seconds, db.close)


def postgres_reads(dsn: str, rows: int, seconds: float) -> float:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS t")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO t VALUES (%s, %s)", [(i, f"row {i}") for i in range(rows)]
            )
    pg = psycopg.connect(dsn, autocommit=True)
    query = "SELECT v FROM t WHERE id = %s"
    step = reads_of(lambda key: pg.execute(query, (key,), prepare=True).fetchone(), rows)
    return one_thread(step, seconds, pg.close)


def lags(node_url: str, conn: Replica, count: int, loaded: bool) -> list[float]:
    """Milliseconds from each write's HTTP response to its version being in the copy."""
    stop = threading.Event()

    def load_writes() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                insert(client, node_url, "load")

    loader = threading.Thread(target=load_writes) if loaded else None
    if loader is not None:
        loader.start()
    found = []
    try:
        with httpx.Client() as client:
            for _ in range(count):
                version = insert(client, node_url, "probe")
                committed = time.perf_counter()
                conn.wait_for(version, timeout=10)
                found.append((time.perf_counter() - committed) * 1000)
                time.sleep(0.005)
    finally:
        stop.set()
        if loader is not None:
            loader.join()
    return found


def write_rates(node_url: str, conn: Replica, seconds: float) -> tuple[float, float]:
    def through() -> int:
        conn.execute("INSERT INTO t(v) VALUES ('through')")
        conn.commit()
        return 1

    with httpx.Client() as client:

        def over_http() -> int:
            insert(client, node_url, "http")
            return 1

        return one_thread(through, seconds), one_thread(over_http, seconds)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(node: Node, folder: Path, followers: int, seconds: float) -> float:
    """The node's share of one core while `followers` replicas follow it, idle."""
    replicas = []
    seed = folder / "replica-seed.db"  # a snapshot of the synced replica: no downloads
    try:
        for n in range(followers):
            path = folder / f"follower-{followers}-{n}.db"
            shutil.copy(seed, path)
            replicas.append(shoal.connect(path, replica_of=f"{node.url}/default"))
        time.sleep(1.0)  # every stream open and past its first heartbeat
        assert node.process is not None
        before, started = cpu_seconds(node.process.pid), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(node.process.pid) - before) / (time.monotonic() - started)
    finally:
        for replica in replicas:
            replica.close()


def insert(client: httpx.Client, node_url: str, value: str) -> int:
    """One INSERT over the node's HTTP API; its version."""
    body = {"sql": "INSERT INTO t(v) VALUES (?)", "params": [value]}
    answer = client.post(f"{node_url}/v1/databases/default/execute", json=body)
    return int(answer.json()["version"])


def percentile(values: Sequence[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (2)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows to read among (10000)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of local reads (3)"
    )
    parser.add_argument("--probes", type=int, default=200, help="writes timed for lag (200)")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="node CPU window per count (10)"
    )
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix="shoal-bench-replica-"))
    try:
        with contextlib.ExitStack() as stack:
            node = stack.enter_context(shoal_node(folder / "node"))
            load(f"{node.url}/default", args.rows)
            conn = shoal.connect(folder / "replica.db", replica_of=f"{node.url}/default")
            assert isinstance(conn, Replica)
            stack.callback(conn.close)
            conn.sync()
            copy = folder / "copy.db"
            conn.database.snapshot(copy)
            rounds: dict[str, list[float]] = {"replica": [], "raw": []}
            for _ in range(args.rounds):
                rounds["replica"].append(replica_reads(conn, args.rows, args.seconds))
                rounds["raw"].append(apsw_reads(copy, args.rows, args.seconds))
            reads = {
                "replica (shoal.connect)": statistics.median(rounds["replica"]),
                "raw APSW, same file": statistics.median(rounds["raw"]),
                "PostgreSQL (loopback)": postgres_reads(
                    stack.enter_context(postgres_server(folder)).dsn, args.rows, args.seconds
                ),
            }
            idle = lags(node.url, conn, args.probes, loaded=False)
            busy = lags(node.url, conn, args.probes, loaded=True)
            through, http = write_rates(node.url, conn, args.seconds)
            conn.sync()
            conn.database.snapshot(folder / "replica-seed.db")
            cpu = {n: idle_cpu(node, folder, n, args.idle_seconds) for n in (0, 10, 50)}
        raw, pg = reads["raw APSW, same file"], reads["PostgreSQL (loopback)"]
        print(
            f"embedded replica benchmark: {args.seconds:g} s per measurement, {args.rows} rows,"
            f" local reads the median of {args.rounds} alternating rounds"
        )
        print()
        rows = [[name, rate, ratio(rate, raw), ratio(rate, pg)] for name, rate in reads.items()]
        print(
            "\n".join(table(["point read, one thread", "reads/s", "vs raw", "vs PostgreSQL"], rows))
        )
        print()
        lag_rows = [
            [name, f"{statistics.median(values):.2f}", f"{percentile(values, 0.99):.2f}"]
            for name, values in (("idle", idle), ("under load", busy))
        ]
        print(
            "\n".join(
                table(["lag: commit to visible in the replica", "p50 ms", "p99 ms"], lag_rows)
            )
        )
        print()
        write_rows = [
            ["write-through transaction (replica)", through, ratio(through, http)],
            ["one INSERT over HTTP", http, "1.00x"],
        ]
        print("\n".join(table(["write, one thread", "commits/s", "vs HTTP"], write_rows)))
        print()
        cpu_rows = [[f"{n} replicas", f"{share:.1%}"] for n, share in cpu.items()]
        print("\n".join(table(["node idle, replicas following", "CPU, one core"], cpu_rows)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
