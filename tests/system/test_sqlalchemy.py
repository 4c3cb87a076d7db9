"""The SQLAlchemy dialects against a real `shoal serve`: SQLAlchemy's dialect suite
over HTTP, Alembic migrating a node's database, and an application's ORM on an
embedded replica (a pool of connections sharing one copy) reading its own writes."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from shoal.engine import Database, Role
from tests.client.test_dialect import assert_suite_passes, migrate_and_check, run_dialect_suite
from tests.harness import Node


def create(node: Node, name: str) -> str:
    httpx.post(f"{node.url}/v1/databases", json={"name": name}).raise_for_status()
    return f"{node.url}/{name}"


@pytest.mark.slow
def test_sqlalchemy_dialect_suite_passes_over_http(node: Node, tmp_path: Path) -> None:
    create(node, "suite")
    url = node.url.replace("http://", "shoal+http://") + "/suite"
    assert_suite_passes(run_dialect_suite(url, tmp_path))


def test_alembic_migrates_a_nodes_database_and_a_replica_follows(
    node: Node, tmp_path: Path
) -> None:
    database = create(node, "app")
    migrate_and_check(database.replace("http://", "shoal+http://"), tmp_path)
    engine = sa.create_engine(f"shoal:///{tmp_path / 'copy.db'}?replica_of={database}")
    with engine.connect() as conn:
        replica = conn.connection.dbapi_connection
        replica.sync()  # type: ignore[union-attr]
        info = httpx.get(f"{node.url}/v1/databases/app", params={"checksum": "1"}).json()
        assert replica.version == info["version"]  # type: ignore[union-attr]
        assert replica.database.checksum() == info["checksum"]  # type: ignore[union-attr]
    engine.dispose()


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str]
    total: Mapped[int]


def test_an_orm_on_a_replica_reads_its_own_writes_from_every_pooled_connection(
    node: Node, tmp_path: Path
) -> None:
    database = create(node, "shop")
    Base.metadata.create_all(sa.create_engine(database.replace("http://", "shoal+http://")))
    engine = sa.create_engine(f"shoal:///{tmp_path / 'shop.db'}?replica_of={database}", pool_size=4)

    def place(n: int) -> int:
        with Session(engine) as session:
            order = Order(customer=f"c{n % 3}", total=n)
            session.add(order)
            session.commit()  # returns once this process's copy holds the order
            found = session.get(Order, order.id)  # read from the copy
            assert found is not None and found.total == n
            return order.id

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(place, range(40)))
    assert len(set(ids)) == 40
    with Session(engine) as session:
        totals = session.execute(
            sa.select(Order.customer, sa.func.sum(Order.total)).group_by(Order.customer)
        ).all()
        assert sorted(totals) == [("c0", 273), ("c1", 247), ("c2", 260)]
    engine.dispose()
    # Every pooled connection shared one copy, seeded once and never replaced.
    copy = Database(tmp_path / "shop.db", name="shop", role=Role.FOLLOWER)
    try:
        info = httpx.get(f"{node.url}/v1/databases/shop", params={"checksum": "1"}).json()
        assert copy.checksum() == info["checksum"]
    finally:
        copy.close()
