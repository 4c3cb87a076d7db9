"""Crash consistency: SIGKILL a writing process at random moments, many times.

A worker process (crash_worker.py) writes transactions of varying shapes and
prints each version as soon as the write returns. The test kills it with SIGKILL
after a random short time, reopens the file and checks that:

- the file opens and passes PRAGMA integrity_check;
- no acknowledged transaction was lost (a killed process loses nothing in WAL
  mode, even with synchronous=NORMAL), and at most the one in flight was added;
- the data and the log agree exactly: the rows of ``t`` are 1..version (each
  committed transaction inserts the row numbered with its version), the log holds
  versions 1..version with no gaps, record v inserts row v, and records already
  seen before a crash are byte-for-byte unchanged after it;
- a follower fed the log reaches the same logical checksum.

The worker is then restarted on the same file, so the kills land on a growing
database, during checkpoints, large multi-page commits and recovery on open.
SHOAL_CRASH_CYCLES sets the number of kills (default 40); SHOAL_CRASH_SEED
replays the same random choices (the timing itself cannot be replayed).
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import pytest

from shoal.engine import Database, Role
from shoal.record import Changeset, Record, decode

WORKER = Path(__file__).with_name("crash_worker.py")
CYCLES = int(os.environ.get("SHOAL_CRASH_CYCLES", "40"))
READY_TIMEOUT = 60.0
BIG_SLOTS = 4
BIG_SIZE = 100 * 1024


def big_payload(n: int) -> bytes:
    """The value crash_worker.py writes into ``big`` for transaction n."""
    block = hashlib.sha256(str(n).encode()).digest()
    return (block * (BIG_SIZE // len(block) + 1))[:BIG_SIZE]


@dataclass
class Run:
    """What one worker process printed before it was killed."""

    started_at: int | None = None  # the version it found on open
    acknowledged: list[int] = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""

    def last_acknowledged(self, previous: int) -> int:
        return self.acknowledged[-1] if self.acknowledged else previous


class Output:
    """Reads the worker's stdout lines without blocking past a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self._fd = proc.stdout.fileno()
        self._pending = b""
        self.lines: list[str] = []
        self.eof = False

    def pump(self, until: float) -> None:
        """Collects output until `until` (time.monotonic) or end of file."""
        while not self.eof:
            left = until - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                self._read()

    def pump_until_line(self, until: float) -> bool:
        """Collects output until at least one line arrived; False on timeout or EOF."""
        while not self.lines and not self.eof:
            left = until - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self._fd], [], [], left)
            if ready:
                self._read()
        return bool(self.lines)

    def drain(self) -> None:
        """Reads to end of file (the process has exited)."""
        while not self.eof:
            self._read()

    def _read(self) -> None:
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self.eof = True
            self._pending = b""  # a line cut short by the kill was not acknowledged
            return
        data = self._pending + chunk
        *complete, self._pending = data.split(b"\n")
        self.lines.extend(line.decode() for line in complete)


