"""The control-plane contract: one behaviour suite, run over every backend.

`backend` is a SQLiteControlPlane on a file in a temporary folder, on a fake
clock, or a PostgresControlPlane on the real PostgreSQL the session shares
(`postgres_dsn`, tests/conftest.py). Tests keep apart by names of their own (a
fresh uuid each), not by schemas. What only one backend can show (its URL, a
server outage) follows the shared suite.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

import shoal.controlplane
from shoal.controlplane import (
    ABSENT,
    AppendConflict,
    ControlPlane,
    ControlPlaneError,
    ControlPlaneUnavailable,
    Entry,
    KeyConflict,
    open_control_plane,
)
from shoal.controlplane.postgres import PostgresControlPlane
from shoal.controlplane.sqlite import SQLiteControlPlane
from shoal.errors import DatabaseError, InterfaceError, InvalidRequest, OutcomeUnknown, Unavailable
from tests.harness import free_port, postgres_server

HOSTILE = [
    "x'; DROP TABLE shoal_log; --",
    'k"; DELETE FROM shoal_kv; --',
    "%s %(name)s ? :1 $1",
    "back\\slash\nnewline\ttab",
    "名前 🐟",
    " ",
    "",
]


class FakeClock:
    """The embedded control plane's clock, moved by hand."""

    def __init__(self) -> None:
        self.time = 1_700_000_000.0

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


@dataclass
class Backend:
    """One control plane under test, and how to open another on the same store."""

    make: Callable[[], ControlPlane]
    pass_time: Callable[[float], None]  # lets that much of the control plane's clock go by
    opened: list[ControlPlane] = field(default_factory=list)

    def open(self) -> ControlPlane:
        """Another instance on the same store: another process, as far as it can tell."""
        plane = self.make()
        self.opened.append(plane)
        return plane


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        clock = FakeClock()
        tested = Backend(
            lambda: SQLiteControlPlane(tmp_path / "control.db", clock=clock), clock.advance
        )
    else:
        dsn = request.getfixturevalue("postgres_dsn")
        tested = Backend(lambda: PostgresControlPlane(dsn), time.sleep)
    yield tested
    for plane in tested.opened:
        plane.close()


@pytest.fixture
def plane(backend: Backend) -> ControlPlane:
    return backend.open()


