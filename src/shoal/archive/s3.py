"""A blob store in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...), through boto3.

Credentials come from boto3's standard chain (environment, ~/.aws, instance or
task roles), never from a shoal setting, so that secrets stay where operators
already keep them. Conditional writes use S3's `If-None-Match: *` and
`If-Match: <etag>` on PutObject (AWS since 2024; SeaweedFS enforces both).

Timeouts are short and retries few: the archiver has its own backoff and must
learn within seconds, not minutes, that the store is gone, so that it reports
lag while writes go on.

Files (snapshots) go through boto3's managed transfer: past `part_size`, a
multipart upload or ranged GETs, parts in parallel. A failed upload is aborted
by the transfer manager; if the store is gone by then, its parts stay until a
bucket lifecycle rule (AbortIncompleteMultipartUpload) removes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shoal.archive.base import BlobInfo
from shoal.archive.local import check_key
from shoal.errors import (
    BlobNotFound,
    InvalidRequest,
    PreconditionFailed,
    StoreUnavailable,
)

__all__ = ["S3Store"]

CONNECT_TIMEOUT = 3.0  # seconds to open a connection
READ_TIMEOUT = 10.0  # seconds of silence on an open connection (a hung server)
MAX_ATTEMPTS = 2  # botocore's standard mode retries connection errors, 5xx, throttling
MAX_KEY_BYTES = 1024  # S3's limit on a key, our prefix included
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest part of a multipart upload (but the last)
TRANSFER_THREADS = 4  # parts of one file in flight at once
DELETE_BATCH = 1000  # S3's limit on keys in one DeleteObjects request

_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}
# GetObject's, and HeadObject's (which download_file sends first): a HEAD answer has
# no body, so no code but its status, which a missing bucket shares.
_NOT_FOUND_CODES = {"NoSuchKey", "404"}
# What a managed transfer raises besides botocore's errors: S3UploadFailedError
# wraps an upload's ClientError, RetriesExceededError a download cut off again and again.
_TRANSFER_ERRORS = (ClientError, BotoCoreError, S3UploadFailedError, RetriesExceededError)


def _tag(etag: str) -> str:
    """S3 quotes ETags in headers and listings alike; tags are compared unquoted."""
    return etag.strip('"')


class S3Store:
    """Objects under `prefix` in `bucket`; `client` replaces the boto3 client we would make.
    Files larger than `part_size` move in parts of that size."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        client: Any = None,
        page_size: int = 1000,
        part_size: int = 64 * 1024 * 1024,
    ) -> None:
        if not bucket or "/" in bucket:
            raise InvalidRequest(f"invalid S3 bucket name {bucket!r}")
        if part_size < MIN_PART_SIZE:
            raise InvalidRequest(f"S3 part size {part_size} is below S3's minimum, 5 MiB")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = check_key(prefix) + "/" if prefix else ""
        self._page_size = page_size
        self._transfer = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=TRANSFER_THREADS,
            use_threads=True,
            # Not the CRT client (boto3 picks it where awscrt is installed, on some
            # EC2 types): it would bypass our client and its timeouts and retries.
            preferred_transfer_client="classic",
        )
        self._owns_client = client is None
        if client is None:
            config = Config(
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                max_pool_connections=16,  # restore downloads in parallel
                s3={"addressing_style": "path"} if path_style else None,
            )
            try:
                client = boto3.session.Session().client(
                    "s3", endpoint_url=endpoint_url, region_name=region, config=config
                )
            except (BotoCoreError, ValueError) as exc:
                raise InvalidRequest(f"cannot use S3 endpoint {endpoint_url!r}: {exc}") from None
        self._client = client
        self.endpoint_url: str = str(client.meta.endpoint_url)

    def __repr__(self) -> str:
        return f"S3Store(s3://{self.bucket}/{self.prefix} at {self.endpoint_url})"

    def _key(self, key: str) -> str:
        full = self.prefix + check_key(key)
        if len(full.encode()) > MAX_KEY_BYTES:
            raise InvalidRequest(f"object key {key!r} is longer than S3's {MAX_KEY_BYTES} bytes")
        return full

    def _error(self, exc: Exception, doing: str) -> StoreUnavailable:
        """StoreUnavailable naming the endpoint and bucket: a wrong bucket, region or
        credentials are fixed by an operator, and the archiver retries until then."""
        if isinstance(exc, RetriesExceededError):  # a download cut off, again and again
            return self._error(exc.last_exception, doing)
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{error.get('Code') or status}: {error.get('Message', '')}".rstrip(": ")
        else:
            detail = str(exc) or type(exc).__name__
        return self._unavailable(doing, detail)

    def _unavailable(self, doing: str, detail: str) -> StoreUnavailable:
        return StoreUnavailable(
            f"cannot {doing} in S3 bucket {self.bucket!r} at {self.endpoint_url}: {detail}"
        )

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """A 412 that follows a retry of our own request (the first response was
        lost, as when a read times out) is not a conflict if the object now holds
        exactly our bytes: that is our write, and we return its tag."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(key), "Body": data}
        if if_none_match:
            request["IfNoneMatch"] = "*"
        if if_match is not None:
            request["IfMatch"] = f'"{_tag(if_match)}"'
        try:
            return _tag(self._client.put_object(**request)["ETag"])
        except ClientError as exc:
            if not self._conflict(exc, conditional=if_none_match or if_match is not None):
                raise self._error(exc, f"write {key!r}") from None
            if exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0):
                mine = self._tag_if_holds(request["Key"], data)
                if mine is not None:
                    return mine
            raise PreconditionFailed(
                f"object {key!r} exists already"
                if if_none_match
                else f"object {key!r} changed (or is gone) since it was read"
            ) from None
        except BotoCoreError as exc:
            raise self._error(exc, f"write {key!r}") from None

    @staticmethod
    def _conflict(exc: ClientError, *, conditional: bool) -> bool:
        """412, or AWS's 409 for a concurrent conditional write; on AWS an If-Match
        on a missing key is a 404 NoSuchKey, which is a failed condition too."""
        code = exc.response.get("Error", {}).get("Code")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return conditional and (status == 412 or code in _PRECONDITION_CODES or code == "NoSuchKey")

    def _tag_if_holds(self, full_key: str, data: bytes) -> str | None:
        """The object's tag if its ETag is the MD5 of `data` (a single-part upload)."""
        try:
            etag = _tag(self._client.head_object(Bucket=self.bucket, Key=full_key)["ETag"])
        except (ClientError, BotoCoreError):
            return None
        return etag if etag == hashlib.md5(data, usedforsecurity=False).hexdigest() else None

    def put_file(self, key: str, path: Path) -> None:
        """A multipart upload is only seen once completed, so readers never see a part."""
        full_key = self._key(key)
        try:
            self._client.upload_file(str(path), self.bucket, full_key, Config=self._transfer)
        except _TRANSFER_ERRORS as exc:
            raise self._error(exc, f"write {key!r}") from None

    def get(self, key: str) -> tuple[bytes, str]:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with response["Body"] as body:
                return bytes(body.read()), _tag(response["ETag"])
        except (ClientError, BotoCoreError) as exc:
            raise self._read_error(exc, key) from None

    def get_file(self, key: str, path: Path) -> None:
        """The transfer manager writes a temporary file beside `path`, renamed over
        it once complete and removed on failure; its ranged GETs carry If-Match, so
        an object replaced during the download fails it rather than mixing two."""
        full_key = self._key(key)
        try:
            self._client.download_file(self.bucket, full_key, str(path), Config=self._transfer)
        except _TRANSFER_ERRORS as exc:
            raise self._read_error(exc, key) from None

    def _read_error(self, exc: Exception, key: str) -> BlobNotFound | StoreUnavailable:
        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else None
        if code in _NOT_FOUND_CODES:
            return BlobNotFound(key)
        return self._error(exc, f"read {key!r}")

    def list(self, prefix: str, start_after: str | None = None) -> Iterator[BlobInfo]:
        """Sorted and filtered here because SeaweedFS lists folder by folder ('d/x'
        before 'd-z'), not in S3's byte order; the server only skips what
        `_server_start_after` shows is safe to skip. Keys that no store could
        write (a console's 'dir/' marker, 'a//b') are skipped."""
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        marker = "" if start_after is None else _server_start_after(prefix, start_after)
        if marker:
            request["StartAfter"] = self.prefix + marker
        found = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            **request, PaginationConfig={"PageSize": self._page_size}
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[len(self.prefix) :]
                    if _valid(key) and (start_after is None or key > start_after):
                        found.append(BlobInfo(key, int(item["Size"]), _tag(item["ETag"])))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"list {prefix!r}") from None
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, *keys: str) -> None:
        """DeleteObjects, 1,000 keys a request. Quiet: the answer lists only failures,
        which S3 reports per key inside a 200."""
        objects = [{"Key": self._key(key)} for key in keys]  # every key checked first
        for start in range(0, len(objects), DELETE_BATCH):
            batch = objects[start : start + DELETE_BATCH]
            try:
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._error(
                    exc, f"delete {len(batch)} object(s) from {keys[start]!r}"
                ) from None
            errors = response.get("Errors")
            if errors:
                key = str(errors[0].get("Key", ""))[len(self.prefix) :]
                detail = f"{errors[0].get('Code')}: {errors[0].get('Message', '')}"
                raise self._unavailable(f"delete {key!r}", detail.rstrip(": "))

    def close(self) -> None:
        """Closes the client's connection pool, unless the caller lent us the client."""
        if self._owns_client:
            self._client.close()


def _server_start_after(prefix: str, start_after: str) -> str:
    """A StartAfter ('' for none) that makes no server skip a key listed under
    `prefix` that sorts after `start_after` in byte order.

    SeaweedFS resumes after StartAfter folder by folder, as it lists: after 'd/b-x'
    it skips 'd/b/c' (folder 'b' sorts before file 'b-x'), and after 'd/b' all of
    'd/b/'. Its order and byte order differ only where one key has '/' and the
    other a byte below '/' ('-', '.'), so we cut `start_after` before its first
    such byte past `prefix`, and one character more unless that leaves a folder
    ('d/'): nothing after the cut can then hide behind it. After segment
    'FIRST-LAST.seg' the server still skips all but at most nine older segments.
    Byte-order servers (AWS) get a smaller StartAfter; the caller filters out
    what either returns in excess.
    """
    if not start_after.startswith(prefix):
        return ""  # every key under `prefix` sorts on the same side of it
    cut = next(
        (i for i in range(len(prefix), len(start_after)) if start_after[i] < "/"),
        len(start_after),
    )
    marker = start_after[:cut]
    return marker if marker.endswith("/") else marker[:-1]


def _valid(key: str) -> bool:
    try:
        check_key(key)
    except InvalidRequest:
        return False
    return True
