"""Manifest planning and uri confinement: every row accounted for."""

import contextlib
import http.server
import threading
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidbatch.config import InputPolicy
from vidbatch.errors import JobError, VideoError
from vidbatch.manifest import plan
from vidbatch.uri_policy import refusal_reason


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on loopback answering with `handler`; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_plan_keeps_first_duplicate_and_refuses_bad_rows(tmp_path):
    manifest = pa.table(
        {
            "video_id": ["a", "b", "a", None, "c", "d"],
            "uri": ["/v/a.mp4", None, "/v/other.mp4", "/v/x.mp4", "http://host/c.mp4", "/v/../etc/passwd"],
            "label": ["cat", "dog", "cow", "eel", "ant", "bee"],
        }
    )
    result = plan(manifest, InputPolicy())
    assert result.to_process.column("video_id").to_pylist() == ["a"]
    assert result.to_process.column("uri").to_pylist() == ["/v/a.mp4"]
    assert result.duplicates == 1
    refused = {r.video_id: (r.status, r.message) for r in result.refused}
    assert set(refused) == {"b", "__manifest_row_3", "c", "d"}
    assert all(status == "invalid_uri" for status, _ in refused.values())
    assert "empty" in refused["b"][1]
    assert "scheme 'http' is not allowed" in refused["c"][1]
    assert "'..'" in refused["d"][1]
    assert result.extras_by_id["a"] == {"label": "cat"}
    # every row: processed + refused + duplicates
    assert result.to_process.num_rows + len(result.refused) + result.duplicates == manifest.num_rows


def test_a_row_without_id_never_takes_a_real_id_of_the_manifest():
    manifest = pa.table(
        {
            "video_id": ["good", None, "__manifest_row_1", None, "__manifest_row_3~2", "__manifest_row_3"],
            "uri": ["/v/a.mp4", "/v/b.mp4", "/v/c.mp4", "/v/d.mp4", "/v/e.mp4", "/v/f.mp4"],
        }
    )
    result = plan(manifest, InputPolicy())
    kept = result.to_process.column("video_id").to_pylist()
    stand_ins = [r.video_id for r in result.refused]
    assert kept == ["good", "__manifest_row_1", "__manifest_row_3~2", "__manifest_row_3"]
    assert len(stand_ins) == 2 and not set(stand_ins) & set(kept)
    assert all(i.startswith("__manifest_row_") for i in stand_ins)
    assert len(set(kept) | set(stand_ins)) == manifest.num_rows  # one distinct id per row


def test_plan_refuses_manifest_without_required_columns():
    with pytest.raises(JobError, match="lacks column.*uri"):
        plan(pa.table({"video_id": ["a"]}), InputPolicy())


def test_plan_refuses_columns_that_clash_with_outputs():
    with pytest.raises(JobError, match="status"):
        plan(pa.table({"video_id": ["a"], "uri": ["/a.mp4"], "status": ["x"]}), InputPolicy())


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("/lib/a.mp4", True),
        ("file:///lib/a.mp4", True),
        ("s3://bucket/a.mp4", True),
        ("/lib/%2e%2e/etc/passwd", False),
        ("/lib/%252e%252e/etc/passwd", False),
        ("/elsewhere/a.mp4", False),
        ("https://example.com/a.mp4", False),
        ("concat:/lib/a.mp4|/lib/b.mp4", False),
        ("", False),
    ],
)
def test_uri_policy(uri, ok):
    policy = InputPolicy(allowed_roots=("/lib",))
    reason = refusal_reason(uri, policy)
    assert (reason is None) == ok, reason


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("s3://", "the uri names no bucket (write s3://BUCKET/...); fix the manifest row"),
        ("s3:///a.mp4", "the uri names no bucket (write s3://BUCKET/...); fix the manifest row"),
        ("https:///a.mp4", "the uri names no host (write https://HOST/...); fix the manifest row"),
        ("s3://bucket/a.mp4", None),
        ("memory:///a.mp4", None),  # memory's uris are paths: no bucket to name
        ("s3://bucket", "the uri names a bucket, not a video (write s3://BUCKET/path/to/video); fix the manifest row"),
        ("s3://bucket/", "the uri names a bucket, not a video (write s3://BUCKET/path/to/video); fix the manifest row"),
        ("S3://bucket//", "the uri names a bucket, not a video (write S3://BUCKET/path/to/video); fix the manifest row"),
        ("gs://bucket/", "the uri names a bucket, not a video (write gs://BUCKET/path/to/video); fix the manifest row"),
        ("az://container", "the uri names a bucket, not a video (write az://BUCKET/path/to/video); fix the manifest row"),
        (
            "abfs://container@account.dfs.core.windows.net/",
            "the uri names a bucket, not a video (write abfs://BUCKET/path/to/video); fix the manifest row",
        ),
        (
            "s3://user:secret@bucket/",
            "the uri names a bucket, not a video (write s3://BUCKET/path/to/video); fix the manifest row",
        ),
        ("s3://bucket/#1.mp4", None),  # '#' and '?' are characters of a key: an object, not the bucket
        ("s3://bucket/?.mp4", None),
        ("https://example.com/", None),  # a web server's root may serve a file
        ("memory://bucket/", None),  # memory's uris are paths
    ],
)
def test_a_uri_without_its_bucket_is_refused_as_such(uri, reason):
    """`s3://` alone was read as the store's root: a not_found row saying "the uri names a directory";
    `s3://bucket` and `s3://bucket/` were too (or "no object at this uri" when the bucket does not exist)."""
    policy = InputPolicy(allowed_schemes=("file", "s3", "gs", "az", "abfs", "https", "memory"))
    assert refusal_reason(uri, policy) == reason


def test_a_file_uri_is_percent_decoded_and_an_encoded_control_character_is_refused(tmp_path):
    from vidbatch.storage import local_path

    spaced = tmp_path / "a b#1.mp4"
    assert local_path(spaced.as_uri()) == str(spaced)
    assert local_path(str(spaced)) == str(spaced)  # a plain path is literal
    policy = InputPolicy(allowed_roots=[str(tmp_path)])
    assert refusal_reason(spaced.as_uri(), policy) is None
    assert "control characters" in refusal_reason(f"file://{tmp_path}/x%00.mp4", policy)
    # a scheme is case-insensitive (RFC 3986): FILE:/// names the same file, not a relative path "FILE:"
    shouting = "FILE://" + spaced.as_uri()[len("file://") :]
    assert local_path(shouting) == str(spaced)
    assert refusal_reason(shouting, policy) is None


