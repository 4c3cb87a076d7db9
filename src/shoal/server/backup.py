"""Whole-database copies over HTTP: backup as a SQLite file or a SQL dump, and load.

Backups are taken from a snapshot (one read transaction), so they are consistent
while writes go on. The file keeps shoal's log table with only its newest record:
it is a shoal database at that version, and still a plain SQLite file to any tool.

A load is one logged write transaction, so it replicates like any other: a SQL
script runs as it is (BEGIN/COMMIT lines of a dump are skipped, the request is
the transaction); a SQLite file replaces the database's contents, by dropping
every user object and running the file's dump.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import apsw
from starlette.background import BackgroundTask
from starlette.responses import FileResponse, Response

from shoal.dump import SQLITE_HEADER, Query, dump, user_objects
from shoal.engine import Database, Result
from shoal.engine import log as engine_log
from shoal.engine.sqltext import leading_keyword, quote_identifier, split_statements
from shoal.errors import InvalidRequest
from shoal.server.port import ServedNode
from shoal.server.statements import Batch, Statement, run_execute

__all__ = ["backup_file", "dump_sql", "load", "respond"]

_SKIPPED_IN_SCRIPTS = frozenset({"BEGIN", "COMMIT", "END"})


def _snapshot(db: Database) -> tuple[Path, int]:
    """A consistent copy of `db` in a new temporary directory beside it."""
    directory = Path(tempfile.mkdtemp(prefix="shoal-backup-", dir=db.path.parent))
    path = directory / f"{db.name}.db"
    try:
        return path, db.snapshot(path)
    except BaseException:
        _remove_tree(directory)
        raise


def _reader(path: Path) -> tuple[apsw.Connection, Query]:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    return conn, lambda sql: conn.execute(sql).fetchall()


def dump_sql(db: Database) -> tuple[str, int]:
    """The database as a SQL script, and the version it shows."""
    path, version = _snapshot(db)
    conn, query = _reader(path)
    try:
        return "\n".join(dump(query)) + "\n", version
    finally:
        conn.close()
        _remove_tree(path.parent)


def backup_file(db: Database, *, vacuum: bool) -> tuple[Path, int]:
    """A SQLite file of the database, its log trimmed to its newest record, in a
    temporary directory of its own (remove it once sent); and its version."""
    path, version = _snapshot(db)
    conn = apsw.Connection(str(path))
    try:
        with conn:
            engine_log.truncate(conn, version)
        if vacuum:
            conn.execute("VACUUM")
        conn.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
    finally:
        conn.close()
    return path, version


def _remove_tree(directory: Path) -> None:
    for leftover in directory.iterdir():
        leftover.unlink()
    directory.rmdir()


async def respond(
    node: ServedNode, name: str, fmt: str, *, vacuum: bool = False, gz: bool = False
) -> Response:
    """The HTTP response of a backup in format `sqlite` or `sql`."""
    if fmt not in ("sqlite", "sql", "binary"):
        raise InvalidRequest(f"backup format {fmt!r} is not 'sqlite' (or 'binary') or 'sql'")
    async with node.database(name) as db:
        if fmt == "sql":
            text, version = await node.read(dump_sql, db)
            body = text.encode()
            headers = {"Shoal-Version": str(version)}
            if gz:
                body = await node.read(gzip.compress, body)
                headers["Content-Encoding"] = "gzip"
            return Response(body, headers=headers, media_type="application/sql; charset=utf-8")
        path, version = await node.read(backup_file, db, vacuum=vacuum)
    directory = path.parent
    if gz:
        packed = directory / (path.name + ".gz")
        await node.read(_gzip_file, path, packed)
        path = packed
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=path.name,
        headers={"Shoal-Version": str(version)},
        background=BackgroundTask(_remove_tree, directory),
    )


def _gzip_file(source: Path, target: Path) -> None:
    with source.open("rb") as src, gzip.open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def _script(text: str) -> list[Statement]:
    return [
        Statement(sql)
        for sql in split_statements(text)
        if leading_keyword(sql) not in _SKIPPED_IN_SCRIPTS
        and not sql.upper().replace(" ", "").startswith("PRAGMAFOREIGN_KEYS")
    ]


def _statements_of_file(body: bytes, scratch: Path) -> list[Statement]:
    """Drops of every current user object, then the uploaded file's dump."""
    upload = scratch / "upload.db"
    upload.write_bytes(body)
    conn, query = _reader(upload)
    try:
        check = conn.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise InvalidRequest(f"the uploaded SQLite file is damaged: {check[0][0]}")
        return [Statement(sql) for sql in dump(query)]
    except apsw.Error as exc:
        raise InvalidRequest(f"the uploaded file is not a usable SQLite database: {exc}") from None
    finally:
        conn.close()


def _drops(db: Database) -> list[Statement]:
    objects = user_objects(lambda sql: db.query(sql).results[0].rows)
    ordered = sorted(objects, key=lambda o: o.type != "view")  # views before tables
    return [
        Statement(f"DROP {o.type.upper()} IF EXISTS {quote_identifier(o.name)}")
        for o in ordered
        if o.type in ("table", "view")
    ]


def load(db: Database, body: bytes) -> Batch:
    """Loads a SQLite file (replacing the contents) or a SQL script, as one write
    transaction. Returns one summary result, or the error and its statement's index."""
    if body.startswith(SQLITE_HEADER):
        with tempfile.TemporaryDirectory(prefix="shoal-load-", dir=db.path.parent) as scratch:
            statements = _drops(db) + _statements_of_file(body, Path(scratch))
    else:
        try:
            statements = _script(body.decode())
        except UnicodeDecodeError:
            raise InvalidRequest(
                "a load body is a SQLite database file or UTF-8 SQL text; this is neither"
            ) from None
    if not statements:
        raise InvalidRequest("nothing to load: the body holds no SQL statement")
    batch = run_execute(db, statements, transaction=True)
    if batch.first_error is not None:
        return batch
    changed = sum(item.rows_affected for item in batch.items if isinstance(item, Result))
    return Batch(batch.version, [Result(rows_affected=changed)], [0], [sum(batch.seconds)])
