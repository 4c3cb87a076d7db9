"""One shoal database: a SQLite file in WAL mode whose every write is captured.

Concurrency rules:

- One writer connection (transaction.Writer), owned by whoever holds its lock (a
  Transaction). Only it appends to the log, and it computes the next version inside
  its own `BEGIN IMMEDIATE` transaction, so two writers can never log the same version.
- Readers are per-thread read-only connections; WAL lets them run while the
  writer writes. A read never takes the writer.
- A follower's writer has triggers and foreign keys off and takes records only
  through `apply`; users may read it but not write it.
- Foreign-key enforcement is the database's setting, not a connection's: it is
  kept in `_shoal_meta`, changed by a record of its own, and mirrored on readers
  so that `PRAGMA foreign_keys` answers it everywhere.
- An application's Python functions (engine.functions) are registered on the
  writer at once and on each reader by its own thread, before its next read.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import apsw

from shoal.engine import log
from shoal.engine.apply import apply_record
from shoal.engine.capture import Capture, SequenceRows, read_sequence
from shoal.engine.checksum import logical_checksum
from shoal.engine.execute import (
    CutShort,
    Deadline,
    Description,
    Descriptions,
    Limits,
    Params,
    Result,
    Row,
    described,
    error_from,
    run,
)
from shoal.engine.functions import Function
from shoal.engine.group_commit import GroupCommit, groupable
from shoal.engine.policy import Policy
from shoal.engine.pragmas import Settings, foreign_keys_request
from shoal.engine.sqltext import Kind, classify, is_single_statement
from shoal.engine.transaction import CommitHook, Transaction, Writer
from shoal.errors import (
    Busy,
    Error,
    LogTruncated,
    OperationalError,
    OutOfOrder,
    QueryWrites,
    ReadOnly,
    ReplicationError,
    WrongDatabase,
    from_apsw,
)
from shoal.record import Op, Record, Statement, decode, encode

__all__ = ["Database", "Options", "Outcome", "Role", "connect", "read_file"]

Statements = Iterable[tuple[str, Params]]
_PRAGMA = Kind.PRAGMA  # for reads, where every call counts: Kind.PRAGMA is a lookup


class Role(Enum):
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(frozen=True)
class Options:
    """How a database's connections are set up."""

    synchronous: str = "normal"  # "normal": fsync at checkpoints; "full": on every commit
    # The database's foreign-key setting, made so on opening it as the leader; None
    # keeps what the database has (a new one starts with SQLite's default, off).
    foreign_keys: bool | None = None
    busy_timeout_ms: int = 5000
    limits: Limits = field(default_factory=Limits)


@dataclass(slots=True)
class _Reader:
    """A thread's read-only connection, with the cursor its point reads reuse."""

    conn: apsw.Connection
    policy: Policy
    deadline: Deadline
    cursor: apsw.Cursor
    # The foreign-key setting the connection mirrors; None until it is configured
    # (again, once a function is registered).
    foreign_keys: bool | None = None
    functions: dict[tuple[str, int], Function] = field(default_factory=dict)  # installed
    descriptions: Descriptions = field(default_factory=dict)  # see execute.read_one


def _refresh_schema(reader: _Reader) -> None:
    """Brings the reader's copy of the schema up to date. SQLite reloads it when a
    statement reads a table and finds the schema changed, but some pragmas
    (`foreign_key_list`, for one) answer from the copy it has, so without this a
    reader would describe tables as they were before another connection's DDL."""
    with reader.policy.trusted():
        reader.conn.execute("SELECT 1 FROM sqlite_schema LIMIT 0").fetchall()


@dataclass(frozen=True)
class Outcome:
    """Results of a request and the database version they reflect."""

    version: int
    results: list[Result]


