"""A blob store in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...), through boto3.

Credentials come from boto3's standard chain (environment, ~/.aws, instance or
task roles), never from a shoal setting, so that secrets stay where operators
already keep them. Conditional writes use S3's `If-None-Match: *` and
`If-Match: <etag>` on PutObject (AWS since 2024; SeaweedFS enforces both).

Timeouts are short and retries few: the archiver has its own backoff and must
learn within seconds, not minutes, that the store is gone, so that it reports
lag while writes go on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import boto3
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

_PRECONDITION_CODES = {"PreconditionFailed", "ConditionalRequestConflict"}


def _tag(etag: str) -> str:
    """S3 quotes ETags in headers and listings alike; tags are compared unquoted."""
    return etag.strip('"')


class S3Store:
    """Objects under `prefix` in `bucket`; `client` replaces the boto3 client we would make."""

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
    ) -> None:
        if not bucket or "/" in bucket:
            raise InvalidRequest(f"invalid S3 bucket name {bucket!r}")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = check_key(prefix) + "/" if prefix else ""
        self._page_size = page_size
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
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            detail = f"{error.get('Code') or status}: {error.get('Message', '')}".rstrip(": ")
        else:
            detail = str(exc) or type(exc).__name__
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

    def get(self, key: str) -> tuple[bytes, str]:
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            with response["Body"] as body:
                return bytes(body.read()), _tag(response["ETag"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise BlobNotFound(key) from None
            raise self._error(exc, f"read {key!r}") from None
        except BotoCoreError as exc:
            raise self._error(exc, f"read {key!r}") from None

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Sorted here because SeaweedFS lists folder by folder ('d/x' before 'd-z'),
        not in S3's byte order. Keys that no store could write (a console's 'dir/'
        marker, 'a//b') are skipped."""
        found = []
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=self.prefix + prefix,
            PaginationConfig={"PageSize": self._page_size},
        )
        try:
            for page in pages:
                for item in page.get("Contents", ()):
                    key = str(item["Key"])[len(self.prefix) :]
                    if _valid(key):
                        found.append(BlobInfo(key, int(item["Size"]), _tag(item["ETag"])))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"list {prefix!r}") from None
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"delete {key!r}") from None

    def close(self) -> None:
        """Closes the client's connection pool, unless the caller lent us the client."""
        if self._owns_client:
            self._client.close()


def _valid(key: str) -> bool:
    try:
        check_key(key)
    except InvalidRequest:
        return False
    return True
