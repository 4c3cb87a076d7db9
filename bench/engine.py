"""Benchmark: shoal's engine and `shoal.connect` against raw APSW.

Measures two things and prints them as ratios to raw APSW in one run:

- writes: one-row write transactions per second (an INSERT of a ~50-byte value),
  through raw APSW (``BEGIN; INSERT; COMMIT``), the engine (``Database.execute``)
  and ``shoal.connect`` (``execute`` + ``commit`` per row); and the floor under
  both, raw APSW with a session and a log row per transaction (``session+log``);
- reads: point reads by primary key per second, fetching every column, through raw
  APSW (``execute(...).fetchall()``), the engine (``Database.query``) and
  ``shoal.connect`` (``execute(...).fetchone()``).

Every contender gets its own fresh file in a temporary directory, in WAL mode with
the same ``synchronous`` setting and the same schema. Each contender is warmed up,
then every repeat measures all contenders of an operation back to back (in a
rotated order) for ``--seconds`` each; the table shows the median of the repeats.

Run from the repository root::

    python bench/engine.py                 # 3 repeats x 2 s per measurement
    python bench/engine.py --seconds 1 --repeat 5 --synchronous full
    python bench/engine.py --json          # machine-readable results only
    python bench/engine.py --profile       # also cProfile the engine's paths

Aims (issue 16): one-row writes at least 0.4x raw, reads at least 0.8x raw; writes
from 8 threads at least 0.7x raw (an earlier issue's).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import apsw

import checkout  # noqa: F401  (first: this checkout's shoal, bench and tests on sys.path)

# isort: split

from bench.common import progress_line

import shoal
from shoal.engine import Database, Options

SCHEMA = "CREATE TABLE kv(id INTEGER PRIMARY KEY, k TEXT, v BLOB)"
INSERT = "INSERT INTO kv(k, v) VALUES (?, ?)"
LOAD = "INSERT INTO kv(id, k, v) VALUES (?, ?, ?)"
SELECT = "SELECT id, k, v FROM kv WHERE id = ?"
VALUE_BYTES = 50
BATCH = 64  # operations between clock reads; the same for every contender
SEED = 20240601
THREADS = 8
AIMS = {"write": 0.4, "read": 0.8, f"write x{THREADS}": 0.7}

WriteParams = tuple[str, bytes]


class Contender(Protocol):
    """One way of running the operations; set up on its own fresh file."""

    name: str

    def load(self, rows: Sequence[tuple[int, str, bytes]]) -> None:
        """Inserts `rows` (id, k, v) in one transaction."""

    def writes(self, batch: Sequence[WriteParams]) -> None:
        """Runs one single-row write transaction per element of `batch`."""

    def reads(self, ids: Sequence[int]) -> None:
        """Runs one point read (all columns) per id in `ids`."""

    def close(self) -> None: ...


class RawApsw:
    """The baseline: one APSW connection, WAL, same synchronous setting as shoal."""

    name = "raw APSW"

    def __init__(self, path: Path, synchronous: str, busy_timeout_ms: int) -> None:
        self.conn = apsw.Connection(str(path))
        self.conn.set_busy_timeout(busy_timeout_ms)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        self.conn.execute(SCHEMA)
        self.busy_timeout_ms = busy_timeout_ms
        self.extra: list[apsw.Connection] = []

    def load(self, rows: Sequence[tuple[int, str, bytes]]) -> None:
        with self.conn:
            self.conn.executemany(LOAD, rows)

    def writes(self, batch: Sequence[WriteParams]) -> None:
        write_each(self.conn, batch, "BEGIN")

    def reads(self, ids: Sequence[int]) -> None:
        execute = self.conn.execute
        for i in ids:
            execute(SELECT, (i,)).fetchall()

    def for_threads(self, count: int) -> list[Callable[[Sequence[WriteParams]], None]]:
        """One connection per thread, as raw SQLite users write concurrently."""
        steps = []
        for _ in range(count):
            conn = apsw.Connection(self.conn.filename)
            conn.set_busy_timeout(self.busy_timeout_ms)
            self.extra.append(conn)
            steps.append(lambda batch, conn=conn: write_each(conn, batch, "BEGIN IMMEDIATE"))
        return steps

    def close(self) -> None:
        for conn in self.extra:
            conn.close()
        self.conn.close()


def write_each(conn: apsw.Connection, batch: Sequence[WriteParams], begin: str) -> None:
    """One write transaction per element of `batch`, as a raw SQLite user writes."""
    execute = conn.execute
    for params in batch:
        execute(begin)
        execute(INSERT, params)
        execute("COMMIT")


class SessionAndLog(RawApsw):
    """The floor under any engine that captures writes with a session and logs them
    in the database's own file: raw APSW plus, per transaction, a session on the
    table, its changeset, and one log row. No shoal code runs: what it costs over
    raw APSW is SQLite's, and the engine can get no closer to raw than this."""

    name = "session+log"

    def __init__(self, path: Path, synchronous: str, busy_timeout_ms: int) -> None:
        super().__init__(path, synchronous, busy_timeout_ms)
        self.conn.execute("CREATE TABLE log(version INTEGER PRIMARY KEY, record BLOB NOT NULL)")
        self.version = 0

    def writes(self, batch: Sequence[WriteParams]) -> None:
        conn = self.conn
        execute = conn.execute
        for params in batch:
            execute("BEGIN")
            session = apsw.Session(conn, "main")
            session.config(apsw.SQLITE_SESSION_OBJCONFIG_ROWID, 1)
            session.attach("kv")
            execute(INSERT, params)
            record = session.changeset()
            session.close()
            self.version += 1
            execute("INSERT INTO log(version, record) VALUES (?, ?)", (self.version, record))
            execute("COMMIT")


