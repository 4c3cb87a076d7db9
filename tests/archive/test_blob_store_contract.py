"""The blob-store contract: one behaviour suite, run over every backend.

`store` is a FolderStore in a temporary folder, or an S3Store under a fresh prefix
of a bucket on a real SeaweedFS (started once for this module, about 8 s). What
only one backend can show (an unreachable endpoint, a crash's leftovers) follows
the shared suite.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from botocore.stub import Stubber

from shoal.archive.base import BlobInfo, BlobStore
from shoal.archive.local import FolderStore
from shoal.archive.s3 import DELETE_BATCH, S3Store
from shoal.archive.stores import open_store
from shoal.errors import (
    ArchiveError,
    BlobNotFound,
    InvalidRequest,
    PreconditionFailed,
    StoreUnavailable,
)
from tests.harness import S3Endpoint, free_port, make_bucket

BUCKET = "contract"
MIB = 1024 * 1024


@pytest.fixture
def s3_env(s3_server: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> S3Endpoint:
    """Credentials, endpoint and region in the environment, where boto3's chain finds them."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server


def s3_store(server: S3Endpoint, **options: Any) -> S3Store:
    """An S3Store under a fresh prefix: tests share the bucket, never their objects."""
    make_bucket(server, BUCKET)
    return S3Store(BUCKET, f"test-{uuid.uuid4().hex[:12]}", endpoint_url=server.url, **options)


