"""The embedded log (read, follow, truncate), the version listeners, and snapshots
taken while writers write."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shoal.engine import Database
from shoal.errors import LogTruncated, OperationalError
from shoal.record import decode
from tests.conftest import Pair


def write(db: Database, count: int) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v)")
    for i in range(count):
        db.execute("INSERT INTO t(v) VALUES (?)", (i,))


def test_read_a_range_of_records(db: Database) -> None:
    write(db, 9)
    assert [r.version for r in db.records(3, 5)] == [3, 4, 5]
    assert [r.version for r in db.records(8)] == [8, 9, 10]
    assert db.records(11) == []
    assert all(r.database == "test" and r.epoch == 1 for r in db.records(1))


def test_truncate_below_a_version_keeps_the_newest(db: Database, tmp_path: Path) -> None:
    write(db, 9)
    assert db.truncate_log(5) == 4
    assert [r.version for r in db.records(1)] == [5, 6, 7, 8, 9, 10]
    assert db.truncate_log(1000) == 5  # everything but the newest
    assert [r.version for r in db.records(1)] == [10]
    db.close()
    reopened = Database(tmp_path / "test.db")
    try:
        assert reopened.version == 10  # the version survives truncation and reopening
        assert reopened.execute("INSERT INTO t(v) VALUES ('next')").version == 11
    finally:
        reopened.close()


def test_version_survives_reopening(tmp_path: Path) -> None:
    db = Database(tmp_path / "x.db")
    write(db, 3)
    db.close()
    again = Database(tmp_path / "x.db")
    try:
        assert (again.name, again.version) == ("x", 4)
    finally:
        again.close()


def test_snapshot_is_consistent_while_writers_write(db: Database, tmp_path: Path) -> None:
    write(db, 1)
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            db.execute_all(
                [("INSERT INTO t(v) VALUES ('a')", None), ("INSERT INTO t(v) VALUES ('b')", None)]
            )

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        snapshots = []
        for i in range(5):
            path = tmp_path / f"snap{i}.db"
            snapshots.append((path, db.snapshot(path)))
    finally:
        stop.set()
        thread.join()
    for path, version in snapshots:
        copy = Database(path)
        try:
            assert copy.version == version
            rows = copy.query("SELECT count(*) FROM t").results[0].rows[0][0]
            # One row before the writer started, then two per transaction.
            assert rows == 1 + 2 * (version - 2)
            assert copy.query("PRAGMA integrity_check").results[0].rows == [("ok",)]
        finally:
            copy.close()


def test_seeded_follower_catches_up_from_the_log(db: Database, tmp_path: Path) -> None:
    write(db, 5)
    version = db.snapshot(tmp_path / "snap.db")
    write(db, 5)
    follower = Database.seed(tmp_path / "snap.db", tmp_path / "follower.db")
    try:
        assert follower.version == version
        for raw in db.log_range(version + 1):
            follower.apply(raw)
        assert follower.checksum() == db.checksum()
    finally:
        follower.close()


def test_snapshot_and_seed_refuse_to_overwrite(db: Database, tmp_path: Path) -> None:
    write(db, 1)
    (tmp_path / "taken.db").write_bytes(b"precious")
    with pytest.raises(OperationalError, match="already exists"):
        db.snapshot(tmp_path / "taken.db")
    with pytest.raises(OperationalError, match="already exists"):
        Database.seed(tmp_path / "test.db", tmp_path / "taken.db")
    assert (tmp_path / "taken.db").read_bytes() == b"precious"


def test_listeners_hear_each_version_committed_or_applied(pair: Pair) -> None:
    heard: dict[str, list[int]] = {"leader": [], "follower": []}
    pair.leader.listeners.append(heard["leader"].append)
    pair.follower.listeners.append(heard["follower"].append)
    pair.leader.execute("CREATE TABLE t(a)")
    pair.leader.execute("INSERT INTO t VALUES (1)")
    pair.leader.execute("SELECT 1")  # writes nothing: no version, no call
    pair.sync()
    assert heard == {"leader": [1, 2], "follower": [1, 2]}


def test_log_after_reads_on_from_a_version_or_says_it_is_gone(db: Database) -> None:
    db.execute("CREATE TABLE t(a)")
    for i in range(5):
        db.execute(f"INSERT INTO t VALUES ({i})")
    assert [decode(raw).version for raw in db.log_after(2, limit=2)] == [3, 4]
    assert db.log_after(6, limit=10) == []
    db.truncate_log(below=4)
    assert [decode(raw).version for raw in db.log_after(3, limit=10)] == [4, 5, 6]
    with pytest.raises(LogTruncated, match="no longer holds record 3"):
        db.log_after(2, limit=10)