def test_a_named_pipe_is_unreadable_without_being_opened(tmp_path):
    import os

    from vidbatch.config import StorageConfig
    from vidbatch.errors import VideoError
    from vidbatch.storage import stat_video

    os.mkfifo(tmp_path / "pipe.mp4")
    with pytest.raises(VideoError, match="pipe or device") as raised:
        stat_video(str(tmp_path / "pipe.mp4"), StorageConfig())
    assert raised.value.status == "unreadable"


def test_missing_object_store_credentials_are_access_denied_not_a_transient_failure():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    from vidbatch.storage_failures import storage_failure

    denied = storage_failure(NoCredentialsError())
    assert denied.status == "access_denied" and "credentials" in denied.message
    assert storage_failure(EndpointConnectionError(endpoint_url="http://x")).status == "timeout"


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("https://user:hunter2@host:8080/v.mp4?X-Amz-Signature=abc&X-Amz-Credential=AKIA%2F1&versionId=7",
         "https://REDACTED@host:8080/v.mp4?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED&versionId=7"),
        ("https://TOKEN@host/v.mp4", "https://REDACTED@host/v.mp4"),
        ("s3://bucket/dir/key.mp4", "s3://bucket/dir/key.mp4"),
        # An object store reads '?' and '#' as characters of the key (s3fs splits off only
        # '?versionId='): the key that was read is written, not a redacted other one.
        ("s3://bucket/what?.mp4", "s3://bucket/what?.mp4"),
        ("s3://bucket/a?b=c#d.mp4", "s3://bucket/a?b=c#d.mp4"),
        ("gs://bucket/k.mp4?generation=5", "gs://bucket/k.mp4?generation=5"),
        # Azure: a SAS token rides in the query (redacted); container@account is no user info (kept)
        ("az://videos/k.mp4?sv=2024&sig=s3cr3t", "az://videos/k.mp4?sv=REDACTED&sig=REDACTED"),
        ("abfs://videos@acct.dfs.core.windows.net/k.mp4", "abfs://videos@acct.dfs.core.windows.net/k.mp4"),
        ("s3://AKIA:s3cr3t@bucket/odd@name?.mp4", "s3://REDACTED@bucket/odd@name?.mp4"),
        ("/videos/what?.mp4", "/videos/what?.mp4"),
        (None, None),
    ],
)  # fmt: skip
def test_uris_are_written_without_credentials(given, written):
    from vidbatch.uri_policy import redact_uri

    assert redact_uri(given) == written


def test_urls_inside_messages_and_records_are_written_without_credentials():
    """Guarantee 5 for logs: `vidbatch run` with a presigned manifest or weights URL printed it whole in
    its refusal ('manifest 'https://user:pw@host/m.parquet?X-Amz-Signature=...' does not exist'), and
    started.json recorded the job's URLs as given."""
    from vidbatch.uri_policy import redact_uris_in, redact_uris_in_record

    message = "manifest 'https://user:pw@host/m.parquet?X-Amz-Signature=abc&versionId=3' does not exist; see https://docs/x"
    assert redact_uris_in(message) == (
        "manifest 'https://REDACTED@host/m.parquet?X-Amz-Signature=REDACTED&versionId=3' does not exist; see https://docs/x"
    )
    assert redact_uris_in("s3://bucket/what?.mp4 and /videos/a?b.mp4") == "s3://bucket/what?.mp4 and /videos/a?b.mp4"
    record = {"job": {"manifest": "s3://AKIA:s3cr3t@b/m.parquet", "model": {"weights": "https://h/w.pt?sig=s3cr3t", "top_k": 5}},
              "notes": ["class names from https://u:p@h/c.txt"]}  # fmt: skip
    assert "s3cr3t" not in str(redact_uris_in_record(record)) and ":p@" not in str(redact_uris_in_record(record))
    assert redact_uris_in_record(record)["job"]["model"] == {"weights": "https://h/w.pt?sig=REDACTED", "top_k": 5}


def test_a_new_signature_on_the_same_url_is_not_a_change():
    from vidbatch.incremental import PriorVideo, refusal_unchanged

    written = PriorVideo(
        uri="https://host/v.mp4?sig=REDACTED", fingerprint=None, model_id=None, sampling_id=None,
        status="invalid_uri", error_type="invalid_uri", run_id="r1", num_clips=0, error_message="m",
    )  # fmt: skip
    assert refusal_unchanged(written, "https://host/v.mp4?sig=tonight", "invalid_uri", "m")
    assert not refusal_unchanged(written, "https://host/w.mp4?sig=tonight", "invalid_uri", "m")


def test_a_local_output_that_cannot_be_written_is_refused_before_ray_starts(tmp_path, monkeypatch):
    from vidbatch import pipeline
    from vidbatch.config import parse_job

    def no_work(*args, **kwargs):
        raise AssertionError("the job must stop before starting Ray or decoding")

    monkeypatch.setattr(pipeline, "ensure_ray", no_work)
    monkeypatch.setattr(pipeline, "_build_dataset", no_work)
    pq.write_table(pa.table({"video_id": ["a"], "uri": [str(tmp_path / "a.mp4")]}), tmp_path / "manifest.parquet")
    (tmp_path / "taken").write_text("a file where the output directory would go")
    config = parse_job(
        {
            "name": "t",
            "manifest": str(tmp_path / "manifest.parquet"),
            "output": str(tmp_path / "taken" / "out"),
            "model": {"arch": "resnet18", "weights": "none"},
        }
    )
    with pytest.raises(JobError, match="which is a file; the output is a folder"):
        pipeline.run_job(config, progress=lambda line: None)


def test_dictionary_encoded_manifest_columns_are_read_as_their_values():
    """pandas' category dtype and some writers store strings dictionary-encoded."""
    manifest = pa.table(
        {
            "video_id": pa.array(["a", "b", "a"]).dictionary_encode(),
            "uri": pa.array(["/v/a.mp4", "/v/b.mp4", "/v/a2.mp4"]).dictionary_encode(),
            "label": pa.array(["cat", "dog", "cat"]).dictionary_encode(),
        }
    )
    result = plan(manifest, InputPolicy())
    assert result.to_process.column("video_id").to_pylist() == ["a", "b"]
    assert result.to_process.column("uri").to_pylist() == ["/v/a.mp4", "/v/b.mp4"]
    assert result.duplicates == 1
    assert result.extras_by_id["b"] == {"label": "dog"}
    assert result.extra_schema.field("label").type == pa.string()