@pytest.fixture(params=["folder", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "folder":
        blobs: BlobStore = FolderStore(tmp_path / "archive")
    else:
        blobs = s3_store(request.getfixturevalue("s3_env"))
    yield blobs
    blobs.close()


# --- the contract: every backend --------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A folder for local files, apart from the folder store's own."""
    folder = tmp_path / "files"
    folder.mkdir()
    return folder


@pytest.mark.parametrize(
    "data",
    [b"", bytes(range(256)) * 3, os.urandom(5 * 1024 * 1024)],
    ids=["empty", "binary", "5MB"],
)
def test_put_then_get_returns_the_bytes_and_the_tag(store: BlobStore, data: bytes) -> None:
    tag = store.put("db/obj", data)
    assert store.get("db/obj") == (data, tag)


def test_overwrite_changes_the_tag(store: BlobStore) -> None:
    first = store.put("k", b"one")
    second = store.put("k", b"two")
    assert second != first
    assert store.get("k") == (b"two", second)


def test_get_of_a_missing_key_is_blob_not_found(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound) as caught:
        store.get("no/such/key")
    assert caught.value.key == "no/such/key"


def test_if_none_match_creates_only_a_new_key(store: BlobStore) -> None:
    tag = store.put("seg", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("seg", b"second", if_none_match=True)
    assert store.get("seg") == (b"first", tag)


def test_if_match_replaces_only_the_version_that_was_read(store: BlobStore) -> None:
    old = store.put("index", b"v1")
    new = store.put("index", b"v2", if_match=old)
    assert store.get("index") == (b"v2", new)
    with pytest.raises(PreconditionFailed):
        store.put("index", b"v3", if_match=old)  # stale: another writer got there first
    assert store.get("index") == (b"v2", new)


def test_if_match_on_a_missing_key_fails_and_writes_nothing(store: BlobStore) -> None:
    tag = store.put("elsewhere", b"x")
    with pytest.raises(PreconditionFailed):
        store.put("gone", b"y", if_match=tag)
    with pytest.raises(BlobNotFound):
        store.get("gone")


@pytest.mark.parametrize("condition", ["if_none_match", "if_match"])
def test_concurrent_conditional_writers_have_one_winner(store: BlobStore, condition: str) -> None:
    """What the archiver's fencing rests on: of writers racing on one key, one wins."""
    options: dict[str, Any] = {"if_none_match": True}
    if condition == "if_match":
        options = {"if_match": store.put("race", b"before")}

    def attempt(n: int) -> bytes | None:
        try:
            store.put("race", b"writer %d" % n, **options)
            return b"writer %d" % n
        except PreconditionFailed:
            return None

    with ThreadPoolExecutor(8) as pool:
        winners = [data for data in pool.map(attempt, range(8)) if data is not None]
    assert len(winners) == 1
    assert store.get("race")[0] == winners[0]


KEYS = ["db/0", "db/a", "db/b-x", "db/b/c", "db/b/d/e", "dbx", "other/z"]


def test_list_gives_matching_keys_in_key_order_with_sizes_and_tags(store: BlobStore) -> None:
    for key in reversed(KEYS):
        store.put(key, key.encode() * 3)

    def listed(prefix: str) -> list[str]:
        return [info.key for info in store.list(prefix)]

    assert listed("") == KEYS
    assert listed("db/") == ["db/0", "db/a", "db/b-x", "db/b/c", "db/b/d/e"]
    assert listed("db") == ["db/0", "db/a", "db/b-x", "db/b/c", "db/b/d/e", "dbx"]
    assert listed("db/b") == ["db/b-x", "db/b/c", "db/b/d/e"]  # '-' sorts before '/'
    assert listed("db/b/") == ["db/b/c", "db/b/d/e"]
    assert listed("nothing") == []
    for info in store.list(""):
        data, tag = store.get(info.key)
        assert info == BlobInfo(info.key, len(data), tag)


def test_list_after_a_key_gives_only_the_keys_after_it(store: BlobStore) -> None:
    for key in KEYS:
        store.put(key, b"x")

    def after(prefix: str, start_after: str) -> list[str]:
        return [info.key for info in store.list(prefix, start_after=start_after)]

    assert after("db/", "db/a") == ["db/b-x", "db/b/c", "db/b/d/e"]
    assert after("db/", "db/aa") == ["db/b-x", "db/b/c", "db/b/d/e"]  # not a key
    assert after("db/", "db/b-x") == ["db/b/c", "db/b/d/e"]  # SeaweedFS lists 'db/b/' first
    assert after("db/", "db/b") == ["db/b-x", "db/b/c", "db/b/d/e"]  # a folder, not a key
    assert after("db", "db/b/c") == ["db/b/d/e", "dbx"]
    assert after("db/", "db/b/d/e") == []
    assert after("", "") == KEYS
    assert after("db/", "a") == after("db/", "db/") == KEYS[:5]
    assert after("db/", "z") == []
    # Every prefix of a key, and each followed by '/' or '-', as start_after.
    starts = {key[:n] + end for key in KEYS for n in range(len(key) + 1) for end in ("", "/", "-")}
    for prefix in ["", "db", "db/", "db/b", "db/b/"]:
        for start in sorted(starts):
            expected = [key for key in KEYS if key.startswith(prefix) and key > start]
            assert after(prefix, start) == expected, (prefix, start)


@pytest.mark.parametrize("size", [0, 3 * 256, 12 * MIB + 7], ids=["empty", "small", "12MiB"])
def test_put_file_then_get_file_round_trips(store: BlobStore, files: Path, size: int) -> None:
    data = os.urandom(size)
    source, target = files / "source", files / "target"
    source.write_bytes(data)
    store.put_file("db/snap", source)
    assert store.get("db/snap")[0] == data
    store.get_file("db/snap", target)
    assert target.read_bytes() == data
    assert [info.size for info in store.list("db/")] == [size]


def test_get_file_replaces_the_file_there(store: BlobStore, files: Path) -> None:
    store.put("k", b"new")
    target = files / "target"
    target.write_bytes(b"old and longer")
    store.get_file("k", target)
    assert target.read_bytes() == b"new"
    assert sorted(files.iterdir()) == [target]


def test_get_file_of_a_missing_key_is_blob_not_found_and_makes_no_file(
    store: BlobStore, files: Path
) -> None:
    with pytest.raises(BlobNotFound) as caught:
        store.get_file("no/such/key", files / "target")
    assert caught.value.key == "no/such/key"
    assert list(files.iterdir()) == []


def test_faults_of_the_local_file_are_os_errors(store: BlobStore, files: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file("k", files / "missing")
    with pytest.raises(BlobNotFound):
        store.get("k")
    store.put("k", b"x")
    with pytest.raises(FileNotFoundError):
        store.get_file("k", files / "no-such-folder" / "target")
    assert list(files.iterdir()) == []


def test_delete_removes_exactly_the_keys_given(store: BlobStore) -> None:
    for key in KEYS:
        store.put(key, b"x")
    store.delete("db/a", "db/b/c", "never/was", "dbx", "db/a")
    assert [info.key for info in store.list("")] == ["db/0", "db/b-x", "db/b/d/e", "other/z"]
    store.delete()
    with pytest.raises(InvalidRequest):
        store.delete("db/0", "../x")  # every key is checked before any is deleted
    assert store.get("db/0")[0] == b"x"


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.put("a/b", b"data")
    store.delete("a/b")
    with pytest.raises(BlobNotFound):
        store.get("a/b")
    assert list(store.list("a")) == []
    store.delete("a/b")
    store.delete("never/was")


@pytest.mark.parametrize("key", ["../x", "/abs", "a//b", "a/./b", "a/../../b", "a/", ""])
def test_keys_that_leave_the_root_are_refused(store: BlobStore, files: Path, key: str) -> None:
    with pytest.raises(InvalidRequest):
        store.put(key, b"x")
    with pytest.raises(InvalidRequest):
        store.put_file(key, files / "any")
    with pytest.raises(InvalidRequest):
        store.get(key)
    with pytest.raises(InvalidRequest):
        store.get_file(key, files / "any")
    with pytest.raises(InvalidRequest):
        store.delete(key)


# --- choosing a store by URL ------------------------------------------------------


def test_open_store_takes_a_file_url_or_a_plain_path(tmp_path: Path) -> None:
    by_url = open_store(f"file://{tmp_path}/by%20url")
    assert isinstance(by_url, FolderStore)
    assert by_url.root == tmp_path / "by url"
    by_path = open_store(str(tmp_path / "plain"))
    assert isinstance(by_path, FolderStore)
    assert by_path.root == tmp_path / "plain"


def test_open_store_takes_s3_parameters_from_the_query() -> None:
    store = open_store(
        "s3://my-bucket/backups/prod/?endpoint=http://127.0.0.1:9&region=eu-west-3&path_style=true"
    )
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint_url) == (
        "my-bucket",
        "backups/prod/",
        "http://127.0.0.1:9",
    )
    client = store._client
    assert client.meta.region_name == "eu-west-3"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    store.close()


def test_open_store_takes_the_s3_endpoint_and_region_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)  # boto3 would prefer it
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8")
    monkeypatch.setenv("AWS_REGION", "ap-south-1")
    store = open_store("s3://bucket")
    assert isinstance(store, S3Store)
    assert (store.prefix, store.endpoint_url) == ("", "http://127.0.0.1:8")
    assert store._client.meta.region_name == "ap-south-1"
    store.close()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("gs://bucket/x", "s3://bucket/prefix"),
        ("s3:///no-bucket", "s3://bucket/prefix"),
        ("s3://key:secret@bucket/x", "never from the URL"),
        ("s3://bucket/x?endpoint_url=http://h", "endpoint, region and path_style"),
        ("s3://bucket/x?region=a&region=b", "at most once"),
        ("s3://bucket/x?path_style=maybe", "path_style is true or false"),
        ("s3://bucket/../x", "invalid object key"),
        ("file://otherhost/x", "file:///absolute/path"),
        ("", "empty archive URL"),
        ("s3:/oops", "neither a URL nor a path"),
        ("s3:bucket", "write ./s3:bucket for a folder"),
    ],
)
def test_open_store_refuses_bad_urls_with_a_hint(url: str, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says.replace("?", r"\?")):
        open_store(url)


