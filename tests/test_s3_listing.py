"""A nightly rerun's look at the files on S3: folder listings instead of a HEAD per object, against a
real S3 server (moto) behind the project's proxy, which counts the requests."""

from __future__ import annotations

import pytest
from s3server import FaultProxy

from vidbatch.config import StorageConfig
from vidbatch.incremental import settled_failure
from vidbatch.listing import MIN_PER_FOLDER
from vidbatch.source_fingerprints import fingerprints

pytest_plugins = ["conftest_s3"]

MANY = MIN_PER_FOLDER + 8


@pytest.fixture
def library(s3):
    """MANY objects in one folder (one of them multipart: its ETag is not an MD5), a few in another."""
    bucket = s3.new_bucket("listed")
    rows = []
    for i in range(MANY):
        s3.client.put_object(Bucket=bucket, Key=f"lib/v{i:03d}.mp4", Body=f"video {i}".encode() * (i + 1))
        rows.append((f"v{i:03d}", f"s3://{bucket}/lib/v{i:03d}.mp4"))
    upload = s3.client.create_multipart_upload(Bucket=bucket, Key="lib/multi.mp4")
    parts = [
        {"PartNumber": n, "ETag": s3.client.upload_part(
            Bucket=bucket, Key="lib/multi.mp4", UploadId=upload["UploadId"], PartNumber=n, Body=bytes([n]) * (5 * 2**20)
        )["ETag"]}
        for n in (1, 2)
    ]  # fmt: skip
    s3.client.complete_multipart_upload(
        Bucket=bucket, Key="lib/multi.mp4", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    rows.append(("multi", f"s3://{bucket}/lib/multi.mp4"))
    rows.append(("gone", f"s3://{bucket}/lib/gone.mp4"))  # in the listed folder, but not there
    for i in range(3):
        s3.client.put_object(Bucket=bucket, Key=f"few/f{i}.mp4", Body=b"few")
        rows.append((f"f{i}", f"s3://{bucket}/few/f{i}.mp4"))
    return bucket, rows


def _heads(proxy: FaultProxy) -> list[str]:
    return [r["path"] for r in proxy.stats()["requests"] if r["method"] == "HEAD"]


def _lists(proxy: FaultProxy, bucket: str) -> list[dict]:
    return [r for r in proxy.stats()["requests"] if r["method"] == "GET" and r["path"].rstrip("/") == f"/{bucket}"]


def test_a_folder_of_many_files_is_listed_with_the_fingerprints_a_head_gives(library, proxy: FaultProxy):
    bucket, rows = library
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    by_head = fingerprints(rows, storage)
    lists_of_heads = len(_lists(proxy, bucket))  # s3fs lists a prefix to tell a missing file from a folder
    assert len(_heads(proxy)) >= len(rows) - 1
    assert by_head["multi"] is not None and "-2" in by_head["multi"]  # a multipart ETag
    assert by_head["gone"] == settled_failure("not_found")  # the HEAD's answer: no such object

    proxy.reset()
    by_listing = fingerprints(rows, storage, listable=[video_id for video_id, _ in rows])
    assert by_listing == by_head
    # HEADs only where the listing did not answer: the folder of few files, and the file not there
    heads = _heads(proxy)
    assert sorted(heads) == sorted([f"/{bucket}/few/f{i}.mp4" for i in range(3)] + [f"/{bucket}/lib/gone.mp4"]), heads
    assert len(_lists(proxy, bucket)) == lists_of_heads + 1  # one page: up to 1,000 objects a request


def test_only_videos_whose_last_result_was_ok_are_looked_up_in_a_listing(library, proxy: FaultProxy):
    """A listing says a file is there, not that it may be read: a denied file must keep its HEAD."""
    bucket, rows = library
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    listable = [video_id for video_id, _ in rows if video_id != "v005"]
    fingerprints(rows, storage, listable=listable)
    assert f"/{bucket}/lib/v005.mp4" in _heads(proxy)
    assert f"/{bucket}/lib/v006.mp4" not in _heads(proxy)


def test_a_folder_whose_listing_fails_gets_a_head_per_file(library, proxy: FaultProxy):
    """A listing that fails (its connection reset here; a job without s3:ListBucket is refused the
    same way) is tried once: the HEADs answer, with the same fingerprints."""
    bucket, rows = library
    proxy.add_fault("reset", path_contains=f"/{bucket}", method="GET", times=1000)  # GETs here: listings only
    storage = StorageConfig(endpoint_url=proxy.endpoint, max_attempts=1)
    by_listing = fingerprints(rows, storage, listable=[video_id for video_id, _ in rows])
    assert len(_heads(proxy)) == len(rows)
    assert proxy.stats()["faults"] >= 1  # the listing was tried, and refused
    proxy.reset()
    # (but "gone": a 404's HEAD is followed by a listing of its name, which the fault also refused)
    by_head = fingerprints(rows, storage)
    assert {k: v for k, v in by_listing.items() if k != "gone"} == {k: v for k, v in by_head.items() if k != "gone"}


def test_a_folder_of_far_more_files_than_wanted_is_listed_one_page_then_headed(s3, proxy: FaultProxy):
    """Listing 1,000 objects a page is slower than HEADs (and dearer) where few are wanted: past a
    budget the listing stops and the files not found yet get their HEAD."""
    bucket = s3.new_bucket("sparse")
    for i in range(1100):  # listed before the wanted ones: keys come in order
        s3.client.put_object(Bucket=bucket, Key=f"lib/a{i:05d}.mp4", Body=b"x")
    rows = []
    for i in range(MANY):
        s3.client.put_object(Bucket=bucket, Key=f"lib/z{i:03d}.mp4", Body=f"wanted {i}".encode())
        rows.append((f"z{i:03d}", f"s3://{bucket}/lib/z{i:03d}.mp4"))
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    by_head = fingerprints(rows, storage)
    proxy.reset()
    assert fingerprints(rows, storage, listable=[video_id for video_id, _ in rows]) == by_head
    assert len(_lists(proxy, bucket)) == 1  # one page of 1,000, not the whole folder
    assert len(_heads(proxy)) == MANY