class Engine:
    """`shoal.engine.Database`: execute() per write, query() per read."""

    name = "engine"

    def __init__(self, path: Path, synchronous: str, busy_timeout_ms: int) -> None:
        options = Options(synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
        self.db = Database(path, options=options)
        self.db.execute(SCHEMA)

    def load(self, rows: Sequence[tuple[int, str, bytes]]) -> None:
        with self.db.transaction() as tx:
            for row in rows:
                tx.execute(LOAD, row)

    def writes(self, batch: Sequence[WriteParams]) -> None:
        execute = self.db.execute
        for params in batch:
            execute(INSERT, params)

    def reads(self, ids: Sequence[int]) -> None:
        query = self.db.query
        for i in ids:
            query(SELECT, (i,))

    def for_threads(self, count: int) -> list[Callable[[Sequence[WriteParams]], None]]:
        """Every thread on the one Database: their writes are group-committed."""
        return [self.writes] * count

    def close(self) -> None:
        self.db.close()


class Connect:
    """`shoal.connect`: execute() + commit() per write, execute() + fetchone() per read."""

    name = "shoal.connect"

    def __init__(self, path: Path, synchronous: str, busy_timeout_ms: int) -> None:
        options = Options(synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)
        self.conn = shoal.connect(path, options=options)
        self.conn.execute(SCHEMA)
        self.conn.commit()

    def load(self, rows: Sequence[tuple[int, str, bytes]]) -> None:
        self.conn.executemany(LOAD, list(rows))
        self.conn.commit()

    def writes(self, batch: Sequence[WriteParams]) -> None:
        conn = self.conn
        for params in batch:
            conn.execute(INSERT, params)
            conn.commit()

    def reads(self, ids: Sequence[int]) -> None:
        execute = self.conn.execute
        for i in ids:
            execute(SELECT, (i,)).fetchone()

    def close(self) -> None:
        self.conn.close()


Factory = Callable[[Path, str, int], Any]
CONTENDERS: dict[str, tuple[Factory, ...]] = {
    "write": (RawApsw, SessionAndLog, Engine, Connect),
    "read": (RawApsw, Engine, Connect),
}


@dataclass
class Measurement:
    """All repeats of one (operation, contender) pair."""

    operation: str
    contender: str
    runs: list[float] = field(default_factory=list)  # ops/s, one per repeat
    ops: list[int] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """(max - min) / median of the repeats, as a fraction."""
        return (max(self.runs) - min(self.runs)) / self.median if self.median else 0.0


def timed(step: Callable[[Sequence[Any]], None], inputs: Sequence[Any], seconds: float) -> int:
    """Runs `step` over successive BATCH-sized slices of `inputs` for `seconds`; returns ops."""
    gc.collect()
    count = len(inputs)
    done = 0
    at = 0
    clock = time.perf_counter
    end = clock() + seconds
    while clock() < end:
        if at + BATCH > count:
            at = 0
        step(inputs[at : at + BATCH])
        at += BATCH
        done += BATCH
    return done


def timed_threads(
    steps: list[Callable[[Sequence[Any]], None]], inputs: Sequence[Any], seconds: float
) -> int:
    """Runs each step in its own thread for `seconds`, all at once; returns total ops."""
    counts = [0] * len(steps)
    start = threading.Barrier(len(steps))

    def work(index: int) -> None:
        start.wait()
        counts[index] = timed(steps[index], inputs, seconds)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(steps))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts)


