"""Benchmark: a three-node shoal cluster on a PostgreSQL control plane, in one run beside
one `shoal serve` on its own, raw SQLite through APSW and PostgreSQL itself.

1. `sync` write throughput: one-row INSERT transactions/s to one database at 1 and 8
   clients and across 16 databases, sent by `wrk` straight to each database's leader;
   the same work on one node with no control plane, on raw APSW in this process (WAL,
   synchronous=NORMAL) and on PostgreSQL through psycopg (the control plane's server).
2. Replication lag: a prober writes a marker row to the leader, notes when it was
   acknowledged and at which version, and polls both followers (`level: none` reads of
   their own copies) until their `Shoal-Version` reaches it; idle and under `wrk` load.
3. Write unavailability over `--kills` leader kills: a writer writes without pause through
   a node that is not killed, retrying retryable and connection errors; the leader gets
   SIGKILL; the gap is from the last acknowledged write before the kill to the first
   after it. The killed node is restarted and caught up before the next kill. Beside
   it, one node on its own killed and restarted at once. At the end, the acknowledged
   writes missing from the database are counted (and printed as LOST), and the three
   copies must have the same checksum.

Beside the figures: the CPU each process used, idle and during each throughput figure
(from /proc), what PostgreSQL's backends waited on during the cluster's figures (from
pg_stat_activity), and the ERROR and WARNING lines of the nodes' logs. A load generator's
error, a write that does not come back after a kill, a node that does not rejoin or copies
that differ stop the run with `benchmark failed: ...` and exit status 1. bench/README.md
says more.

    python bench/cluster.py              # about 4-5 minutes on 2 cores
    python bench/cluster.py --quick      # under 2 minutes
    python bench/cluster.py --kills 5 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import httpx
import psycopg
from psycopg import sql

import checkout  # first: this checkout's shoal, bench and tests on sys.path

# isort: split

from bench.common import (
    WRK_COUNTING,
    BenchError,
    CpuMeter,
    Step,
    children,
    failed,
    postgres_facts,
    progress_line,
    ratio,
    table,
    threaded_rate,
    wrk_rate,
)
from tests.harness import (
    Ack,
    Cluster,
    Node,
    Writer,
    create_postgres_database,
    postgres_server,
    shoal_cluster,
    shoal_node,
)

import shoal

NODE_IDS = ("n1", "n2", "n3")
BENCH = "bench"  # the database of the one-database figures, the lag and the kills
SPREAD = "spread"  # spread00, spread01, ...: the many-database figures
BODY = "log entry written by bench/cluster.py: 50 bytes!"  # every write's value
SQLITE_LOG = "CREATE TABLE log(id INTEGER PRIMARY KEY, body TEXT)"
SQLITE_WRITE = "INSERT INTO log(body) VALUES (?)"
PROBES = "CREATE TABLE probes(id INTEGER PRIMARY KEY, at REAL)"  # the lag prober's markers
PROBE = "INSERT INTO probes(at) VALUES (?)"
ACKS = "CREATE TABLE acks(id INTEGER PRIMARY KEY)"  # the kill writer's rows
ACK = "INSERT INTO acks(id) VALUES (?)"
PG_LOG = sql.SQL("CREATE TABLE {}(id bigserial PRIMARY KEY, body text)")
PG_WRITE = sql.SQL("INSERT INTO {}(body) VALUES (%s)")
CLUSTER, SINGLE, RAW, PG = "cluster", "single node", "APSW", "PostgreSQL"
CONTENDERS = (CLUSTER, SINGLE, RAW, PG)
BATCH = 16  # in-process writes between clock reads
PROBE_PAUSE = 0.02  # seconds between one probe's end and the next marker write
POLL_PAUSE = 0.002  # seconds between two polls of a follower within a probe
PROBE_TIMEOUT = 10.0  # a marker not visible on a follower after this long counts as missed
WRITER_TIMEOUT = 15.0  # the kill writer's HTTP timeout
RETRY_PAUSE = 0.01  # seconds the kill writer waits after an error before its next write
RESUME_TIMEOUT = 60.0  # writes not back this long after a kill: the run fails
REJOIN_TIMEOUT = 60.0  # a restarted node not back and caught up this long: the run fails
SAMPLE_SECONDS = 0.1  # between two looks at PostgreSQL's backends
LOG_LINE = re.compile(r"^\S+ \S+ (ERROR|WARNING|CRITICAL) (.*)$")


@dataclass(frozen=True)
class Workload:
    """`clients` concurrent writers spread over `databases` databases."""

    databases: int
    clients: int

    @property
    def names(self) -> list[str]:
        if self.databases == 1:
            return [BENCH]
        return [f"{SPREAD}{i:02d}" for i in range(self.databases)]

    @property
    def key(self) -> str:
        return f"{self.databases}x{self.clients}"


# -- shoal over HTTP, driven by wrk ------------------------------------------------

WRK_SCRIPT = (
    """\
-- Generated by bench/cluster.py: one-row INSERTs, round robin over the databases,
-- counting every non-2xx status.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local paths = {{{paths}}}
local body = '{{"sql": "{write}", "params": ["{body}"]}}'
local at = 0

function init(args)
  at = id
end

