"""`shoal.connect("app.db", archive=...)`: continuous backup inside the application."""

from __future__ import annotations

from pathlib import Path

import shoal
from shoal.archive.archiver import ArchivePolicy
from shoal.archive.catalog import read_index
from shoal.archive.local import FolderStore
from shoal.archive.restore import plan_restore, restore
from shoal.engine import Database
from tests.archive.test_archiver import FlakyStore
from tests.harness import wait_until

FAST = ArchivePolicy(segment_seconds=0.05)


def restore_latest(archive: Path, out: Path) -> tuple[int, str]:
    store = FolderStore(archive)
    restore(store, plan_restore(read_index(store, "app")), out)
    with Database(out) as db:
        return db.version, db.checksum()


def test_writes_reach_the_archive_while_the_application_runs(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    conn = shoal.connect(tmp_path / "app.db", archive=str(archive), archive_policy=FAST)
    conn.execute("CREATE TABLE t(a)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert conn.archiver is not None  # type: ignore[attr-defined]
    wait_until(lambda: conn.archiver.rounds.archiver.lag == 0, 10, "archiving")  # type: ignore[attr-defined]
    conn.execute("INSERT INTO t VALUES (2)")
    conn.commit()
    with Database(tmp_path / "app.db") as live:
        expected = (live.version, live.checksum())
    conn.close()  # a last round archives the second insert
    assert restore_latest(archive, tmp_path / "restored.db") == expected


def test_an_unreachable_store_costs_lag_not_data(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "archive")
    store.down = True
    conn = shoal.connect(tmp_path / "app.db", archive=store, archive_policy=FAST)
    conn.execute("CREATE TABLE t(a)")
    conn.commit()
    conn.close()  # the last round fails quietly: the record stays in the local log
    store.down = False
    again = shoal.connect(tmp_path / "app.db", archive=store, archive_policy=FAST)
    again.close()
    version, _ = restore_latest(tmp_path / "archive", tmp_path / "restored.db")
    assert version == 1