def run_worker(path: Path, synchronous: str, seed: int, rng: random.Random, stderr: Path) -> Run:
    """Starts the worker, lets it write for a random while, kills it, and reports."""
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(path), synchronous, str(seed)],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        out = Output(proc)
        if rng.random() < 0.1:
            # Kill at a random moment from the start: during interpreter start-up,
            # opening (recovering) the database, or the first writes.
            out.pump(time.monotonic() + rng.uniform(0.0, 0.4))
        else:
            got_line = out.pump_until_line(time.monotonic() + READY_TIMEOUT)
            assert got_line, f"worker printed nothing: {stderr.read_text()!r}"
            out.pump(time.monotonic() + rng.uniform(0.02, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=READY_TIMEOUT)
        out.drain()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    result = Run(returncode=proc.returncode, stderr=stderr.read_text())
    for line in out.lines:
        if line.startswith("ready "):
            result.started_at = int(line.split()[1])
        else:
            result.acknowledged.append(int(line))
    return result


def inserted_rows(record: Record) -> list[int]:
    """The keys of the rows that `record` inserts into table t."""
    keys: list[int] = []
    for op in record.ops:
        if isinstance(op, Changeset):
            for change in apsw.Changeset.iter(op.data):
                if change.name == "t" and change.op == "INSERT":
                    assert change.new is not None
                    key = change.new[0]
                    assert isinstance(key, int), f"row key {key!r} in t is not an integer"
                    keys.append(key)
    return keys


class Checker:
    """Checks each reopened copy against the log and against what was seen before."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: list[bytes] = []  # digest of record v at index v - 1
        self.follower: Database | None = None

    def check(self, db: Database, acknowledged: int, where: str) -> None:
        integrity = db.query("PRAGMA integrity_check").results[0].rows
        assert integrity == [("ok",)], f"{where}: integrity_check says {integrity}"

        version = db.version
        assert acknowledged <= version <= acknowledged + 1, (
            f"{where}: version {version} after {acknowledged} acknowledged"
            " (lost an acknowledged write, or gained more than the one in flight)"
        )
        self._check_data(db, version, where)
        self._check_log(db, version, where)

    def _check_data(self, db: Database, version: int, where: str) -> None:
        listed = db.query(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_%' "
            "ESCAPE '\\' AND name <> 'sqlite_sequence'"
        )
        tables = {str(name) for (name,) in listed.results[0].rows}
        if version == 0:
            assert not tables, f"{where}: version 0 but tables {tables} exist"
            return
        assert tables == {"t", "counter", "big", "notes"}, f"{where}: tables are {tables}"
        count, low, high = db.query("SELECT count(*), min(n), max(n) FROM t").results[0].rows[0]
        assert (count, low, high) == (version, 1, version), (
            f"{where}: t holds {count} rows numbered {low}..{high}, version is {version}"
        )
        hits, last = db.query("SELECT hits, last FROM counter WHERE id = 1").results[0].rows[0]
        assert hits == version, f"{where}: trigger counted {hits} inserts, version is {version}"
        assert 0 <= last <= version, f"{where}: counter.last {last} beyond version {version}"
        for slot, n, payload in db.query("SELECT slot, n, payload FROM big").results[0].rows:
            assert n <= version and n % BIG_SLOTS == slot, f"{where}: big slot {slot} has n={n}"
            assert payload == big_payload(n), f"{where}: big slot {slot} payload is damaged"
        beyond = db.query("SELECT count(*) FROM notes WHERE n > ?", (version,)).results[0].rows
        assert beyond == [(0,)], f"{where}: notes from transactions beyond version {version}"

    def _check_log(self, db: Database, version: int, where: str) -> None:
        raws = db.log_range(1)
        assert len(raws) == version, f"{where}: log holds {len(raws)} records, version is {version}"
        if version:
            newest = [r.version for r in db.records(version)]
            assert newest == [version], (
                f"{where}: newest log record is {newest}, version is {version}"
            )
        # Every record seen after an earlier reopen was durable then; it must stay as it was.
        assert len(self.seen) <= version, (
            f"{where}: the log lost records {version + 1}..{len(self.seen)}"
        )
        for v, digest in enumerate(self.seen, start=1):
            assert hashlib.sha256(raws[v - 1]).digest() == digest, (
                f"{where}: record {v} changed after a crash"
            )
        for v in range(len(self.seen) + 1, version + 1):
            raw = raws[v - 1]
            record = decode(raw)
            assert record.version == v, f"{where}: log row {v} holds record {record.version}"
            assert record.database == db.name, f"{where}: record {v} is for {record.database!r}"
            inserted = inserted_rows(record)
            assert inserted == [v], f"{where}: record {v} inserts {inserted} into t, not [{v}]"
            self.seen.append(hashlib.sha256(raw).digest())
        if version == 0:
            return
        if self.follower is None:
            self.follower = self._fresh_follower(db.name, "follower.db")
        for raw in raws[self.follower.version :]:
            self.follower.apply(raw)
        assert self.follower.version == version, f"{where}: follower at {self.follower.version}"
        assert self.follower.checksum() == db.checksum(), (
            f"{where}: a follower replaying the log differs from the database at {version}"
        )

    def _fresh_follower(self, name: str, filename: str) -> Database:
        path = self.directory / filename
        assert not path.exists(), f"{path} already exists"
        return Database(path, name=name, role=Role.FOLLOWER)

    def replay_all(self, db: Database) -> None:
        """Replays the whole log from version 1 into a new follower and compares."""
        follower = self._fresh_follower(db.name, "follower-final.db")
        try:
            for raw in db.log_range(1):
                follower.apply(raw)
            assert follower.version == db.version, f"full replay reached {follower.version}"
            assert follower.checksum() == db.checksum(), "a full replay of the log differs"
        finally:
            follower.close()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()


@pytest.mark.slow
def test_sigkill_during_writes_keeps_data_and_log_in_step(tmp_path: Path) -> None:
    seed = int(os.environ.get("SHOAL_CRASH_SEED", str(random.randrange(2**32))))
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    checker = Checker(tmp_path)
    acknowledged = 0
    try:
        for cycle in range(CYCLES):
            where = f"cycle {cycle} (SHOAL_CRASH_SEED={seed})"
            synchronous = "full" if cycle % 5 == 4 else "normal"
            run = run_worker(path, synchronous, rng.randrange(2**32), rng, tmp_path / "stderr")
            assert run.returncode == -signal.SIGKILL, (
                f"{where}: worker exited with {run.returncode} before the kill: {run.stderr}"
            )
            if run.started_at is not None:
                assert run.started_at == acknowledged, (
                    f"{where}: worker opened at version {run.started_at},"
                    f" the last check saw {acknowledged}"
                )
            acknowledged = run.last_acknowledged(acknowledged)
            db = Database(path)
            try:
                checker.check(db, acknowledged, where)
                acknowledged = db.version
            finally:
                db.close()
        db = Database(path)
        try:
            assert db.version > 0, f"no transaction committed in {CYCLES} cycles (seed {seed})"
            checker.replay_all(db)
        finally:
            db.close()
    finally:
        checker.close()
