"""The SQLAlchemy dialect in process: its URLs, its refusals, the ORM, Alembic, and
SQLAlchemy's own dialect suite (run_dialect_suite, shared with the remote run in
tests/system/test_sqlalchemy.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import shoal
from shoal.engine import Database, Role
from shoal.errors import InterfaceError, Unavailable

SUITE = Path(__file__).parent / "dialect_suite"


@dataclass
class SuiteRun:
    passed: int
    failed: int
    skipped: int
    output: str


def run_dialect_suite(url: str, folder: Path) -> SuiteRun:
    """SQLAlchemy's third-party dialect suite against `url`, in a pytest of its own
    (its plugin takes pytest over), with its counts read from a JUnit report."""
    report = folder / "suite.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE), "--dburi", url, f"--junitxml={report}"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    suite = ElementTree.parse(report).getroot().find("testsuite")
    assert suite is not None, done.stdout[-3000:]
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return SuiteRun(total - skipped - failed, failed, skipped, done.stdout + done.stderr)


def assert_suite_passes(run: SuiteRun) -> None:
    failures = [line for line in run.output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    assert run.failed == 0, "\n".join(failures[:50]) or run.output[-5000:]
    assert run.passed > 1000, run.output[-3000:]  # the suite ran, not just its collection


@pytest.mark.slow
def test_sqlalchemy_dialect_suite_passes_in_process(tmp_path: Path) -> None:
    assert_suite_passes(run_dialect_suite(f"shoal:///{tmp_path / 'suite.db'}", tmp_path))


def test_the_three_url_forms_become_connect_arguments(tmp_path: Path) -> None:
    def connect_args(url: str) -> tuple[list[str], dict[str, object]]:
        engine = sa.create_engine(url)
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        return list(args), dict(kwargs)

    assert connect_args("shoal:///app.db") == (["app.db"], {})
    assert connect_args("shoal:////var/lib/app.db") == (["/var/lib/app.db"], {})
    assert connect_args(
        "shoal:///copy.db?replica_of=http://a:4001/orders&replica_of=http://b:4001/orders"
        "&max_lag_seconds=5&token=t"
    ) == (
        ["copy.db"],
        {
            "replica_of": ["http://a:4001/orders", "http://b:4001/orders"],
            "max_lag_seconds": 5.0,
            "token": "t",
        },
    )
    assert connect_args("shoal+http://node:4001/orders?timeout=3") == (
        ["http://node:4001/orders"],
        {"timeout": 3.0},
    )
    assert connect_args("shoal+https://node/orders") == (["https://node/orders"], {})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("shoal://host/app.db", "a file URL has no host"),
        ("shoal://", "needs a database file"),
        ("shoal:///:memory:", "needs a database file"),
        ("shoal:///app.db?colour=blue", "unknown option 'colour'"),
        ("shoal:///app.db?max_lag_seconds=soon", "must be a number of seconds"),
        ("shoal+http://node:4001", "write shoal\\+http://host:port/database"),
        ("shoal+http://node:4001/a/b", "write shoal\\+http://host:port/database"),
        ("shoal+http://node:4001/db?replica_of=http://x/db", "unknown option 'replica_of'"),
    ],
)
def test_a_bad_url_is_refused_saying_what_to_write(url: str, message: str) -> None:
    with pytest.raises(InterfaceError, match=message):
        sa.create_engine(url)  # SQLAlchemy reads the URL as it makes the engine


def assert_log_replays_to_the_same_data(path: Path) -> None:
    """The log holds every commit: a follower replaying it ends with the same data."""
    leader = Database(path)
    follower = Database(path.with_name("copy.db"), name=leader.name, role=Role.FOLLOWER)
    try:
        for raw in leader.log_range(1):
            follower.apply(raw)
        assert follower.checksum() == leader.checksum()
    finally:
        leader.close()
        follower.close()


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list[Book]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "books"
    __table_args__: ClassVar = {"sqlite_autoincrement": True}  # sqlite_sequence travels too
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def test_the_orm_round_trips_and_every_write_is_one_record(tmp_path: Path) -> None:
    engine = sa.create_engine(f"shoal:///{tmp_path / 'app.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Author(name="Le Guin", books=[Book(title="Lathe"), Book(title="Tehanu")]))
        session.commit()
        with pytest.raises(sa.exc.IntegrityError), session.begin_nested():  # a savepoint
            session.add(Author(id=1, name="duplicate"))  # rolled back alone
        session.add(Book(title="Always Coming Home", author_id=1))
        session.commit()
        titles = session.scalars(sa.select(Book.title).order_by(Book.id)).all()
        assert titles == ["Lathe", "Tehanu", "Always Coming Home"]
    assert sa.inspect(engine).get_table_names() == ["authors", "books"]  # no _shoal_ tables
    engine.dispose()

    assert_log_replays_to_the_same_data(tmp_path / "app.db")


def test_autocommit_isolation_level_is_the_connections_autocommit(tmp_path: Path) -> None:
    engine = sa.create_engine(f"shoal:///{tmp_path / 'app.db'}")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert conn.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]
        conn.exec_driver_sql("CREATE TABLE t(x)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # committed at once, no COMMIT sent
    with engine.connect() as conn:
        assert conn.get_isolation_level() == "SERIALIZABLE"
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    engine.dispose()
    uncommitted = sa.create_engine(
        f"shoal:///{tmp_path / 'app.db'}", isolation_level="READ UNCOMMITTED"
    )
    with pytest.raises(sa.exc.ArgumentError, match="SERIALIZABLE, AUTOCOMMIT"):
        uncommitted.connect()


FIRST = """
revision = "0001"
down_revision = None

