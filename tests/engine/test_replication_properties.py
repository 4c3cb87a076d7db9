"""Property-based replication: random transactions on a leader, replayed by followers.

A hypothesis state machine runs random write transactions on a leader whose tables
have different shapes (INTEGER PRIMARY KEY, no primary key, WITHOUT ROWID with a
composite text key, AUTOINCREMENT, UNIQUE): inserts of awkward values (64-bit
extremes, inf, -0.0, NaN, NUL and astral text, blobs, NULL), updates and deletes on
random keys, INSERT OR REPLACE/IGNORE/FAIL/ROLLBACK and upserts, key changes,
unique-value swaps, bulk inserts from SQL functions, RETURNING, statements that
fail inside a transaction that still commits, nested savepoints rolled back or
released, whole transactions rolled back, and schema changes (ADD/DROP/RENAME
COLUMN, indexes, CREATE TABLE ... AS SELECT, DROP TABLE, views, triggers,
user_version) mixed with row changes in the same transaction.

After every transaction:
- each follower applies the new records and then has the leader's version, logical
  checksum and user_version;
- a transaction that failed or was rolled back left no version and no change; one
  that changed the checksum made exactly one version; one that wrote nothing at all
  made none (rows written and put back may make one).
At a random point, between transactions or while one is open, a snapshot seeds a
second follower, which catches up by apply and must match too; copies are also
closed and reopened.

SHOAL_HYPOTHESIS_EXAMPLES and SHOAL_HYPOTHESIS_STEPS raise the search effort, e.g.
SHOAL_HYPOTHESIS_EXAMPLES=1000 SHOAL_HYPOTHESIS_STEPS=40 to hunt for bugs.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
)

from shoal.engine import Database, Result, Role, Transaction
from shoal.errors import (
    DataError,
    Error,
    IntegrityError,
    NotSupportedError,
    OperationalError,
    SQLError,
)

EXAMPLES = int(os.environ.get("SHOAL_HYPOTHESIS_EXAMPLES", "100"))
STEPS = int(os.environ.get("SHOAL_HYPOTHESIS_STEPS", "20"))


def expected(exc: Error) -> bool:
    """Whether a random statement may legitimately fail so: a constraint, SQL that no
    longer fits the schema (a dropped table, an indexed column), a value SQLite refuses,
    no rowid left for AUTOINCREMENT (SQLITE_FULL), or a row of a table without primary
    key changed twice in one statement in a way capture refuses (engine/rowid_tables.py)."""
    if isinstance(exc, (IntegrityError, SQLError, DataError, NotSupportedError)):
        return True
    return type(exc) is OperationalError and "full" in str(exc)


BASE_SCHEMA = (
    "CREATE TABLE t_int(id INTEGER PRIMARY KEY, a, b TEXT, c REAL);",
    "CREATE TABLE t_plain(a, b INTEGER, c BLOB);",
    "CREATE TABLE t_wr(k1 TEXT, k2 TEXT, v, w NUMERIC, PRIMARY KEY (k1, k2)) WITHOUT ROWID;",
    "CREATE TABLE t_auto(id INTEGER PRIMARY KEY AUTOINCREMENT, v);",
    "CREATE TABLE t_uniq(id INTEGER PRIMARY KEY, u UNIQUE, v, w NUMERIC);",
)

# -- values ---------------------------------------------------------------------

# A small pool makes keys and UNIQUE values collide; 1 and 1.0 are equal to a UNIQUE
# index, 0.0 and -0.0 too, while the checksum tells them apart.
POOL = st.sampled_from(
    [None, 0, 1, 1.0, -0.0, 0.0, "1", "a", "b", "", "\x00", b"", b"\x01", 2**63 - 1]
)
WIDE = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([2**63 - 1, -(2**63), -1, 2**31, -(2**53) - 1]),
    st.floats(),  # includes inf, -inf, -0.0, subnormals and NaN (stored as NULL)
    st.sampled_from([math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308]),
    st.text(max_size=12),  # includes NUL and astral characters
    st.sampled_from(["\x00", "a\x00b", "ä", "𝄞", "\U0010ffff", "'; DROP TABLE t_int; --"]),
    st.binary(max_size=12),
)
VALUES = st.one_of(POOL, WIDE)
ROWIDS = st.one_of(
    st.integers(min_value=1, max_value=6),
    st.sampled_from([-5, 0, 2**63 - 1, -(2**63)]),
)
TEXT_KEYS = st.sampled_from(["", "a", "b", "A", "ä", "\x00", "a\x00b", "𝄞"])
KEYS = st.one_of(TEXT_KEYS, TEXT_KEYS, TEXT_KEYS, VALUES)

# -- the schema as the generator sees it -----------------------------------------


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]  # the writable (not generated) columns
    key: tuple[str, ...]  # primary key of a WITHOUT ROWID table; () for a rowid table
    alias: str | None  # the INTEGER PRIMARY KEY of a rowid table, written as "rowid"

    @property
    def created(self) -> bool:
        """Made by a transaction (not the base schema): may be dropped or renamed."""
        return not self.name.startswith("t_")

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in self.key and c != self.alias)


@dataclass(frozen=True)
class Schema:
    tables: tuple[Table, ...]
    indexes: tuple[str, ...]
    views: tuple[str, ...]
    triggers: tuple[str, ...]


def _second(row: tuple[Any, Any]) -> Any:
    return row[1]


def read_schema(db: Database) -> Schema:
    def rows(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return db.query(sql, params).results[0].rows

    objects = rows(
        "SELECT type, name FROM sqlite_schema WHERE name NOT LIKE 'sqlite%' "
        "AND name NOT LIKE '\\_shoal\\_%' ESCAPE '\\' ORDER BY name"
    )
    tables = []
    for kind, name in objects:
        if kind != "table":
            continue
        info = rows("SELECT name, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid", (name,))
        without_rowid = rows("SELECT wr FROM pragma_table_list WHERE name = ?", (name,))[0][0]
        columns = tuple(str(n) for n, _, hidden in info if hidden == 0)
        key = tuple(str(n) for n, _ in sorted(((n, pk) for n, pk, _ in info if pk), key=_second))
        if without_rowid:
            tables.append(Table(str(name), columns, key, None))
        else:
            tables.append(Table(str(name), columns, (), key[0] if len(key) == 1 else None))
    return Schema(
        tuple(tables),
        tuple(str(n) for k, n in objects if k == "index"),
        tuple(str(n) for k, n in objects if k == "view"),
        tuple(str(n) for k, n in objects if k == "trigger"),
    )


# -- transactions -----------------------------------------------------------------


@dataclass(frozen=True)
class Stmt:
    """One SQL statement; `ddl` when it must make a record even if no row changes."""

    sql: str
    params: tuple[Any, ...] = ()
    ddl: bool = False

    def __repr__(self) -> str:
        return f"Stmt({self.sql!r}, {self.params!r}{', ddl=True' if self.ddl else ''})"


@dataclass(frozen=True)
class Savepoint:
    """SAVEPOINT name, the body, then `undo` (ROLLBACK TO) and `release`, when given."""

    name: str
    body: tuple[Step, ...]
    undo: str | None
    release: str | None

    def statements(self) -> Iterator[Stmt]:
        yield Stmt(f"SAVEPOINT {self.name}")
        for step in self.body:
            yield from step.statements() if isinstance(step, Savepoint) else step
        if self.undo is not None:
            yield Stmt(f"{self.undo} {self.name}")
        if self.release is not None:
            yield Stmt(f"{self.release} {self.name}")


Step = tuple[Stmt, ...] | Savepoint


@dataclass(frozen=True)
class Plan:
    """One transaction.

    mode: "tx" runs each statement through Transaction.execute and lets failures
    pass; "all" is execute_all (all or nothing); "script" is one execute() of every
    statement joined into one SQL string; "rollback" is "tx" ended by rollback().
    """

    mode: str
    steps: tuple[Step, ...]
    snapshot_midway: bool

    def statements(self) -> Iterator[Stmt]:
        """The statements in order, savepoints spelled out."""
        for step in self.steps:
            yield from step.statements() if isinstance(step, Savepoint) else step


def _where(draw: st.DrawFn, table: Table, params: list[Any]) -> str:
    """A WHERE clause (possibly none) that picks a few rows of `table`."""
    choice = draw(st.sampled_from(["key", "key", "key", "in", "is", "parity", "all"]))
    if choice in ("is", "parity") and not table.values:
        choice = "key"
    if choice == "key":
        if table.key:
            keys = table.key[: draw(st.integers(1, len(table.key)))]
            params.extend(draw(KEYS) for _ in keys)
            return " WHERE " + " AND ".join(f"{k} = ?" for k in keys)
        params.append(draw(ROWIDS))
        return " WHERE rowid = ?"
    if choice == "in":
        column = table.key[0] if table.key else "rowid"
        keys = draw(st.lists(KEYS if table.key else ROWIDS, min_size=1, max_size=3))
        params.extend(keys)
        return f" WHERE {column} IN ({', '.join('?' for _ in keys)})"
    if choice == "is":
        params.append(draw(VALUES))
        return f" WHERE {draw(st.sampled_from(table.values))} IS ?"
    if choice == "parity":
        return f" WHERE length(CAST({draw(st.sampled_from(table.values))} AS BLOB)) % 2 = 0"
    return ""


@st.composite
def inserts(draw: st.DrawFn, table: Table) -> tuple[Stmt, ...]:
    verb = draw(
        st.sampled_from(
            [
                "INSERT",
                "INSERT",
                "INSERT OR REPLACE",
                "INSERT OR IGNORE",
                "REPLACE",
                "INSERT OR FAIL",
                "INSERT OR ROLLBACK",
            ]
        )
    )
    columns = list(table.key) + draw(
        st.lists(st.sampled_from(table.values), unique=True, max_size=len(table.values))
        if table.values
        else st.just([])
    )
    if not table.key and draw(st.booleans()):
        columns.insert(0, "rowid")
    if not columns:
        return (Stmt(f"{verb} INTO {table.name} DEFAULT VALUES"),)
    params: list[Any] = []
    rows = draw(st.integers(1, 3))
    for _ in range(rows):
        for column in columns:
            if column == "rowid":
                params.append(draw(st.one_of(ROWIDS, st.none())))
            elif column in table.key:
                params.append(draw(KEYS))
            else:
                params.append(draw(VALUES))
    row = "(" + ", ".join("?" for _ in columns) + ")"
    sql = f"{verb} INTO {table.name}({', '.join(columns)}) VALUES " + ", ".join([row] * rows)
    if verb == "INSERT" and table.values and draw(st.booleans()):
        column = draw(st.sampled_from(table.values))
        sql += draw(
            st.sampled_from(
                [
                    " ON CONFLICT DO NOTHING",
                    f" ON CONFLICT DO UPDATE SET {column} = excluded.{column}",
                ]
            )
        )
    return (Stmt(sql, tuple(params)),)


@st.composite
def updates(draw: st.DrawFn, table: Table) -> tuple[Stmt, ...]:
    verb = draw(st.sampled_from(["UPDATE", "UPDATE", "UPDATE OR REPLACE", "UPDATE OR IGNORE"]))
    params: list[Any] = []
    if not table.values or draw(st.integers(0, 4)) == 0:  # change the key itself
        if table.key:
            column, value = draw(st.sampled_from(table.key)), draw(KEYS)
        else:
            column, value = "rowid", draw(ROWIDS)
        params.append(value)
        sets = f"{column} = ?"
    else:
        columns = draw(st.lists(st.sampled_from(table.values), min_size=1, max_size=2, unique=True))
        sets = ", ".join(f"{c} = ?" for c in columns)
        params.extend(draw(VALUES) for _ in columns)
    where = _where(draw, table, params)
    return (Stmt(f"{verb} {table.name} SET {sets}{where}", tuple(params)),)


@st.composite
def deletes(draw: st.DrawFn, table: Table) -> tuple[Stmt, ...]:
    params: list[Any] = []
    where = _where(draw, table, params)
    return (Stmt(f"DELETE FROM {table.name}{where}", tuple(params)),)


@st.composite
def swaps(draw: st.DrawFn, table: Table) -> tuple[Stmt, ...]:
    """Two rows exchange the values of a column, via a third column as stash."""
    column, stash = draw(st.permutations(table.values))[:2]
    one, two = draw(st.lists(st.integers(1, 4), min_size=2, max_size=2, unique=True))
    t = table.name
    return (
        Stmt(f"UPDATE {t} SET {stash} = {column}, {column} = NULL WHERE rowid = ?", (one,)),
        Stmt(
            f"UPDATE {t} SET {column} = (SELECT {stash} FROM {t} WHERE rowid = ?), "
            f"{stash} = {column} WHERE rowid = ?",
            (one, two),
        ),
        Stmt(
            f"UPDATE {t} SET {column} = (SELECT {stash} FROM {t} WHERE rowid = ?) WHERE rowid = ?",
            (two, one),
        ),
    )


@st.composite
def bulk(draw: st.DrawFn, table: Table) -> tuple[Stmt, ...]:
    """Many rows at once (a record large enough to be compressed), from SQL functions."""
    columns = list(table.key) + list(table.values[:2])
    start = draw(st.integers(0, 1000))
    exprs = [f"'bulk' || (i + {start})" for _ in table.key]
    exprs += draw(
        st.lists(
            st.sampled_from(["randomblob(i % 16)", "i * 0.5", "hex(randomblob(4))", "-i", "NULL"]),
            min_size=len(columns) - len(exprs),
            max_size=len(columns) - len(exprs),
        )
    )
    return (
        Stmt(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            f"INSERT OR IGNORE INTO {table.name}({', '.join(columns)}) "
            f"SELECT {', '.join(exprs)} FROM n",
            (draw(st.integers(20, 300)),),
        ),
    )


@st.composite
def dml(draw: st.DrawFn, schema: Schema) -> tuple[Stmt, ...]:
    table = draw(st.sampled_from(schema.tables))
    kinds = [inserts, inserts, inserts, updates, updates, deletes]
    if not table.key and len(table.values) >= 2:
        kinds.append(swaps)
    if table.values and draw(st.integers(0, 9)) == 0:
        kinds = [bulk]
    stmts: tuple[Stmt, ...] = draw(draw(st.sampled_from(kinds))(table))
    if len(stmts) == 1 and draw(st.integers(0, 5)) == 0:
        stmts = (Stmt(stmts[0].sql + " RETURNING *", stmts[0].params),)
    return stmts


@st.composite
def reads(draw: st.DrawFn, schema: Schema) -> tuple[Stmt, ...]:
    """A statement that only reads, inside the write transaction."""
    table = draw(st.sampled_from(schema.tables))
    return (Stmt(f"SELECT count(*), typeof(max({table.columns[0]})) FROM {table.name}"),)


DEFAULTS = [
    "",
    " DEFAULT 0",
    " DEFAULT -1",
    " DEFAULT 'd'",
    " DEFAULT 1.5",
    " DEFAULT x'00ff'",
    " DEFAULT -0.0",
    " DEFAULT 9e999",
    " DEFAULT NULL",
    " NOT NULL DEFAULT 7",
]
TYPES = ["", " INTEGER", " TEXT", " REAL", " BLOB", " NUMERIC"]


@st.composite
def ddl(draw: st.DrawFn, schema: Schema, fresh: str) -> tuple[Stmt, ...]:
    """One schema statement; new objects are named after `fresh` and a drawn number."""
    fresh = f"{fresh}_{draw(st.integers(0, 999))}"
    table = draw(st.sampled_from(schema.tables))
    t = table.name
    created = [x for x in schema.tables if x.created]
    column = draw(st.sampled_from(table.columns))
    choices = [
        "add_column",
        "index",
        "ctas",
        "create_table",
        "view",
        "trigger",
        "user_version",
        "drop_column",
    ]
    if schema.indexes:
        choices.append("drop_index")
    if schema.views:
        choices.append("drop_view")
    if schema.triggers:
        choices.append("drop_trigger")
    if created:
        choices += ["drop_table", "drop_table", "rename_table", "rename_column"]
    choice = draw(st.sampled_from(choices))
    if choice == "add_column":
        if draw(st.integers(0, 4)) == 0:
            sql = f"ALTER TABLE {t} ADD COLUMN g{fresh} AS (typeof({column}) || {column})"
        else:
            kind, default = draw(st.sampled_from(TYPES)), draw(st.sampled_from(DEFAULTS))
            sql = f"ALTER TABLE {t} ADD COLUMN x{fresh}{kind}{default}"
    elif choice == "index":
        unique = draw(st.sampled_from(["", "UNIQUE "]))
        other = draw(st.sampled_from(table.columns))
        on = draw(st.sampled_from([column, f"{column}, {other}", f"typeof({column})"]))
        where = draw(st.sampled_from(["", f" WHERE {column} IS NOT NULL"]))
        sql = f"CREATE {unique}INDEX ix{fresh} ON {t}({on}){where}"
    elif choice == "ctas":
        tail = draw(
            st.sampled_from(["", f" WHERE {column} IS NOT NULL", " ORDER BY random() LIMIT 2"])
        )
        sql = f"CREATE TABLE c{fresh} AS SELECT * FROM {t}{tail}"
    elif choice == "create_table":
        sql = draw(
            st.sampled_from(
                [
                    f"CREATE TABLE c{fresh}(id INTEGER PRIMARY KEY AUTOINCREMENT, x, y TEXT)",
                    f"CREATE TABLE c{fresh}(k TEXT PRIMARY KEY, x, y REAL) WITHOUT ROWID",
                    f"CREATE TABLE c{fresh}(x, y UNIQUE, z INTEGER)",
                ]
            )
        )
    elif choice == "view":
        sql = f"CREATE VIEW v{fresh} AS SELECT * FROM {t}"
    elif choice == "trigger":
        event = draw(st.sampled_from(["INSERT", "UPDATE", "DELETE"]))
        body = draw(
            st.sampled_from(
                [
                    f"INSERT INTO t_auto(v) VALUES ('tr{fresh}')",
                    "UPDATE t_plain SET b = coalesce(b, 0) + 1 WHERE rowid = 1",
                    "DELETE FROM t_wr WHERE k1 = 'a'",
                ]
            )
        )
        sql = f"CREATE TRIGGER tr{fresh} AFTER {event} ON {t} BEGIN {body}; END"
    elif choice == "user_version":
        sql = f"PRAGMA user_version = {draw(st.integers(0, 3))}"
    elif choice == "drop_column":
        sql = f"ALTER TABLE {t} DROP COLUMN {column}"
    elif choice == "drop_index":
        sql = f"DROP INDEX {draw(st.sampled_from(schema.indexes))}"
    elif choice == "drop_view":
        sql = f"DROP VIEW {draw(st.sampled_from(schema.views))}"
    elif choice == "drop_trigger":
        sql = f"DROP TRIGGER {draw(st.sampled_from(schema.triggers))}"
    else:
        target = draw(st.sampled_from(created))
        if choice == "drop_table":
            sql = f"DROP TABLE {target.name}"
        elif choice == "rename_table":
            sql = f"ALTER TABLE {target.name} RENAME TO c{fresh}"
        else:
            old = draw(st.sampled_from(target.columns))
            sql = f"ALTER TABLE {target.name} RENAME COLUMN {old} TO r{fresh}"
    return (Stmt(sql, ddl=True),)


SAVEPOINT_NAMES = ["sp", "sp", "SP", "sp2", '"sp 3"', "[sp]"]
UNDO = [None, "ROLLBACK TO", "ROLLBACK TO SAVEPOINT", "ROLLBACK TRANSACTION TO SAVEPOINT"]
RELEASE = ["RELEASE", "RELEASE", "RELEASE SAVEPOINT", None]  # None: left open at COMMIT


@st.composite
def savepoints(draw: st.DrawFn, single: st.SearchStrategy[Step], depth: int) -> Savepoint:
    inner = st.one_of(single, single, savepoints(single, depth + 1)) if depth < 2 else single
    return Savepoint(
        draw(st.sampled_from(SAVEPOINT_NAMES)),
        tuple(draw(st.lists(inner, min_size=1, max_size=3))),
        draw(st.sampled_from(UNDO)),
        draw(st.sampled_from(RELEASE)),
    )


@st.composite
def plans(draw: st.DrawFn, schema: Schema, fresh: str, can_snapshot: bool) -> Plan:
    single = st.one_of(dml(schema), dml(schema), dml(schema), reads(schema), ddl(schema, fresh))
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 5))):
        if draw(st.integers(0, 4)) == 0:
            steps.append(draw(savepoints(single, 0)))
        else:
            steps.append(draw(single))
    mode = draw(st.sampled_from(["tx", "tx", "tx", "all", "script", "rollback"]))
    snapshot = can_snapshot and mode in ("tx", "rollback") and draw(st.integers(0, 3)) == 0
    return Plan(mode, tuple(steps), snapshot)


# -- the state machine ------------------------------------------------------------


def wrote(results: Sequence[Result]) -> bool:
    return any(result.rows_affected for result in results)


def user_version(db: Database) -> int:
    return int(db.query("PRAGMA user_version").results[0].rows[0][0])


class Replication(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="shoal-props-"))
        self.leader = Database(self.dir / "leader.db")
        self.followers = [Database(self.dir / "f1.db", name=self.leader.name, role=Role.FOLLOWER)]
        self.seeded = False
        self.counter = 0
        self.schema = Schema((), (), (), ())

    @initialize()
    def create_tables(self) -> None:
        outcome = self.leader.execute("\n".join(BASE_SCHEMA))
        assert outcome.version == self.leader.version == 1
        self.check_followers()
        self.schema = read_schema(self.leader)

    def check_followers(self) -> None:
        expected = self.leader.checksum()
        for follower in self.followers:
            for raw in self.leader.log_range(follower.version + 1):
                follower.apply(raw)
            assert follower.version == self.leader.version
            assert follower.checksum() == expected
            assert user_version(follower) == user_version(self.leader)

    def seed(self, at_version: int, at_checksum: str) -> None:
        snapshot = self.dir / "snapshot.db"
        assert self.leader.snapshot(snapshot) == at_version
        seeded = Database.seed(snapshot, self.dir / "f2.db")
        assert seeded.name == self.leader.name
        assert seeded.role is Role.FOLLOWER
        assert seeded.version == at_version
        assert seeded.checksum() == at_checksum
        self.followers.append(seeded)
        self.seeded = True

    @rule(data=st.data())
    def transaction(self, data: st.DataObject) -> None:
        self.counter += 1
        plan = data.draw(plans(self.schema, str(self.counter), not self.seeded), label="plan")
        version, checksum = self.leader.version, self.leader.checksum()
        committed, touched = self.run(plan, version, checksum)
        after, now = self.leader.checksum(), self.leader.version
        if not committed:
            assert now == version, "a failed or rolled-back transaction made a version"
            assert after == checksum, "a failed or rolled-back transaction left changes"
        elif after != checksum:
            assert now == version + 1, "a transaction that changed data made no version"
        elif not touched:
            assert now == version, "a transaction that wrote nothing made a version"
        else:  # rows written and put back (or DDL undone): a record is allowed, not required
            assert now in (version, version + 1)
        assert len(self.leader.log_range(version + 1)) == now - version
        self.check_followers()
        self.schema = read_schema(self.leader)

    def run(self, plan: Plan, version: int, checksum: str) -> tuple[bool, bool]:
        """Runs the plan on the leader: whether it committed, and whether any statement
        wrote (changed a row, or changed the schema or a replicated pragma)."""
        statements = list(plan.statements())
        try:
            if plan.mode == "all":
                outcome = self.leader.execute_all([(s.sql, s.params) for s in statements])
            elif plan.mode == "script":
                sql = ";\n".join(s.sql for s in statements)
                outcome = self.leader.execute(sql, tuple(p for s in statements for p in s.params))
            else:
                return self.run_transaction(plan, version, checksum)
        except Error as exc:
            if not expected(exc):
                raise
            return False, False
        assert outcome.version == self.leader.version
        assert len(outcome.results) == len(statements)
        return True, any(s.ddl for s in statements) or wrote(outcome.results)

    def run_transaction(self, plan: Plan, version: int, checksum: str) -> tuple[bool, bool]:
        tx = self.leader.transaction()
        try:
            touched = self.run_steps(tx, plan)
            if plan.snapshot_midway:  # an open transaction is not in the snapshot
                self.seed(version, checksum)
            if plan.mode == "rollback":
                tx.rollback()
                return False, False
            new = tx.commit()
        except Error as exc:
            if not expected(exc):
                raise
            return False, False
        finally:
            tx.rollback()  # nothing to do once committed or rolled back
        assert new == self.leader.version
        return True, touched

    @staticmethod
    def run_steps(tx: Transaction, plan: Plan) -> bool:
        """Runs every statement, letting expected failures pass; whether any wrote."""
        touched = False
        for stmt in plan.statements():
            try:
                results = tx.execute(stmt.sql, stmt.params)
            except Error as exc:
                if not expected(exc) or not tx.is_open:
                    raise  # unexpected, or SQLite rolled the whole transaction back
                continue
            touched = touched or stmt.ddl or wrote(results)
        return touched

    @precondition(lambda self: not self.seeded)
    @rule()
    def seed_follower(self) -> None:
        self.seed(self.leader.version, self.leader.checksum())
        self.check_followers()

    @rule()
    def reopen(self) -> None:
        """Closing and reopening every copy keeps versions and contents."""
        version = self.leader.version
        self.leader.close()
        self.leader = Database(self.dir / "leader.db")
        assert self.leader.version == version
        reopened = []
        for follower in self.followers:
            follower.close()
            reopened.append(Database(follower.path, role=Role.FOLLOWER))
        self.followers = reopened
        self.check_followers()

    def teardown(self) -> None:
        self.leader.close()
        for follower in self.followers:
            follower.close()
        shutil.rmtree(self.dir, ignore_errors=True)


Replication.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestReplication = Replication.TestCase
