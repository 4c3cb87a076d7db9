"""The real services that system tests and benchmarks start (tests/harness/)."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.harness import postgres_server


def test_postgres_answers_with_shipped_durability_and_stops(tmp_path: Path) -> None:
    with postgres_server(tmp_path) as server, psycopg.connect(server.dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        # The benchmarks compare against PostgreSQL durable as shipped.
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
        postmaster = Path(f"/proc/{server.postmaster_pid()}/comm")
        assert postmaster.read_text().strip() == "postgres"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server.dsn, connect_timeout=2)
    assert tmp_path.exists()
