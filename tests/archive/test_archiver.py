"""The archiver and restore, on a folder store (and S3 for a snapshot bigger than a
part): every restore point gives back exactly the database as it was then, damaged
objects are refused by name, an outage leaves no gap, retention keeps what restore
needs, and the index is written on its schedule without hiding anything."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.archive.archiver import ArchivePolicy, Archiver
from shoal.archive.catalog import read_index
from shoal.archive.local import FolderStore
from shoal.archive.objects import index_key
from shoal.archive.restore import plan_restore, restore
from shoal.archive.s3 import S3Store
from shoal.engine import Database
from shoal.errors import ArchiveError, CorruptObject, OperationalError, StoreUnavailable
from shoal.record import decode
from tests.harness import S3Endpoint, make_bucket

SMALL = ArchivePolicy(segment_bytes=2000, snapshot_log_bytes=6000, snapshot_seconds=3600)
COMPACTING = ArchivePolicy(
    segment_bytes=2000, snapshot_log_bytes=6000, compact_seconds=0, index_seconds=0
)


class History:
    """A database under a random workload, with its checksum and commit time at
    every version, archived every few transactions."""

    def __init__(
        self, directory: Path, store: FolderStore, seed: int = 7, policy: ArchivePolicy = SMALL
    ) -> None:
        self.db = Database(directory / "app.db", name="app")
        self.archiver = Archiver(self.db, store, policy)
        self.random = random.Random(seed)
        self.checksums = {0: self.db.checksum()}
        self.times: dict[int, int] = {}
        self.db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n REAL)")
        self.note()

    def note(self) -> None:
        version = self.db.version
        self.checksums[version] = self.db.checksum()
        self.times[version] = decode(self.db.log_range(version, version)[0]).time_ns

    def write(self, count: int) -> None:
        for _ in range(count):
            choice = self.random.random()
            key = self.random.randrange(40)
            if choice < 0.6:
                self.db.execute(
                    "INSERT OR REPLACE INTO t VALUES (?, ?, ?)",
                    (key, "x" * self.random.randrange(200), self.random.random()),
                )
            elif choice < 0.9:
                self.db.execute("DELETE FROM t WHERE id = ?", (key,))
            else:
                self.db.execute(f"CREATE TABLE IF NOT EXISTS extra{key}(a)")
            self.note()
            if self.random.random() < 0.2:
                self.archiver.step()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FolderStore]:
    folder = FolderStore(tmp_path / "archive")
    yield folder
    folder.close()


def restored_checksum(store: FolderStore, path: Path, **target: int) -> tuple[int, str]:
    plan = plan_restore(read_index(store, "app"), **target)
    version = restore(store, plan, path)
    with Database(path) as db:
        return version, db.checksum()


@pytest.mark.parametrize(
    ("seed", "policy"),
    [(1, SMALL), (2, SMALL), (3, COMPACTING), (4, COMPACTING), (5, SMALL)],
    ids=["1", "2", "3-compacting", "4-compacting", "5"],
)
def test_every_tenth_version_and_chosen_times_restore_exactly(
    store: FolderStore, tmp_path: Path, seed: int, policy: ArchivePolicy
) -> None:
    history = History(tmp_path, store, seed, policy)
    history.write(120)
    history.archiver.step()
    index = read_index(store, "app")
    assert index.snapshots and index.segments, "the policy made both kinds of object"
    levels = {s.level for s in index.segments}
    assert levels == ({1} if policy is COMPACTING else {0})
    assert index.head == history.db.version
    for version in [*range(0, history.db.version + 1, 10), history.db.version]:
        out = tmp_path / f"v{version}.db"
        got, checksum = restored_checksum(store, out, version=version)
        assert got == version and checksum == history.checksums[version], version
    for version in (5, 33, 77, history.db.version):
        out = tmp_path / f"t{version}.db"
        moment = history.times[version] + 1  # just after that commit, before the next
        got, checksum = restored_checksum(store, out, time_ns=moment)
        assert got == version and checksum == history.checksums[version], version


def test_the_local_log_is_truncated_only_below_what_the_archive_holds(
    store: FolderStore, tmp_path: Path
) -> None:
    history = History(tmp_path, store)
    history.write(30)
    history.archiver.step(final=True)
    level0 = [s for s in read_index(store, "app").segments if s.level == 0]
    assert history.db.log_range(1)[0] == history.db.log_range(level0[0].first)[0]
    assert decode(history.db.log_range(1)[0]).version <= level0[0].first  # kept to compact
    history.archiver.policy = COMPACTING
    history.archiver.step()
    archived = read_index(store, "app").head
    assert [decode(r).version for r in history.db.log_range(1)] == [archived]


def test_a_restored_database_carries_on_at_the_next_version(
    store: FolderStore, tmp_path: Path
) -> None:
    history = History(tmp_path, store)
    history.write(20)
    history.archiver.step()
    out = tmp_path / "copy.db"
    restore(store, plan_restore(read_index(store, "app")), out)
    with Database(out, name="app") as copy:
        assert copy.version == history.db.version
        assert copy.execute("INSERT INTO t(v) VALUES ('next')").version == history.db.version + 1


def test_a_restore_has_the_foreign_key_setting_of_its_point_in_time(
    store: FolderStore, tmp_path: Path
) -> None:
    """The setting is a row of the database's own, changed by a record: from a
    snapshot taken with it on, and from the log replayed over one taken with it off."""
    history = History(tmp_path, store)
    history.archiver.step()  # the first snapshot: foreign keys off
    history.db.execute("PRAGMA foreign_keys = ON")
    history.write(5)
    history.archiver.step()
    on_at = history.db.version
    for version, expected in ((1, False), (2, True), (on_at, True)):
        out = tmp_path / f"at-{version}.db"
        restore(store, plan_restore(read_index(store, "app"), version=version), out)
        with Database(out, name="app") as copy:
            assert copy.foreign_keys is expected, version
    history.archiver.policy = ArchivePolicy(snapshot_log_bytes=1)
    history.db.execute("INSERT INTO t(v) VALUES ('last')")
    history.archiver.step()
    assert read_index(store, "app").snapshots[-1].version == history.db.version
    restore(store, plan_restore(read_index(store, "app")), tmp_path / "latest.db")
    with Database(tmp_path / "latest.db", name="app") as copy:
        assert copy.foreign_keys


def test_a_flipped_byte_is_refused_naming_the_object(store: FolderStore, tmp_path: Path) -> None:
    history = History(tmp_path, store)
    history.write(40)
    history.archiver.step()
    index = read_index(store, "app")
    snapshotted = {s.version for s in index.snapshots}
    segment = next(s for s in reversed(index.segments) if s.last not in snapshotted)
    snapshot = index.snapshots[-1]
    for key, version in ((segment.key, segment.last), (snapshot.key, snapshot.version)):
        plan = plan_restore(index, version=version)
        assert key in {s.key for s in plan.segments} | {plan.snapshot.key if plan.snapshot else ""}
        path = store.root / key
        good = path.read_bytes()
        damaged = bytearray(good)
        damaged[len(damaged) // 2] ^= 0x01
        out = tmp_path / "damaged.db"
        for bad in (bytes(damaged), good[: len(good) // 3]):  # flipped; partly uploaded
            path.write_bytes(bad)
            with pytest.raises(CorruptObject, match=key):
                restore(store, plan, out)
            assert not out.exists() and not Path(f"{out}.restoring").exists()
        path.write_bytes(good)
        assert restore(store, plan, out) == version
        out.unlink()


class FlakyStore(FolderStore):
    """A folder store that can be switched off: the fault an outage is."""

    down = False

    def put(self, key: str, data: bytes, **conditions: object) -> str:
        if self.down:
            raise StoreUnavailable("the store is down (test fault)")
        return super().put(key, data, **conditions)  # type: ignore[arg-type]

    def put_file(self, key: str, path: Path) -> None:
        if self.down:
            raise StoreUnavailable("the store is down (test fault)")
        super().put_file(key, path)


def test_an_outage_leaves_no_gap(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "archive")
    history = History(tmp_path, store)
    history.write(10)
    history.archiver.step()
    store.down = True
    for _ in range(5):
        history.db.execute("INSERT INTO t(v) VALUES ('during the outage')")
        history.note()
        with pytest.raises(StoreUnavailable):
            history.archiver.step()
    assert history.archiver.lag == 5
    assert len(history.db.log_range(history.db.version - 4)) == 5  # nothing unarchived dropped
    store.down = False
    history.archiver.step()
    assert history.archiver.lag == 0
    version, checksum = restored_checksum(store, tmp_path / "after.db")
    assert version == history.db.version and checksum == history.checksums[version]


def test_retention_keeps_the_newest_snapshot_and_what_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [time.time()]
    monkeypatch.setattr(time, "time_ns", lambda: int(now[0] * 1e9))  # commit times too
    store = FolderStore(tmp_path / "archive")
    db = Database(tmp_path / "app.db", name="app")
    policy = ArchivePolicy(snapshot_seconds=100, retention_seconds=1000)
    archiver = Archiver(db, store, policy, clock=lambda: now[0])
    db.execute("CREATE TABLE t(a)")
    for step in range(30):
        db.execute("INSERT INTO t VALUES (?)", (step,))
        archiver.step()
        now[0] += 200
    index = read_index(store, "app")
    cutoff = now[0] - 200 - 1000  # the clock at the last step, less the window
    assert 4 <= len(index.snapshots) <= 7
    assert all(s.time_ns / 1e9 >= cutoff for s in index.snapshots)
    assert all(
        s.last_time_ns / 1e9 >= cutoff or s.last > index.snapshots[0].version
        for s in index.segments
    )
    keys = {info.key for info in store.list("databases/app/")}
    named = {s.key for s in index.snapshots} | {s.key for s in index.segments}
    assert keys == named | {index_key("app")}  # what retention dropped is gone
    version, _ = restored_checksum(store, tmp_path / "latest.db")
    assert version == db.version
    with pytest.raises(ArchiveError, match="gap"):
        plan_restore(index, version=2)  # older than the window: no longer restorable
    db.close()


def test_restore_refuses_to_overwrite(store: FolderStore, tmp_path: Path) -> None:
    history = History(tmp_path, store)
    history.archiver.step()
    out = tmp_path / "exists.db"
    out.write_bytes(b"mine")
    with pytest.raises(OperationalError, match="never overwrites"):
        restore(store, plan_restore(read_index(store, "app")), out)
    assert out.read_bytes() == b"mine"


class LostAnswerStore(FolderStore):
    """A store whose next write of a key ending in `suffix` lands but whose answer is
    lost: the fault a timeout after a successful write is."""

    def __init__(self, root: Path, suffix: str) -> None:
        super().__init__(root)
        self.suffix = suffix
        self.lose_next = False

    def put(self, key: str, data: bytes, **conditions: object) -> str:
        tag = super().put(key, data, **conditions)  # type: ignore[arg-type]
        if self.lose_next and key.endswith(self.suffix):
            self.lose_next = False
            raise StoreUnavailable("timed out waiting for the answer (test fault)")
        return tag


def test_an_index_write_whose_answer_was_lost_is_not_a_conflict(tmp_path: Path) -> None:
    store = LostAnswerStore(tmp_path / "archive", "/index")
    history = History(tmp_path, store, policy=ArchivePolicy(index_seconds=0))
    history.archiver.step()

    def insert() -> None:
        history.db.execute("INSERT INTO t(v) VALUES ('x')")
        history.note()

    insert()
    store.lose_next = True
    with pytest.raises(StoreUnavailable):
        history.archiver.step()
    insert()
    history.archiver.step()  # its compare-and-set fails on its own landed write
    assert history.archiver.lag == 0
    version, checksum = restored_checksum(store, tmp_path / "after.db")
    assert checksum == history.checksums[version] and version == history.db.version


def test_a_backlog_is_read_in_batches(
    store: FolderStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoal.archive import archiver as archiver_module

    monkeypatch.setattr(archiver_module, "READ_BATCH", 3)
    history = History(tmp_path, store)
    for _ in range(10):
        history.db.execute("INSERT INTO t(v) VALUES ('backlog')")
        history.note()
    assert history.archiver.step() == 11  # the CREATE and ten inserts, three at a time
    version, checksum = restored_checksum(store, tmp_path / "restored.db")
    assert (version, checksum) == (11, history.checksums[11])


def test_a_database_from_before_shoal_is_snapshotted_first(
    store: FolderStore, tmp_path: Path
) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as plain:
        plain.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
        plain.executemany("INSERT INTO t(v) VALUES (?)", [(i,) for i in range(100)])
    plain.close()
    with Database(path, name="app") as db:
        assert not db.began_empty
        db.execute("INSERT INTO t(v) VALUES ('after')")
        Archiver(db, store).step()
        index = read_index(store, "app")
        assert index.snapshots, "its log does not explain it: the base must be a snapshot"
        expected = (db.version, db.checksum())
    assert restored_checksum(store, tmp_path / "restored.db") == expected


class NoIndexStore(FolderStore):
    """Takes segments, refuses snapshots and the index: the fault a store that fails
    half-way through a round is."""

    def put(self, key: str, data: bytes, **conditions: object) -> str:
        if not key.endswith(".seg"):
            raise StoreUnavailable("refused (test fault)")
        return super().put(key, data, **conditions)  # type: ignore[arg-type]


def test_segments_no_index_names_yet_are_archived_all_the_same(tmp_path: Path) -> None:
    store = NoIndexStore(tmp_path / "archive")
    db = Database(tmp_path / "app.db", name="app")
    archiver = Archiver(db, store)
    db.execute("CREATE TABLE t(a)")
    db.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(StoreUnavailable):
        archiver.step()
    assert archiver.lag == 0  # the segment is up; a listing finds it
    assert not list(store.list("databases/app/index"))
    restore(store, plan_restore(read_index(store, "app")), tmp_path / "restored.db")
    with Database(tmp_path / "restored.db") as copy:
        assert (copy.version, copy.checksum()) == (db.version, db.checksum())
    again = Archiver(db, store)  # a restart finds it too, and goes on after it
    assert again.lag == db.version and again.index().head == db.version and again.lag == 0
    db.close()


def test_overlapping_segments_found_by_listing_restore_and_compact(tmp_path: Path) -> None:
    store = LostAnswerStore(tmp_path / "archive", ".seg")
    db = Database(tmp_path / "app.db", name="app")
    archiver = Archiver(db, store, ArchivePolicy(compact_seconds=3600))
    db.execute("CREATE TABLE t(a)")
    archiver.step()  # the first round writes the index
    db.execute("INSERT INTO t VALUES (1)")
    store.lose_next = True
    with pytest.raises(StoreUnavailable):
        archiver.step()  # segment [2..2] landed, unknown to the archiver
    db.execute("INSERT INTO t VALUES (2)")
    archiver.step()  # seals [2..3] again; the index is not due
    db.execute("INSERT INTO t VALUES (3)")
    archiver.step()
    restarted = Archiver(db, store, ArchivePolicy(compact_seconds=0, index_seconds=0))
    firsts = [(s.first, s.last) for s in restarted.index().segments]
    assert firsts == [(1, 1), (2, 2), (2, 3), (4, 4)]  # the listing found both
    restore(store, plan_restore(read_index(store, "app")), tmp_path / "before.db")
    restarted.step()  # merges them, taking each version once
    index = read_index(store, "app")
    assert [(s.first, s.last, s.level) for s in index.segments] == [(1, 4, 1)]
    assert {info.key for info in store.list("databases/app/segments/")} == {index.segments[0].key}
    restore(store, plan_restore(index), tmp_path / "after.db")
    for name in ("before.db", "after.db"):
        with Database(tmp_path / name) as copy:
            assert (copy.version, copy.checksum()) == (db.version, db.checksum())
    db.close()


class CountingStore(FolderStore):
    """Counts index writes: the requests a steady workload costs."""

    index_writes = 0

    def put(self, key: str, data: bytes, **conditions: object) -> str:
        self.index_writes += key.endswith("/index")
        return super().put(key, data, **conditions)  # type: ignore[arg-type]


def test_the_index_is_written_on_its_schedule_and_restore_still_sees_everything(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    store = CountingStore(tmp_path / "archive")
    db = Database(tmp_path / "app.db", name="app")
    archiver = Archiver(db, store, ArchivePolicy(index_seconds=60), clock=lambda: now[0])
    db.execute("CREATE TABLE t(a)")
    for second in range(150):
        db.execute("INSERT INTO t VALUES (?)", (second,))
        archiver.step()
        now[0] += 1
    assert store.index_writes == 3  # the first round, then at 60 s and 120 s
    assert read_index(store, "app").head == db.version
    restore(store, plan_restore(read_index(store, "app")), tmp_path / "restored.db")
    with Database(tmp_path / "restored.db") as copy:
        assert (copy.version, copy.checksum()) == (db.version, db.checksum())
    archiver.step(final=True)
    assert store.index_writes == 4
    db.close()


def test_compaction_merges_a_run_of_segments_and_deletes_them(
    store: FolderStore, tmp_path: Path
) -> None:
    now = [time.time()]
    db = Database(tmp_path / "app.db", name="app")
    policy = ArchivePolicy(compact_seconds=600, segment_bytes=5000)
    archiver = Archiver(db, store, policy, clock=lambda: now[0])
    db.execute("CREATE TABLE t(a)")
    for second in range(700):
        db.execute("INSERT INTO t VALUES (?)", ("x" * 20,))
        archiver.step()
        now[0] += 1 if second != 650 else 1000  # a pause: what follows compacts at once
    index = read_index(store, "app")
    merged = [s for s in index.segments if s.level == 1]
    assert merged and all(s.size > 0 for s in merged)
    assert [s.first for s in index.segments] == sorted(s.first for s in index.segments)
    assert all(a.last + 1 == b.first for a, b in itertools.pairwise(index.segments))
    keys = {info.key for info in store.list("databases/app/segments/")}
    assert keys == {s.key for s in index.segments}  # the merged-away objects are gone
    restore(store, plan_restore(read_index(store, "app")), tmp_path / "restored.db")
    with Database(tmp_path / "restored.db") as copy:
        assert (copy.version, copy.checksum()) == (db.version, db.checksum())
    db.close()


def test_a_snapshot_bigger_than_a_part_goes_up_in_parts_and_restores(
    s3_server: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    make_bucket(s3_server, "snapshots")
    store = S3Store("snapshots", "big", endpoint_url=s3_server.url, part_size=5 * 1024 * 1024)
    db = Database(tmp_path / "app.db", name="app")
    db.execute("CREATE TABLE t(v BLOB)")
    for _ in range(12):
        db.execute("INSERT INTO t VALUES (randomblob(1000000))")  # incompressible
    archiver = Archiver(db, store, ArchivePolicy(snapshot_log_bytes=1))
    archiver.step()
    snapshot = read_index(store, "app").snapshots[-1]
    assert snapshot.size > 12_000_000
    client = s3_server.client()
    etag = client.head_object(Bucket="snapshots", Key=f"big/{snapshot.key}")["ETag"]
    client.close()
    assert etag.strip('"').endswith("-3")  # three parts of 5 MiB
    out = tmp_path / "restored.db"
    plan = plan_restore(read_index(store, "app"))
    assert plan.snapshot == snapshot and restore(store, plan, out) == db.version
    with Database(out) as copy:
        assert copy.checksum() == db.checksum()
    store.close()
    db.close()


def test_downloads_start_at_once_and_run_at_most_a_window_ahead() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from shoal.archive.restore import _ahead

    fetched: list[int] = []
    with ThreadPoolExecutor(4) as pool:
        results = _ahead(pool, lambda n: fetched.append(n) or n * n, range(20), 3)
        time.sleep(0.2)  # nothing consumed yet
        assert sorted(fetched) == [0, 1, 2]
        assert next(results) == 0
        time.sleep(0.2)
        assert sorted(fetched) == [0, 1, 2, 3]
        assert list(results) == [n * n for n in range(1, 20)]
