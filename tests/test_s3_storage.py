"""vidbatch.storage against a real S3 server: statuses, range reads, retries, endpoints, unwritable outputs."""

from __future__ import annotations

import io

import av
import pytest
from s3server import FaultProxy, deny_everyone, env, write_noise_video

from vidbatch.commit import check_writable
from vidbatch.config import LimitsConfig, SamplingConfig, StorageConfig, parse_job
from vidbatch.decode import iter_clips, open_video
from vidbatch.errors import JobError, VideoError
from vidbatch.preprocess import PreprocessSpec
from vidbatch.storage import VIDEO_BLOCK_SIZE, delta_storage_options, fsspec_options, open_source, stat_video

pytest_plugins = ["conftest_s3"]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """~12 MB, 20 s of noise at 10 fps with a key frame every second (moov at the end, as PyAV writes it)."""
    return write_noise_video(tmp_path_factory.mktemp("long") / "long.mp4", seconds=20, fps=10, gop=10)


@pytest.fixture(scope="module")
def media_bucket(s3, long_video):
    bucket = s3.new_bucket("media")
    s3.client.upload_file(str(long_video), bucket, "lib/long.mp4")
    s3.client.put_object(Bucket=bucket, Key="lib/denied.mp4", Body=long_video.read_bytes()[:4096])
    s3.client.put_object(Bucket=bucket, Key="lib/folder/inner.mp4", Body=b"x")
    deny_everyone(s3.client, bucket, ["lib/denied.mp4"])
    return bucket


def _status(uri: str, storage: StorageConfig) -> str:
    try:
        stat_video(uri, storage)
    except VideoError as exc:
        return exc.status
    return "ok"


def test_missing_denied_and_folder_objects_get_their_statuses(s3, media_bucket):
    storage = StorageConfig()
    assert _status(f"s3://{media_bucket}/lib/long.mp4", storage) == "ok"
    assert _status(f"s3://{media_bucket}/lib/gone.mp4", storage) == "not_found"
    assert _status(f"s3://{media_bucket}/lib/denied.mp4", storage) == "access_denied"
    assert _status(f"s3://{media_bucket}/lib/folder", storage) == "not_found"
    assert _status("s3://no-such-bucket-vidbatch/x.mp4", storage) == "not_found"
    # a scheme is case-insensitive: S3:// passes allowed_schemes, and was invalid_uri ("Protocol not known")
    assert _status(f"S3://{media_bucket}/lib/long.mp4", storage) == "ok"


def test_denied_object_is_a_real_403_from_the_server(s3, media_bucket):
    """The bucket policy is enforced by the server itself, for HEAD and GET alike."""
    from botocore.exceptions import ClientError

    for call in (s3.client.head_object, s3.client.get_object):
        with pytest.raises(ClientError) as info:
            call(Bucket=media_bucket, Key="lib/denied.mp4")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_probe_reads_by_range_not_whole(media_bucket, proxy: FaultProxy, long_video):
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    size = long_video.stat().st_size
    info, fs, path = stat_video(f"s3://{media_bucket}/lib/long.mp4", storage)
    assert info["size"] == size
    with open_source(fs, path) as source, open_video(source, limits=LimitsConfig()) as (_, _, video):
        assert not isinstance(source, str)
        assert video.duration_s == pytest.approx(20.0, abs=0.2)
    ranges = [r["range"] for r in proxy.stats()["requests"] if r["method"] == "GET"]
    read = proxy.bytes_sent("long.mp4")
    # The block holding the header and the block holding `moov` at the end: two ranged GETs of at
    # most one block each, whatever the file's size (here 2 of its 3 blocks; 2 of 250 for a 1 GB file).
    assert all(r and r.startswith("bytes=") for r in ranges), ranges
    assert len(ranges) == 2, ranges
    assert read <= 2 * VIDEO_BLOCK_SIZE and read < size, (read, size)


def test_full_decode_fetches_each_byte_once(media_bucket, proxy: FaultProxy, long_video):
    """fps sampling decodes every packet (see decode.py), so it reads the file once, in blocks."""
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    size = long_video.stat().st_size
    _, fs, path = stat_video(f"s3://{media_bucket}/lib/long.mp4", storage)
    with open_source(fs, path) as source, open_video(source, limits=LimitsConfig()) as (container, stream, info):
        clips = list(iter_clips(container, stream, info, sampling=SamplingConfig(fps=1.0, clip_len_s=4.0), spec=PreprocessSpec()))
    assert [len(c.frame_pts_s) for c in clips] == [4, 4, 4, 4, 4]
    gets = [r for r in proxy.stats()["requests"] if r["method"] == "GET" and "long.mp4" in r["path"]]
    assert all(r["bytes"] <= VIDEO_BLOCK_SIZE for r in gets)
    assert size <= proxy.bytes_sent("long.mp4") <= size + VIDEO_BLOCK_SIZE  # each block once (the moov block twice at most)