def connect(
    path: Path, options: Options, *, flags: int, policy: Policy, deadline: Deadline
) -> apsw.Connection:
    """A connection to the file at `path` opened with `flags`, with `policy` as its
    authorizer and `deadline`'s progress handler; a writer's (READWRITE|CREATE) is
    put in WAL mode at the node's `synchronous` setting."""
    try:
        conn = apsw.Connection(str(path), flags=flags)
    except apsw.Error as exc:
        raise OperationalError(f"cannot open {path}: {exc}") from None
    conn.set_busy_timeout(options.busy_timeout_ms)
    if flags & apsw.SQLITE_OPEN_CREATE:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {options.synchronous.upper()}")
    conn.authorizer = policy
    deadline.install(conn)
    return conn


_WRITER_FLAGS = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE


def read_file(path: Path, sql: str, params: Params, options: Options) -> list[Result]:
    """Runs `sql` once on the shoal database file at `path` as a Database's reader
    would (the same authorizer, which refuses writes, and the same limits), on a
    connection opened and closed for it: a read of a database its caller does not
    hold open. The connection may write, though the authorizer lets it not, so
    that as the last one to close it removes the WAL files, as a Database does (a
    read-only one would leave them behind). A read does not depend on the file's
    foreign-key setting or on registered functions."""
    policy, deadline = Policy(Settings(synchronous=options.synchronous), reader=True), Deadline()
    flags = apsw.SQLITE_OPEN_READWRITE
    conn = connect(path, options, flags=flags, policy=policy, deadline=deadline)
    try:
        with policy.trusted():
            conn.execute("PRAGMA query_only = 1")  # what makes it a reader
        return run(conn, policy, deadline, sql, params, options.limits)
    finally:
        conn.close()


