"""Benchmark: a database per tenant on one `shoal serve` node, at 100, 1,000 and
10,000 databases.

At each size, on one node that grows from one size to the next:

- creating: databases created per second by one HTTP client, each with a table
  and 10 rows (a create request, then one execute);
- resident memory and open file descriptors of the node, and its CPU while idle
  (percent of one core over `--idle-seconds`);
- the first query to a database the node has closed (past `max_open_databases`),
  against a query to one it has open;
- `POST /v1/query-many` over every database, against the same work done by raw
  APSW in this process (open each file read-only, run the statement, close it),
  one after the other in the same run.

Then the first query to a database, on a node archiving to S3 (SeaweedFS) with
`evict_seconds` 5: to databases it had closed, and to databases it had evicted
from its disk and restores from the archive first; beside raw APSW opening the
file, querying it and closing it.

And a cluster of three nodes on one PostgreSQL (the control plane), idle, at
`--cluster-sizes` databases: each node's CPU, PostgreSQL's, and the control
plane's transactions per second (`pg_stat_database`; every control-plane
statement is a transaction of its own, so this counts statements).

Run from the repository root::

    python bench/tenants.py                      # 100, 1,000 and 10,000 databases
    python bench/tenants.py --sizes 100,1000 --cluster-sizes 10   # quicker
    python bench/tenants.py --json               # machine-readable results only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import apsw
import httpx
import psycopg

import checkout  # first: this checkout's shoal, bench and tests on sys.path

# isort: split

from bench.common import (
    BenchError,
    CpuMeter,
    children,
    environment,
    failed,
    progress_line,
    ratio,
    stat_fields,
    table,
)
from tests.harness import make_bucket, postgres_server, seaweedfs, shoal_cluster, shoal_node

STATEMENT = "SELECT count(*) AS orders, sum(amount) AS revenue FROM orders"
ROWS_EACH = 10
COLD_SAMPLES = 20
CLUSTER_STATEMENT = "SELECT count(*) FROM sqlite_schema"  # the cluster's databases are empty
CREATORS = 8  # creates in flight at once in the cluster: each waits for its leader


@dataclass
class Size:
    """The figures at one number of databases."""

    databases: int
    created_per_second: float
    rss_mib: float
    open_files: int
    idle_cpu_percent: float
    cold_query_ms: float
    warm_query_ms: float
    query_many_seconds: float
    query_many_errors: int
    raw_apsw_seconds: float


@dataclass
class FirstQuery:
    """The first query to a database, medians in ms: as raw APSW opens, queries and
    closes a file; on a node that closed it (on disk); on one that evicted it to the
    archive on S3 (SeaweedFS), which restores it first."""

    raw_apsw_ms: float
    closed_ms: float
    evicted_ms: float
    evicted_bytes: int  # one database's archive, as the restore downloads it


@dataclass
class ClusterSize:
    """A three-node cluster's idle cost at one number of databases."""

    databases: int
    node_cpu_percent: dict[str, float]
    postgres_cpu_percent: float
    control_plane_per_second: float
    node_rss_mib: dict[str, float]
    node_open_files: dict[str, int]
    query_many_seconds: float  # over every database, through n1


def name_of(index: int) -> str:
    return f"tenant-{index:05d}"


def create(client: httpx.Client, first: int, last: int, say: Any) -> float:
    """Creates databases first..last-1, each with orders; returns databases/s."""
    insert = "INSERT INTO orders(amount) VALUES (?)"
    rows = [{"sql": insert, "params": [i]} for i in range(ROWS_EACH)]
    body = {"statements": ["CREATE TABLE orders(id INTEGER PRIMARY KEY, amount)", *rows]}
    started = time.perf_counter()
    for index in range(first, last):
        name = name_of(index)
        if index % 100 == 0:
            say(f"creating databases: {index:,} of {last:,}")
        expect(client.post("/v1/databases", json={"name": name}), 201)
        expect(client.post(f"/v1/databases/{name}/execute", json=body), 200)
    return (last - first) / (time.perf_counter() - started)