def test_open_store_without_boto3_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 now raises ImportError
    monkeypatch.delitem(sys.modules, "shoal.archive.s3")
    with pytest.raises(ArchiveError, match=r"pip install 'shoal\[s3\]'"):
        open_store("s3://bucket/prefix")


def test_open_store_s3_url_reaches_the_server(s3_env: S3Endpoint) -> None:
    store = open_store(f"s3://{BUCKET}/by-url-{uuid.uuid4().hex[:8]}?endpoint={s3_env.url}")
    tag = store.put("x/y", b"through the URL")
    assert store.get("x/y") == (b"through the URL", tag)
    store.close()


# --- S3 only ----------------------------------------------------------------------


def test_s3_unreachable_endpoint_is_unavailable_within_seconds(
    s3_env: S3Endpoint, tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = S3Store(BUCKET, "p", endpoint_url=endpoint, part_size=5 * MIB)
    source = tmp_path / "source"
    source.write_bytes(os.urandom(6 * MIB))  # a multipart upload
    calls: list[Callable[[], object]] = [
        lambda: store.put("k", b"x"),
        lambda: store.put_file("k", source),
        lambda: store.get("k"),
        lambda: store.get_file("k", tmp_path / "target"),
        lambda: list(store.list("")),
        lambda: store.delete("k", "l"),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable) as caught:
            call()
        assert time.monotonic() - started < 10
        assert endpoint in str(caught.value)
        assert repr(BUCKET) in str(caught.value)
    assert list(tmp_path.iterdir()) == [source]  # no partial download left
    store.close()


def test_s3_missing_bucket_or_wrong_secret_is_unavailable_naming_it(
    s3_env: S3Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = S3Store("no-such-bucket", endpoint_url=s3_env.url)
    with pytest.raises(StoreUnavailable, match=r"'no-such-bucket'.*NoSuchBucket"):
        missing.put("k", b"x")
    with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
        missing.get("k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    denied = s3_store(s3_env)
    with pytest.raises(StoreUnavailable, match=r"SignatureDoesNotMatch|AccessDenied"):
        denied.put("k", b"x")


def test_s3_list_pages_through_every_key_once(s3_env: S3Endpoint) -> None:
    store = s3_store(s3_env, page_size=2)
    for key in KEYS:
        store.put(key, b"x")
    assert [info.key for info in store.list("")] == KEYS
    assert [info.key for info in store.list("db/b")] == ["db/b-x", "db/b/c", "db/b/d/e"]


def test_s3_tags_compare_whether_or_not_etags_are_quoted(s3_env: S3Endpoint) -> None:
    store = s3_store(s3_env)
    tag = store.put("k", b"one")
    assert not tag.startswith('"')
    store.put("k", b"two", if_match=f'"{tag}"')
    assert store.get("k")[0] == b"two"


def test_s3_conditional_put_retried_after_a_lost_response_is_ours(s3_env: S3Endpoint) -> None:
    """botocore resends a request whose response it lost; the resend then meets our
    own write. Here the first response is dropped on purpose."""
    store = s3_store(s3_env)
    retried = threading.Event()

    def lose_first_response(attempts: int, **_: Any) -> float | None:
        if attempts == 1:
            retried.set()
            return 0.0  # seconds to wait before sending the request again
        return None

    store._client.meta.events.register("needs-retry.s3.PutObject", lose_first_response)
    created = store.put("seg", b"segment", if_none_match=True)
    replaced = store.put("seg", b"segment v2", if_match=created)
    assert retried.is_set()
    assert store.get("seg") == (b"segment v2", replaced)
    with pytest.raises(PreconditionFailed):  # a real conflict is still one
        store.put("seg", b"other", if_none_match=True)


def test_s3_a_file_past_the_part_size_moves_in_parts(s3_env: S3Endpoint, tmp_path: Path) -> None:
    store = s3_store(s3_env, part_size=5 * MIB)
    data = os.urandom(12 * MIB)
    source, target = tmp_path / "source", tmp_path / "target"
    source.write_bytes(data)
    store.put_file("snap", source)
    raw = s3_env.client()
    head = raw.head_object(Bucket=BUCKET, Key=f"{store.prefix}snap")
    raw.close()
    assert head["ETag"].strip('"').endswith("-3")  # a multipart upload of three parts
    gets = []
    store._client.meta.events.register("before-call.s3.GetObject", lambda **_: gets.append(1))
    store.get_file("snap", target)
    assert target.read_bytes() == data
    assert len(gets) == 3  # ranged GETs


def test_s3_part_size_below_s3s_minimum_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="5 MiB"):
        S3Store(BUCKET, part_size=5 * MIB - 1)


def test_s3_a_failed_multipart_upload_is_aborted_and_the_old_object_stays(
    s3_env: S3Endpoint, tmp_path: Path
) -> None:
    store = s3_store(s3_env, part_size=5 * MIB)
    old = store.put("snap", b"old")
    source = tmp_path / "source"
    source.write_bytes(os.urandom(12 * MIB))
    parts = iter(range(100))

    def fail_the_second_part(**_: Any) -> None:
        if next(parts) == 1:
            raise ClientError({"Error": {"Code": "InternalError"}}, "UploadPart")

    store._client.meta.events.register("before-call.s3.UploadPart", fail_the_second_part)
    with pytest.raises(StoreUnavailable, match="InternalError"):
        store.put_file("snap", source)
    assert store.get("snap") == (b"old", old)
    raw = s3_env.client()
    uploads = raw.list_multipart_uploads(Bucket=BUCKET, Prefix=store.prefix)
    raw.close()
    assert uploads.get("Uploads", []) == []


def test_s3_a_download_cut_off_leaves_the_file_there_as_it_was(
    s3_env: S3Endpoint, tmp_path: Path
) -> None:
    """The transfer manager retries a cut-off GET (5 attempts), then gives up."""
    store = s3_store(s3_env, part_size=5 * MIB)
    store.put("snap", os.urandom(12 * MIB))
    target = tmp_path / "target"
    target.write_bytes(b"old")
    gets = iter(range(100))

    def cut_off_all_but_the_first(**_: Any) -> None:
        if next(gets) > 0:
            raise ReadTimeoutError(endpoint_url=s3_env.url)

    store._client.meta.events.register("before-call.s3.GetObject", cut_off_all_but_the_first)
    with pytest.raises(StoreUnavailable, match="Read timeout"):
        store.get_file("snap", target)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_s3_delete_goes_in_batches_of_a_thousand(s3_env: S3Endpoint) -> None:
    """SeaweedFS, like AWS, refuses a DeleteObjects of more than 1,000 keys. Most
    of these do not exist (a missing key is deleted all the same), so that the
    test writes 31 objects, not 1,006."""
    store = s3_store(s3_env)
    doomed = [f"seg/{n:04d}" for n in range(DELETE_BATCH + 5)]
    existing = [*doomed[::40], *doomed[-3:]]  # both batches hold some
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put(key, b"x"), [*existing, "kept/a", "seg/kept"]))
    requests = []
    store._client.meta.events.register(
        "before-call.s3.DeleteObjects", lambda **_: requests.append(1)
    )
    store.delete(*doomed)
    assert len(requests) == 2
    assert [info.key for info in store.list("")] == ["kept/a", "seg/kept"]