from alembic import op
import sqlalchemy as sa


def upgrade():
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(200), nullable=False),
    )
    op.execute("INSERT INTO accounts(email) VALUES ('a@example.com'), ('b@example.com')")


def downgrade():
    op.drop_table("accounts")
"""

SECOND = """
revision = "0002"
down_revision = "0001"

from alembic import op
import sqlalchemy as sa


def upgrade():
    # SQLite cannot ALTER a column's constraints: Alembic copies the table (batch mode).
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("plan", sa.String(20), nullable=False, server_default="free"))
        batch.create_unique_constraint("uq_accounts_email", ["email"])


def downgrade():
    with op.batch_alter_table("accounts") as batch:
        batch.drop_constraint("uq_accounts_email", type_="unique")
        batch.drop_column("plan")
"""

MIGRATED = sa.MetaData()
sa.Table(
    "accounts",
    MIGRATED,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(200), nullable=False),
    sa.Column("plan", sa.String(20), nullable=False, server_default="free"),
    sa.UniqueConstraint("email", name="uq_accounts_email"),
)


def alembic_config(url: str, folder: Path) -> Config:
    """An Alembic project in `folder` (its own templates) holding FIRST and SECOND."""
    command.init(Config(folder / "alembic.ini"), str(folder / "migrations"))  # `alembic init`
    # Without its .ini file, so that env.py leaves the logging configuration alone
    # (fileConfig would disable every logger the later tests read).
    config = Config()
    config.set_main_option("script_location", str(folder / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    versions = folder / "migrations" / "versions"
    (versions / "0001_accounts.py").write_text(textwrap.dedent(FIRST))
    (versions / "0002_plan.py").write_text(textwrap.dedent(SECOND))
    return config


def migrate_and_check(url: str, folder: Path) -> None:
    """Upgrade, check the schema matches MIGRATED (autogenerate proposes nothing,
    shoal's own tables included), downgrade a step and upgrade again."""
    config = alembic_config(url, folder)
    command.upgrade(config, "head")
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), MIGRATED) == []
            rows = conn.exec_driver_sql("SELECT email, plan FROM accounts ORDER BY id").all()
            assert [tuple(row) for row in rows] == [
                ("a@example.com", "free"),
                ("b@example.com", "free"),
            ]
            with pytest.raises(sa.exc.IntegrityError):
                conn.exec_driver_sql("INSERT INTO accounts(email) VALUES ('a@example.com')")
            conn.rollback()
        command.downgrade(config, "0001")
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), MIGRATED) == []
    finally:
        engine.dispose()


def test_alembic_migrates_a_file_and_the_log_replays_it(tmp_path: Path) -> None:
    migrate_and_check(f"shoal:///{tmp_path / 'app.db'}", tmp_path)
    assert_log_replays_to_the_same_data(tmp_path / "app.db")


def test_shoal_names_its_sqlite_like_sqlite3() -> None:
    assert shoal.sqlite_version_info >= (3, 54, 0)
    assert shoal.sqlite_version == ".".join(map(str, shoal.sqlite_version_info))


def test_only_a_nodes_unavailability_makes_the_pool_start_afresh(tmp_path: Path) -> None:
    closed, unreachable = InterfaceError("the connection is closed"), Unavailable("no node")
    file, node = sa.create_engine("shoal:///x.db"), sa.create_engine("shoal+http://h:1/db")
    assert file.dialect.is_disconnect(closed, None, None)
    assert not file.dialect.is_disconnect(unreachable, None, None)  # a replica reads on
    assert node.dialect.is_disconnect(unreachable, None, None)
    assert node.dialect.is_disconnect(closed, None, None)