@pytest.mark.parametrize("weights", ["missing.pt", "IMAGENET9K_V9", "resnet34.pt"])
def test_unusable_weights_are_refused_before_ray_starts_and_leave_nothing(tmp_path, monkeypatch, weights):
    import torch
    import torchvision

    from vidbatch import pipeline
    from vidbatch.config import parse_job

    def no_work(*args, **kwargs):
        raise AssertionError("the job must stop before starting Ray or decoding")

    monkeypatch.setattr(pipeline, "ensure_ray", no_work)
    monkeypatch.setattr(pipeline, "_build_dataset", no_work)
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "resnet34.pt")  # a state_dict of another arch
    pq.write_table(pa.table({"video_id": ["a"], "uri": [str(tmp_path / "a.mp4")]}), tmp_path / "manifest.parquet")
    config = parse_job(
        {
            "name": "t",
            "manifest": str(tmp_path / "manifest.parquet"),
            "output": str(tmp_path / "out"),
            "model": {"arch": "resnet18", "weights": str(tmp_path / weights) if weights.endswith(".pt") else weights},
        }
    )
    with pytest.raises(JobError, match="model.weights"):
        pipeline.run_job(config, progress=lambda line: None)
    assert not (tmp_path / "out").exists()  # no started.json: a refused run leaves nothing


@pytest.fixture
def scheme_without_its_package():
    """An fsspec protocol whose implementation is not installed, as gs:// is without gcsfs."""
    import fsspec
    from fsspec.registry import known_implementations

    from vidbatch.storage import missing_filesystem

    fsspec.register_implementation("vbnopkg", "vidbatch_no_such_package.NoFS", errtxt="Install vidbatch-no-such-package")
    missing_filesystem.cache_clear()
    yield "vbnopkg"
    known_implementations.pop("vbnopkg", None)
    missing_filesystem.cache_clear()


def test_rows_whose_scheme_needs_a_package_that_is_not_installed_are_refused_naming_it(scheme_without_its_package):
    # Before: such rows went to the decoders, each failed with an ImportError traceback on stderr and
    # was written as decode_error ("unexpected decoder failure"), a status that is never retried.
    scheme = scheme_without_its_package
    manifest = pa.table({"video_id": ["a", "b"], "uri": ["/v/a.mp4", f"{scheme}://bucket/b.mp4"]})
    result = plan(manifest, InputPolicy(allowed_schemes=("file", scheme)))
    assert result.to_process.column("video_id").to_pylist() == ["a"]
    [refused] = result.refused
    assert (refused.video_id, refused.status) == ("b", "invalid_uri")
    assert "Install vidbatch-no-such-package" in refused.message
    assert f"drop '{scheme}' from inputs.allowed_schemes" in refused.message


def test_store_failures_are_explained():
    from vidbatch.storage_failures import explain_failure

    assert explain_failure(ImportError("Please install gcsfs to access Google Storage")) == (
        "a package it needs is not installed here; Please install gcsfs to access Google Storage"
    )
    # object_store's chain when a cloud's metadata server refuses a token: no credentials, not a refusal
    token = OSError("Generic GCS error\n Error performing token request\n  403 Forbidden")
    assert explain_failure(token).startswith("no credentials were found")
    assert explain_failure(OSError("Generic S3 error: 403 Forbidden")) == "access denied"
    # S3 with no credentials anywhere: object_store's last try, the instance metadata service, refused
    imds = OSError(
        "Generic S3 error\n ↳ Error performing PUT http://169.254.169.254/latest/api/token in 1.3ms - "
        "Server returned non-2xx status code\n  ↳ 403 Forbidden"
    )
    assert explain_failure(imds).startswith("no credentials were found")


def test_an_address_the_object_store_client_refuses_is_invalid_uri_not_a_nightly_retry():
    """Before: botocore's ParamValidationError (s3://Bad_Bucket!/x.mp4) became `timeout`, retried every night."""
    from botocore.exceptions import ParamValidationError

    from vidbatch.storage_failures import storage_failure

    error = storage_failure(ParamValidationError(report='Invalid bucket name "Bad_Bucket!"'))
    assert error.status == "invalid_uri" and "fix the manifest row" in error.message
    assert "Bad_Bucket" not in error.message  # nothing of the uri rides along


def test_carried_columns_get_types_the_delta_videos_table_holds_without_loss():
    """deltalake writes uint8 as a signed byte and failed on 200 at the commit, after all the work."""
    from datetime import datetime, timezone

    paris = pa.array([datetime(2026, 1, 1, 12, tzinfo=timezone.utc)], pa.timestamp("us", tz="Europe/Paris"))
    manifest = pa.table(
        {
            "video_id": ["a"],
            "uri": ["/v/a.mp4"],
            "rating": pa.array([200], pa.uint8()),
            "views": pa.array([2**63 - 1], pa.uint64()),
            "tags": pa.array([[65535]], pa.list_(pa.uint16())),
            "shot_at": paris,
            "note": pa.array([None], pa.null()),
            "score": pa.array([0.5], pa.float32()),
        }
    )
    result = plan(manifest, InputPolicy())
    types = {name: result.extra_schema.field(name).type for name in result.extra_columns}
    assert types == {
        "rating": pa.int16(),
        "views": pa.int64(),
        "tags": pa.list_(pa.int32()),
        "shot_at": pa.timestamp("us", tz="UTC"),
        "note": pa.null(),  # Delta's void: takes its first real type on a later night
        "score": pa.float32(),
    }
    assert result.extras_by_id["a"]["rating"] == 200 and result.extras_by_id["a"]["tags"] == [65535]
    assert result.extras_by_id["a"]["shot_at"] == datetime(2026, 1, 1, 12, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("column", "why"),
    [
        (pa.array([1], pa.duration("s")), r"'length' is duration\[s\], a type the videos table \(Delta\) cannot hold"),
        (pa.array([1], pa.time64("us")), r"'length' is time64\[us\], a type"),
        (pa.array([1.0], pa.float16()), r"'length' is halffloat, a type"),
        (pa.array([[1]], pa.list_(pa.duration("ms"))), r"'length' is list<item: duration\[ms\]>, a type"),
        (pa.array([2**63 + 5], pa.uint64()), r"'length' is uint64 with values above int64's largest.*write it as strings"),
    ],
)
def test_carried_columns_delta_cannot_hold_are_refused_naming_the_column(column, why):
    with pytest.raises(JobError, match=rf"manifest column {why}"):
        plan(pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"], "length": column}), InputPolicy())


def test_a_failing_local_file_system_is_named_as_such_and_s3fs_errors_stay_the_stores():
    import errno

    from vidbatch.storage_failures import storage_failure

    disk = storage_failure(OSError(errno.EIO, "Input/output error", "/mnt/videos/a.mp4"))
    assert disk.status == "timeout"
    assert disk.message.startswith("the file system failed to read this video (EIO: Input/output error)")
    store = storage_failure(OSError(errno.EIO, "We encountered an internal error"))  # as s3fs translates a 500
    assert store.status == "timeout" and store.message.startswith("the object store failed to serve this video")
    too_long = storage_failure(OSError(errno.ENAMETOOLONG, "KeyTooLongError"))  # s3fs: a key over 1024 bytes
    assert too_long.status == "invalid_uri"


def _within(seconds: float, call):
    """call()'s result or exception, or TimeoutError when it blocks (as opening a FIFO for reading does)."""
    import threading

    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(_outcome(call)), daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"still blocked after {seconds}s")
    return outcome[0]


