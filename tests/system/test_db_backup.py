"""`shoal db backup` and `shoal db load` against a real node: round trips through a
SQLite file and SQL text, progress, and every error changing nothing."""

from __future__ import annotations

from pathlib import Path

import apsw
import httpx
import pytest

from shoal.client.remote import NodeClient
from shoal.client.transfer import backup, load
from shoal.dump import SQLITE_HEADER
from tests.harness import Node
from tests.system.test_clients import shoal_command

SCHEMA = [
    "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, b BLOB)",
    "CREATE INDEX t_v ON t(v)",
    "CREATE VIEW big AS SELECT id FROM t WHERE id > 1",
    "INSERT INTO t VALUES (1, 'one', x'00ff'), (2, 'two', NULL), (3, 'it''s', zeroblob(3))",
]


def execute(node: Node, name: str, *statements: str) -> None:
    response = httpx.post(
        f"{node.url}/v1/databases/{name}/execute", json={"statements": list(statements)}
    )
    assert response.status_code == 200, response.text


def info(node: Node, name: str) -> dict[str, object]:
    response = httpx.get(f"{node.url}/v1/databases/{name}", params={"checksum": "1"})
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def sql_of(node: Node, name: str) -> str:
    return httpx.get(f"{node.url}/v1/databases/{name}/backup", params={"format": "sql"}).text


def db(node: Node, *args: str) -> tuple[int, str, str]:
    done = shoal_command("db", *args, "--url", node.url)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory for the test's files alone (the node's data is beside it)."""
    path = tmp_path / "files"
    path.mkdir()
    return path


@pytest.fixture
def source(node: Node) -> Node:
    assert db(node, "create", "src")[0] == 0
    execute(node, "src", *SCHEMA)
    return node


def test_backup_then_load_into_a_new_database(source: Node, files: Path) -> None:
    node, file = source, files / "src.db"
    code, out, err = db(node, "backup", "src", str(file))
    assert code == 0, err
    assert "backed up src at version 1" in out and file.read_bytes().startswith(SQLITE_HEADER)
    conn = apsw.Connection(str(file))  # a plain SQLite file
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(3,)]
    conn.close()
    assert [p.name for p in files.iterdir()] == ["src.db"]  # no temporary left behind
    assert db(node, "create", "copy")[0] == 0
    code, out, err = db(node, "load", "copy", str(file))
    assert code == 0, err
    assert "(sqlite," in out
    assert info(node, "copy")["checksum"] == info(node, "src")["checksum"]
    assert sql_of(node, "copy") == sql_of(node, "src")


def test_sql_backups_and_sql_text_load(source: Node, files: Path) -> None:
    node, dumped = source, files / "src.sql"
    assert db(node, "backup", "src", str(dumped), "--format", "sql")[0] == 0
    assert dumped.read_text() == sql_of(node, "src")
    assert db(node, "create", "from-sql")[0] == 0
    code, out, err = db(node, "load", "from-sql", str(dumped))
    assert code == 0 and "(sql," in out, err
    assert info(node, "from-sql")["checksum"] == info(node, "src")["checksum"]
    script = files / "more.sql"  # written by hand: its BEGIN and COMMIT are the load's own
    script.write_text("BEGIN;\nINSERT INTO t(v) VALUES ('café');\nCOMMIT;\n")
    assert db(node, "load", "from-sql", str(script))[0] == 0
    rows = httpx.post(
        f"{node.url}/v1/databases/from-sql/query", json={"sql": "SELECT v FROM t WHERE id = 4"}
    )
    assert rows.json()["results"][0]["rows"] == [["café"]]


def test_backup_refuses_to_overwrite_unless_forced(source: Node, files: Path) -> None:
    node, file = source, files / "kept.db"
    file.write_bytes(b"precious")
    code, _, err = db(node, "backup", "src", str(file))
    assert code == 1 and "--force" in err and len(err.splitlines()) == 1
    assert file.read_bytes() == b"precious"
    assert db(node, "backup", "src", str(file), "--force")[0] == 0
    assert file.read_bytes().startswith(SQLITE_HEADER)


def test_errors_are_one_line_and_change_nothing(source: Node, files: Path) -> None:
    node = source
    junk = files / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    rejected = files / "rejected.sql"  # the first statement would work; the load is one
    rejected.write_text("CREATE TABLE added(a);\nINSERT INTO nowhere VALUES (1);\n")
    good = files / "good.sql"
    good.write_text("CREATE TABLE added(a);\n")
    before = info(node, "src")
    for args, message in [
        (["backup", "missing", str(files / "missing.db")], "DatabaseNotFound"),
        (["load", "missing", str(good)], "DatabaseNotFound"),
        (["load", "src", str(files / "absent.sql")], "absent.sql does not exist"),
        (["load", "src", str(junk)], "neither a SQLite database"),
        (["load", "src", str(rejected)], "no such table: nowhere"),
        (["backup", "src", str(files / "no-dir" / "x.db")], "cannot write"),
    ]:
        code, out, err = db(node, *args)
        assert code == 1 and out == "", (args, out, err)
        assert message in err and len(err.splitlines()) == 1, (args, err)
    assert info(node, "src") == before
    assert sorted(p.name for p in files.iterdir()) == ["good.sql", "junk.bin", "rejected.sql"]


def test_large_files_stream_with_progress(node: Node, files: Path) -> None:
    execute(
        node,
        "default",
        "CREATE TABLE t(b)",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) "
        "INSERT INTO t SELECT randomblob(10000) FROM n",
    )
    client, file = NodeClient(node.url), files / "big.db"
    seen: list[tuple[int, int]] = []
    written = backup(
        client, "default", file, progress=lambda done, total: seen.append((done, total))
    )
    assert len(seen) > 2 and seen[-1] == (written.size, written.size) == (file.stat().st_size,) * 2
    assert [done for done, _ in seen] == sorted(done for done, _ in seen)
    seen.clear()
    loaded = load(client, "default", file, progress=lambda done, total: seen.append((done, total)))
    assert len(seen) > 2 and seen[-1] == (file.stat().st_size,) * 2
    assert loaded.kind == "sqlite" and loaded.version == written.version + 1
    client.close()


def test_backup_and_load_have_help() -> None:
    for action in ("backup", "load"):
        done = shoal_command("db", action, "--help")
        assert done.returncode == 0 and "--url" in done.stdout and "--token" in done.stdout
    assert "--force" in shoal_command("db", "backup", "--help").stdout