def test_sparse_seeks_read_only_the_blocks_they_touch(media_bucket, proxy: FaultProxy, long_video):
    """The file object supports a seeking sampler: 3 frames from a 20 s video fetch a fraction of it."""
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    size = long_video.stat().st_size
    block = 512 * 1024  # smaller than production's 4 MiB so that a 12 MB test file shows it
    _, fs, path = stat_video(f"s3://{media_bucket}/lib/long.mp4", storage)
    seen = []
    with open_source(fs, path, block_size=block) as source, av.open(source) as container:
        stream = container.streams.video[0]
        for target_s in (3.0, 10.0, 17.0):
            container.seek(int(target_s / stream.time_base), stream=stream, backward=True)
            frame = next(container.decode(stream))
            seen.append(float(frame.pts * stream.time_base))
    assert seen == pytest.approx([3.0, 10.0, 17.0], abs=0.01)  # key frames every second
    read = proxy.bytes_sent("long.mp4")
    assert read < size * 0.35, (read, size)


def test_throttling_and_connection_resets_are_retried(media_bucket, proxy: FaultProxy, long_video):
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    proxy.add_fault("slowdown", path_contains="lib/long.mp4", method="HEAD", times=2)
    proxy.add_fault("slowdown", path_contains="lib/long.mp4", method="GET", times=1)
    proxy.add_fault("reset", path_contains="lib/long.mp4", method="GET", times=1)
    proxy.add_fault("truncate", path_contains="lib/long.mp4", method="GET", times=1)
    info, fs, path = stat_video(f"s3://{media_bucket}/lib/long.mp4", storage)
    fs.invalidate_cache()
    with open_source(fs, path) as source:
        assert not isinstance(source, str)
        data = source.read()
    assert data == long_video.read_bytes()
    assert proxy.stats()["faults"] == 5
    assert all(rule["times"] == 0 for rule in proxy.stats()["rules"])


def test_retry_settings_reach_botocore_and_carry_no_credentials(s3):
    options = fsspec_options("s3://bucket/key.mp4", StorageConfig())
    retries = options["config_kwargs"]["retries"]
    assert retries["mode"] in ("standard", "adaptive") and retries["max_attempts"] >= 5
    text = repr(options) + repr(delta_storage_options("s3://bucket/t", StorageConfig()))
    assert s3.secret_access_key not in text and s3.access_key_id not in text