def _outcome(call):
    try:
        return call()
    except Exception as exc:
        return exc


def test_weights_or_a_manifest_that_name_a_pipe_are_refused_instead_of_blocking_for_ever(tmp_path):
    import os

    from vidbatch.config import ModelConfig, StorageConfig
    from vidbatch.manifest import read_manifest
    from vidbatch.model_weights import resolve_weights

    os.mkfifo(tmp_path / "weights.pt")
    os.mkfifo(tmp_path / "manifest.parquet")
    config = ModelConfig(arch="resnet18", weights=str(tmp_path / "weights.pt"))
    weights = _within(20, lambda: resolve_weights(config, StorageConfig()))
    assert isinstance(weights, JobError) and "names a pipe or device, not a weights file" in str(weights), weights
    manifest = _within(20, lambda: read_manifest(str(tmp_path / "manifest.parquet"), StorageConfig()))
    assert isinstance(manifest, JobError) and "names a pipe or device, not a Parquet file" in str(manifest), manifest


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_an_output_that_is_a_broken_symbolic_link_is_refused_by_check_as_by_run(tmp_path, kind):
    import os

    from vidbatch.output_refusals import refuse_file_output

    out = tmp_path / "out"
    if kind == "loop":
        os.symlink(tmp_path / "other", out)
        os.symlink(out, tmp_path / "other")
    else:
        os.symlink(tmp_path / "gone", out)
    with pytest.raises(JobError, match="loops through symbolic links" if kind == "loop" else "which does not exist"):
        refuse_file_output(str(out / "nightly"))


