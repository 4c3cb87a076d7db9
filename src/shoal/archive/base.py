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

    def get(self, key: str) -> tuple[bytes, str]:
        """The object's bytes and tag; BlobNotFound if there is none."""
        ...

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Objects whose keys start with `prefix`, in key order. Costs requests on
        S3: the archiver lists only to recover, never in normal operation."""
        ...

    def delete(self, key: str) -> None:
        """Removes the object; a missing one is not an error (idempotent)."""
        ...

    def close(self) -> None:
        """Lets go of connections and files."""
        ...