@pytest.fixture
def name() -> str:
    """A database name, key or key prefix no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}-"


def in_thread(work: Callable[[], object]) -> Callable[[], object]:
    """Starts `work` on a thread; the returned function joins it and gives its result."""
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(work()))
    thread.start()

    def join() -> object:
        thread.join(10)
        assert not thread.is_alive()
        return results[0]

    return join


# --- logs ------------------------------------------------------------------------------


def test_a_new_log_is_empty(plane: ControlPlane, name: str) -> None:
    assert plane.head(name) == 0
    assert plane.read(name, 1) == []
    assert plane.follow(name, 0, 0) == []


def test_appends_extend_the_log_at_consecutive_versions(plane: ControlPlane, name: str) -> None:
    plane.append(name, 1, [b"one"])
    plane.append(name, 2, [b"two", b"three", b""])
    assert plane.head(name) == 4
    assert plane.read(name, 1) == [(1, b"one"), (2, b"two"), (3, b"three"), (4, b"")]


@pytest.mark.parametrize("version", [1, 2, 4, 9], ids=["repeat", "at-head", "gap", "far"])
def test_an_append_not_at_the_next_version_conflicts_and_appends_nothing(
    plane: ControlPlane, name: str, version: int
) -> None:
    plane.append(name, 1, [b"one", b"two"])
    with pytest.raises(AppendConflict) as conflict:
        plane.append(name, version, [b"x", b"y", b"z"])
    assert (conflict.value.database, conflict.value.version) == (name, version)
    assert conflict.value.head == 2
    assert plane.head(name) == 2
    assert plane.read(name, 1) == [(1, b"one"), (2, b"two")]


def test_the_first_append_is_at_version_1(plane: ControlPlane, name: str) -> None:
    with pytest.raises(AppendConflict) as conflict:
        plane.append(name, 2, [b"x"])
    assert conflict.value.head == 0
    assert plane.head(name) == 0


def test_appends_without_records_or_below_version_1_are_refused(
    plane: ControlPlane, name: str
) -> None:
    with pytest.raises(InvalidRequest):
        plane.append(name, 1, [])
    with pytest.raises(InvalidRequest):
        plane.append(name, 0, [b"x"])
    assert plane.head(name) == 0


def test_a_large_append_is_one_step(plane: ControlPlane, name: str) -> None:
    records = [os.urandom(100) for _ in range(1200)]  # more than one INSERT's worth
    plane.append(name, 1, records)
    assert plane.head(name) == 1200
    assert [record for _, record in plane.read(name, 1, limit=5000)] == records


def test_of_two_racing_appends_exactly_one_wins(backend: Backend, name: str) -> None:
    """Two instances (two connections, as two nodes would have) read the head
    together, then append at the next version together: one append of one
    record, one of two. Every round has one winner, and the log is the
    winners' appends, whole and in order."""
    planes = [backend.open(), backend.open()]
    rounds = 50
    together = threading.Barrier(2)
    won: list[list[int]] = [[], []]

    def contend(me: int) -> None:
        for round_ in range(rounds):
            together.wait()
            head = planes[me].head(name)
            together.wait()
            records = [f"{me}-{round_}-{i}".encode() for i in range(me + 1)]
            try:
                planes[me].append(name, head + 1, records)
            except AppendConflict as conflict:
                assert conflict.head > head
            else:
                won[me].append(round_)

    threads = [threading.Thread(target=contend, args=(me,)) for me in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(won[0] + won[1]) == list(range(rounds))
    winners = sorted([(r, 0) for r in won[0]] + [(r, 1) for r in won[1]])
    expected = [f"{me}-{r}-{i}".encode() for r, me in winners for i in range(me + 1)]
    assert [record for _, record in planes[0].read(name, 1, limit=10_000)] == expected
    assert planes[1].head(name) == len(expected)


def test_reads_take_ranges_and_limits(plane: ControlPlane, name: str) -> None:
    plane.append(name, 1, [bytes([v]) for v in range(1, 11)])
    assert [v for v, _ in plane.read(name, 3, 5)] == [3, 4, 5]
    assert [v for v, _ in plane.read(name, 8)] == [8, 9, 10]
    assert [v for v, _ in plane.read(name, 1, limit=4)] == [1, 2, 3, 4]
    assert [v for v, _ in plane.read(name, 6, 100, limit=2)] == [6, 7]
    assert plane.read(name, 5, 5) == [(5, b"\x05")]
    assert plane.read(name, 11) == []
    assert plane.read(name, 5, 4) == []
    with pytest.raises(InvalidRequest):
        plane.read(name, 1, limit=0)


def test_logs_are_apart(plane: ControlPlane, name: str) -> None:
    plane.append(name + "a", 1, [b"a1", b"a2"])
    plane.append(name + "b", 1, [b"b1"])
    assert plane.read(name + "a", 1) == [(1, b"a1"), (2, b"a2")]
    assert plane.read(name + "b", 1) == [(1, b"b1")]
    assert plane.head(name) == 0


def test_follow_returns_what_is_there_at_once(plane: ControlPlane, name: str) -> None:
    plane.append(name, 1, [b"one", b"two"])
    started = time.monotonic()
    assert plane.follow(name, 1, 10) == [(2, b"two")]
    assert time.monotonic() - started < 1


def test_follow_wakes_when_another_instance_appends(backend: Backend, name: str) -> None:
    follower, leader = backend.open(), backend.open()
    leader.append(name, 1, [b"one"])
    started = time.monotonic()
    followed = in_thread(lambda: follower.follow(name, 1, 20))
    time.sleep(0.3)  # the follower is waiting by now
    leader.append(name, 2, [b"two", b"three"])
    appended = time.monotonic()
    assert followed() == [(2, b"two"), (3, b"three")]
    assert time.monotonic() - appended < 1.5
    assert time.monotonic() - started < 5


def test_follow_returns_nothing_when_the_timeout_passes(plane: ControlPlane, name: str) -> None:
    plane.append(name, 1, [b"one"])
    started = time.monotonic()
    assert plane.follow(name, 1, 0.3) == []
    assert 0.3 <= time.monotonic() - started < 2


def test_heads_reads_many_logs_at_once(plane: ControlPlane, name: str) -> None:
    names = [f"{name}{i}" for i in range(1203)]  # more than one batch of names
    plane.append(names[0], 1, [b"a", b"b"])
    plane.append(names[1202], 1, [b"c"])
    plane.truncate(names[0], 2)
    heads = plane.heads(names)
    assert heads[names[0]] == 2 and heads[names[1202]] == 1
    assert set(heads) == set(names) and sum(heads.values()) == 3
    assert plane.heads([]) == {}
    with pytest.raises(InvalidRequest):
        plane.heads(["bad\x00name"])


def test_a_log_watch_names_the_logs_another_instance_appends_to(
    backend: Backend, name: str
) -> None:
    """One watcher for every log: it wakes on another process's append and says
    which log grew, or that it cannot tell (None), and never sleeps through one."""
    watcher, leader = backend.open(), backend.open()
    watch = watcher.watch_logs()
    try:
        # Wait for the first "cannot tell" (None): PostgreSQL's watcher says it once
        # its listener is connected, SQLite's at every call. After it, appends are heard.
        listening = time.monotonic() + 5
        while watch.wait(0.1) is not None and time.monotonic() < listening:
            continue
        started = time.monotonic()
        grown = in_thread(lambda: watch.wait(20))
        time.sleep(0.3)  # the watcher is waiting by now
        leader.append(name + "a", 1, [b"one"])
        seen = grown()
        assert time.monotonic() - started < 5
        assert seen is None or seen == {name + "a"}
        if seen is not None:  # it tells which: nothing more until the next append
            assert watch.wait(0.2) == set()
            leader.append(name + "b", 1, [b"one"])
            leader.append(name + "a", 2, [b"two"])
            time.sleep(0.3)
            assert watch.wait(5) == {name + "a", name + "b"}
    finally:
        watch.close()
    watch.close()
    started = time.monotonic()
    assert watch.wait(5) in (None, set())  # closed: it returns at once
    assert time.monotonic() - started < 1


def test_truncate_drops_old_records_and_keeps_the_head(plane: ControlPlane, name: str) -> None:
    plane.append(name, 1, [b"1", b"2", b"3", b"4", b"5"])
    assert plane.truncate(name, 4) == 3
    assert plane.read(name, 1) == [(4, b"4"), (5, b"5")]
    assert plane.truncate(name, 4) == 0
    assert plane.truncate(name, 100) == 2
    assert plane.read(name, 1) == []
    assert plane.head(name) == 5
    with pytest.raises(AppendConflict) as conflict:
        plane.append(name, 1, [b"again"])
    assert conflict.value.head == 5
    plane.append(name, 6, [b"6"])
    assert plane.read(name, 1) == [(6, b"6")]


def test_drop_removes_the_log_and_its_head(plane: ControlPlane, name: str) -> None:
    plane.append(name, 1, [b"1", b"2"])
    plane.append(name + "other", 1, [b"kept"])
    plane.drop(name)
    assert plane.head(name) == 0
    assert plane.read(name, 1) == []
    plane.drop(name)  # idempotent
    plane.append(name, 1, [b"new"])
    assert plane.read(name, 1) == [(1, b"new")]
    assert plane.read(name + "other", 1) == [(1, b"kept")]


# --- key-value ---------------------------------------------------------------------------


def test_every_write_of_a_key_raises_its_revision(plane: ControlPlane, name: str) -> None:
    assert plane.get(name) is None
    first = plane.put(name, b"a")
    assert first >= 1
    assert plane.get(name) == Entry(b"a", first, None)
    second = plane.put(name, b"b")
    assert second > first
    assert plane.get(name) == Entry(b"b", second, None)
    other = plane.put(name + "other", b"c")
    assert plane.put(name, b"d") > other


def test_a_put_expecting_a_stale_revision_conflicts(plane: ControlPlane, name: str) -> None:
    first = plane.put(name, b"a")
    second = plane.put(name, b"b", expect=first)
    with pytest.raises(KeyConflict) as conflict:
        plane.put(name, b"c", expect=first)
    assert conflict.value.key == name
    assert conflict.value.expected == first
    assert conflict.value.current == Entry(b"b", second, None)
    assert plane.get(name) == Entry(b"b", second, None)


def test_a_put_expecting_absent_only_creates(plane: ControlPlane, name: str) -> None:
    created = plane.put(name, b"mine", expect=ABSENT)
    with pytest.raises(KeyConflict) as conflict:
        plane.put(name, b"yours", expect=ABSENT)
    assert conflict.value.current == Entry(b"mine", created, None)
    with pytest.raises(KeyConflict) as missing:
        plane.put(name + "missing", b"x", expect=created)
    assert missing.value.current is None
    assert plane.get(name + "missing") is None


def test_a_key_written_again_after_delete_never_reuses_a_revision(
    plane: ControlPlane, name: str
) -> None:
    old = plane.put(name, b"old")
    assert plane.delete(name)
    new = plane.put(name, b"new")
    assert new > old
    with pytest.raises(KeyConflict):
        plane.put(name, b"stale holder", expect=old)


def test_entries_expire_on_the_control_planes_clock(backend: Backend, name: str) -> None:
    plane = backend.open()
    revision = plane.put(name, b"lease", ttl=0.3)
    entry = plane.get(name)
    assert entry is not None and entry.revision == revision
    assert entry.expires_at is not None
    assert 0 < entry.expires_at - plane.now() <= 0.3
    plane.put(name + "kept", b"forever")
    backend.pass_time(0.5)
    assert plane.get(name) is None
    assert [key for key, _ in plane.scan(name)] == [name + "kept"]
    with pytest.raises(KeyConflict) as conflict:
        plane.put(name, b"renewal too late", expect=revision)
    assert conflict.value.current is None
    taken = plane.put(name, b"new holder", expect=ABSENT, ttl=60)
    assert taken > revision
    assert plane.get(name) == Entry(b"new holder", taken, pytest.approx(plane.now() + 60, abs=2))


def test_a_put_without_ttl_clears_the_expiry(backend: Backend, name: str) -> None:
    plane = backend.open()
    leased = plane.put(name, b"lease", ttl=0.3)
    kept = plane.put(name, b"kept", expect=leased)
    backend.pass_time(0.5)
    assert plane.get(name) == Entry(b"kept", kept, None)


def test_a_ttl_is_above_zero(plane: ControlPlane, name: str) -> None:
    for ttl in (0, -1.0):
        with pytest.raises(InvalidRequest):
            plane.put(name, b"x", ttl=ttl)
    assert plane.get(name) is None


def test_delete_with_and_without_expect(plane: ControlPlane, name: str) -> None:
    assert plane.delete(name) is False
    revision = plane.put(name, b"x")
    with pytest.raises(KeyConflict) as conflict:
        plane.delete(name, expect=revision + 1000)
    assert conflict.value.current == Entry(b"x", revision, None)
    assert plane.get(name) is not None
    assert plane.delete(name, expect=revision) is True
    assert plane.get(name) is None
    assert plane.delete(name) is False


def test_changes_since_a_revision_show_writes_and_deletions_once(
    plane: ControlPlane, name: str
) -> None:
    plane.put(name + "before", b"0")
    start = plane.changes(0)
    assert start.complete and start.revision > 0
    a = plane.put(name + "a", b"1")
    plane.put(name + "b", b"1", ttl=60)
    plane.put(name + "a", b"2")
    plane.delete(name + "b")
    plane.put(name + "c", b"1")
    plane.delete(name + "c")
    changes = plane.changes(start.revision)
    mine = [
        (key, entry.value if entry else None)
        for key, entry in changes.entries
        if key.startswith(name)
    ]
    assert mine == [(name + "a", b"2"), (name + "b", None), (name + "c", None)]
    assert not changes.complete and changes.revision > a
    assert abs(changes.now - plane.now()) < 5
    nothing = plane.changes(changes.revision)
    assert [key for key, _ in nothing.entries if key.startswith(name)] == []
    assert nothing.revision == changes.revision
    whole = plane.changes(0)
    assert whole.complete and (name + "a", plane.get(name + "a")) in whole.entries


def test_changes_show_an_entry_that_expired_with_its_expiry(backend: Backend, name: str) -> None:
    plane = backend.open()
    start = plane.changes(0).revision
    plane.put(name, b"lease", ttl=0.5)
    backend.pass_time(1.0)
    changes = plane.changes(start)
    (entry,) = [entry for key, entry in changes.entries if key == name]
    assert entry is not None and entry.expires_at is not None and entry.expires_at <= changes.now


def test_a_reader_older_than_the_deletions_kept_reads_every_key(tmp_path: Path) -> None:
    """Deletions are kept an hour (on the control plane's clock, faked here): a
    reader from before that gets the whole table, marked complete."""
    clock = FakeClock()
    plane = SQLiteControlPlane(tmp_path / "control.db", clock=clock)
    plane.put("kept", b"1")
    plane.put("gone", b"1")
    old = plane.changes(0).revision
    plane.delete("gone")
    assert [key for key, entry in plane.changes(old).entries] == ["gone"]
    clock.advance(2 * 3600)
    plane.put("another", b"1")
    plane.delete("another")  # deleting forgets the deletions older than an hour
    changes = plane.changes(old)
    assert changes.complete
    assert sorted(key for key, entry in changes.entries if entry is not None) == ["kept"]
    plane.close()


def test_scan_takes_a_literal_prefix_and_sorts_by_code_point(
    plane: ControlPlane, name: str
) -> None:
    suffixes = ["b", "a", "B", "é", "a/1", "_x", "%", "~", "Z"]
    for suffix in suffixes:
        plane.put(name + suffix, suffix.encode())
    plane.put(name[:-1], b"shorter")  # does not start with the prefix
    scanned = plane.scan(name)
    assert [key for key, _ in scanned] == [name + s for s in sorted(suffixes)]
    assert all(entry.value == key[len(name) :].encode() for key, entry in scanned)
    assert [key for key, _ in plane.scan(name + "a")] == [name + "a", name + "a/1"]
    assert [key for key, _ in plane.scan(name + "_")] == [name + "_x"]
    assert [key for key, _ in plane.scan(name + "%")] == [name + "%"]
    assert [key for key, _ in plane.scan(name + "A")] == []


def test_a_second_instance_sees_the_same_store(backend: Backend, name: str) -> None:
    one, two = backend.open(), backend.open()
    one.append(name, 1, [b"r"])
    revision = one.put(name, b"v")
    assert two.head(name) == 1
    assert two.get(name) == Entry(b"v", revision, None)
    rewritten = two.put(name, b"w", expect=revision)
    assert one.get(name) == Entry(b"w", rewritten, None)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_are_only_data(plane: ControlPlane, name: str, hostile: str) -> None:
    database, key = hostile + name, name + hostile
    plane.append(database, 1, [b"x'); --"])
    assert plane.head(database) == 1
    assert plane.read(database, 1) == [(1, b"x'); --")]
    revision = plane.put(key, hostile.encode(), expect=ABSENT)
    assert plane.get(key) == Entry(hostile.encode(), revision, None)
    assert plane.scan(name + hostile) == [(key, Entry(hostile.encode(), revision, None))]
    assert plane.truncate(database, 2) == 1
    plane.drop(database)
    assert plane.delete(key, expect=revision)
    assert plane.head(database) == 0


def test_a_nul_in_a_name_is_refused(plane: ControlPlane, name: str) -> None:
    with pytest.raises(InvalidRequest):
        plane.append(name + "\x00", 1, [b"x"])
    with pytest.raises(InvalidRequest):
        plane.put(name + "\x00", b"x")


def test_a_closed_control_plane_refuses_calls(plane: ControlPlane, name: str) -> None:
    plane.close()
    plane.close()
    with pytest.raises(InterfaceError):
        plane.head(name)
    with pytest.raises(InterfaceError):
        plane.get(name)


def test_the_exported_names_are_deliberate() -> None:
    assert sorted(shoal.controlplane.__all__) == [
        "ABSENT",
        "AppendConflict",
        "Changes",
        "CommitUnknown",
        "ControlPlane",
        "ControlPlaneError",
        "ControlPlaneUnavailable",
        "Entry",
        "KeyConflict",
        "LogWatch",
        "open_control_plane",
    ]
    assert issubclass(ControlPlaneUnavailable, ControlPlaneError)
    assert issubclass(ControlPlaneUnavailable, Unavailable)
    assert issubclass(ControlPlaneError, DatabaseError)
    assert issubclass(shoal.controlplane.CommitUnknown, OutcomeUnknown)  # 502, not retried
    assert not issubclass(shoal.controlplane.CommitUnknown, Unavailable)


# --- choosing by URL ---------------------------------------------------------------------


def test_the_default_control_plane_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    for url in ("", "sqlite"):
        plane = open_control_plane(url, tmp_path / "data")
        assert isinstance(plane, SQLiteControlPlane)
        assert plane.path == tmp_path / "data" / "control.db"
        plane.close()
    elsewhere = tmp_path / "elsewhere" / "cp.db"
    plane = open_control_plane(f"sqlite://{elsewhere}", tmp_path / "data")
    assert isinstance(plane, SQLiteControlPlane) and plane.path == elsewhere
    plane.append("db", 1, [b"x"])
    plane.close()
    assert elsewhere.exists()


def test_a_postgresql_url_opens_postgresql(postgres_dsn: str, tmp_path: Path) -> None:
    plane = open_control_plane(postgres_dsn, tmp_path)
    assert isinstance(plane, PostgresControlPlane)
    plane.close()


def test_nodes_join_while_others_write_keys(postgres_dsn: str) -> None:
    """Opening a plane on tables made before takes no table lock: one that did
    deadlocked with the key-value writes of nodes already running."""
    running = PostgresControlPlane(postgres_dsn)
    stop = threading.Event()

    def heartbeats() -> None:
        while not stop.is_set():
            running.put("node/running", b"{}", ttl=3)

    writer = threading.Thread(target=heartbeats)
    writer.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            joined = list(pool.map(lambda _: PostgresControlPlane(postgres_dsn), range(12)))
    finally:
        stop.set()
        writer.join()
    for plane in [*joined, running]:
        plane.close()


@pytest.mark.parametrize(
    "url", ["mysql://user:secret@host/db", "sqlite://host/x.db", "sqlite:///", "control.db"]
)
def test_other_urls_are_refused_with_the_accepted_forms(url: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="postgresql://") as refused:
        open_control_plane(url, tmp_path)
    assert "secret" not in str(refused.value)


# --- PostgreSQL only: the server goes away --------------------------------------------------


def test_an_unreachable_postgresql_is_unavailable() -> None:
    started = time.monotonic()
    with pytest.raises(ControlPlaneUnavailable) as unavailable:
        PostgresControlPlane(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert isinstance(unavailable.value, Unavailable)  # retryable, as a node's own
    assert time.monotonic() - started < 5


def test_postgresql_down_is_unavailable_and_back_works_again(tmp_path: Path, name: str) -> None:
    with postgres_server(tmp_path) as server:
        plane, leader = PostgresControlPlane(server.dsn), PostgresControlPlane(server.dsn)
        try:
            plane.append(name, 1, [b"one"])
            plane.put(name, b"v")
            server.stop()
            try:
                with pytest.raises(ControlPlaneUnavailable):
                    plane.head(name)
                with pytest.raises(ControlPlaneUnavailable):
                    plane.append(name, 2, [b"two"])
                with pytest.raises(ControlPlaneUnavailable):
                    plane.put(name, b"w")
                with pytest.raises(ControlPlaneUnavailable):
                    plane.follow(name, 1, 0.1)
            finally:
                server.start()
            assert plane.head(name) == 1
            plane.append(name, 2, [b"two"])
            # Restarted with no call in between: the kept connections died idle,
            # and the next call must not be the one to find out.
            server.stop()
            server.start()
            assert plane.read(name, 1) == [(1, b"one"), (2, b"two")]
            assert plane.get(name) is not None
            followed = in_thread(lambda: plane.follow(name, 2, 15))
            time.sleep(0.3)
            leader.append(name, 3, [b"three"])
            assert followed() == [(3, b"three")]
        finally:
            plane.close()
            leader.close()


class _CutConnection:
    """A pooled connection whose next write (an append or a key-value write) is cut
    off: after the server ran it (`ran`), or before it arrived. The fault is the
    only thing mocked."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], *, ran: bool) -> None:
        self._conn, self._ran = conn, ran
        self.closed = False

    def execute(self, sql: str, params: Any = None) -> Any:
        if "shoal_heads" not in sql and "shoal_kv_revision" not in sql:
            return self._conn.execute(sql, params)
        if self._ran:
            self._conn.execute(sql, params)
        self.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    def close(self) -> None:
        self.closed = True
        self._conn.close()


def _cut_next_write(plane: PostgresControlPlane, *, ran: bool) -> None:
    """Makes the connection `plane` takes next cut off its write (once)."""
    take = plane._take

    def cut_once(fresh: bool = False) -> tuple[Any, bool]:
        plane._take = take  # type: ignore[method-assign]
        conn, reused = take(fresh)
        return _CutConnection(conn, ran=ran), reused

    plane._take = cut_once  # type: ignore[method-assign]


@pytest.mark.parametrize("ran", [True, False], ids=["after-commit", "before-arrival"])
def test_an_append_cut_off_is_settled_by_reading_the_log(
    postgres_dsn: str, name: str, ran: bool
) -> None:
    # An append is one statement: when its connection breaks, the node cannot tell
    # whether it committed. The log can: the append lands exactly once, and says so.
    plane = PostgresControlPlane(postgres_dsn)
    try:
        plane.append(name, 1, [b"one"])
        _cut_next_write(plane, ran=ran)
        plane.append(name, 2, [b"two", b"three"])
        assert plane.read(name, 1) == [(1, b"one"), (2, b"two"), (3, b"three")]
        assert plane.head(name) == 3
    finally:
        plane.close()


def test_an_append_cut_off_after_another_won_is_a_conflict(postgres_dsn: str, name: str) -> None:
    plane, rival = PostgresControlPlane(postgres_dsn), PostgresControlPlane(postgres_dsn)
    try:
        plane.append(name, 1, [b"one"])
        rival.append(name, 2, [b"rival's"])
        _cut_next_write(plane, ran=True)  # ran, and found the head moved: no rows
        with pytest.raises(AppendConflict, match="ends at version 2"):
            plane.append(name, 2, [b"two"])
        assert plane.read(name, 1) == [(1, b"one"), (2, b"rival's")]
    finally:
        plane.close()
        rival.close()


@pytest.mark.parametrize("ran", [True, False], ids=["after-commit", "before-arrival"])
def test_a_key_write_cut_off_is_settled_by_reading_the_key(
    postgres_dsn: str, name: str, ran: bool
) -> None:
    # A lease renewal writes the same value over its last revision: cut off, it must
    # neither report a conflict it did not have nor claim a renewal that did not land.
    plane = PostgresControlPlane(postgres_dsn)
    try:
        first = plane.put(name, b"holder n1, epoch 3", expect=ABSENT, ttl=30)
        _cut_next_write(plane, ran=ran)
        renewed = plane.put(name, b"holder n1, epoch 3", expect=first, ttl=30)
        entry = plane.get(name)
        assert entry is not None and entry.revision == renewed > first
        _cut_next_write(plane, ran=ran)
        with pytest.raises(KeyConflict):  # the stale revision still conflicts
            plane.put(name, b"holder n2, epoch 4", expect=first, ttl=30)
        _cut_next_write(plane, ran=ran)
        taken = plane.put(name + "new", b"holder n2, epoch 1", expect=ABSENT)
        assert plane.get(name + "new") == Entry(b"holder n2, epoch 1", taken, None)
    finally:
        plane.close()