def write_inputs(rng: random.Random) -> list[WriteParams]:
    value = rng.randbytes(VALUE_BYTES)
    return [(f"key-{i:08d}", value) for i in range(BATCH * 64)]


def read_rows(rng: random.Random, rows: int) -> list[tuple[int, str, bytes]]:
    return [(i, f"key-{i:08d}", rng.randbytes(VALUE_BYTES)) for i in range(1, rows + 1)]


def run_operation(
    operation: str,
    contenders: list[Any],
    inputs: Sequence[Any],
    args: argparse.Namespace,
    progress: Callable[[str], None],
    threads: int = 1,
) -> list[Measurement]:
    """Warms every contender up, then interleaves them within each repeat."""
    results = {c.name: Measurement(operation, c.name) for c in contenders}
    runs: dict[str, Callable[[float], int]] = {}
    for c in contenders:
        if threads == 1:
            runs[c.name] = functools.partial(timed, getattr(c, f"{operation}s"), inputs)
        else:
            runs[c.name] = functools.partial(timed_threads, c.for_threads(threads), inputs)
    for contender in contenders:
        progress(f"warming up {operation}: {contender.name}")
        runs[contender.name](args.warmup)
    for repeat in range(args.repeat):
        shift = repeat % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            progress(f"{operation} repeat {repeat + 1}/{args.repeat}: {contender.name}")
            start = time.perf_counter()
            done = runs[contender.name](args.seconds)
            elapsed = time.perf_counter() - start
            results[contender.name].runs.append(done / elapsed)
            results[contender.name].ops.append(done)
    return [results[c.name] for c in contenders]


def open_all(folder: Path, operation: str, args: argparse.Namespace) -> list[Contender]:
    contenders: list[Contender] = []
    for index, factory in enumerate(CONTENDERS[operation]):
        path = folder / f"{operation}-{index}.db"
        contenders.append(factory(path, args.synchronous, args.busy_timeout_ms))
    return contenders


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "sqlite": apsw.sqlite_lib_version(),
        "apsw": apsw.apsw_version(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "shoal": shoal.__version__,
        "shoal_path": str(Path(shoal.__file__).parent),
        "journal_mode": "wal",
        "synchronous": args.synchronous,
    }


def profile_engine(folder: Path, args: argparse.Namespace, inputs: list[WriteParams]) -> str:
    """cProfile of engine writes and shoal.connect reads, top functions by own time."""
    out = io.StringIO()
    rng = random.Random(SEED)
    engine = Engine(folder / "profile-write.db", args.synchronous, args.busy_timeout_ms)
    connect = Connect(folder / "profile-read.db", args.synchronous, args.busy_timeout_ms)
    try:
        connect.load(read_rows(rng, args.rows))
        ids = [rng.randint(1, args.rows) for _ in range(1 << 16)]
        for title, step, data in (
            ("engine.execute one-row writes", engine.writes, inputs),
            ("shoal.connect point reads", connect.reads, ids),
        ):
            timed(step, data, args.warmup)
            profiler = cProfile.Profile()
            profiler.enable()
            done = timed(step, data, args.seconds)
            profiler.disable()
            out.write(f"\n== cProfile: {title} ({done} ops; times include profiler overhead)\n")
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile_top)
    finally:
        engine.close()
        connect.close()
    return out.getvalue()


def raw_medians(measurements: list[Measurement]) -> dict[str, float]:
    """The baseline (raw APSW) median of each operation."""
    return {m.operation: m.median for m in measurements if m.contender == RawApsw.name}