def expect(response: httpx.Response, status: int) -> dict[str, Any]:
    if response.status_code != status:
        raise BenchError(f"{response.request.url}: {response.status_code} {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


def process_facts(pid: int) -> tuple[float, int, float]:
    """Resident MiB, open file descriptors, CPU seconds so far of process `pid`."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    files = len(os.listdir(f"/proc/{pid}/fd"))
    fields = stat_fields(pid)
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return rss_kib / 1024, files, cpu


def query_ms(client: httpx.Client, name: str) -> float:
    started = time.perf_counter()
    expect(client.post(f"/v1/databases/{name}/query", json={"sql": STATEMENT}), 200)
    return (time.perf_counter() - started) * 1000


def raw_apsw(files: Sequence[Path]) -> float:
    """Seconds for raw APSW to run the statement on every file, one after the other,
    each opened as shoal opens one it reads once (read-write, so that closing it
    removes the WAL files; a read-only connection would leave them)."""
    started = time.perf_counter()
    for path in files:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
        conn.execute(STATEMENT).fetchall()
        conn.close()
    return time.perf_counter() - started


def measure(args: argparse.Namespace, folder: Path, say: Any) -> list[Size]:
    sizes: list[Size] = []
    data = folder / "node"
    with shoal_node(data, "--archive", "off", env=checkout.subprocess_env()) as node:
        pid = node.process.pid
        client = httpx.Client(base_url=node.url, timeout=600)
        made = 0
        for size in args.sizes:
            created = create(client, made, size, say)
            made = size
            say(f"{size:,} databases: idle for {args.idle_seconds:g} s")
            time.sleep(1.0)
            _, _, before = process_facts(pid)
            time.sleep(args.idle_seconds)
            rss, open_fds, after = process_facts(pid)
            idle = (after - before) / args.idle_seconds * 100
            say(f"{size:,} databases: first queries")
            step = max(1, size // COLD_SAMPLES)
            cold = [query_ms(client, name_of(i)) for i in range(0, size, step)][:COLD_SAMPLES]
            warm = [query_ms(client, name_of(0)) for _ in range(COLD_SAMPLES)]
            say(f"{size:,} databases: query-many")
            started = time.perf_counter()
            many = expect(
                client.post(
                    "/v1/query-many",
                    json={"pattern": "tenant-*", "sql": STATEMENT, "timeout": 300},
                ),
                200,
            )
            many_seconds = time.perf_counter() - started
            if len(many["rows"]) + len(many["errors"]) != size:
                raise BenchError(f"query-many read {many['databases']} of {size} databases")
            say(f"{size:,} databases: raw APSW")
            files = [data / "databases" / f"{name_of(i)}.db" for i in range(size)]
            sizes.append(
                Size(
                    databases=size,
                    created_per_second=created,
                    rss_mib=rss,
                    open_files=open_fds,
                    idle_cpu_percent=idle,
                    cold_query_ms=statistics.median(cold),
                    warm_query_ms=statistics.median(warm),
                    query_many_seconds=many_seconds,
                    query_many_errors=len(many["errors"]),
                    raw_apsw_seconds=raw_apsw(files),
                )
            )
        client.close()
    return sizes


def measure_first_query(folder: Path, say: Any) -> FirstQuery:
    """Half of 2 x COLD_SAMPLES databases queried once closed, the other half once
    evicted (evict_seconds 5, so the first half is not evicted yet when it is read)."""
    names = [name_of(i) for i in range(2 * COLD_SAMPLES)]
    closed, evicted = names[:COLD_SAMPLES], names[COLD_SAMPLES:]
    with seaweedfs(folder / "s3") as s3:
        bucket = make_bucket(s3, "tenants")
        env = {**checkout.subprocess_env(), **s3.env()}
        flags = ["--evict-seconds", "5", "--idle-seconds", "0.5", "--archive-seconds", "0.2"]
        data = folder / "evicting"
        with shoal_node(data, "--archive", f"s3://{bucket}/tenants", *flags, env=env) as node:
            client = httpx.Client(base_url=node.url, timeout=120)
            say("first query: creating databases")
            create(client, 0, len(names), say)
            time.sleep(1.5)  # every one closed; none idle for 5 s yet
            say("first query: closed databases")
            closed_ms = [query_ms(client, name) for name in closed]
            raw_ms = [1000 * raw_apsw([data / "databases" / f"{name}.db"]) for name in closed]

            def all_evicted() -> bool:
                listed = expect(client.get("/v1/databases", params={"limit": 1000}), 200)
                found = {d["name"]: d.get("evicted") for d in listed["databases"]}
                return all(found.get(name) for name in evicted)

            say("first query: waiting for evictions")
            deadline = time.monotonic() + 120
            while not all_evicted():
                if time.monotonic() > deadline:
                    raise BenchError("the databases were not evicted within 120 s")
                time.sleep(0.5)
            say("first query: evicted databases")
            evicted_ms = [query_ms(client, name) for name in evicted]
            client.close()
        prefix = f"tenants/databases/{evicted[0]}/"
        listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        archived = sum(o["Size"] for o in listed.get("Contents", []))
    return FirstQuery(
        raw_apsw_ms=statistics.median(raw_ms),
        closed_ms=statistics.median(closed_ms),
        evicted_ms=statistics.median(evicted_ms),
        evicted_bytes=archived,
    )


def transactions(dsn: str) -> int:
    """PostgreSQL's committed and rolled-back transactions so far, in the control
    plane's database."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def measure_cluster(args: argparse.Namespace, folder: Path, say: Any) -> list[ClusterSize]:
    sizes: list[ClusterSize] = []
    with postgres_server(folder) as postgres:
        postmaster = postgres.postmaster_pid()
        env = checkout.subprocess_env()
        with shoal_cluster(folder / "cluster", postgres.dsn, 3, env=env) as cluster:
            client = httpx.Client(base_url=cluster["n1"].url, timeout=120)
            groups = {
                node_id: (lambda node=node: [node.process.pid])
                for node_id, node in cluster.nodes.items()
            }
            groups["PostgreSQL"] = lambda: [postmaster, *children(postmaster)]
            meter = CpuMeter(groups)
            made = 0
            for size in args.cluster_sizes:
                say(f"cluster: creating databases {made:,} to {size:,}, {CREATORS} at a time")
                with ThreadPoolExecutor(CREATORS) as pool:
                    created = pool.map(
                        lambda index: client.post("/v1/databases", json={"name": name_of(index)}),
                        range(made, size),
                    )
                    for response in created:
                        expect(response, 201)
                made = size
                say(f"cluster, {size:,} databases: idle for {args.idle_seconds:g} s")
                time.sleep(3.0)  # copies opened, leases taken
                before = transactions(postgres.dsn)
                cpu = meter.idle(args.idle_seconds)
                # Less the two transactions of our own reads of the counter.
                per_second = (transactions(postgres.dsn) - before - 2) / args.idle_seconds
                facts = {n: process_facts(node.process.pid) for n, node in cluster.nodes.items()}
                say(f"cluster, {size:,} databases: query-many")
                started = time.perf_counter()
                body = {"pattern": "tenant-*", "sql": CLUSTER_STATEMENT, "timeout": 300}
                many = expect(client.post("/v1/query-many", json=body), 200)
                many_seconds = time.perf_counter() - started
                if len(many["rows"]) != size or many["errors"]:
                    raise BenchError(f"cluster query-many: {many['errors'][:3]}")
                sizes.append(
                    ClusterSize(
                        databases=size,
                        node_cpu_percent={k: v for k, v in cpu.items() if k != "PostgreSQL"},
                        postgres_cpu_percent=cpu["PostgreSQL"],
                        control_plane_per_second=per_second,
                        node_rss_mib={n: rss for n, (rss, _, _) in facts.items()},
                        node_open_files={n: files for n, (_, files, _) in facts.items()},
                        query_many_seconds=many_seconds,
                    )
                )
            client.close()
    return sizes


def report(sizes: list[Size], env: dict[str, Any]) -> str:
    lines = [
        "shoal tenants benchmark: one shoal serve node, a database per tenant "
        f"(each {ROWS_EACH} rows), archive off",
        f"{env['cpus']} CPUs, {env['python']}, SQLite {env['sqlite']}, {env['platform']}",
        f"shoal {env['shoal']} from {env['shoal_path']}",
        "",
    ]
    head = [
        "databases",
        "created/s",
        "RSS MiB",
        "open fds",
        "idle CPU %",
        "cold query ms",
        "open query ms",
        "query-many s",
        "raw APSW s",
        "shoal/raw",
    ]
    rows = [
        [
            f"{s.databases:,}",
            f"{s.created_per_second:,.0f}",
            f"{s.rss_mib:,.0f}",
            f"{s.open_files:,}",
            f"{s.idle_cpu_percent:.2f}",
            f"{s.cold_query_ms:.2f}",
            f"{s.warm_query_ms:.2f}",
            f"{s.query_many_seconds:.2f}",
            f"{s.raw_apsw_seconds:.2f}",
            ratio(s.raw_apsw_seconds, s.query_many_seconds),
        ]
        for s in sizes
    ]
    lines += table(head, rows)
    lines += [
        "",
        "query-many: POST /v1/query-many over every database, one statement each; raw APSW:",
        "the same statement on every file in this process, one after the other (shoal/raw",
        "above 1 is faster than raw). cold: the first query to a database the node had",
        "closed (it keeps max_open_databases, 256, open); open: one it has open. Medians",
        f"of {COLD_SAMPLES}.",
    ]
    return "\n".join(lines)


def first_query_report(first: FirstQuery) -> str:
    head = ["the first query to a database", "ms (median)", "/ raw APSW"]
    rows = [
        ["raw APSW: open the file, query, close", f"{first.raw_apsw_ms:.2f}", "1.0"],
        [
            "shoal: closed, on disk",
            f"{first.closed_ms:.2f}",
            ratio(first.closed_ms, first.raw_apsw_ms),
        ],
        [
            "shoal: evicted, restored from S3",
            f"{first.evicted_ms:.2f}",
            ratio(first.evicted_ms, first.raw_apsw_ms),
        ],
    ]
    return "\n".join(
        [
            "",
            f"The first query to a database ({ROWS_EACH} rows; its archive {first.evicted_bytes:,}"
            " bytes on SeaweedFS's S3), over HTTP; medians of "
            f"{COLD_SAMPLES}:",
            *table(head, rows),
        ]
    )


def cluster_report(sizes: list[ClusterSize]) -> str:
    nodes = ("n1", "n2", "n3")
    head = [
        "databases",
        *(f"{n} CPU %" for n in nodes),
        "PostgreSQL CPU %",
        "CP txn/s",
        "RSS MiB (max)",
        "open fds (max)",
        "query-many s",
    ]
    rows = [
        [
            f"{s.databases:,}",
            *(f"{s.node_cpu_percent[n]:.1f}" for n in nodes),
            f"{s.postgres_cpu_percent:.1f}",
            f"{s.control_plane_per_second:,.0f}",
            f"{max(s.node_rss_mib.values()):,.0f}",
            f"{max(s.node_open_files.values()):,}",
            f"{s.query_many_seconds:.2f}",
        ]
        for s in sizes
    ]
    lines = [
        "",
        "A three-node cluster, idle (CPU in % of one core; CP txn/s: the control plane's",
        "transactions per second, each control-plane statement one of them; RSS and open",
        "file descriptors: the largest node's; query-many: one statement on every",
        "database, through n1, after the idle window):",
        *table(head, rows),
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="100,1000,10000",
        type=lambda text: sorted({int(n) for n in text.split(",")}),
        help="numbers of databases, ascending (100,1000,10000)",
    )
    parser.add_argument(
        "--cluster-sizes",
        default="10,100",
        type=lambda text: sorted({int(n) for n in text.split(",") if n}),
        help="databases in the three-node cluster, ascending (10,100; '' for none)",
    )
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU window (5)")
    parser.add_argument("--dir", type=Path, default=None, help="where the data directory goes")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    if not args.sizes or args.sizes[0] < 1 or args.idle_seconds <= 0:
        parser.error("--sizes must be positive numbers; --idle-seconds more than 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    say = progress_line(args.json)
    env = environment()
    with tempfile.TemporaryDirectory(prefix="shoal-bench-tenants-", dir=args.dir) as tmp:
        try:
            sizes = measure(args, Path(tmp), say)
            first = measure_first_query(Path(tmp), say)
            clustered = measure_cluster(args, Path(tmp), say) if args.cluster_sizes else []
        except BenchError as error:
            return failed(error, say)
    say("")
    if args.json:
        results = {
            "environment": env,
            "results": [asdict(s) for s in sizes],
            "first_query": asdict(first),
            "cluster": [asdict(s) for s in clustered],
        }
        print(json.dumps(results, indent=2))
    else:
        print(report(sizes, env))
        print(first_query_report(first))
        if clustered:
            print(cluster_report(clustered))
    return 0


if __name__ == "__main__":
    sys.exit(main())
