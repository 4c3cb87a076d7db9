"""Whole databases to and from files over a node's API: `shoal db backup` and `load`.

Both stream, so a database larger than memory goes through: a backup is written
as it arrives, to a temporary name beside the file, renamed over it only once it
is complete and synced (an interrupted backup leaves the old file, or none); a
load is sent in chunks. A load is one write transaction on the node, so one the
node refuses changes nothing.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from shoal.archive.local import durable_replace
from shoal.client.remote import NodeClient
from shoal.dump import SQLITE_HEADER
from shoal.errors import InvalidRequest

__all__ = ["Transfer", "backup", "download", "file_kind", "load"]

Kind = Literal["sqlite", "sql"]
Progress = Callable[[int, int], None]
"""Told the bytes done and the total after each chunk."""

CHUNK_BYTES = 1 << 20
_SNIFF_BYTES = 1 << 16  # how much of a file decides whether it is SQL text


@dataclass(frozen=True)
class Transfer:
    """What a backup wrote or a load sent: the database's version, bytes, kind."""

    version: int
    size: int
    kind: Kind


def _path(name: str, action: str) -> str:
    return f"/v1/databases/{quote(name, safe='')}/{action}"


def backup(
    client: NodeClient,
    name: str,
    target: Path,
    *,
    kind: Kind = "sqlite",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Transfer:
    """Writes a consistent copy of database `name` to `target`: a SQLite file, or
    with kind "sql" a SQL script. Refuses an existing `target` unless `overwrite`."""
    if target.exists() and not overwrite:
        raise InvalidRequest(f"{target} exists; add --force to overwrite it")
    query = "?format=sql" if kind == "sql" else ""
    version, size = download(client, _path(name, "backup") + query, target, progress)
    return Transfer(version, size, kind)


def download(
    client: NodeClient, path: str, target: Path, progress: Progress | None = None
) -> tuple[int, int]:
    """Writes the body of GET `path` to `target`, whole or not at all; returns the
    Shoal-Version it came with and its size."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)  # left by a crashed run of a process of the same id
    with client.stream("GET", path) as response:
        total = int(response.headers.get("content-length", 0))
        done = 0
        try:
            with partial.open("xb") as file:
                for chunk in response.iter_bytes(CHUNK_BYTES):
                    file.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total or done)
            durable_replace(partial, target)
        except OSError as exc:
            raise InvalidRequest(f"cannot write {target}: {exc.strerror}") from None
        finally:
            partial.unlink(missing_ok=True)
    return int(response.headers["shoal-version"]), done


def file_kind(source: Path) -> Kind:
    """ "sqlite" for a file with SQLite's header, "sql" for UTF-8 text (judged by its
    first 64 KiB: the node checks the rest); InvalidRequest for anything else."""
    try:
        with source.open("rb") as file:
            head = file.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise InvalidRequest(f"{source} does not exist") from None
    except OSError as exc:
        raise InvalidRequest(f"cannot read {source}: {exc.strerror}") from None
    if head.startswith(SQLITE_HEADER):
        return "sqlite"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head)  # a cut character is fine
    except UnicodeDecodeError:
        pass
    else:
        if b"\x00" not in head:
            return "sql"
    raise InvalidRequest(
        f"{source} is neither a SQLite database (no SQLite header) nor SQL text (UTF-8)"
    )


def load(
    client: NodeClient, name: str, source: Path, *, progress: Progress | None = None
) -> Transfer:
    """Loads `source` into database `name`, as one write transaction: a SQLite file
    replaces its contents, SQL text runs on them."""
    kind = file_kind(source)
    client.call("GET", f"/v1/databases/{quote(name, safe='')}")  # not found: before uploading
    size = source.stat().st_size

    def chunks() -> Iterator[bytes]:
        done = 0
        with source.open("rb") as file:
            while chunk := file.read(CHUNK_BYTES):
                done += len(chunk)
                yield chunk
                if progress is not None:
                    progress(done, size)

    media = "application/octet-stream" if kind == "sqlite" else "application/sql"
    headers = {"Content-Length": str(size), "Content-Type": media}
    with client.stream("POST", _path(name, "load"), content=chunks(), headers=headers) as answer:
        answer.read()
        version = int(answer.json()["version"])
    return Transfer(version, size, kind)