function request()
  at = at + 1
  return wrk.format(nil, paths[(at % #paths) + 1], nil, body)
end
"""
    + WRK_COUNTING
)


def wrk_script(folder: Path, names: Sequence[str]) -> Path:
    paths = ", ".join(f'"/v1/databases/{name}/execute"' for name in names)
    script = WRK_SCRIPT.format(paths=paths, write=SQLITE_WRITE, body=BODY)
    path = folder / f"wrk-{len(list(folder.glob('wrk-*.lua')))}.lua"
    path.write_text(script)
    return path


def split(clients: int, sizes: Sequence[int]) -> list[int]:
    """`clients` connections over groups of `sizes` databases, in proportion, at least one
    each (largest remainders first)."""
    total = sum(sizes)
    shares = [clients * size / total for size in sizes]
    counts = [max(1, math.floor(share)) for share in shares]
    by_remainder = sorted(range(len(sizes)), key=lambda i: counts[i] - shares[i])
    while sum(counts) < clients:
        counts[by_remainder.pop(0)] += 1
    return counts


class Wrk:
    """`wrk` against shoal: one process per node that leads some of the databases, each
    with its share of the connections, all at once; their rates summed."""

    def __init__(self, folder: Path, leaders: Callable[[list[str]], dict[str, list[str]]]):
        self.folder = folder
        self.leaders = leaders  # database names -> {url of their leader: its names}

    def start(self, workload: Workload, seconds: float) -> list[subprocess.Popen[str]]:
        groups = self.leaders(workload.names)
        if workload.clients < len(groups):
            raise BenchError(f"{workload.clients} clients cannot cover {len(groups)} leaders")
        counts = split(workload.clients, [len(names) for names in groups.values()])
        processes = []
        for (url, names), connections in zip(groups.items(), counts, strict=True):
            threads = min(connections, 2 if len(groups) == 1 else 1)
            command = [
                *("wrk", "-c", str(connections), "-t", str(threads)),
                *("-d", f"{max(1, round(seconds))}s", "--timeout", "30s"),
                *("-s", str(wrk_script(self.folder, names)), url),
            ]
            processes.append(
                subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        return processes

    @staticmethod
    def finish(processes: list[subprocess.Popen[str]]) -> float:
        rates = []
        for process in processes:
            stdout, stderr = process.communicate()
            rates.append(wrk_rate(stdout, stderr, process.returncode))
        return sum(rates)

    def rate(self, workload: Workload, seconds: float) -> float:
        return self.finish(self.start(workload, seconds))


# -- in-process baselines: raw APSW and psycopg ------------------------------------


class RawSQLite:
    """Raw APSW in this process: a file per database, a connection per thread, WAL,
    synchronous=NORMAL, BEGIN IMMEDIATE / INSERT / COMMIT."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir()

    def connect(self, name: str) -> apsw.Connection:
        conn = apsw.Connection(str(self.folder / f"{name}.db"))
        conn.set_busy_timeout(5000)
        conn.execute("PRAGMA journal_mode = WAL").fetchall()
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(SQLITE_LOG.replace("TABLE", "TABLE IF NOT EXISTS"))
        return conn

    def rate(self, workload: Workload, seconds: float) -> float:
        names = workload.names
        for name in names:  # the schema, before the threads race to create it
            self.connect(name).close()

        def make(index: int) -> tuple[Step, Callable[[], None]]:
            conn = self.connect(names[index % len(names)])

            def step() -> int:
                for _ in range(BATCH):
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute(SQLITE_WRITE, (BODY,))
                    conn.execute("COMMIT")
                return BATCH

            return step, conn.close

        return threaded_rate(make, workload.clients, seconds)


class Postgres:
    """PostgreSQL through psycopg: a table per database, a connection per thread,
    autocommit, so each INSERT is its own transaction (prepared after 5 uses)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.tables: set[str] = set()

    def rate(self, workload: Workload, seconds: float) -> float:
        tables = [f"log_{name}" for name in workload.names]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for table in set(tables) - self.tables:
                conn.execute(PG_LOG.format(sql.Identifier(table)))
                self.tables.add(table)

        def make(index: int) -> tuple[Step, Callable[[], None]]:
            conn = psycopg.connect(self.dsn, autocommit=True)
            insert = PG_WRITE.format(sql.Identifier(tables[index % len(tables)]))
            params = (BODY,)

            def step() -> int:
                for _ in range(BATCH):
                    conn.execute(insert, params)
                return BATCH

            return step, conn.close

        return threaded_rate(make, workload.clients, seconds)


# -- shoal over HTTP: setup, lookups ------------------------------------------------


def post(client: httpx.Client, path: str, body: dict[str, Any], expect: int = 200) -> Any:
    response = client.post(path, json=body)
    if response.status_code != expect:
        raise BenchError(f"POST {path}: {response.status_code} {response.text}")
    return response.json()


def create(url: str, names: Sequence[str], *schemas: str) -> None:
    """Creates `sync` databases through `url` and their tables (forwarded to leaders)."""
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for name in names:
            post(client, "/v1/databases", {"name": name, "durability": "sync"}, expect=201)
            for sql in (SQLITE_LOG, *schemas):
                post(client, f"/v1/databases/{name}/execute", {"sql": sql})


def drop(url: str, names: Sequence[str]) -> None:
    with httpx.Client(base_url=url, timeout=60.0) as client:
        for name in names:
            response = client.delete(f"/v1/databases/{name}")
            if response.status_code != 200:
                raise BenchError(f"DELETE {name}: {response.status_code} {response.text}")


def leader_urls(cluster: Cluster, names: list[str]) -> dict[str, list[str]]:
    """Database names by the URL of their leader."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(cluster[cluster.leader(name)].url, []).append(name)
    return groups


def log_summary(cluster: Cluster) -> dict[str, Any]:
    """Per node: its ERROR and WARNING lines, counted by message (numbers blanked)."""
    summary: dict[str, Any] = {}
    for node_id, node in cluster.nodes.items():
        seen: Counter[str] = Counter()
        tracebacks = 0
        for line in node.log().splitlines():
            if line.startswith("Traceback"):
                tracebacks += 1
            found = LOG_LINE.match(line)
            if found:
                message = re.sub(r"\d+", "N", found.group(2))[:160]
                seen[f"{found.group(1)} {message}"] += 1
        summary[node_id] = {"lines": dict(seen.most_common()), "tracebacks": tracebacks}
    return summary


# -- 2. replication lag --------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def probe(leader: str, followers: dict[str, str], seconds: float) -> dict[str, Any]:
    """Marker writes to `leader` for `seconds`, one at a time: each one's acknowledgement
    time (ms), then how long after it each follower's own copy showed its version (ms,
    measured when the poll that showed it came back: an upper bound, within a poll's
    round trip). A poll must be served by that follower itself (`Shoal-Node`)."""
    acks: list[float] = []
    lags: dict[str, list[float]] = {f: [] for f in followers}
    every: list[float] = []
    polls: list[float] = []
    missed: Counter[str] = Counter()
    clients = {f: httpx.Client(base_url=url, timeout=PROBE_TIMEOUT) for f, url in followers.items()}
    writer = httpx.Client(base_url=leader, timeout=PROBE_TIMEOUT)
    query = {"sql": "SELECT 1", "level": "none"}

    def watch(follower: str, version: int, acked: float) -> float | None:
        client = clients[follower]
        while True:
            sent = time.perf_counter()
            response = client.post(f"/v1/databases/{BENCH}/query", json=query)
            seen = time.perf_counter()
            polls.append((seen - sent) * 1000)
            if response.status_code != 200 or response.headers.get("shoal-node") != follower:
                raise BenchError(
                    f"a poll of {follower} was answered by {response.headers.get('shoal-node')}"
                    f": {response.status_code} {response.text[:300]}"
                )
            if int(response.headers["shoal-version"]) >= version:
                return (seen - acked) * 1000
            if seen - acked > PROBE_TIMEOUT:
                return None
            time.sleep(POLL_PAUSE)

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(followers))) as pool:
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                response = writer.post(
                    f"/v1/databases/{BENCH}/execute", json={"sql": PROBE, "params": [time.time()]}
                )
                acked = time.perf_counter()
                if response.status_code != 200:
                    raise BenchError(
                        f"a probe write failed: {response.status_code} {response.text}"
                    )
                acks.append((acked - sent) * 1000)
                version = int(response.json()["version"])
                futures = {f: pool.submit(watch, f, version, acked) for f in followers}
                got = {f: future.result() for f, future in futures.items()}
                for follower, lag in got.items():
                    if lag is None:
                        missed[follower] += 1
                    else:
                        lags[follower].append(lag)
                if got and None not in got.values():
                    every.append(max(lag for lag in got.values() if lag is not None))
                time.sleep(PROBE_PAUSE)
    finally:
        writer.close()
        for client in clients.values():
            client.close()
    return {
        "probes": len(acks),
        "ack_ms": acks,
        "lag_ms": lags,
        "all_followers_ms": every,
        "poll_ms": polls,
        "missed": dict(missed),
    }


def probe_under_load(
    wrk: Wrk, clients: int, leader: str, followers: dict[str, str], seconds: float
) -> dict[str, Any]:
    """`probe` while wrk writes to the leader with `clients` connections (from a second
    before the probes to about a second after)."""
    processes = wrk.start(Workload(1, clients), seconds + 2)
    try:
        time.sleep(1.0)
        result = probe(leader, followers, seconds)
    finally:
        load = Wrk.finish(processes)
    return {**result, "load_clients": clients, "load_rate": load}


# -- 3. write unavailability over kills ----------------------------------------------


def kill_writer(url: str) -> Writer:
    """One write at a time, without pause, through `url` (which may change between
    writes); retryable and connection errors retried after RETRY_PAUSE."""
    return Writer([url], BENCH, ACK, timeout=WRITER_TIMEOUT, backoff=RETRY_PAUSE)


def served_by(node: str) -> Callable[[Ack], bool]:
    return lambda ack: ack.node == node


def gap_around(
    writer: Writer, start: int, killed: str, killed_at: float, timeout: float
) -> tuple[float, float, Ack]:
    """Waits for the first write acknowledged after the kill (from index `start` on): the
    first served by another node than the one killed (`killed`), or sent after the kill
    (served by its new process). Its answer time can be read after the kill's even for a
    write the killed node answered, on a busy machine: hence not by time alone. Returns
    (seconds since the acknowledgement before it, seconds since the kill, that ack)."""
    first = writer.wait_for_ack(
        lambda ack: ack.node != killed or ack.sent > killed_at,
        start,
        timeout,
        "the first write after the kill",
    )
    index = writer.acks.index(first)
    if index == 0:
        raise BenchError("no write was acknowledged before the kill")
    return first.at - writer.acks[index - 1].at, first.at - killed_at, first


def kill_leaders(cluster: Cluster, kills: int, say: Callable[[str], None]) -> dict[str, Any]:
    """`kills` rounds: pick the leader of BENCH, route the writer through another node,
    SIGKILL the leader, time the gap, restart it and wait until it is back and caught up.
    At the end, every copy must be at the leader's version with its checksum."""
    leader = cluster.leader(BENCH)
    entry = next(i for i in NODE_IDS if i != leader)
    rounds: list[dict[str, Any]] = []
    with kill_writer(cluster[entry].url) as writer:
        for number in range(1, kills + 1):
            leader = cluster.leader(BENCH)
            entry = next(
                i for i in NODE_IDS[NODE_IDS.index(leader) + 1 :] + NODE_IDS if i != leader
            )
            writer.urls = [cluster[entry].url]
            start = len(writer.acks)
            writer.wait_for_ack(
                served_by(leader), start, 30, f"a write through {entry} to {leader}"
            )
            writer.wait_for(20)
            errors_before = Counter(writer.errors)
            say(f"kill {number}/{kills}: kill -9 {leader}, writing through {entry}")
            killed_at = time.monotonic()
            cluster.kill(leader)
            try:
                gap, resumed, first = gap_around(writer, start, leader, killed_at, RESUME_TIMEOUT)
            except TimeoutError as exc:
                raise BenchError(f"{exc}; writer errors {dict(writer.errors)}") from None
            errors = Counter(writer.errors) - errors_before
            say(f"kill {number}/{kills}: restarting {leader}")
            restart_started = time.monotonic()
            cluster[leader].start(timeout=REJOIN_TIMEOUT)
            cluster.wait_members(REJOIN_TIMEOUT)
            cluster.wait_caught_up(leader, BENCH, writer.acks[-1].version, REJOIN_TIMEOUT)
            rounds.append(
                {
                    "killed": leader,
                    "through": entry,
                    "new_leader": first.node,
                    "gap_s": gap,
                    "kill_to_write_s": resumed,
                    "rejoin_s": time.monotonic() - restart_started,
                    "errors": dict(errors),
                }
            )
    version, _ = cluster.wait_converged(BENCH, copies=len(NODE_IDS), timeout=60)
    copies = cluster.copies(BENCH)
    return {
        "rounds": rounds,
        "version": version,
        "checksums": {i: checksum for i, (_, checksum) in copies.items()},
        "versions": {i: copy_version for i, (copy_version, _) in copies.items()},
        **check_writes(cluster[cluster.leader(BENCH)].url, writer),
    }


def check_writes(url: str, writer: Writer) -> dict[str, Any]:
    """The writer's rows against those of BENCH at `url`: acknowledged ones missing (lost),
    and ones there that were never acknowledged; and the writer's errors."""
    with httpx.Client(base_url=url, timeout=60) as client:
        found = post(client, f"/v1/databases/{BENCH}/query", {"sql": "SELECT id FROM acks"})
    present = {int(row[0]) for row in found["results"][0]["rows"]}
    acked = set(writer.acknowledged)
    return {
        "acked": len(acked),
        "attempts": writer.attempts,
        "lost": sorted(acked - present),
        "unacknowledged_but_applied": len(present - acked),
        "writer_errors": dict(writer.errors),
        "error_samples": writer.samples,
        "non_retryable": writer.failures[:10],
        "non_retryable_count": len(writer.failures),
    }


def kill_single(node: Node, kills: int, say: Callable[[str], None]) -> dict[str, Any]:
    """One node on its own: SIGKILL, then restart at once; the gap the writer sees."""
    rounds: list[dict[str, Any]] = []
    with kill_writer(node.url) as writer:
        for number in range(1, kills + 1):
            start = len(writer.acks)
            writer.wait_for(20)
            say(f"single node: kill {number}/{kills}")
            itself = writer.acks[-1].node
            killed_at = time.monotonic()
            node.kill()
            node.start(timeout=REJOIN_TIMEOUT)
            gap, resumed, _ = gap_around(writer, start, itself, killed_at, RESUME_TIMEOUT)
            rounds.append({"gap_s": gap, "kill_to_write_s": resumed})
    return {"rounds": rounds, **check_writes(node.url, writer)}


def pids_of(node: Node) -> Callable[[], list[int]]:
    """The node's process, as it is when asked (a restart makes a new one)."""
    return lambda: [node.process.pid] if node.process else []


class PgWaits:
    """Samples PostgreSQL's busy client backends every SAMPLE_SECONDS while running: what
    each waits on (wait_event_type:wait_event, or CPU) and its statement's first words;
    `stop()` gives the average number of backends in each (wait, state, statement)."""

    QUERY = """SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU'),
                      split_part(ltrim(query), ' ', 1) || ' ' || split_part(ltrim(query), ' ', 2)
               FROM pg_stat_activity
               WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
                 AND datname = current_database() AND state <> 'idle'"""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.counts: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-waits", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_SECONDS):
                for state, wait, statement in conn.execute(self.QUERY).fetchall():
                    where = "in transaction" if state.startswith("idle in") else state
                    self.counts[f"{wait} {where} ({statement.strip()})"] += 1
                self.samples += 1

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join(5)
        return {k: n / max(1, self.samples) for k, n in self.counts.most_common()}


# -- the run ---------------------------------------------------------------------------


def measure(
    contender: Callable[[Workload, float], float],
    workloads: Sequence[Workload],
    args: argparse.Namespace,
    name: str,
    say: Callable[[str], None],
    meter: CpuMeter | None = None,
    waits: dict[str, Any] | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Each workload's rate after a warmup; with `meter`, the CPU its processes used; with
    `waits` (holding a "dsn"), what PostgreSQL's backends waited on, into `waits`."""
    rates, cpu = {}, {}
    for workload in workloads:
        say(f"{name}: {workload.databases} database(s), {workload.clients} client(s)")
        contender(workload, args.warmup)
        before, started = meter.read() if meter else {}, time.perf_counter()
        sampler = PgWaits(waits["dsn"]) if waits else None
        rates[workload.key] = contender(workload, args.seconds)
        if meter is not None:
            cpu[workload.key] = meter.percent(before, time.perf_counter() - started)
        if sampler is not None and waits is not None:
            waits[workload.key] = sampler.stop()
    return rates, cpu


def workloads_of(args: argparse.Namespace) -> list[Workload]:
    return [Workload(1, c) for c in args.clients] + [
        Workload(args.databases, c) for c in args.spread_clients
    ]


def shoal_throughput(
    name: str,
    url: str,
    wrk: Wrk,
    meter: CpuMeter,
    args: argparse.Namespace,
    say: Callable[[str], None],
    waits: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one-database figures (only BENCH and `default` exist), then the many-database
    ones (after creating them; dropped again at the end), and the idle CPU of each state."""
    workloads, spread = workloads_of(args), Workload(args.databases, 1).names
    found: dict[str, Any] = {"idle_cpu": {}}
    say(f"{name}: idle CPU")
    found["idle_cpu"]["2"] = meter.idle(args.idle_seconds)
    one = [w for w in workloads if w.databases == 1]
    rates, cpu = measure(wrk.rate, one, args, name, say, meter, waits)
    say(f"{name}: creating {len(spread)} databases")
    create(url, spread)
    time.sleep(1.0)  # every copy opened
    found["idle_cpu"][str(2 + len(spread))] = meter.idle(args.idle_seconds)
    many = [w for w in workloads if w.databases > 1]
    more_rates, more_cpu = measure(wrk.rate, many, args, name, say, meter, waits)
    found["spread_leaders"] = {u: len(names) for u, names in wrk.leaders(spread).items()}
    drop(url, spread)
    return {**found, "rates": rates | more_rates, "cpu": cpu | more_cpu}


def run(args: argparse.Namespace, folder: Path, say: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {"throughput": {}, "cpu": {}}
    workloads = workloads_of(args)
    env = checkout.subprocess_env()
    throughput = results["throughput"]
    with ExitStack() as stack:
        say("starting PostgreSQL")
        server = stack.enter_context(postgres_server(folder))
        dsn = server.dsn
        results["postgres"] = postgres_facts(dsn)

        raw = RawSQLite(folder / "raw")
        throughput[RAW], _ = measure(raw.rate, workloads, args, RAW, say)
        # A database of its own for the PostgreSQL baseline, beside the control plane's.
        pg = Postgres(create_postgres_database(dsn, "bench"))
        throughput[PG], _ = measure(pg.rate, workloads, args, PG, say)

        say("starting one node on its own")
        (folder / "single").mkdir()
        with shoal_node(folder / "single" / "data", env=env) as node:
            create(node.url, [BENCH], PROBES, ACKS)
            wrk = Wrk(folder, lambda names: {node.url: names})
            meter = CpuMeter({SINGLE: pids_of(node)})
            found = shoal_throughput(SINGLE, node.url, wrk, meter, args, say)
            throughput[SINGLE], results["cpu"][SINGLE] = found.pop("rates"), found.pop("cpu")
            single: dict[str, Any] = {"idle_cpu": found["idle_cpu"]}
            say("single node: probes, idle")
            single["idle"] = probe(node.url, {}, args.idle_seconds)
            say(f"single node: probes under wrk x{args.load_clients}")
            single["load"] = probe_under_load(
                wrk, args.load_clients, node.url, {}, args.lag_seconds
            )
            single["kills"] = kill_single(node, args.single_kills, say)
            results["single"] = single

        say("starting the cluster")
        cluster = stack.enter_context(
            shoal_cluster(folder / "cluster", dsn, len(NODE_IDS), env=env)
        )
        try:
            found = run_cluster(cluster, dsn, server.postmaster_pid(), args, say)
        except (BenchError, TimeoutError, httpx.HTTPError) as exc:
            tails = "\n".join(
                f"--- {i} ({node.log_path}), last lines:\n"
                + "\n".join(node.log().splitlines()[-15:])
                for i, node in cluster.nodes.items()
            )
            raise BenchError(f"{type(exc).__name__}: {exc}\n{tails}") from exc
        throughput[CLUSTER], results["cpu"][CLUSTER] = found.pop("rates"), found.pop("cpu")
        results |= found
    return results


def run_cluster(
    cluster: Cluster,
    dsn: str,
    postmaster: int,
    args: argparse.Namespace,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The cluster's part of the run, once its nodes are up."""
    urls = {i: node.url for i, node in cluster.nodes.items()}
    url = urls[NODE_IDS[0]]
    create(url, [BENCH], PROBES, ACKS)
    groups = {i: pids_of(node) for i, node in cluster.nodes.items()}
    groups[PG] = lambda: [postmaster, *children(postmaster)]
    meter = CpuMeter(groups)
    wrk = Wrk(cluster.directory, lambda names: leader_urls(cluster, names))
    waits: dict[str, Any] = {"dsn": dsn}
    results = shoal_throughput(CLUSTER, url, wrk, meter, args, say, waits)
    del waits["dsn"]
    results["pg_waits"] = waits
    ids = {url: i for i, url in urls.items()}
    results["spread_leaders"] = {ids[u]: n for u, n in results["spread_leaders"].items()}
    leader = cluster.leader(BENCH)
    results["bench_leader"] = leader
    followers = {i: url for i, url in urls.items() if i != leader}
    cluster.wait_converged(BENCH, timeout=60)
    lag: dict[str, Any] = {"leader": leader}
    say("cluster: probes, idle")
    lag["idle"] = probe(urls[leader], followers, args.idle_seconds)
    say(f"cluster: probes under wrk x{args.load_clients}")
    lag["load"] = probe_under_load(
        wrk, args.load_clients, urls[leader], followers, args.lag_seconds
    )
    results["lag"] = lag
    results["kills"] = kill_leaders(cluster, args.kills, say)
    results["node_logs"] = log_summary(cluster)
    results["log_paths"] = {i: str(node.log_path) for i, node in cluster.nodes.items()}
    return results


# -- reporting ----------------------------------------------------------------------


def ms(values: Sequence[float], fraction: float) -> str:
    found = percentile(values, fraction)
    return "-" if found is None else f"{found:.1f}"


def seconds(values: Sequence[float], fraction: float) -> str:
    found = percentile(values, fraction)
    return "-" if found is None else f"{found:.2f}"


def throughput_lines(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    got = results["throughput"]
    rows = []
    for workload in workloads_of(args):
        figures = [got[name].get(workload.key) for name in CONTENDERS]
        c, s, r, p = figures
        rows.append(
            [
                str(workload.databases),
                str(workload.clients),
                *figures,
                ratio(c, s),
                ratio(c, r),
                ratio(c, p),
            ]
        )
    leaders = ", ".join(f"{n} {k}" for n, k in sorted(results["spread_leaders"].items()))
    head = ["databases", "clients", *CONTENDERS, "cluster/single", "cluster/APSW", "cluster/PG"]
    return [
        "1. one-row INSERT transactions/s (sync durability in the cluster)",
        *table(head, rows),
        f"shoal: wrk to each database's leader; APSW and PostgreSQL: that many threads in "
        f"this process. Leaders of the {args.databases} databases: {leaders}; of "
        f"{BENCH}: {results['bench_leader']}",
        "",
        *cpu_lines(results, args),
        "",
        *waits_lines(results, args),
    ]


def workload_label(workload: Workload) -> str:
    return (
        f"{workload.databases} database{'s' if workload.databases > 1 else ''}, "
        f"{workload.clients} client{'s' if workload.clients > 1 else ''}"
    )


def waits_lines(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The busiest states of PostgreSQL's backends during each cluster figure."""
    lines = [
        f"PostgreSQL (the control plane) during the cluster figures: busy backends on average, "
        f"by wait, state and statement, sampled every {SAMPLE_SECONDS * 1000:g} ms (Lock:object "
        "at COMMIT: the server-wide lock a transaction that ran NOTIFY holds through its commit)"
    ]
    for workload in workloads_of(args):
        found = results["pg_waits"].get(workload.key, {})
        top = [f"{k} {n:.2f}" for k, n in list(found.items())[:6] if n >= 0.05]
        lines.append(f"  {workload_label(workload)}: {', '.join(top) or '-'}")
    return lines


def cpu_lines(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """CPU of the single node, of each cluster node and of PostgreSQL, idle and per figure."""
    single, cluster = results["cpu"][SINGLE], results["cpu"][CLUSTER]
    idle_single, idle_cluster = results["single"]["idle_cpu"], results["idle_cpu"]
    head = ["", SINGLE, *NODE_IDS, PG, "cluster total"]
    rows = []

    def row(label: str, one: dict[str, float], many: dict[str, float]) -> list[Any]:
        cells = [one.get(SINGLE, "-"), *(many.get(n, "-") for n in (*NODE_IDS, PG))]
        return [label, *cells, sum(many.values())]

    for count in idle_cluster:
        rows.append(row(f"idle, {count} databases", idle_single[count], idle_cluster[count]))
    for workload in workloads_of(args):
        label = workload_label(workload)
        rows.append(row(label, single.get(workload.key, {}), cluster.get(workload.key, {})))
    return [
        f"CPU, % of one core ({os.cpu_count()} cores = {100 * (os.cpu_count() or 1)}%): idle for "
        f"{args.idle_seconds:g} s, and during each figure above (wrk and this process not "
        "counted)",
        *table(head, rows),
    ]


def lag_lines(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    single, lag = results["single"], results["lag"]
    followers = sorted(lag["idle"]["lag_ms"])
    rows, polls = [], []
    for label, found in (
        ("single node, idle", single["idle"]),
        (f"single node, wrk x{args.load_clients}", single["load"]),
        ("cluster, idle", lag["idle"]),
        (f"cluster, wrk x{args.load_clients}", lag["load"]),
    ):
        row = [label, found["probes"], ms(found["ack_ms"], 0.5), ms(found["ack_ms"], 0.99)]
        for follower in followers:
            each = found["lag_ms"].get(follower, [])
            row += [ms(each, 0.5), ms(each, 0.99)]
        row += [ms(found["all_followers_ms"], 0.5), ms(found["all_followers_ms"], 0.99)]
        row += [
            found.get("load_rate", "-"),
            sum(found["missed"].values()) if found["lag_ms"] else "-",
        ]
        rows.append(row)
        polls += found["poll_ms"]
    head = ["", "probes", "ack p50", "ack p99"]
    for follower in followers:
        head += [f"{follower} p50", f"{follower} p99"]
    head += ["all p50", "all p99", "load writes/s", "missed"]
    return [
        f"2. replication lag, ms: a marker write to the leader ({lag['leader']}) every "
        f"{PROBE_PAUSE * 1000:.0f} ms after the last was seen, {args.idle_seconds:g} s idle, "
        f"{args.lag_seconds:g} s under wrk",
        *table(head, rows),
        "ack = the marker write's round trip; nN = from its acknowledgement until a poll of nN's "
        "own copy (level none) came back at its version; all = until every follower had it.",
        f"Each figure is an upper bound within one poll (polls every {POLL_PAUSE * 1000:g} ms, "
        f"round trip p50 {ms(polls, 0.5)} ms, p99 {ms(polls, 0.99)} ms); missed = not seen in "
        f"{PROBE_TIMEOUT:g} s.",
    ]


def lost(found: dict[str, Any]) -> str:
    """How many acknowledged writes were missing at the end, loudly if any."""
    if not found["lost"]:
        return "0 lost"
    return f"{len(found['lost'])} LOST (ids {', '.join(map(str, found['lost'][:10]))})"


def kill_lines(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    kills, single = results["kills"], results["single"]["kills"]
    rows = []
    for label, rounds in (
        (f"cluster: leader kill -9 ({len(kills['rounds'])})", kills["rounds"]),
        (f"single node: kill -9, restart at once ({len(single['rounds'])})", single["rounds"]),
    ):
        gaps = [r["gap_s"] for r in rounds]
        resumed = [r["kill_to_write_s"] for r in rounds]
        rows.append(
            [
                label,
                seconds(gaps, 0.5),
                seconds(gaps, 0.99),
                seconds(gaps, 1.0),
                seconds(resumed, 0.5),
                seconds(resumed, 1.0),
            ]
        )
    new = Counter(f"{r['killed']}->{r['new_leader']}" for r in kills["rounds"])
    rejoin = [r["rejoin_s"] for r in kills["rounds"]]
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(kills["writer_errors"].items())) or "none"
    single_errors = (
        ", ".join(f"{k} {v:,}" for k, v in sorted(single["writer_errors"].items())) or "none"
    )
    same = len(set(kills["checksums"].values())) == 1
    lines = [
        "3. write unavailability, seconds: from the last acknowledged write before a kill to "
        "the first after it",
        *table(["", "gap p50", "gap p99", "gap max", "kill->write p50", "kill->write max"], rows),
        "percentiles are nearest-rank: with 100 kills or fewer, p99 is the max",
        f"cluster: writes through a node not killed, retried after {RETRY_PAUSE * 1000:g} ms; "
        f"leader handovers {', '.join(f'{k} {v}' for k, v in sorted(new.items()))}; "
        f"restart to caught up p50 {seconds(rejoin, 0.5)} s",
        f"cluster writer's errors: {errors}",
        *(f"  {kind}: {message[:200]}" for kind, message in sorted(kills["error_samples"].items())),
        f"single node writer's errors: {single_errors}",
        f"checked: cluster {kills['acked']:,} acknowledged writes of {kills['attempts']:,} "
        f"attempts, {lost(kills)}, {kills['unacknowledged_but_applied']} applied "
        f"without an acknowledgement; {len(kills['versions'])} copies at version "
        f"{kills['version']:,}, checksums {'equal' if same else 'DIFFER'}; single node "
        f"{single['acked']:,} acknowledged, {lost(single)}",
    ]
    for label, found in (("cluster", kills), ("single node", single)):
        if found["non_retryable_count"]:
            lines.append(f"{label}: {found['non_retryable_count']} non-retryable errors, first:")
            lines += [f"  {line[:300]}" for line in found["non_retryable"][:3]]
    return lines


def log_lines(results: dict[str, Any], args: argparse.Namespace) -> list[str]:
    lines = ["cluster node logs (ERROR/WARNING lines by message, numbers as N):"]
    for node_id, found in results["node_logs"].items():
        counted = found["lines"]
        where = f" ({results['log_paths'][node_id]})" if args.keep else ""
        lines.append(
            f"  {node_id}: {sum(counted.values())} lines, {found['tracebacks']} tracebacks{where}"
        )
        lines += [f"    {n:>5}  {message}" for message, n in list(counted.items())[:6]]
    return lines


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    env, pg = results["environment"], results["postgres"]
    lines = [
        f"shoal cluster benchmark, one run of {results['run_seconds']:.0f} s: "
        f"{args.seconds:g} s per throughput figure after {args.warmup:g} s of warmup",
        f"{env['cpus']} CPUs shared by everything (3 nodes, PostgreSQL, wrk, this process), "
        f"{env['platform']}, {env['python']}, shoal {env['shoal']}",
        "load average (1, 5, 15 min) before the run "
        f"{', '.join(f'{x:.2f}' for x in env['load_before'])}, after "
        f"{', '.join(f'{x:.2f}' for x in env['load_after'])}",
        f"SQLite {env['sqlite']}, PostgreSQL {pg.get('server_version', '?')}, "
        f"psycopg {psycopg.__version__}, {env['wrk']}",
        f"cluster: {len(NODE_IDS)} nodes, replication factor 3, lease 1 s, durability sync "
        "(each write's record committed in the control plane before the leader's COMMIT); "
        "control plane: the same PostgreSQL",
        f"durability: shoal and APSW WAL synchronous=NORMAL; PostgreSQL fsync={pg.get('fsync')}, "
        f"synchronous_commit={pg.get('synchronous_commit')}, "
        f"wal_sync_method={pg.get('wal_sync_method')}",
        "",
        *throughput_lines(results, args),
        "",
        *lag_lines(results, args),
        "",
        *kill_lines(results, args),
        "",
        *log_lines(results, args),
    ]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()
    return {
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "shoal": f"{shoal.__version__} ({Path(shoal.__file__).parent})",
        "sqlite": f"{apsw.sqlite_lib_version()} (APSW {apsw.apsw_version()})",
        "wrk": re.sub(r" \[epoll\].*", "", first[0]) if first else "wrk ?",
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="A three-node shoal cluster: sync write throughput, replication lag and "
        "write unavailability over leader kills, beside one node, APSW and PostgreSQL."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a short run: 2 s figures, 5 s of lag, 3 kills"
    )
    parser.add_argument("--seconds", type=float, help="per throughput figure (5)")
    parser.add_argument("--warmup", type=float, help="seconds before each (1)")
    parser.add_argument("--clients", default="1,8", help="clients of one database (1,8)")
    parser.add_argument("--databases", type=int, default=16, help="the many databases (16)")
    parser.add_argument("--spread-clients", default="16", help="clients across them (16)")
    parser.add_argument("--lag-seconds", type=float, help="of probes under load (20)")
    parser.add_argument("--idle-seconds", type=float, help="of probes without load (5)")
    parser.add_argument("--load-clients", type=int, default=8, help="wrk's, during lag (8)")
    parser.add_argument("--kills", type=int, help="leader kills (20)")
    parser.add_argument("--single-kills", type=int, help="kills of the single node (5)")
    parser.add_argument("--dir", type=Path, default=None, help="where the data directories go")
    parser.add_argument("--keep", action="store_true", help="keep the directory (and logs)")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    defaults = (
        {
            "seconds": 2.0,
            "warmup": 1.0,
            "lag_seconds": 5.0,
            "idle_seconds": 2.0,
            "kills": 3,
            "single_kills": 1,
        }
        if args.quick
        else {
            "seconds": 5.0,
            "warmup": 1.0,
            "lag_seconds": 20.0,
            "idle_seconds": 5.0,
            "kills": 20,
            "single_kills": 5,
        }
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    try:
        args.clients = [int(n) for n in args.clients.split(",") if n]
        args.spread_clients = [int(n) for n in args.spread_clients.split(",") if n]
    except ValueError:
        parser.error("--clients and --spread-clients take comma-separated numbers")
    if args.databases < 2 or min(args.spread_clients, default=len(NODE_IDS)) < len(NODE_IDS):
        parser.error(f"--databases must be 2 or more, --spread-clients {len(NODE_IDS)} or more")
    if args.seconds < 1 or args.warmup < 1 or args.kills < 1 or args.single_kills < 1:
        parser.error("--seconds and --warmup must be >= 1 (wrk counts whole seconds), kills >= 1")
    return args


@contextmanager
def workspace(args: argparse.Namespace) -> Iterator[Path]:
    if args.keep:
        yield Path(tempfile.mkdtemp(prefix="shoal-bench-cluster-", dir=args.dir))
        return
    with tempfile.TemporaryDirectory(prefix="shoal-bench-cluster-", dir=args.dir) as tmp:
        yield Path(tmp)


def main(argv: Sequence[str] | None = None) -> int:
    args, started = parse_args(argv), time.perf_counter()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    say = progress_line(args.json)

    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}}
    results["environment"] = environment()
    try:
        with workspace(args) as folder:
            results["directory"] = str(folder)
            results |= run(args, folder, say)
    except (BenchError, FileNotFoundError, TimeoutError) as error:
        return failed(error, say)
    say("")
    results["run_seconds"] = time.perf_counter() - started
    results["environment"]["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2, default=str) if args.json else report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
