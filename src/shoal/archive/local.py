"""A blob store in a local folder: the default archive, `./shoal-data/archive`.

An object is a file under the root. A write goes to a temporary file beside it,
is fsynced, and is renamed over the key, so a reader (or a crash) sees the old
object or the new one, never a part. Conditional writes take an exclusive lock
on `.lock` in the root, so two processes sharing the folder cannot both win.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shoal.archive.base import BlobInfo
from shoal.errors import BlobNotFound, InvalidRequest, PreconditionFailed, StoreUnavailable

__all__ = ["FolderStore", "check_key"]

_PARTIAL = ".partial-"


def check_key(key: str) -> str:
    """`key` if it is a relative '/'-separated path that stays inside the root."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise InvalidRequest(f"invalid object key {key!r}")
    return key


def _tag(stat: os.stat_result) -> str:
    """Changes with every write: each one renames a new file (a new inode) into place."""
    return f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"


class FolderStore:
    """Objects as files under `root` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot use archive folder {self.root}: {exc}") from None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        path = self._path(key)
        if if_match is None and not if_none_match:
            return self._write(path, data)
        with self._locked():
            try:
                current: str | None = _tag(path.stat())
            except FileNotFoundError:
                current = None
            if if_none_match and current is not None:
                raise PreconditionFailed(f"object {key!r} exists already")
            if if_match is not None and current != if_match:
                raise PreconditionFailed(f"object {key!r} changed (or is gone) since it was read")
            return self._write(path, data)

    def _write(self, path: Path, data: bytes) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(prefix=_PARTIAL, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(partial, path)
            except BaseException:
                Path(partial).unlink(missing_ok=True)
                raise
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the rename itself survives a crash
            finally:
                os.close(directory)
            return _tag(path.stat())
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc}") from None

    def get(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        try:
            with open(path, "rb") as file:
                return file.read(), _tag(os.fstat(file.fileno()))
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {path}: {exc}") from None

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        found = []
        try:
            for dirpath, _, filenames in os.walk(self.root):
                for filename in filenames:
                    if filename.startswith(_PARTIAL) or filename == ".lock":
                        continue
                    full = Path(dirpath) / filename
                    key = full.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        stat = full.stat()
                        found.append(BlobInfo(key, stat.st_size, _tag(stat)))
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.root}: {exc}") from None
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StoreUnavailable(f"cannot delete {key!r}: {exc}") from None

    def close(self) -> None:
        """Nothing stays open between calls."""