@pytest.mark.parametrize(("columns", "said"), [
    (["Status"], "column\\(s\\) Status clash with output columns of the videos table \\(Delta column names ignore case\\)"),
    (["tag", "Tag"], "manifest columns 'tag' and 'Tag' differ only in case"),
])  # fmt: skip
def test_column_names_that_delta_takes_for_the_same_are_refused_before_any_work(columns, said):
    """Before: check passed them, and every run failed at its commit after all the decoding."""
    with pytest.raises(JobError, match=said):
        plan(pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"], **{name: ["x"] for name in columns}}), InputPolicy())


def test_nanosecond_timestamps_are_kept_to_the_microsecond_every_night_alike():
    ns = pa.array([1_700_000_000_123_456_789], pa.timestamp("ns", tz="Europe/Paris"))
    result = plan(pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"], "seen": ns}), InputPolicy())
    assert result.extra_schema.field("seen").type == pa.timestamp("us", tz="UTC")
    assert result.extras.column("seen").cast(pa.int64()).to_pylist() == [1_700_000_000_123_456]


def test_a_file_uri_naming_a_host_is_refused_not_read_as_a_local_path():
    policy = InputPolicy()
    for uri in ("file://127.0.0.1:18721/lib/a.mp4", "file://server/share/a.mp4"):
        assert "names the host" in (refusal_reason(uri, policy) or ""), uri
    assert refusal_reason("file://localhost/lib/a.mp4", policy) is None
    assert refusal_reason("file:///lib/a.mp4", policy) is None


def _confined_decode(uri: str, root) -> dict:
    """One video decoded in-process as a decode actor does, confined to `root`."""
    from vidbatch.config import LimitsConfig, SamplingConfig, StorageConfig
    from vidbatch.preprocess import PreprocessSpec
    from vidbatch.video_task import DecodeSettings, decode_video

    settings = DecodeSettings(
        sampling=SamplingConfig(mode="fps", fps=2.0, clip_len_s=1.0),
        limits=LimitsConfig(),
        storage=StorageConfig(),
        spec=PreprocessSpec(),
        allowed_roots=(str(root),),
    )
    return [table.to_pylist()[0] for table in decode_video("v", uri, settings)][-1]


@pytest.mark.parametrize("swapped", ["file", "folder"])
def test_a_link_swapped_in_after_the_plan_is_refused_when_the_file_is_opened(tmp_path, swapped):
    """The plan checks the roots on the driver; the decoder opens the file maybe hours later. A file
    (or a folder on its path) replaced by a link out of the roots in between must not be read."""
    import os

    import media

    root, outside = tmp_path / "library", tmp_path / "outside"
    (root / "shows").mkdir(parents=True)
    outside.mkdir()
    media.write_video(outside / "secret.mp4", num_frames=6, fps=6)
    inside = media.write_video(root / "shows" / "a.mp4", num_frames=6, fps=6).path
    policy = InputPolicy(allowed_roots=(str(root),))
    assert refusal_reason(str(inside), policy) is None  # the plan's check passes
    assert _confined_decode(str(inside), root)["status"] == "ok"

    if swapped == "file":
        inside.unlink()
        os.symlink(outside / "secret.mp4", inside)
    else:
        os.rename(root / "shows", tmp_path / "old-shows")
        os.symlink(outside, root / "shows")
        os.rename(outside / "secret.mp4", outside / "a.mp4")
    row = _confined_decode(str(inside), root)
    assert row["status"] == "invalid_uri", row
    assert "outside inputs.allowed_roots when opened" in row["error_message"]
    assert row["num_clips"] == 0 and row["duration_s"] is None  # nothing of the outside file was read


def test_a_link_inside_the_roots_still_reads_and_a_pipe_swapped_in_does_not_block(tmp_path):
    import os

    import media

    root = tmp_path / "library"
    root.mkdir()
    real = media.write_video(root / "real.mp4", num_frames=6, fps=6).path
    os.symlink(real, root / "alias.mp4")
    assert _confined_decode(str(root / "alias.mp4"), root)["status"] == "ok"

    from fsspec.implementations.local import LocalFileSystem

    from vidbatch.storage import open_source

    os.mkfifo(root / "pipe.mp4")  # stat said a file; by the open it is a pipe with no writer
    with pytest.raises(VideoError, match="pipe or device"), open_source(LocalFileSystem(), str(root / "pipe.mp4")):
        pass


def test_paths_the_file_system_refuses_for_what_they_are_get_permanent_statuses(tmp_path):
    """The default case of the nightly test of the same name (a whole run twice, extended): a real
    symbolic-link loop, a name too long, a named pipe and a path through a file, each stat'ed as the
    planner does, get a status that is not `timeout` (which would be retried every night)."""
    import os

    from vidbatch.config import StorageConfig
    from vidbatch.storage import stat_video

    os.symlink(tmp_path / "loop-b.mp4", tmp_path / "loop-a.mp4")
    os.symlink(tmp_path / "loop-a.mp4", tmp_path / "loop-b.mp4")
    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "clip.mp4").write_bytes(b"not a folder")
    expected = {
        tmp_path / "loop-a.mp4": ("not_found", "loops through symbolic links"),
        tmp_path / ("n" * 300 + ".mp4"): ("invalid_uri", "longer than the file system allows"),
        tmp_path / "fifo.mp4": ("unreadable", "pipe"),
        tmp_path / "clip.mp4" / "x.mp4": ("not_found", "a folder in the path is a file"),
    }
    for path, (status, words) in expected.items():
        with pytest.raises(VideoError) as caught:
            stat_video(str(path), StorageConfig())
        assert (caught.value.status, words in caught.value.message) == (status, True), (path.name[:20], caught.value)


def test_a_manifest_folder_whose_files_disagree_on_text_or_numbers_is_refused(tmp_path):
    """Before: a Spark-style folder with `label` as text in one part and int64 in another was read
    with the first part's type, and 3 was stored as '3' without a word. Parts that agree, a part
    whose column is all nulls (no type), and Spark's _SUCCESS marker are read as before."""
    from vidbatch.config import StorageConfig
    from vidbatch.manifest import read_manifest

    def folder(name: str, *labels: pa.Array) -> str:
        path = tmp_path / name
        path.mkdir()
        (path / "_SUCCESS").write_bytes(b"")
        for i, label in enumerate(labels):
            part = pa.table({"video_id": [f"{name}{i}"], "uri": [f"/v/{name}{i}.mp4"], "label": label})
            pq.write_table(part, path / f"part-{i:04d}.parquet")
        return str(path)

    mixed = folder("mixed", pa.array(["cat"]), pa.array([3]))
    with pytest.raises(JobError, match=r"column 'label' is int64 in part-0001.parquet but string in part-0000.parquet"):
        read_manifest(mixed, StorageConfig())
    nested = folder("nested", pa.array([["a"]]), pa.array([[1]]))
    with pytest.raises(JobError, match=r"column 'label' is list<element: int64> in part-0001.parquet"):
        read_manifest(nested, StorageConfig())
    agreeing_folder = folder("agreeing", pa.array(["cat"]), pa.array(["dog"]), pa.array([None], pa.null()))
    agreeing = read_manifest(agreeing_folder, StorageConfig())
    assert agreeing.column("label").to_pylist() == ["cat", "dog", None]
    widened = read_manifest(folder("widened", pa.array([1], pa.int64()), pa.array([2], pa.int32())), StorageConfig())
    assert widened.column("label").to_pylist() == [1, 2]


def test_a_manifest_folder_without_parquet_files_says_so(tmp_path):
    """Before: an empty folder was 'manifest lacks column(s) video_id, uri; it has no columns', and
    a folder's sub-folders were listed among its 'files that are not Parquet'."""
    from vidbatch.config import StorageConfig
    from vidbatch.manifest import read_manifest

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(JobError, match=r"is a folder with no Parquet files in it \(or in its folders\)"):
        read_manifest(str(tmp_path / "empty"), StorageConfig())
    (tmp_path / "mixed" / "label=cat").mkdir(parents=True)
    (tmp_path / "mixed" / "notes.txt").write_text("x")
    pq.write_table(pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"]}), tmp_path / "mixed" / "label=cat" / "part-0.parquet")
    with pytest.raises(JobError) as refused:
        read_manifest(str(tmp_path / "mixed"), StorageConfig())
    assert "files that are not Parquet (notes.txt)" in str(refused.value), refused.value


def test_an_http_server_s_refusal_is_access_denied_and_its_failure_transient():
    """fsspec's HTTP file system raises FileNotFoundError for every failure. Before, an expired
    presigned URL (403) and a server that was down were both not_found, a permanent status."""
    from s3server import dead_port

    from vidbatch.config import StorageConfig
    from vidbatch.storage import stat_video

    class Handler(_QuietHandler):
        def _answer(self) -> None:
            code = {"/denied.mp4": 403, "/gone.mp4": 404, "/broken.mp4": 500}.get(self.path.split("?")[0], 404)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = _answer  # noqa: N815

    with _http_server(Handler) as base:
        expected = {
            f"{base}/denied.mp4?X-Amz-Signature=abc": ("access_denied", "access_denied", "HTTP 403"),
            f"{base}/gone.mp4": ("not_found", "not_found", "no object at this uri"),
            f"{base}/broken.mp4": ("timeout", "timeout", "HTTP 500"),  # an answer: the server is there
            # nothing answers: the server's state, counted towards limits.unreachable_in_a_row
            f"http://127.0.0.1:{dead_port()}/v.mp4": ("timeout", "unreachable", "ClientConnectorError"),
        }
        for uri, (status, error_type, words) in expected.items():
            with pytest.raises(VideoError) as caught:
                stat_video(uri, StorageConfig())
            got = (caught.value.status, caught.value.error_type, words in caught.value.message)
            assert got == (status, error_type, True), (uri, caught.value.message)
            assert "abc" not in caught.value.message and "127.0.0.1" not in caught.value.message


def test_an_http_refusal_of_the_read_after_a_good_look_is_access_denied():
    """A presigned URL that expires between the plan's look (HEAD answered) and the decode's ranged GET
    (403): fsspec raises aiohttp's ClientResponseError itself from a read, not a FileNotFoundError.
    Before, that row was `timeout` ("the object store failed to serve this video after retries")."""
    from vidbatch.config import StorageConfig
    from vidbatch.storage import open_source, stat_video

    class Handler(_QuietHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            code = {"/expired.mp4": 403, "/broken.mp4": 503}[self.path.split("?")[0]]
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with _http_server(Handler) as base:
        for name, (status, words) in {"expired": ("access_denied", "HTTP 403"), "broken": ("timeout", "HTTP 503")}.items():
            _, fs, path = stat_video(f"{base}/{name}.mp4?X-Amz-Signature=abc", StorageConfig())
            with pytest.raises(VideoError) as caught, open_source(fs, path) as source:
                assert not isinstance(source, str)
                source.read(4096)
            assert (caught.value.status, words in caught.value.message) == (status, True), caught.value.message
            assert "abc" not in caught.value.message and "127.0.0.1" not in caught.value.message


def test_an_object_store_that_does_not_answer_is_unreachable_not_the_file_s_failure(monkeypatch):
    """No connection to the endpoint is the store's state: `timeout` (retried next run) with
    error_type `unreachable`, which the run counts towards limits.unreachable_in_a_row."""
    from s3server import dead_port

    from vidbatch import storage
    from vidbatch.config import StorageConfig

    monkeypatch.setattr(storage, "S3_RETRY", {"mode": "standard", "max_attempts": 1})  # seconds, not ~40
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    dead = StorageConfig(endpoint_url=f"http://127.0.0.1:{dead_port()}")
    with pytest.raises(VideoError) as caught:
        storage.stat_video("s3://library/v.mp4", dead)
    assert (caught.value.status, caught.value.error_type) == ("timeout", "unreachable"), caught.value.message
    assert "did not answer (EndpointConnectionError" in caught.value.message


def test_rows_that_name_one_file_under_two_ids_are_said_before_the_run():
    """The same file under two ids was decoded twice and indexed twice, without a word (a search
    then finds it twice). Said, not refused: a library may list a file twice on purpose."""
    from vidbatch.worklist import _shared_file_note

    manifest = pa.table(
        {
            "video_id": ["v01", "v01-copy", "v07", "v07-slashes", "v07-file", "s3a", "s3b", "alone"],
            "uri": ["/lib/v01.mp4", "/lib/v01.mp4", "/lib/v07.mp4", "/lib//v07.mp4", "file:///lib/v07.mp4",
                    "s3://b/x.mp4", "s3://b//x.mp4", "/lib/alone.mp4"],
        }
    )  # fmt: skip
    (note,) = _shared_file_note(plan(manifest, InputPolicy()))
    # v01 twice, v07 three ways; two object keys that differ by a slash are two objects
    assert note.startswith("NOTE: 5 manifest rows name a file another row names too, e.g. ")
    assert ("'v01' and 'v01-copy'" in note and "'/lib/v01.mp4'" in note) or "'v07' and 'v07-slashes'" in note
    assert _shared_file_note(plan(manifest.slice(2, 1), InputPolicy())) == []
    one_each = manifest.filter(pa.array([False, True, True, False, False, True, True, True]))
    assert _shared_file_note(plan(one_each, InputPolicy())) == []


def test_view_typed_manifest_columns_are_read_as_their_plain_types(tmp_path):
    """Before: a string_view extra column (pyarrow keeps the type in the file's Arrow schema) was a
    traceback from `check` and `run` ("Function 'array_take' has no kernel matching input types
    (string_view, int64)"), and a string_view uri or video_id was refused as "must be strings, got
    string_view"."""
    from vidbatch.config import StorageConfig
    from vidbatch.manifest import read_manifest

    path = tmp_path / "views.parquet"
    pq.write_table(
        pa.table(
            {
                "video_id": pa.array(["a", "b", "a"], pa.string_view()),
                "uri": pa.array(["/v/a.mp4", "/v/b.mp4", "/v/a2.mp4"], pa.string_view()),
                "note": pa.array(["hi", None, "x"], pa.string_view()),
                "tags": pa.array([["x"], None, []], pa.list_(pa.string_view())),
                "meta": pa.array([{"k": "v"}, None, None], pa.struct([("k", pa.string_view())])),
                "raw": pa.array([b"\x00", None, b""], pa.binary_view()),
            }
        ),
        path,
    )
    assert pa.types.is_string_view(pq.read_table(path).schema.field("note").type)  # what a reader gets
    result = plan(read_manifest(str(path), StorageConfig()), InputPolicy())
    assert result.to_process.column("video_id").to_pylist() == ["a", "b"]
    assert result.duplicates == 1
    assert result.extras_by_id["a"] == {"note": "hi", "tags": ["x"], "meta": {"k": "v"}, "raw": b"\x00"}
    assert [str(f.type) for f in result.extra_schema] == [
        "string",
        "list<element: string>",
        "struct<k: string>",
        "binary",
    ]


def test_a_manifest_folder_keeps_columns_only_later_files_hold_and_names_a_cast_that_fails(tmp_path):
    """Before: a folder was read with its first file's columns, so a column that only a later part
    file held (a table appended to after a column was added; Spark's mergeSchema) was dropped for
    every row without a word, in hive-partitioned folders too. Parts that disagree on int32/int64
    where a value does not fit, or int64/double with 1.5, were refused blaming Spark's _SUCCESS
    ("a folder with files that are not Parquet (_SUCCESS)")."""
    from vidbatch.config import StorageConfig
    from vidbatch.manifest import read_manifest

    def folder(name: str, *parts: pa.Table, hive: bool = False) -> str:
        path = tmp_path / name
        path.mkdir()
        (path / "_SUCCESS").write_bytes(b"")
        for i, part in enumerate(parts):
            where = path / f"date=2026-12-0{i + 1}" if hive else path
            where.mkdir(exist_ok=True)
            pq.write_table(part, where / f"part-{i:04d}.parquet")
            (where / f".part-{i:04d}.parquet.crc").write_bytes(b"crc")
        return str(path)

    a = pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"]})
    b = pa.table({"video_id": ["b"], "uri": ["/v/b.mp4"], "label": ["dog"]})
    for hive in (False, True):
        read = read_manifest(folder(f"later{hive}", a, b, hive=hive), StorageConfig())
        assert read.column("label").to_pylist() == [None, "dog"], hive
        if hive:
            assert plan(read, InputPolicy()).extras.column("date").to_pylist() == ["2026-12-01", "2026-12-02"]
    untyped_first = pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"], "label": pa.nulls(1)})
    read = read_manifest(folder("untyped_first", untyped_first, b), StorageConfig())
    assert (read.schema.field("label").type, read.column("label").to_pylist()) == (pa.string(), [None, "dog"])
    later_text = pa.table({"video_id": ["c"], "uri": ["/v/c.mp4"], "label": [3]})
    with pytest.raises(JobError, match=r"column 'label' is int64 in part-0002.parquet but string in part-0001.parquet"):
        read_manifest(folder("later_mixed", a, b, later_text), StorageConfig())

    def numbers(values: pa.Array) -> pa.Table:
        return pa.table({"video_id": [f"v{len(values)}"], "uri": ["/v/x.mp4"], "n": values})

    small, large = numbers(pa.array([1], pa.int32())), numbers(pa.array([2**40], pa.int64()))
    with pytest.raises(JobError) as refused:
        read_manifest(folder("narrow", small, large), StorageConfig())
    said = str(refused.value)
    assert "_SUCCESS" not in said, said
    assert "'n' is int64 in part-0001.parquet but int32 in part-0000.parquet" in said, said
    fraction = pa.table({"video_id": ["f"], "uri": ["/v/f.mp4"], "n": [1.5]})
    with pytest.raises(JobError, match=r"'n' is double in part-0001.parquet but int64 in part-0000.parquet"):
        read_manifest(folder("fraction", numbers(pa.array([1], pa.int64())), fraction), StorageConfig())


def test_repeated_ids_are_named_and_those_naming_another_file_are_warned_about():
    """Before: a run said only '2 duplicate ids'. An id listed twice with two files kept whichever row
    came first, so a manifest written in another row order swapped the id's video without a word
    (the next run redid it as 'uri changed')."""
    from vidbatch.worklist import _duplicate_note

    manifest = pa.table(
        {"video_id": ["a", "a", "b", "b", "c"], "uri": ["/v/a.mp4", "/v/a.mp4", "/v/b.mp4", "/v/c.mp4", "/v/c.mp4"]}
    )
    result = plan(manifest, InputPolicy())
    assert (result.duplicates, result.duplicates_elsewhere) == (2, 1)
    note, warning = _duplicate_note(result)
    assert "2 manifest rows repeat the video_id of an earlier row" in note, note
    assert "'b' (row 2 used, row 3 not: '/v/c.mp4')" in note and "'a' (row 0 used, row 1 not)" in note, note
    assert warning.startswith("WARNING: 1 of them names another file than their id's first row"), warning
    assert _duplicate_note(plan(manifest.slice(1, 1), InputPolicy())) == []
    same_file_only = plan(manifest.slice(0, 3), InputPolicy())
    assert len(_duplicate_note(same_file_only)) == 1 and same_file_only.duplicates_elsewhere == 0


def test_a_uri_padded_by_its_writer_is_said_to_be_so(tmp_path):
    """Before: ' /lib/a.mp4' and '/lib/a.mp4\\t' were not_found with only 'no object at this uri; check
    the manifest or whether it was deleted' (the file was there), a trailing newline was 'rename the
    file', and a '~' path, a Windows path or a name in another Unicode form than the disk's got the
    same bare not_found."""
    import unicodedata

    from vidbatch.config import StorageConfig
    from vidbatch.storage import stat_video

    video = tmp_path / unicodedata.normalize("NFD", "café.mp4")
    video.write_bytes(b"x")
    named = str(video)
    said = {
        " " + named: "the uri begins with blank space (a space or tab); strip it in the manifest",
        named + "\t": "the uri ends with blank space (a space or tab); strip it in the manifest",
        "~/café.mp4": "a leading '~' is not expanded",
        "C:\\videos\\café.mp4": "this is a Windows path",
        unicodedata.normalize("NFC", named): "a file whose name differs only in its Unicode form (NFD) is there",
    }
    for uri, words in said.items():
        with pytest.raises(VideoError) as caught:
            stat_video(uri, StorageConfig())
        assert caught.value.status == "not_found" and words in caught.value.message, (uri, caught.value.message)
    with pytest.raises(VideoError) as caught:
        stat_video(str(tmp_path / "gone.mp4"), StorageConfig())
    assert caught.value.message == "no object at this uri; check the manifest or whether it was deleted"
    assert stat_video(named, StorageConfig())[0]["size"] == 1
    policy = InputPolicy()
    assert refusal_reason(named + "\n", policy) == "the uri begins or ends with a line break; strip it in the manifest row"
    assert "control characters" in refusal_reason(str(tmp_path / "a\nb.mp4"), policy)


def test_ids_that_changed_spelling_are_said_to_have_before_their_videos_are_redone():
    """Before: a manifest tool that wrote the ids 1, 2 as '0001', '0002' had every video decoded again
    and its old row removed, and the run said only that rows were gone from the manifest (nothing at
    all under half of the output's rows)."""
    from vidbatch.incremental import Decision, PriorVideo
    from vidbatch.state import PriorState
    from vidbatch.worklist import Worklist

    def before(uri: str) -> PriorVideo:
        return PriorVideo(uri, "fp", "m", "s", "ok", None, "run-1", 1)

    prior = PriorState(
        videos={"1": before("/v/a.mp4"), "2": before("/v/b.mp4"), "y": before("/v/y.mp4"), "k": before("/v/k.mp4")},
        consistent={},
    )
    manifest = plan(
        pa.table({"video_id": ["0001", "0002", "x", "k"], "uri": ["file:///v/a.mp4", "/v/b.mp4", "/v/x.mp4", "/v/k.mp4"]}),
        InputPolicy(),
    )
    decision = Decision(("0001", "0002", "x"), ("k",), ("1", "2", "y"), new=3)
    warnings = Worklist(manifest, decision, manifest, (), (), []).warnings(prior)
    rekeyed = [line for line in warnings if "ids new to the output" in line]
    assert rekeyed == [
        "WARNING: 2 removed videos rows name files that ids new to the output name now (e.g. '1' is now '0001'): each "
        "is decoded again under its new id and its old row removed; if only the ids' spelling changed (a tool that "
        "pads or types them otherwise), write them as before"
    ], warnings
    only_gone = Decision(("x",), ("k",), ("y",), new=1)
    assert not [line for line in Worklist(manifest, only_gone, manifest, (), (), []).warnings(prior) if "ids new" in line]


def test_a_delta_table_given_as_the_manifest_is_read_as_its_current_snapshot(tmp_path):
    """Before: a Delta table (Spark, Databricks, DuckDB write them) was read as a folder of Parquet
    files, its _delta_log skipped: a video an overwrite had removed was decoded and given a videos
    row, and an id's row came from whichever version's file sorted first."""
    from deltalake import write_deltalake

    from vidbatch.config import StorageConfig
    from vidbatch.manifest import read_manifest

    table = str(tmp_path / "manifest")
    write_deltalake(table, pa.table({"video_id": ["a", "gone"], "uri": ["/v/a.mp4", "/v/gone.mp4"]}))
    write_deltalake(
        table,
        pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"], "label": ["new"]}),
        mode="overwrite",
        schema_mode="overwrite",
    )
    assert len(list((tmp_path / "manifest").glob("*.parquet"))) == 2  # the removed version's file is still there
    result = plan(read_manifest(table, StorageConfig()), InputPolicy())
    assert (result.manifest_rows, result.duplicates) == (1, 0)
    assert result.extras_by_id == {"a": {"label": "new"}}
    (tmp_path / "manifest" / "_delta_log" / "00000000000000000001.json").write_text("not json")
    with pytest.raises(JobError, match=r"is a Delta table \(it has a _delta_log\) that cannot be read"):
        read_manifest(table, StorageConfig())


def test_a_partition_folder_named_like_a_column_of_its_files_is_not_blamed_on_credentials(tmp_path):
    """Before: 'cannot be read (ArrowTypeError: Unable to merge: Field label has incompatible types ...);
    check the uri, storage.endpoint_url and the job's credentials'."""
    from vidbatch.config import StorageConfig
    from vidbatch.manifest import read_manifest

    (tmp_path / "m" / "label=cat").mkdir(parents=True)
    part = pa.table({"video_id": ["a"], "uri": ["/v/a.mp4"], "label": ["dog"]})
    pq.write_table(part, tmp_path / "m" / "label=cat" / "part-0.parquet")
    with pytest.raises(JobError) as refused:
        read_manifest(str(tmp_path / "m"), StorageConfig())
    said = str(refused.value)
    assert "credentials" not in said and "must not also be a folder name of a partitioned table" in said, said
    assert "Field label has incompatible types" in said, said


def test_a_struct_column_whose_writer_orders_its_fields_otherwise_is_no_retype():
    """Before: struct<src: string, w: int64> against a table's struct<w: int64, src: string> was refused
    ("its values do not fit that type unchanged"), stopping every night, although the same fields held
    the same values: the text-or-number comparison went by the fields' positions, not their names."""
    from vidbatch.output_refusals import refuse_retyped_columns

    table = pa.schema([("meta", pa.struct([("w", pa.int64()), ("src", pa.string())]))])
    reordered = pa.table({"meta": pa.array([{"src": "x", "w": 1}], pa.struct([("src", pa.string()), ("w", pa.int64())]))})
    refuse_retyped_columns(reordered, table, "out")
    as_text = pa.table({"meta": pa.array([{"src": "x", "w": "1"}], pa.struct([("src", pa.string()), ("w", pa.string())]))})
    with pytest.raises(JobError, match=r"manifest column 'meta' is struct<src: string, w: string> now"):
        refuse_retyped_columns(as_text, table, "out")


def test_error_texts_and_row_messages_lose_the_user_info_of_urls_in_them():
    """Before, a store's error quoting the URL it failed on (deltalake names the endpoint it called) and
    the refusal of a file:// uri naming a host (which repeated that host with its user info) printed or
    wrote the password."""
    from vidbatch.storage_failures import describe_failure, explain_failure

    failure = OSError("Generic S3 error: Error performing GET http://minio:pw-CANARY@127.0.0.1:9000/out/x in 2ms")
    for text in (explain_failure(failure), describe_failure(failure)):
        assert "pw-CANARY" not in text and "http://REDACTED@127.0.0.1:9000/out/x" in text, text
    refusal = refusal_reason("file://viewer:pw-CANARY@server/share/a.mp4", InputPolicy()) or ""
    assert "names the host 'server'" in refusal and "pw-CANARY" not in refusal


def test_the_worklist_keeps_the_stat_s_sizes_of_the_videos_to_decode(tmp_path):
    """A night after another stats every file: the sizes of the ones to decode (new here) are kept for
    the progress line's time left; a first night stats nothing and has none."""
    from vidbatch.config import parse_job
    from vidbatch.incremental import PriorVideo
    from vidbatch.manifest import plan as make_plan
    from vidbatch.state import PriorState
    from vidbatch.storage import fingerprint_size, source_fingerprint
    from vidbatch.worklist import make_worklist

    files = {}
    for name, size in [("kept", 10), ("new", 3000), ("changed", 70000)]:
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(b"x" * size)
        files[name] = path
    manifest_path = tmp_path / "m.parquet"
    manifest = pa.table({"video_id": list(files), "uri": [str(p) for p in files.values()]})
    config = parse_job({"manifest": str(manifest_path), "output": str(tmp_path / "out"), "name": "n"})
    policy_plan = make_plan(manifest, config.inputs)
    from vidbatch.storage import stat_video

    def before(name, fingerprint):
        return PriorVideo(uri=str(files[name]), fingerprint=fingerprint, model_id="m", sampling_id=config.sampling.sampling_id(),
                          status="ok", error_type=None, run_id="r0", num_clips=1)  # fmt: skip

    kept_info = stat_video(str(files["kept"]), config.storage)[0]
    prior = PriorState(
        videos={"kept": before("kept", source_fingerprint(kept_info)), "changed": before("changed", "size=1;mtime=0")},
        consistent={},
    )
    worklist = make_worklist(config, policy_plan, prior, model_id="m")
    assert dict(worklist.sizes) == {"new": 3000, "changed": 70000}
    first = make_worklist(config, policy_plan, PriorState(videos={}, consistent={}), model_id="m")
    assert dict(first.sizes) == {} and first.work.to_process.num_rows == 3
    # A manifest with a `size` column (vidbatch manifest build writes one) gives a first night its sizes;
    # the stat's size wins where there is one, and a column of another meaning is not taken for bytes.
    sized = make_plan(manifest.append_column("size", pa.array([11, 22, 33], pa.int64())), config.inputs)
    assert dict(make_worklist(config, sized, PriorState(videos={}, consistent={}), model_id="m").sizes) == {
        "kept": 11, "new": 22, "changed": 33}  # fmt: skip
    assert dict(make_worklist(config, sized, prior, model_id="m").sizes) == {"new": 3000, "changed": 70000}
    labelled = make_plan(manifest.append_column("size", pa.array(["S", "M", "L"])), config.inputs)
    assert dict(make_worklist(config, labelled, PriorState(videos={}, consistent={}), model_id="m").sizes) == {}
    assert fingerprint_size("etag=abc-2;size=123") == 123 and fingerprint_size("size=None;mtime=1.0") is None
    assert fingerprint_size(None) is None and fingerprint_size("status:not_found") is None
