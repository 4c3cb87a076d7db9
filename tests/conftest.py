"""Fixtures shared by every test: databases in temporary directories, and the one
SeaweedFS (a real S3 server) and the one PostgreSQL the session shares. The processes
themselves are started by tests/harness/; tests/system/conftest.py adds nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.engine import Database, Role
from tests.harness import S3Endpoint, postgres_server, seaweedfs


def rows(db: Database, sql: str) -> list[tuple[object, ...]]:
    """The rows of the first result of a read."""
    return db.query(sql).results[0].rows


class Pair:
    """A leader and a follower of the same database, kept in step by `sync()`."""

    def __init__(self, directory: Path) -> None:
        self.leader = Database(directory / "leader.db", name="app")
        self.follower = Database(directory / "follower.db", name="app", role=Role.FOLLOWER)

    def sync(self) -> int:
        """Applies every record the follower lacks; returns the follower's version."""
        for raw in self.leader.log_range(self.follower.version + 1):
            self.follower.apply(raw)
        return self.follower.version

    def assert_equal(self) -> None:
        """Syncs, then checks versions and logical checksums agree."""
        self.sync()
        assert self.follower.version == self.leader.version
        assert self.follower.checksum() == self.leader.checksum()

    def close(self) -> None:
        self.leader.close()
        self.follower.close()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    replicas = Pair(tmp_path)
    yield replicas
    replicas.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """A real SeaweedFS for the whole session (it takes seconds to start); tests use
    a bucket or prefix of their own."""
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One PostgreSQL for the session (it takes about a second to start): tests keep
    apart in it by names or databases of their own."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server.dsn


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "test.db", name="test")
    yield database
    database.close()


# SQLAlchemy's dialect suite takes pytest over with its own plugin: it runs in a
# pytest of its own (tests/client/test_dialect.py), never collected here.
collect_ignore = ["client/dialect_suite"]
