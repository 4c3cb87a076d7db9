"""Choosing a blob store by URL, so that every command takes one `--archive` string.

    s3://bucket/prefix?endpoint=http://host:8333&region=eu-west-1&path_style=true
    file:///absolute/path
    path/to/folder

An S3 endpoint and region not in the URL come from `AWS_ENDPOINT_URL` and
`AWS_REGION`, then from boto3's own configuration (`AWS_DEFAULT_REGION`, ~/.aws).
Credentials never appear in the URL (URLs end up in logs and `ps`): boto3's
chain finds them.
"""

from __future__ import annotations

import os
import re
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from shoal.archive.base import BlobStore
from shoal.archive.local import FolderStore
from shoal.errors import ArchiveError, InvalidRequest

__all__ = ["open_store"]

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LOOKS_LIKE_A_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_FORMS = "an archive is s3://bucket/prefix, file:///absolute/path or a folder path"
_S3_PARAMETERS = {"endpoint", "region", "path_style"}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def open_store(url: str) -> BlobStore:
    """The blob store that `url` names; InvalidRequest (with the accepted forms) if none."""
    if not url.strip():
        raise InvalidRequest(f"empty archive URL: {_FORMS}")
    match = _SCHEME.match(url)
    if match is None:
        if _LOOKS_LIKE_A_URL.match(url):  # s3:/bucket, s3:bucket: a typo, not a folder
            raise InvalidRequest(
                f"{url!r} is neither a URL nor a path: {_FORMS} (write ./{url} for a folder "
                "of that name)"
            )
        return FolderStore(url)
    scheme, parts = match.group(1).lower(), urlsplit(url)
    if scheme == "file":
        return _folder(url, parts)
    if scheme == "s3":
        return _s3(url, parts)
    raise InvalidRequest(f"unknown archive URL scheme {scheme + '://'!r} in {url!r}: {_FORMS}")


def _folder(url: str, parts: SplitResult) -> FolderStore:
    if parts.netloc not in ("", "localhost") or not parts.path or parts.query or parts.fragment:
        raise InvalidRequest(f"invalid file URL {url!r}: write file:///absolute/path")
    return FolderStore(unquote(parts.path))


def _s3(url: str, parts: SplitResult) -> BlobStore:
    bucket = parts.netloc
    if not bucket or "@" in bucket or ":" in bucket or parts.fragment:
        raise InvalidRequest(
            f"invalid S3 URL {url!r}: write s3://bucket/prefix; credentials come from "
            "the environment or ~/.aws, never from the URL"
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - _S3_PARAMETERS
    repeated = [name for name, values in query.items() if len(values) > 1]
    if unknown or repeated:
        raise InvalidRequest(
            f"invalid S3 URL {url!r}: parameters are endpoint, region and path_style, "
            f"each at most once (got {', '.join(sorted(unknown or repeated))})"
        )
    given = {name: values[0] for name, values in query.items()}
    path_style = _BOOLEANS.get(given.get("path_style", "false").lower())
    if path_style is None:
        raise InvalidRequest(f"invalid S3 URL {url!r}: path_style is true or false")
    try:
        from shoal.archive.s3 import S3Store
    except ImportError as exc:
        raise ArchiveError(
            f"an s3:// archive needs boto3 ({exc}); install it with: pip install 'shoal[s3]'"
        ) from None
    return S3Store(
        bucket,
        unquote(parts.path),
        endpoint_url=given.get("endpoint") or None,  # else boto3 reads AWS_ENDPOINT_URL(_S3)
        region=given.get("region") or os.environ.get("AWS_REGION") or None,  # botocore does not
        path_style=path_style,
    )
