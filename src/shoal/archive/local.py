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
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from shoal.archive.base import BlobInfo
from shoal.errors import BlobNotFound, InvalidRequest, PreconditionFailed, StoreUnavailable

__all__ = ["FolderStore", "check_key", "durable_replace"]

_PARTIAL = ".partial-"
_COPY_BUFFER = 1024 * 1024  # bytes a file copy holds at a time


def check_key(key: str) -> str:
    """`key` if it is a relative '/'-separated path that stays inside the root."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise InvalidRequest(f"invalid object key {key!r}")
    return key


def _tag(stat: os.stat_result) -> str:
    """Changes with every write: each one renames a new file (a new inode) into place."""
    return f"{stat.st_ino:x}-{stat.st_mtime_ns:x}-{stat.st_size:x}"


def _replace(path: Path, fill: Callable[[BinaryIO], object]) -> os.stat_result:
    """Writes `path` by `fill` into a temporary file beside it, fsynced and renamed
    over it, so that a reader or a crash sees the old file or the whole new one.
    Returns the new file's stat (its tag, even if another write follows at once)."""
    fd, partial = tempfile.mkstemp(prefix=_PARTIAL, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            fill(file)
            file.flush()
            stat = os.fstat(file.fileno())
        durable_replace(Path(partial), path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return stat


def durable_replace(partial: Path, path: Path) -> None:
    """Renames a finished file over `path` with its bytes and the rename both synced,
    so that a crash leaves the old file or the whole new one."""
    with open(partial, "rb") as file:
        os.fsync(file.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _copy_from(source: BinaryIO) -> Callable[[BinaryIO], object]:
    return lambda file: shutil.copyfileobj(source, file, _COPY_BUFFER)


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
            return self._write(path, lambda file: file.write(data))
        with self._locked():
            try:
                current: str | None = _tag(path.stat())
            except FileNotFoundError:
                current = None
            if if_none_match and current is not None:
                raise PreconditionFailed(f"object {key!r} exists already")
            if if_match is not None and current != if_match:
                raise PreconditionFailed(f"object {key!r} changed (or is gone) since it was read")
            return self._write(path, lambda file: file.write(data))

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        with open(path, "rb") as source:
            self._write(target, _copy_from(source))

    def _write(self, path: Path, fill: Callable[[BinaryIO], object]) -> str:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return _tag(_replace(path, fill))
        except OSError as exc:
            raise StoreUnavailable(f"cannot write {path}: {exc}") from None

    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {path}: {exc}") from None

    def get(self, key: str) -> tuple[bytes, str]:
        with self._open(key) as file:
            try:
                return file.read(), _tag(os.fstat(file.fileno()))
            except OSError as exc:
                raise StoreUnavailable(f"cannot read {file.name}: {exc}") from None

    def get_file(self, key: str, path: Path) -> None:
        with self._open(key) as source:
            _replace(path, _copy_from(source))

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[BlobInfo]:
        found = []
        folder = prefix.rpartition("/")[0]  # walk only what may hold the prefix's keys
        try:
            for dirpath, _, filenames in os.walk(self._path(folder) if folder else self.root):
                for filename in filenames:
                    if filename.startswith(_PARTIAL) or filename == ".lock":
                        continue
                    full = Path(dirpath) / filename
                    key = full.relative_to(self.root).as_posix()
                    if key.startswith(prefix) and (start_after is None or key > start_after):
                        stat = full.stat()
                        found.append(BlobInfo(key, stat.st_size, _tag(stat)))
        except OSError as exc:
            raise StoreUnavailable(f"cannot list {self.root}: {exc}") from None
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, *keys: str) -> None:
        paths = [self._path(key) for key in keys]  # every key checked before any goes
        for key, path in zip(keys, paths, strict=True):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StoreUnavailable(f"cannot delete {key!r}: {exc}") from None

    def close(self) -> None:
        """Nothing stays open between calls."""
