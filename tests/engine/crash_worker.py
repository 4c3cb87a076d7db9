"""The write workload that test_crash kills with SIGKILL at random moments.

Usage: python crash_worker.py DB_PATH SYNCHRONOUS SEED

Opens the database, prints ``ready <version>``, then writes transactions forever.
Every transaction that commits inserts exactly one row into ``t`` whose ``n`` is
the version the transaction gets, so the data says how many transactions were
committed. After each write returns, the worker prints the returned version (the
"acknowledged" version) on its own line, unbuffered. Failed and empty write
transactions are mixed in too; they must not move the version.

It exits with status 3 (and a message on stderr) if the engine ever returns an
unexpected version; otherwise it runs until it is killed.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys

from shoal.engine import Database, Options
from shoal.errors import IntegrityError

BIG_SLOTS = 4
BIG_SIZE = 100 * 1024

SETUP = """
CREATE TABLE t(n INTEGER PRIMARY KEY, payload BLOB NOT NULL);
CREATE TABLE counter(id INTEGER PRIMARY KEY, hits INTEGER NOT NULL, last INTEGER NOT NULL);
CREATE TABLE big(slot INTEGER PRIMARY KEY, n INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE notes(id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL, body TEXT);
CREATE TRIGGER t_counted AFTER INSERT ON t BEGIN
    UPDATE counter SET hits = hits + 1 WHERE id = 1;
END;
INSERT INTO counter(id, hits, last) VALUES (1, 0, 0);
INSERT INTO t(n, payload) VALUES (1, x'00');
"""

INSERT = "INSERT INTO t(n, payload) VALUES (?, ?)"


def big_payload(n: int) -> bytes:
    """A 100 KiB value that spans many pages but compresses well in the log."""
    block = hashlib.sha256(str(n).encode()).digest()
    return (block * (BIG_SIZE // len(block) + 1))[:BIG_SIZE]


def say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def fail(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
    os._exit(3)


def one_transaction(db: Database, rng: random.Random) -> int:
    """Runs one write transaction of a random shape; returns the version it reported."""
    n = db.version + 1
    small = rng.randbytes(rng.randint(1, 300))
    shape = rng.random()
    if shape < 0.35:
        return db.execute(INSERT, (n, small)).version
    if shape < 0.55:
        return db.execute_all(
            [
                (INSERT, (n, small)),
                ("UPDATE counter SET last = ? WHERE id = 1", (n,)),
                ("INSERT INTO notes(n, body) VALUES (?, ?)", (n, f"note {n}")),
            ]
        ).version
    if shape < 0.70:
        return db.execute(
            "INSERT INTO t(n, payload) VALUES (:n, randomblob(:size));"
            " UPDATE counter SET last = :n WHERE id = 1;"
            " INSERT INTO notes(n, body) VALUES (:n, 'multi')",
            {"n": n, "size": rng.randint(1, 2000)},
        ).version
    if shape < 0.80:
        return db.execute_all(
            [
                (INSERT, (n, small)),
                (
                    "INSERT OR REPLACE INTO big(slot, n, payload) VALUES (?, ?, ?)",
                    (n % BIG_SLOTS, n, big_payload(n)),
                ),
            ]
        ).version
    with db.transaction() as tx:
        tx.execute(INSERT, (n, small))
        tx.execute("UPDATE t SET payload = ? WHERE n = ?", (rng.randbytes(50), rng.randint(1, n)))
        tx.execute("DELETE FROM notes WHERE id = (SELECT min(id) FROM notes)")
    return tx.version


def run(path: str, synchronous: str, seed: int) -> None:
    rng = random.Random(seed)
    db = Database(path, options=Options(synchronous=synchronous))
    say(f"ready {db.version}")
    if db.version == 0:
        version = db.execute(SETUP).version
        if version != 1:
            fail(f"setup transaction returned version {version}, expected 1")
        say(str(version))
    while True:
        before = db.version
        roll = rng.random()
        if roll < 0.03:  # a failing transaction: rolled back whole, no record
            try:
                db.execute_all([(INSERT, (before + 1, b"x")), (INSERT, (1, b"duplicate"))])
            except IntegrityError:
                pass
            else:
                fail("a transaction inserting a duplicate key committed")
            if db.version != before:
                fail(f"a failed transaction moved the version from {before} to {db.version}")
            continue
        if roll < 0.05:  # a write transaction that changes nothing: no record
            version = db.execute("UPDATE t SET payload = payload WHERE n < 0").version
            if version != before:
                fail(f"an empty write transaction returned version {version}, expected {before}")
            continue
        version = one_transaction(db, rng)
        if version != before + 1:
            fail(f"a write transaction returned version {version}, expected {before + 1}")
        say(str(version))


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], int(sys.argv[3]))
