"""Real clients against a real node: pyrqlite (an rqlite client from PyPI, unchanged),
shoal's own remote DB-API, and the `shoal db`, `shoal token` and `shoal shell` commands."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pyrqlite.dbapi2 as rqlite
import pytest

import shoal
from shoal.client.remote import NodeClient
from shoal.errors import (
    DatabaseNotFound,
    IntegrityError,
    OperationalError,
    ProgrammingError,
    SQLError,
    Unauthorized,
    Unavailable,
)
from tests.harness import Node
from tests.system.conftest import StartNode


def shoal_command(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        input=stdin,
    )


def test_pyrqlite_works_unchanged(node: Node) -> None:
    conn = rqlite.connect(host="127.0.0.1", port=node.port)
    cursor = conn.cursor()
    cursor.execute("CREATE TABLE foo (id INTEGER NOT NULL PRIMARY KEY, name TEXT, score REAL)")
    cursor.execute("INSERT INTO foo(name, score) VALUES(?, ?)", ("fiona", 1.5))
    assert cursor.lastrowid == 1
    cursor.executemany("INSERT INTO foo(name) VALUES(?)", seq_of_parameters=[("a",), ("b",)])
    cursor.execute("UPDATE foo SET score = 2 WHERE name IN ('a', 'b')")
    assert cursor.rowcount == 2
    cursor.execute("SELECT id, name, score FROM foo ORDER BY id")
    rows = cursor.fetchall()
    assert [tuple(row.values()) for row in rows] == [(1, "fiona", 1.5), (2, "a", 2), (3, "b", 2)]
    assert [d[0] for d in cursor.description] == ["id", "name", "score"]
    with pytest.raises(rqlite.Error, match="UNIQUE"):
        cursor.execute("INSERT INTO foo(id) VALUES(1)")
    conn.close()


def test_pyrqlite_with_basic_auth(start_node: StartNode, tmp_path: Path) -> None:
    data = tmp_path / "secured"
    created = shoal_command("token", "create", "app", "--scope", "write", "--data-dir", str(data))
    secret = created.stdout.strip()
    node = start_node(data_dir=data)
    conn = rqlite.connect(host="127.0.0.1", port=node.port, user="app", password=secret)
    cursor = conn.cursor()
    cursor.execute("CREATE TABLE t(a)")
    cursor.execute("SELECT count(*) AS n FROM t")
    assert cursor.fetchone()["n"] == 0
    wrong = rqlite.connect(host="127.0.0.1", port=node.port, user="app", password="nope")
    with pytest.raises(rqlite.Error, match="401"):
        wrong.cursor().execute("SELECT 1")


def test_remote_dbapi_behaves_like_the_embedded_one(node: Node) -> None:
    conn = shoal.connect(f"{node.url}/default")
    conn.execute("CREATE TABLE kv(k TEXT PRIMARY KEY, v)")
    conn.commit()
    cursor = conn.cursor()
    cursor.execute("INSERT INTO kv VALUES (?, ?)", ("a", b"\x00\xff"))
    cursor.execute("INSERT INTO kv VALUES (:k, :v)", {"k": "b", "v": float("inf")})
    assert cursor.lastrowid == 2 and conn.in_transaction
    # Inside the transaction reads see its writes; another connection does not yet.
    assert conn.execute("SELECT count(*) FROM kv").fetchone() == (2,)
    other = shoal.connect(f"{node.url}/default")
    assert other.execute("SELECT count(*) FROM kv").fetchone() == (0,)
    conn.commit()
    assert conn.version == 2
    rows = other.execute("SELECT k, v FROM kv ORDER BY k").fetchall()
    assert rows == [("a", b"\x00\xff"), ("b", float("inf"))]
    assert other.execute("SELECT k FROM kv").description[0][0] == "k"

    conn.execute("DELETE FROM kv")
    conn.rollback()
    assert other.execute("SELECT count(*) FROM kv").fetchone() == (2,)
    with pytest.raises(IntegrityError):
        conn.execute("INSERT INTO kv VALUES ('a', 1)")
    with pytest.raises(ProgrammingError, match="syntax error"):
        conn.execute("SELEC 1")
    conn.rollback()
    with conn:  # commits on success
        conn.execute("UPDATE kv SET v = 1")
    assert other.execute("SELECT count(*) FROM kv WHERE v = 1").fetchone() == (2,)
    conn.close()
    other.close()


def test_remote_dbapi_read_with_min_version_waits_for_it(node: Node) -> None:
    conn = shoal.connect(f"{node.url}/default", autocommit=True)
    conn.execute("CREATE TABLE t(x)")
    wanted = conn.version + 1
    reader = shoal.connect(f"{node.url}/default")
    write = threading.Timer(0.3, lambda: conn.execute("INSERT INTO t VALUES (1)"))
    write.start()
    try:  # asked before the write lands: the node waits for it, then answers
        assert reader.execute("SELECT count(*) FROM t", min_version=wanted).fetchone() == (1,)
    finally:
        write.join()
        conn.close()
        reader.close()


def test_remote_dbapi_autocommit_errors_and_tokens(start_node: StartNode, tmp_path: Path) -> None:
    data = tmp_path / "node"
    secret = shoal_command("token", "create", "me", "--scope", "admin", "--data-dir", str(data))
    node = start_node(data_dir=data)
    with pytest.raises(Unauthorized):
        shoal.connect(f"{node.url}/default").execute("SELECT 1")
    conn = shoal.connect(f"{node.url}/default", token=secret.stdout.strip(), autocommit=True)
    conn.execute("CREATE TABLE t(a)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction and conn.version == 2
    with pytest.raises(DatabaseNotFound):
        shoal.connect(f"{node.url}/nope", token=secret.stdout.strip()).execute("SELECT 1")
    node.stop()
    with pytest.raises(OperationalError, match="cannot reach"):
        conn.execute("SELECT 1")


def test_db_and_token_commands(node: Node, tmp_path: Path) -> None:
    url = ["--url", node.url]
    assert shoal_command("db", "create", "tenant-a", *url).returncode == 0
    listing = shoal_command("db", "list", *url)
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["name", "version", "size", "state"]
    assert any(line.startswith("tenant-a") for line in lines)
    first = shoal_command("db", "list", "--limit", "1", *url)
    assert [line.split()[0] for line in first.stdout.splitlines()[2:]] == ["default"]
    assert "more: shoal db list --after default" in first.stderr
    every = shoal_command("db", "list", "--limit", "1", "--all", *url)
    assert [line.split()[0] for line in every.stdout.splitlines()[2:]] == ["default", "tenant-a"]
    assert every.stderr == ""
    many = shoal_command("query-many", "*", "SELECT count(*) FROM t", *url)
    assert many.returncode == 1 and "2 databases read, 2 failed" in many.stderr
    assert "no such table: t" in many.stderr
    found = shoal.query_many(node.url, "SELECT count(*) FROM t", pattern="*")
    assert found.rows == [] and found.databases == 2
    assert {type(e) for e in found.errors.values()} == {SQLError}
    nothing = shoal_command("query-many", "nobody-*", "SELECT 1", *url)
    assert nothing.returncode == 0 and nothing.stdout == ""
    assert "0 databases read, 0 failed" in nothing.stderr
    many = shoal_command("query-many", "tenant-*", "SELECT 1 AS one", *url)
    assert many.returncode == 0 and many.stdout.split() == [
        "db",
        "one",
        "--------",
        "---",
        "tenant-a",
        "1",
    ]
    info = shoal_command("db", "info", "tenant-a", *url)
    assert "role" in info.stdout and "leader" in info.stdout
    refused = shoal_command("db", "drop", "tenant-a", *url)
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert shoal_command("db", "drop", "tenant-a", "--yes", *url).returncode == 0
    missing = shoal_command("db", "info", "tenant-a", *url)
    assert missing.returncode == 1 and "DatabaseNotFound" in missing.stderr

    data = ["--data-dir", str(tmp_path / "tokens")]
    made = shoal_command("token", "create", "ci", "--scope", "write", "--database", "app-*", *data)
    assert made.stdout.startswith("shoal_") and "only time" in made.stderr
    listed = shoal_command("token", "list", *data).stdout
    assert "ci" in listed and "app-*" in listed and made.stdout.strip() not in listed
    assert shoal_command("token", "revoke", "ci", *data).returncode == 0
    assert shoal_command("token", "revoke", "ci", *data).returncode == 1


def test_creating_a_token_keeps_the_cli_working_on_the_nodes_machine(
    start_node: StartNode, tmp_path: Path
) -> None:
    """The README's steps, twice, in the directory holding ./shoal-data: the CLI uses
    the node's local admin credential, each new token works at once, and revoking
    the last one gives loopback clients their token-free access back."""
    data = tmp_path / "shoal-data"
    node = start_node(data_dir=data)
    url = ["--url", node.url]
    for round_ in range(2):
        made = shoal_command(
            "token",
            "create",
            "ci",
            "--scope",
            "write",
            "--database",
            "app-*",
            "--replace",
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        listed = shoal_command("db", "list", *url, cwd=tmp_path)
        assert listed.returncode == 0 and "default" in listed.stdout, listed.stderr
        assert shoal_command("db", "create", f"app-{round_}", *url, cwd=tmp_path).returncode == 0
        written = shoal_command(  # the new token, at once: no wait, no retry
            "shell",
            f"{node.url}/app-{round_}",
            stdin="CREATE TABLE t(a);\n",
            env={"SHOAL_TOKEN": made.stdout.strip()},
        )
        assert written.returncode == 0, written.stderr
        elsewhere = shoal_command("db", "list", *url, cwd=data)
        assert elsewhere.returncode == 1 and len(elsewhere.stderr.strip().splitlines()) == 1
        assert f"--data-dir {data}" in elsewhere.stderr and "SHOAL_TOKEN" in elsewhere.stderr
        assert httpx.get(f"{node.url}/v1/databases").status_code == 401
        assert shoal_command("token", "revoke", "ci", cwd=tmp_path).returncode == 0
        assert httpx.get(f"{node.url}/v1/databases").status_code == 200  # loopback, no token
    by_env = {"SHOAL_DATA_DIR": str(data)}
    assert shoal_command("db", "list", *url, env=by_env, cwd=data).returncode == 0


def test_remote_dbapi_reads_shoal_token(
    start_node: StartNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "node"
    made = shoal_command("token", "create", "app", "--scope", "read", "--data-dir", str(data))
    node = start_node(data_dir=data)
    monkeypatch.setenv("SHOAL_TOKEN", made.stdout.strip())
    with shoal.connect(f"{node.url}/default") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_shell_against_a_node_with_piped_input(node: Node) -> None:
    script = (
        "CREATE TABLE t(a, b);\nINSERT INTO t VALUES (1, 'x');\n"
        ".mode csv\nSELECT * FROM t;\n.tables\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "shoal", "shell", f"{node.url}/default"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "a,b\n1,x\n" in done.stdout and "t" in done.stdout.split()


def test_remote_dbapi_when_the_node_vanishes_mid_request(node: Node) -> None:
    conn = shoal.connect(f"{node.url}/default")
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000000) "
        "SELECT count(*) FROM n"
    )
    killer = threading.Timer(0.5, node.kill)
    killer.start()
    with pytest.raises(OperationalError, match="cannot reach"):
        conn.execute(slow)
    killer.join()
    conn.close()


def test_query_many_waits_as_long_as_its_own_timeout(start_node: StartNode) -> None:
    """A call given more time than the client's HTTP timeout gets its answer, the
    database too slow for it reported in it, not a cut connection."""
    node = start_node("--statement-seconds", "4")
    view = (
        "CREATE VIEW w AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
        "SELECT max(x) AS n FROM c"
    )
    httpx.post(f"{node.url}/v1/databases", json={"name": "slow"})
    httpx.post(f"{node.url}/v1/databases/slow/execute", json={"sql": view})
    client = NodeClient(node.url, timeout=1.0)
    try:
        found = client.query_many("SELECT n FROM w", databases=["slow"], timeout=2.0)
    finally:
        client.close()
    assert found.rows == [] and isinstance(found.errors["slow"], Unavailable)