class Database:
    """A SQLite database with capture, an embedded log, apply, snapshot and checksum."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        role: Role = Role.LEADER,
        options: Options | None = None,
    ) -> None:
        self.path = Path(path)
        self.options = options or Options()
        if self.options.synchronous not in ("normal", "full"):
            raise ValueError("synchronous must be 'normal' or 'full'")
        self._readers_lock = threading.Lock()
        self._readers: list[_Reader] = []
        self._functions: dict[tuple[str, int], Function] = {}  # by Function.key
        self._local = threading.local()
        # Reads under no limit take read_one's path, without run()'s bookkeeping.
        self._unlimited = self.options.limits == Limits()
        self._settings = Settings(synchronous=self.options.synchronous)
        policy, deadline = Policy(self._settings), Deadline()
        self._writer = Writer(
            self._connect(readonly=False, policy=policy, deadline=deadline),
            policy,
            deadline,
            self.options.limits,
            threading.RLock(),
        )
        self._group = GroupCommit(self._writer.lock, self.transaction, lambda: self._version)
        self.name, self.epoch = self._init_meta(name or self.path.stem)
        self.role = role
        self.commit_hook: CommitHook | None = None
        # Called with the new version from the thread that committed or applied it
        # (a node wakes what waits for versions); they must be quick and not raise.
        self.listeners: list[Callable[[int], None]] = []
        self._configure_writer()
        with self._writer.policy.trusted():
            self._version = log.head(self._writer.conn)
            self._sequence = read_sequence(self._writer.conn)
        self._closed = False
        wanted = self.options.foreign_keys
        if wanted is not None and wanted != self.foreign_keys and role is Role.LEADER:
            self.set_foreign_keys(wanted)

    # -- connections ---------------------------------------------------------

    def _connect(self, *, readonly: bool, policy: Policy, deadline: Deadline) -> apsw.Connection:
        flags = apsw.SQLITE_OPEN_READONLY if readonly else _WRITER_FLAGS
        return connect(self.path, self.options, flags=flags, policy=policy, deadline=deadline)

    def _configure_writer(self) -> None:
        leader = self.role is Role.LEADER
        self._writer.conn.config(apsw.SQLITE_DBCONFIG_ENABLE_TRIGGER, 1 if leader else 0)
        fk = "ON" if leader and self._settings.foreign_keys else "OFF"
        with self._writer.policy.trusted():
            self._writer.conn.execute(f"PRAGMA foreign_keys = {fk}")

    def _init_meta(self, name: str) -> tuple[str, int]:
        conn = self._writer.conn
        with self._writer.policy.trusted(), conn:
            # Whether the log explains the whole database: only if it began empty. A
            # file with tables from before shoal (or from before this key existed)
            # is "adopted": replaying its log from nothing would not rebuild it.
            user_objects = conn.execute(
                "SELECT 1 FROM sqlite_schema WHERE name NOT LIKE '\\_shoal\\_%' ESCAPE '\\' LIMIT 1"
            ).fetchall()
            log.create(conn)
            conn.execute(
                "INSERT OR IGNORE INTO _shoal_meta(key, value) "
                "VALUES ('name', ?), ('epoch', 1), ('origin', ?)",
                (name, "adopted" if user_objects else "empty"),
            )
            meta = dict(conn.execute("SELECT key, value FROM _shoal_meta"))
        self.began_empty = meta["origin"] == "empty"
        self._read_settings()
        return str(meta["name"]), int(meta["epoch"])

    def _read_settings(self) -> None:
        """Reads the settings kept in `_shoal_meta` (a record may have changed them)."""
        with self._writer.policy.trusted():
            rows = self._writer.conn.execute(
                "SELECT value FROM _shoal_meta WHERE key = 'foreign_keys'"
            ).fetchall()
        self._settings.foreign_keys = bool(rows) and rows[0][0] == 1

    def _reader(self) -> _Reader:
        reader: _Reader | None = getattr(self._local, "reader", None)
        if reader is None:
            if self._closed:
                raise OperationalError(f"database {self.name!r} is closed")
            policy, deadline = Policy(self._settings, reader=True), Deadline()
            conn = self._connect(readonly=True, policy=policy, deadline=deadline)
            reader = self._local.reader = _Reader(conn, policy, deadline, conn.cursor())
            with self._readers_lock:
                self._readers.append(reader)
        if reader.foreign_keys is not self._settings.foreign_keys:
            self._configure(reader)
        return reader

    def _configure(self, reader: _Reader) -> None:
        """Mirrors the foreign-key setting on the reader, and installs the functions
        registered since it was last configured. Setting the pragma also expires
        the connection's prepared statements, so a cached user pragma is judged
        again under the new setting."""
        # Marked first: a function registered from now on marks it again.
        reader.foreign_keys = self._settings.foreign_keys
        with reader.policy.trusted():
            reader.conn.execute(f"PRAGMA foreign_keys = {int(reader.foreign_keys)}")
        for key, function in self._functions.items():
            if reader.functions.get(key) is not function:
                function.install(reader.conn)
                reader.functions[key] = function

    # -- functions -----------------------------------------------------------

    def register(self, function: Function) -> None:
        """Makes an application's SQL function (or its removal) hold on every
        connection: the writer now, each reader before its thread's next read."""
        with self._writer.lock:
            if self._closed:
                raise OperationalError(f"database {self.name!r} is closed")
            try:
                function.install(self._writer.conn)
            except (apsw.Error, ValueError, TypeError) as exc:
                raise from_apsw(exc) from None
            # A new dict, not an update: readers iterate the one they took.
            self._functions = {**self._functions, function.key: function}
        with self._readers_lock:
            for reader in self._readers:
                reader.foreign_keys = None  # configured again by its own thread

    def functions(self) -> list[Function]:
        """What `register` was given, the latest per name and number of arguments."""
        return list(self._functions.values())

    # -- reads ---------------------------------------------------------------

    @property
    def version(self) -> int:
        """The version of the last committed write transaction."""
        return self._version

    def file_version(self) -> int:
        """The newest version in the file, which another process may have written
        since this one last did (`version` is this process's view)."""
        return log.head(self._reader().conn)

    def query(self, sql: str, params: Params = None, *, limits: Limits | None = None) -> Outcome:
        """Runs statements that only read, on this thread's reader; never takes the writer.

        The version reported is the newest committed before the read began, so the
        rows reflect at least that version.
        """
        version = self._version
        return Outcome(version, self.read(sql, params, limits=limits))

    def read(
        self, sql: str, params: Params = None, *, limits: Limits | None = None
    ) -> list[Result]:
        """`query` without the version: the DB-API's reads, where every call counts."""
        if limits is None and self._unlimited and _one_statement_not_pragma(sql):
            return [Result(*self.read_one(sql, params))]
        reader = self._reader()
        if classify(sql) is _PRAGMA:
            _refresh_schema(reader)
        try:
            return run(
                reader.conn,
                reader.policy,
                reader.deadline,
                sql,
                params,
                limits or self.options.limits,
                cursor=reader.cursor,
                descriptions=reader.descriptions,
            )
        except BaseException as exc:
            # Stopped before its last statement, the cursor would refuse the next read
            # ("remaining sql statements"): the thread's reads go on with a new one.
            reader.cursor.close(force=True)
            reader.cursor = reader.conn.cursor()
            if isinstance(exc, ReadOnly):
                raise _query_writes() from None
            raise

    def read_one(self, sql: str, params: Params = None) -> tuple[Description, list[Row]]:
        """`read` of a text that holds one statement other than a PRAGMA (`read`
        refreshes the schema for those), as (description, rows): the DB-API's
        point reads, where every call counts. The same errors as `read`."""
        try:
            reader: _Reader = self._local.reader
        except AttributeError:
            reader = self._reader()
        if reader.foreign_keys is not self._settings.foreign_keys:
            reader = self._reader()
        if not self._unlimited:
            result = self.read(sql, params)[0]
            return result.description, result.rows
        cursor = reader.cursor
        try:
            # execute.read_one, written out: every call counts here. Without
            # USER_PREPARE_FLAGS (passing them costs a thirtieth of a point read): a
            # reader is read-only, and what the engine leaves in its statement cache
            # is reads of tables a user may read too, or PRAGMAs, which never come
            # here; so sharing the cache grants nothing (test_policy checks it).
            cursor.execute(sql, params)
            known = reader.descriptions.get(sql)
            if known is not None and known[0] == reader.conn.data_version():
                return known[1], cursor.fetchall()
            return described(reader.conn, cursor, sql, params, reader.descriptions)
        except Exception as exc:
            error = error_from(exc, reader.policy, reader.deadline)
            raise (_query_writes() if isinstance(error, ReadOnly) else error) from None

    @contextmanager
    def briefly(self, seconds: float, *, write: bool = False) -> Iterator[None]:
        """Cuts this thread's reads (or, with `write`, its writes) short once the
        block has run `seconds`, raising `CutShort`: the event loop serves the work
        that takes a moment itself, and hands the rest to a thread. Without a
        statement time limit nothing bounds a statement, so it is cut short at once.

        A write cut short is rolled back whole, so it may run again elsewhere. The
        block holds the writer, and is cut short at once unless the writer is free
        this instant, no commit hook waits on another server, and a commit does not
        wait for the disk (synchronous=FULL): the loop must never wait."""
        if self.options.limits.statement_seconds is None:
            raise CutShort()
        writer = self._writer
        if write and (
            self.commit_hook is not None
            or self.options.synchronous == "full"
            or not writer.lock.acquire(blocking=False)
        ):
            raise CutShort()
        deadline = writer.deadline if write else self._reader().deadline
        deadline.brief_until = time.monotonic() + seconds
        try:
            yield
        finally:
            deadline.brief_until = None
            if write:
                writer.lock.release()

    def _read_committed(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """Runs an engine query on this thread's reader: the last committed state."""
        reader = self._reader()
        with reader.policy.trusted():
            return reader.conn.execute(sql, params).fetchall()

    def checksum(self) -> str:
        """The logical checksum of the schema and every row (see engine.checksum)."""
        reader = self._reader()
        with reader.policy.trusted():
            return logical_checksum(reader.conn)

    # -- writes --------------------------------------------------------------

    def transaction(self) -> Transaction:
        """Opens the write transaction (waiting for the writer); commit or roll it back."""
        if self.role is not Role.LEADER:
            raise self._follower_here()
        writer = self._writer
        if not writer.lock.acquire(timeout=self.options.busy_timeout_ms / 1000):
            raise Busy(
                f"database {self.name!r}: the writer stayed busy for "
                f"{self.options.busy_timeout_ms} ms (another transaction holds it); retry"
            )
        try:
            if self._closed:
                raise OperationalError(f"database {self.name!r} is closed")
            if self.role is not Role.LEADER:  # demoted while this one waited for the writer
                raise self._follower_here()
            with writer.policy.trusted():
                base = self._begin_write()
            capture = Capture(writer.conn, writer.policy, self._sequence, self._read_committed)
        except BaseException as exc:
            if not self._closed and not writer.conn.getautocommit():
                with writer.policy.trusted():
                    writer.conn.execute("ROLLBACK")
            writer.lock.release()
            if isinstance(exc, apsw.Error):
                raise from_apsw(exc) from None
            raise
        return Transaction(self, writer, base, capture)

    def _follower_here(self) -> ReadOnly:
        return ReadOnly(f"database {self.name!r} is a follower here; writes go to its leader")

    def _begin_write(self) -> int:
        """BEGIN IMMEDIATE; returns the log's head. When another process wrote the
        file meanwhile, refreshes the caches, and the writer's foreign keys if that
        write changed the setting (SQLite changes them only between transactions)."""
        conn = self._writer.conn
        while True:
            conn.execute("BEGIN IMMEDIATE")
            head = log.head(conn)
            if head == self._version:
                return head
            self._version, self._sequence = head, read_sequence(conn)
            enforced = self._settings.foreign_keys
            self._read_settings()
            if self._settings.foreign_keys == enforced:
                return head
            conn.execute("ROLLBACK")
            self._configure_writer()

    # What a Transaction asks of its database (transaction.Host).

    def _record(self, version: int, ops: tuple[Op, ...]) -> Record:
        return Record(self.name, version, self.epoch, time.time_ns(), ops)

    def _committed(self, version: int, sequence: SequenceRows | None) -> None:
        self._version, self._sequence = version, sequence

    def execute(self, sql: str, params: Params = None) -> Outcome:
        """Runs `sql` as one write transaction: every statement in it, or none."""
        kind = classify(sql)
        if kind is Kind.VACUUM:
            return Outcome(self.vacuum(), [Result()])
        if kind is Kind.PRAGMA and (wanted := foreign_keys_request(sql)) is not None:
            return Outcome(self.set_foreign_keys(wanted), [Result()])
        return self.execute_all([(sql, params)])

    def execute_all(self, statements: Statements) -> Outcome:
        """Runs the statements as one all-or-nothing write transaction.

        A request of one plain statement (no schema change, pragma or savepoint)
        may be committed together with other threads' (group commit): each runs in
        its own savepoint of one transaction, so a failing one undoes only itself,
        and all of them report that transaction's version.
        """
        batch = list(statements)
        if len(batch) != 1 or not groupable(batch[0][0]):
            with self.transaction() as tx:
                results = [result for sql, params in batch for result in tx.execute(sql, params)]
            return Outcome(tx.version, results)
        return Outcome(*self._group.submit(*batch[0]))

    def execute_each(self, statements: Statements) -> list[Outcome | Error | CutShort]:
        """Runs each statement text as a write transaction of its own, as `execute`
        does, on this one thread: the plain ones group-committed together. Each
        one's outcome, or the Error it raised, or (in a brief run, see `briefly`)
        CutShort for one that was not committed and may run again elsewhere."""
        batch = list(statements)
        plain = [index for index, (sql, _) in enumerate(batch) if groupable(sql)]
        grouped = dict(zip(plain, self._group.submit_many([batch[i] for i in plain]), strict=True))
        answers: list[Outcome | Error | CutShort] = []
        for index, (sql, params) in enumerate(batch):
            if index not in grouped:
                try:
                    answers.append(self.execute(sql, params))
                except (Error, CutShort) as exc:
                    answers.append(exc)
                continue
            answer = grouped[index]
            if isinstance(answer, tuple):
                answers.append(Outcome(*answer))
            elif isinstance(answer, (Error, CutShort)):
                answers.append(answer)
            else:
                raise answer  # not a statement's failure (an interrupt): everyone's
        return answers

    def vacuum(self) -> int:
        """Runs VACUUM after logging it as a barrier (followers then re-seed).

        The barrier is logged first: a crash between the two leaves a barrier
        with nothing behind it, which costs a needless re-seed and loses nothing.
        """
        with self.transaction() as tx:
            tx.add_barrier()
        with self._writer.lock, self._writer.policy.trusted():
            try:
                self._writer.conn.execute("VACUUM")
            except apsw.Error as exc:
                raise from_apsw(exc) from None
        return tx.version

    @property
    def foreign_keys(self) -> bool:
        """Whether the leader enforces foreign keys: the database's setting."""
        return self._settings.foreign_keys

    def set_foreign_keys(self, enabled: bool) -> int:
        """Makes foreign-key enforcement the database's setting; returns the version.

        The change is a record of its own (a row of `_shoal_meta`), so copies and
        restores carry it. It cannot run inside a transaction: SQLite changes
        the pragma only between them, and the writer is every client's.
        """
        tx = self.transaction()
        with self._writer.lock:  # tx holds it; kept until the writer is reconfigured
            if enabled == self._settings.foreign_keys:
                tx.rollback()
                return self._version
            try:
                tx.run_trusted(
                    "INSERT OR REPLACE INTO _shoal_meta(key, value) "
                    f"VALUES ('foreign_keys', {int(enabled)})"
                )
            except BaseException:
                tx.rollback()
                raise
            version = tx.commit()
            self._settings.foreign_keys = enabled
            self._configure_writer()
        return version

    # -- replication ---------------------------------------------------------

    def apply(self, data: bytes | Record) -> int:
        """Applies the next record to this follower; returns the new version.

        Raises CorruptRecord, WrongDatabase, OutOfOrder, ApplyConflict or
        ReseedRequired, and then nothing has changed.
        """
        return self.apply_many([data])

    def apply_many(self, records: Iterable[bytes | Record]) -> int:
        """Applies consecutive records in one transaction; returns the new version.

        Catching up (a restore, a follower behind) pays one commit per run
        instead of one per record. All or nothing: on any of apply()'s errors
        the whole run is rolled back.
        """
        with self._writer.lock:
            if self.role is not Role.FOLLOWER:
                raise ReplicationError(
                    f"database {self.name!r} is the leader here; it does not apply"
                )
            conn = self._writer.conn
            statements = False
            try:
                with self._writer.policy.trusted():
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        version = log.head(conn)
                        for data in records:
                            version, ran = self._apply_next(conn, data, version + 1)
                            statements = statements or ran
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
            except Error:
                raise
            except apsw.Error as exc:
                raise from_apsw(exc) from None
            with self._writer.policy.trusted():
                self._sequence = read_sequence(conn)
            if statements:
                self._read_settings()
            # Last: a reader that waits for this version (a replica's write-through)
            # must find the settings it brought in place once it sees it.
            self._version = version
        self._advanced(version)
        return version

    def _advanced(self, version: int) -> None:
        for listener in self.listeners:
            listener(version)

    def _apply_next(
        self, conn: apsw.Connection, data: bytes | Record, expected: int
    ) -> tuple[int, bool]:
        """Applies one record; returns its version and whether it ran statements
        (only a statement can change a setting)."""
        if isinstance(data, Record):
            record, raw = data, encode(data)
        else:
            record, raw = decode(data), bytes(data)
        if record.database != self.name:
            raise WrongDatabase(self.name, record.database)
        if record.version != expected:
            raise OutOfOrder(expected, record.version)
        apply_record(conn, record)
        log.append(conn, record.version, raw)
        return record.version, any(isinstance(op, Statement) for op in record.ops)

    def log_range(self, start: int, end: int | None = None) -> list[bytes]:
        """The encoded records from `start` to `end` (inclusive; to the newest if None)."""
        return log.read_range(self._reader().conn, start, end)

    def log_after(self, after: int, limit: int) -> list[bytes]:
        """Up to `limit` encoded records from version `after + 1` on, read in one
        statement; LogTruncated when this copy's log no longer holds `after + 1`."""
        rows = log.read_after(self._reader().conn, after, limit)
        if rows and rows[0][0] != after + 1:
            raise LogTruncated(self.name, after, rows[0][0])
        return [record for _, record in rows]

    def records(self, start: int, end: int | None = None) -> list[Record]:
        """The decoded records from `start` to `end`."""
        return [decode(raw) for raw in self.log_range(start, end)]

    def truncate_log(self, below: int) -> int:
        """Drops log records older than `below` (never the newest); returns how many."""
        with self._writer.lock, self._writer.policy.trusted():
            self._writer.conn.execute("BEGIN IMMEDIATE")
            try:
                dropped = log.truncate(self._writer.conn, below)
            except BaseException:
                self._writer.conn.execute("ROLLBACK")
                raise
            self._writer.conn.execute("COMMIT")
        return dropped

    @contextmanager
    def writer_held(self) -> Iterator[None]:
        """Holds the writer for the block: no write transaction runs or starts."""
        with self._writer.lock:
            yield

    def promote(self, epoch: int | None = None) -> None:
        """Makes this copy the leader: triggers and foreign keys back on; its
        records from now on carry `epoch`, when given (a new leadership)."""
        with self._writer.lock:
            if epoch is not None and epoch != self.epoch:
                with self._writer.policy.trusted(), self._writer.conn:
                    self._writer.conn.execute(
                        "UPDATE _shoal_meta SET value = ? WHERE key = 'epoch'", (epoch,)
                    )
                self.epoch = epoch
            self.role = Role.LEADER
            self._configure_writer()

    def demote(self) -> None:
        """Makes this copy a follower: it takes records only through apply()."""
        with self._writer.lock:
            self.role = Role.FOLLOWER
            self._configure_writer()

    def snapshot(self, dest: str | os.PathLike[str]) -> int:
        """Writes a consistent copy to `dest` from one read transaction; returns its version.

        Writers are not stopped: the copy is taken with SQLite's backup API in a
        single step, which holds one read transaction for its whole length.
        """
        target = Path(dest)
        if target.exists():
            raise OperationalError(f"snapshot target {target} already exists")
        source = self._connect(readonly=True, policy=Policy(), deadline=Deadline())
        partial = target.with_name(target.name + ".partial")
        try:
            copy = apsw.Connection(str(partial))
            try:
                with copy.backup("main", source, "main") as backup:
                    backup.step(-1)
                version = log.head(copy)
            finally:
                copy.close()
        except apsw.Error as exc:
            partial.unlink(missing_ok=True)
            raise from_apsw(exc) from None
        finally:
            source.close()
        os.replace(partial, target)
        return version

    @classmethod
    def seed(
        cls,
        snapshot: str | os.PathLike[str],
        path: str | os.PathLike[str],
        *,
        options: Options | None = None,
    ) -> Database:
        """A new follower at `path` seeded from a snapshot file; it catches up with apply()."""
        target = Path(path)
        if target.exists():
            raise OperationalError(f"cannot seed {target}: it already exists")
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(snapshot, partial)
        os.replace(partial, target)
        return cls(target, role=Role.FOLLOWER, options=options)

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        """Closes every connection; the object is unusable afterwards."""
        with self._writer.lock:
            if self._closed:
                return
            self._closed = True
            with self._readers_lock:
                for reader in self._readers:
                    reader.conn.close()
                self._readers.clear()
            self._writer.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_ONE_NOT_PRAGMA: dict[str, bool] = {}  # SQL text: its answer, as read() found it
_ONE_NOT_PRAGMA_KEPT = 4096


def _one_statement_not_pragma(sql: str) -> bool:
    """Whether `sql` is one statement other than a PRAGMA: what read_one takes."""
    answer = _ONE_NOT_PRAGMA.get(sql)
    if answer is None:
        answer = is_single_statement(sql) and classify(sql) is not _PRAGMA
        if len(_ONE_NOT_PRAGMA) >= _ONE_NOT_PRAGMA_KEPT:
            _ONE_NOT_PRAGMA.clear()
        _ONE_NOT_PRAGMA[sql] = answer
    return answer


def _query_writes() -> QueryWrites:
    return QueryWrites(
        "this statement writes, and a query runs only statements that read; "
        "send it as a write (execute)"
    )
