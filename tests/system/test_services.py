"""The real services that system tests and benchmarks start (tests/services.py)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.services import postgres


def test_postgres_answers_with_shipped_durability_and_stops(tmp_path: Path) -> None:
    with postgres(tmp_path) as dsn, psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # The benchmarks compare against PostgreSQL durable as shipped.
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    assert tmp_path.exists()
