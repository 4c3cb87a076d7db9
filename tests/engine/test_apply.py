"""Apply refuses gaps, repeats, other databases, damage and conflicts, changing nothing."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from shoal.engine import Database, Role
from shoal.errors import (
    ApplyConflict,
    CorruptRecord,
    OutOfOrder,
    ReadOnly,
    ReplicationError,
    WrongDatabase,
)
from shoal.record import Record, decode, encode
from tests.conftest import Pair


def seeded(pair: Pair, writes: int) -> list[bytes]:
    pair.leader.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    for i in range(writes):
        pair.leader.execute("INSERT INTO t(v) VALUES (?)", (i,))
    return pair.leader.log_range(1)


def assert_unchanged(pair: Pair, version: int, checksum: str) -> None:
    assert pair.follower.version == version
    assert pair.follower.checksum() == checksum


def test_gap_is_refused(pair: Pair) -> None:
    records = seeded(pair, 3)
    pair.follower.apply(records[0])
    checksum = pair.follower.checksum()
    with pytest.raises(OutOfOrder, match="gap: expected 2") as caught:
        pair.follower.apply(records[2])
    assert (caught.value.expected, caught.value.got) == (2, 3)
    assert_unchanged(pair, 1, checksum)


def test_repeat_is_refused(pair: Pair) -> None:
    records = seeded(pair, 2)
    pair.follower.apply(records[0])
    pair.follower.apply(records[1])
    checksum = pair.follower.checksum()
    with pytest.raises(OutOfOrder, match="repeat"):
        pair.follower.apply(records[1])
    assert_unchanged(pair, 2, checksum)


def test_wrong_database_is_refused(pair: Pair) -> None:
    records = seeded(pair, 1)
    other = decode(records[0])
    foreign = Record("another", other.version, other.epoch, other.time_ns, other.ops)
    with pytest.raises(WrongDatabase, match="'another'"):
        pair.follower.apply(encode(foreign))
    assert pair.follower.version == 0


def test_bad_checksum_is_refused(pair: Pair) -> None:
    records = seeded(pair, 1)
    damaged = bytearray(records[0])
    damaged[-1] ^= 0x40
    with pytest.raises(CorruptRecord):
        pair.follower.apply(bytes(damaged))
    assert pair.follower.version == 0


def test_conflicting_changeset_is_refused_and_rolled_back(pair: Pair) -> None:
    seeded(pair, 2)
    pair.sync()
    pair.leader.execute("UPDATE t SET v = 'changed' WHERE id = 1")
    # Make the follower diverge behind shoal's back, then apply the update.
    pair.follower.close()
    raw = apsw.Connection(str(pair.follower.path))
    raw.execute("UPDATE t SET v = 'diverged' WHERE id = 1")
    raw.close()
    pair.follower = Database(pair.follower.path, role=Role.FOLLOWER)
    checksum = pair.follower.checksum()
    with pytest.raises(ApplyConflict, match="differ"):
        pair.sync()
    assert_unchanged(pair, 3, checksum)


def test_changeset_for_a_missing_table_is_refused(pair: Pair, tmp_path: Path) -> None:
    """SQLite would skip such a change silently; shoal refuses it."""
    seeded(pair, 1)
    bare = Database(tmp_path / "bare.db", name="app", role=Role.FOLLOWER)
    try:
        # Record 2 inserts into t, which `bare` never created (it skipped record 1).
        record = decode(pair.leader.log_range(2)[0])
        shifted = Record(record.database, 1, record.epoch, record.time_ns, record.ops)
        with pytest.raises(ApplyConflict, match="does not exist"):
            bare.apply(encode(shifted))
        assert bare.version == 0
    finally:
        bare.close()


def test_follower_is_read_only_to_users(pair: Pair) -> None:
    seeded(pair, 1)
    pair.sync()
    with pytest.raises(ReadOnly, match="follower"):
        pair.follower.execute("INSERT INTO t(v) VALUES ('no')")
    assert pair.follower.query("SELECT count(*) FROM t").results[0].rows == [(1,)]


def test_leader_does_not_apply(pair: Pair) -> None:
    records = seeded(pair, 1)
    with pytest.raises(ReplicationError, match="leader"):
        pair.leader.apply(records[0])


def test_promoted_follower_continues_the_version_line(pair: Pair) -> None:
    seeded(pair, 2)
    pair.sync()
    pair.follower.promote()
    outcome = pair.follower.execute("INSERT INTO t(v) VALUES ('after promotion')")
    assert outcome.version == pair.leader.version + 1
    pair.follower.demote()
    with pytest.raises(ReadOnly):
        pair.follower.execute("INSERT INTO t(v) VALUES ('no')")


def test_a_run_applies_in_one_transaction(pair: Pair) -> None:
    records = seeded(pair, 50)
    assert pair.follower.apply_many(records[:30]) == 30
    assert pair.follower.apply_many(iter(records[30:])) == 51
    assert pair.follower.checksum() == pair.leader.checksum()
    assert pair.follower.apply_many([]) == 51


def test_a_run_with_one_bad_record_changes_nothing(pair: Pair) -> None:
    records = seeded(pair, 10)
    pair.follower.apply(records[0])
    checksum = pair.follower.checksum()
    with pytest.raises(OutOfOrder, match="gap: expected 6"):
        pair.follower.apply_many(records[1:5] + records[6:])
    assert_unchanged(pair, 1, checksum)
    assert pair.follower.log_range(2) == []
    assert pair.follower.apply_many(records[1:]) == 11


def test_a_setting_applied_is_in_place_before_its_version_shows(pair: Pair) -> None:
    # A replica's write-through waits for its write's version, then reads: it must
    # find the setting that record brought (Django checks PRAGMA foreign_keys so).
    follower = pair.follower
    versions_seen: list[int] = []
    read_settings = follower._read_settings

    def spying() -> None:
        versions_seen.append(follower.version)  # what another thread sees meanwhile
        read_settings()

    follower._read_settings = spying  # type: ignore[method-assign]
    before = follower.version
    pair.leader.execute("PRAGMA foreign_keys = ON")
    pair.sync()
    assert versions_seen == [before] and follower.version == pair.leader.version
    assert follower.query("PRAGMA foreign_keys").results[0].rows == [(1,)]