def table(measurements: list[Measurement], env: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        f"shoal engine benchmark: {args.repeat} repeats x {args.seconds:g} s per measurement, "
        f"median of repeats shown; WAL, synchronous={args.synchronous.upper()}",
        f"SQLite {env['sqlite']}, APSW {env['apsw']}, {env['python']}, "
        f"{env['cpus']} CPUs, {env['platform']}",
        f"shoal {env['shoal']} from {env['shoal_path']}",
        "",
    ]
    header = (
        f"{'operation':<10} {'contender':<15} {'ops/s':>10} {'spread':>7} "
        f"{'vs raw':>7} {'aim':>7}  status"
    )
    lines += [header, "-" * len(header)]
    raws = raw_medians(measurements)
    for m in measurements:
        ratio = m.median / raws[m.operation]
        aim = AIMS[m.operation]
        if m.contender == RawApsw.name:
            aim_text, status = "", "baseline"
        elif m.contender == SessionAndLog.name:
            aim_text, status = "", "floor: session and log, no shoal code"
        else:
            aim_text, status = f">={aim:.2f}x", "met" if ratio >= aim else "below aim"
        lines.append(
            f"{m.operation:<10} {m.contender:<15} {m.median:>10,.0f} {m.spread:>6.0%} "
            f"{ratio:>6.2f}x {aim_text:>7}  {status}"
        )
    lines.append("")
    lines.append("spread = (max - min) / median over the repeats.")
    return "\n".join(lines)


def as_json(measurements: list[Measurement], env: dict[str, Any], args: argparse.Namespace) -> str:
    raws = raw_medians(measurements)
    results = []
    for m in measurements:
        ratio = m.median / raws[m.operation]
        baseline = m.contender in (RawApsw.name, SessionAndLog.name)
        entry = asdict(m)
        entry.update(
            ops_per_sec=m.median,
            best_ops_per_sec=max(m.runs),
            ratio_vs_raw=ratio,
            aim=None if baseline else AIMS[m.operation],
            met=None if baseline else ratio >= AIMS[m.operation],
        )
        results.append(entry)
    settings = {
        "seconds": args.seconds,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "rows": args.rows,
        "value_bytes": VALUE_BYTES,
        "statistic": "median",
    }
    return json.dumps({"environment": env, "settings": settings, "results": results}, indent=2)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="One-row write transactions and point reads per second: "
        "shoal's engine and shoal.connect against raw APSW."
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement (2)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the median is shown (3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds per contender (0.5)")
    parser.add_argument("--rows", type=int, default=10_000, help="rows pre-loaded for reads")
    parser.add_argument(
        "--synchronous", choices=("normal", "full"), default="normal", help="for every contender"
    )
    parser.add_argument("--busy-timeout-ms", type=int, default=5000, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    parser.add_argument("--json", action="store_true", help="print machine-readable results only")
    parser.add_argument("--profile", action="store_true", help="also print cProfile output")
    parser.add_argument("--profile-top", type=int, default=25, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.repeat < 1 or args.rows < 1 or args.warmup < 0:
        parser.error("--seconds and --rows must be positive, --repeat >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    progress = progress_line(args.json)

    env = environment(args)
    rng = random.Random(SEED)
    writes = write_inputs(rng)
    measurements: list[Measurement] = []
    profile = ""
    with tempfile.TemporaryDirectory(prefix="shoal-bench-", dir=args.dir) as tmp:
        folder = Path(tmp)
        contenders = open_all(folder, "write", args)
        try:
            measurements += run_operation("write", contenders, writes, args, progress)
        finally:
            for contender in contenders:
                contender.close()

        threaded = [
            RawApsw(folder / "threads-raw.db", args.synchronous, args.busy_timeout_ms),
            Engine(folder / "threads-engine.db", args.synchronous, args.busy_timeout_ms),
        ]
        try:
            operation = f"write x{THREADS}"
            measurements += run_operation(operation, threaded, writes, args, progress, THREADS)
        finally:
            for contender in threaded:
                contender.close()

        contenders = open_all(folder, "read", args)
        try:
            rows = read_rows(rng, args.rows)
            for contender in contenders:
                progress(f"loading {args.rows} rows: {contender.name}")
                contender.load(rows)
            ids = [rng.randint(1, args.rows) for _ in range(1 << 16)]
            measurements += run_operation("read", contenders, ids, args, progress)
        finally:
            for contender in contenders:
                contender.close()

        if args.profile:
            progress("profiling")
            profile = profile_engine(folder, args, writes)
    progress("")

    if args.json:
        print(as_json(measurements, env, args))
    else:
        print(table(measurements, env, args))
        if profile:
            print(profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