def test_s3_delete_names_a_key_the_server_did_not_delete() -> None:
    store = S3Store(BUCKET, "p", endpoint_url=f"http://127.0.0.1:{free_port()}")
    with Stubber(store._client) as stub:
        stub.add_response(
            "delete_objects",
            {"Errors": [{"Key": "p/b", "Code": "AccessDenied", "Message": "Access Denied"}]},
            {
                "Bucket": BUCKET,
                "Delete": {"Objects": [{"Key": "p/a"}, {"Key": "p/b"}], "Quiet": True},
            },
        )
        with pytest.raises(StoreUnavailable, match=r"'b'.*AccessDenied: Access Denied"):
            store.delete("a", "b")
    store.close()


def test_s3_start_after_lets_the_server_skip_older_segments(s3_env: S3Endpoint) -> None:
    """What restore relies on to list only the newest segments of a long history."""
    store = s3_store(s3_env)
    keys = [f"segments/{n:020d}-{n:020d}.seg" for n in range(1, 31)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put(key, b"x"), keys))
    returned = []
    store._client.meta.events.register(
        "after-call.s3.ListObjectsV2",
        lambda parsed, **_: returned.extend(parsed.get("Contents", [])),
    )
    assert [info.key for info in store.list("segments/", start_after=keys[24])] == keys[25:]
    assert len(returned) <= 11  # segments 20 to 30: the server skipped the older ones


# --- folder only ------------------------------------------------------------------


def test_folder_partial_files_never_show_in_list(tmp_path: Path) -> None:
    """Neither a crash's leftover nor the partial file of a write under way."""
    store = FolderStore(tmp_path)
    keys = ["db/done", "db/w0", "db/w1", "db/w2"]
    big = os.urandom(2 * 1024 * 1024)
    for key in keys:
        store.put(key, big)
    (tmp_path / "db" / ".partial-left-by-a-crash").write_bytes(b"half")
    whole = [(key, len(big)) for key in keys]
    writes, stop = [0], threading.Event()

    def keep_rewriting() -> None:
        while not stop.is_set():
            store.put(f"db/w{writes[0] % 3}", big)
            writes[0] += 1

    writer = threading.Thread(target=keep_rewriting)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while writes[0] < 20 and time.monotonic() < deadline:
            assert [(info.key, info.size) for info in store.list("db/")] == whole
    finally:
        stop.set()
        writer.join()
    assert writes[0] >= 20
    assert [(info.key, info.size) for info in store.list("")] == whole
