"""The blob-store interface: immutable objects by key, and nothing else.

Like Litestream's replica client, a store only moves bytes. Which objects exist,
when they are written, what they mean and when they are deleted is the archiver's
business (policy stays in the core), so a new backend is a small file.

Every method may raise StoreUnavailable (the store cannot be reached now; retry
later, with backoff). Keys are '/'-separated paths relative to the store's root
(its folder, or its bucket and prefix), without a leading '/'.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

__all__ = ["BlobInfo", "BlobStore"]


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size: int
    tag: str  # changes whenever the object's bytes change (S3's ETag)


class BlobStore(Protocol):
    """Objects by key. Consistency assumed: read-after-write for one key, as both
    a local folder and S3 (since 2020) give."""

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """Writes the whole object at once and returns its tag. A reader sees the
        old bytes or the new, never a part. With `if_none_match`, only if the key
        does not exist; with `if_match`, only if its tag is that: otherwise raises
        PreconditionFailed and writes nothing. Idempotent without conditions."""
        ...

    def put_file(self, key: str, path: Path) -> None:
        """Writes the object from the local file at `path`, of any size, without
        reading it whole into memory (snapshots outgrow memory). Unconditional and
        idempotent; a reader sees the old object or the whole new one, never a
        part. OSError if `path` cannot be read."""
        ...

    def get(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and tag; BlobNotFound if there is none."""
        ...

    def get_file(self, key: str, path: Path) -> None:
        """Copies the object into a new file at `path`, replacing any file there,
        without holding it in memory. On failure `path` is as it was: a partial
        copy never shows there. Not necessarily fsynced: a caller that needs the
        file to survive a crash fsyncs it. BlobNotFound if there is no object;
        OSError if `path` cannot be written (no such folder, a full disk)."""
        ...

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[BlobInfo]:
        """Objects whose keys start with `prefix` and, with `start_after`, sort
        after it (it need not be a key), in key order: byte order of the UTF-8
        keys, as S3 lists. Costs requests on S3, one per 1,000 keys: restore lists
        only the newest segments, after the last one the index names."""
        ...

    def delete(self, *keys: str) -> None:
        """Removes the objects; missing ones are not an error (idempotent). Not
        atomic: on failure, some may be gone."""
        ...

    def close(self) -> None:
        """Lets go of connections and files."""
        ...