def test_endpoint_from_job_file_wins_over_environment(s3, proxy: FaultProxy):
    config = parse_job(
        {"name": "t", "manifest": "s3://m/x.parquet", "output": "s3://o/out", "storage": {"endpoint_url": proxy.endpoint}}
    )
    assert fsspec_options("s3://m/x", config.storage)["client_kwargs"]["endpoint_url"] == proxy.endpoint
    assert delta_storage_options("s3://o/out", config.storage)["AWS_ENDPOINT_URL"] == proxy.endpoint
    with env(AWS_ENDPOINT_URL=s3.endpoint):
        assert fsspec_options("s3://m/x", StorageConfig())["client_kwargs"]["endpoint_url"] == s3.endpoint
        options = delta_storage_options("s3://o/out", StorageConfig())
        assert options == {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ALLOW_HTTP": "true", "conditional_put": "etag"}
    with env(AWS_ENDPOINT_URL=None):
        assert "client_kwargs" not in fsspec_options("s3://m/x", StorageConfig())
        assert delta_storage_options("s3://o/out", StorageConfig()) == {}


def test_unwritable_s3_outputs_fail_fast_and_create_nothing(s3):
    storage = StorageConfig()
    with pytest.raises(JobError, match="cannot be written"):
        check_writable("s3://vidbatch-no-such-bucket/out", "run1", storage, {"x": 1})
    buckets = [b["Name"] for b in s3.client.list_buckets()["Buckets"]]
    assert "vidbatch-no-such-bucket" not in buckets  # a typo must not create a bucket

    bucket = s3.new_bucket("readonly")
    deny_everyone(s3.client, bucket, ["out/*"], actions=["s3:PutObject"])
    with pytest.raises(JobError, match="cannot be written"):
        check_writable(f"s3://{bucket}/out", "run1", storage, {"x": 1})
    check_writable(f"s3://{bucket}/elsewhere", "run1", storage, {"x": 1})  # the rest of the bucket is writable
    body = s3.client.get_object(Bucket=bucket, Key="elsewhere/_runs/run1/started.json")["Body"].read()
    assert b'"x": 1' in body


def test_unwritable_output_is_refused_before_ray_starts(s3, monkeypatch, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vidbatch import pipeline

    bucket = s3.new_bucket("job")
    buffer = io.BytesIO()
    pq.write_table(pa.table({"video_id": ["a"], "uri": [f"s3://{bucket}/a.mp4"]}), buffer)
    s3.client.put_object(Bucket=bucket, Key="manifest.parquet", Body=buffer.getvalue())
    deny_everyone(s3.client, bucket, ["out/*"], actions=["s3:PutObject"])

    def no_work(*args, **kwargs):
        raise AssertionError("the job must stop before starting Ray or decoding")

    # Refused before Ray starts (a first run would otherwise start it while the weights resolve).
    monkeypatch.setattr(pipeline, "ensure_ray", no_work)
    monkeypatch.setattr(pipeline, "_build_dataset", no_work)
    config = parse_job(
        {
            "name": "t",
            "manifest": f"s3://{bucket}/manifest.parquet",
            "output": f"s3://{bucket}/out",
            "model": {"arch": "resnet18", "weights": "none"},
        }
    )
    with pytest.raises(JobError, match="cannot be written"):
        pipeline.run_job(config, progress=lambda line: None)


def test_credentials_only_in_a_shared_credentials_file_work_for_tables_too(s3, tmp_path):
    """deltalake's S3 client does not read ~/.aws files or profiles; botocore does, for it."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[nightly]\naws_access_key_id = {s3.access_key_id}\naws_secret_access_key = {s3.secret_access_key}\n"
    )
    (tmp_path / "config").write_text("[profile nightly]\nregion = us-east-1\n")
    bucket = s3.new_bucket("profile")
    uri = f"s3://{bucket}/t"
    with env(
        AWS_ACCESS_KEY_ID=None,
        AWS_SECRET_ACCESS_KEY=None,
        AWS_DEFAULT_REGION=None,
        AWS_PROFILE="nightly",
        AWS_SHARED_CREDENTIALS_FILE=str(credentials),
        AWS_CONFIG_FILE=str(tmp_path / "config"),
    ):
        options = delta_storage_options(uri, StorageConfig())
        assert options["AWS_ACCESS_KEY_ID"] == s3.access_key_id and options["AWS_REGION"] == "us-east-1"
        write_deltalake(uri, pa.table({"a": [1, 2]}), storage_options=options)
    assert DeltaTable(uri, storage_options=s3.delta_options()).to_pyarrow_table().num_rows == 2
    # With credentials in the environment, object_store reads them itself: none in the options.
    assert "AWS_SECRET_ACCESS_KEY" not in delta_storage_options(uri, StorageConfig())


@pytest.fixture()
def few_retries(monkeypatch):
    """Fewer attempts than production's, so that giving up takes seconds, not minutes."""
    import vidbatch.storage

    monkeypatch.setattr(vidbatch.storage, "S3_RETRY", {"mode": "standard", "max_attempts": 2})
    monkeypatch.setattr(vidbatch.storage, "S3_FS_RETRIES", 1)


def test_store_failing_past_all_retries_gives_a_transient_status(media_bucket, proxy: FaultProxy, few_retries):
    storage = StorageConfig(endpoint_url=proxy.endpoint)
    uri = f"s3://{media_bucket}/lib/long.mp4"
    proxy.add_fault("slowdown", path_contains="lib/long.mp4", method="HEAD", times=50)
    with pytest.raises(VideoError) as info:
        stat_video(uri, storage)
    assert info.value.status == "timeout" and "the next run tries it again" in info.value.message
    assert proxy.endpoint not in info.value.message and "?" not in info.value.message

    proxy.reset()
    _, fs, path = stat_video(uri, storage)
    for kind in ("reset", "truncate"):
        proxy.reset()
        proxy.add_fault(kind, path_contains="lib/long.mp4", method="GET", times=100)
        with (
            pytest.raises(VideoError) as info,
            open_source(fs, path) as source,
            open_video(source, limits=LimitsConfig()) as (container, stream, video),
        ):
            list(iter_clips(container, stream, video, sampling=SamplingConfig(), spec=PreprocessSpec()))
        assert info.value.status == "timeout", kind  # through FFmpeg's read callback: not unreadable/decode_error
        assert proxy.stats()["faults"] < 100


def test_object_deleted_while_being_read_is_not_found(s3, long_video):
    bucket = s3.new_bucket("vanishing")
    s3.client.upload_file(str(long_video), bucket, "v.mp4")
    _, fs, path = stat_video(f"s3://{bucket}/v.mp4", StorageConfig())
    with pytest.raises(VideoError) as info, open_source(fs, path) as source:  # noqa: PT012
        assert source.read(1000)
        s3.client.delete_object(Bucket=bucket, Key="v.mp4")
        source.seek(VIDEO_BLOCK_SIZE * 2)
        source.read(1000)
    assert info.value.status == "not_found"
