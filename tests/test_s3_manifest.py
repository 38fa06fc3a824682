"""`vidbatch manifest build` over an S3 prefix and a local folder; manifests and outputs at a bucket's root."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from extended import extended

from vidbatch.cli import main
from vidbatch.config import InputPolicy, StorageConfig
from vidbatch.manifest import plan, read_manifest
from vidbatch.manifest_build import build_manifest, list_videos

pytest_plugins = ["conftest_s3"]

_OBJECTS = {
    "library/a.mp4": b"a" * 10,
    "library/B.MOV": b"b" * 11,
    "library/sub/dir/c.webm": b"c" * 12,
    "library/sub/d.mkv": b"d" * 13,
    "library/readme.txt": b"notes",
    "library/thumbs/a.jpg": b"jpeg",
    "library/sub/._d.mkv": b"resource fork",
    "library/noext": b"?",
    "libraryX/outside.mp4": b"not under the prefix",
}
_VIDEO_IDS = ["B.MOV", "a.mp4", "sub/d.mkv", "sub/dir/c.webm"]


@pytest.fixture(scope="module")
def library_bucket(s3):
    bucket = s3.new_bucket("lib")
    for key, body in _OBJECTS.items():
        s3.client.put_object(Bucket=bucket, Key=key, Body=body)
    s3.client.put_object(Bucket=bucket, Key="library/empty-folder/", Body=b"")  # a console-made folder marker
    return bucket


def test_s3_prefix_lists_videos_with_stable_ids(s3, library_bucket):
    before = datetime.now(timezone.utc)
    table, skipped = list_videos(f"s3://{library_bucket}/library/", StorageConfig())
    rows = table.to_pylist()
    assert [r["video_id"] for r in rows] == _VIDEO_IDS
    assert skipped == 5  # readme, thumbnail, resource fork, no extension, the folder marker
    for row in rows:
        key = "library/" + row["video_id"]
        head = s3.client.head_object(Bucket=library_bucket, Key=key)
        assert row["uri"] == f"s3://{library_bucket}/{key}"
        assert row["size"] == len(_OBJECTS[key]) == head["ContentLength"]
        assert row["etag"] == head["ETag"].strip('"')
        assert abs((row["last_modified"] - head["LastModified"]).total_seconds()) < 1
        assert row["last_modified"] <= before
    # Without the trailing slash: the same ids (never "libraryX/...").
    again, _ = list_videos(f"s3://{library_bucket}/library", StorageConfig())
    assert again.equals(table)


def test_cli_writes_manifest_to_s3_that_the_job_reads(s3, library_bucket, capsys):
    out = f"s3://{library_bucket}/manifests/library.parquet"
    assert main(["manifest", "build", f"s3://{library_bucket}/library/", "-o", out]) == 0
    assert "4 videos" in capsys.readouterr().out
    manifest = read_manifest(out, StorageConfig())
    assert manifest.column_names == ["video_id", "uri", "size", "etag", "last_modified"]
    from vidbatch.config import InputPolicy

    planned = plan(manifest, InputPolicy())
    assert planned.to_process.column("video_id").to_pylist() == _VIDEO_IDS and not planned.refused


def test_endpoint_option_and_errors(s3, library_bucket, tmp_path, capsys):
    out = tmp_path / "m.parquet"
    assert main(["manifest", "build", f"s3://{library_bucket}/library/", "-o", str(out), "--endpoint-url", s3.endpoint]) == 0
    assert pq.read_table(out).num_rows == 4
    assert main(["manifest", "build", f"s3://{library_bucket}/nothing-here/", "-o", str(out)]) == 2
    assert "has no objects under it; check the prefix" in capsys.readouterr().err
    assert main(["manifest", "build", "s3://no-such-bucket-here/videos/", "-o", str(out)]) == 2
    assert "its bucket 'no-such-bucket-here' does not exist" in capsys.readouterr().err
    assert main(["manifest", "build", str(tmp_path / "missing"), "-o", str(out)]) == 2
    assert capsys.readouterr().err.endswith("does not exist\n")
    assert main(["manifest", "build", str(out), "-o", str(tmp_path / "m2.parquet")]) == 2
    assert "is a file; give the folder that holds the videos" in capsys.readouterr().err


def test_local_folder(tmp_path):
    root = tmp_path / "lib"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "y" / "v.mp4").write_bytes(b"v" * 5)
    (root / "w.avi").write_bytes(b"w" * 6)
    (root / "cover.png").write_bytes(b"png")
    result = build_manifest(str(root), str(tmp_path / "out" / "m.parquet"), StorageConfig())
    assert (result.videos, result.skipped, result.total_bytes) == (2, 1, 11)
    table = pq.read_table(tmp_path / "out" / "m.parquet")
    rows = table.to_pylist()
    assert [r["video_id"] for r in rows] == ["w.avi", "x/y/v.mp4"]
    assert rows[1]["uri"] == str(root / "x" / "y" / "v.mp4")
    assert rows[1]["etag"] is None and rows[1]["size"] == 5 and rows[1]["last_modified"] is not None
    # Stable: the same folder listed again, from another working directory, gives the same table.
    again, _ = list_videos(str(root) + "/", StorageConfig())
    assert again.equals(table)
    assert pq.read_table(io.BytesIO((tmp_path / "out" / "m.parquet").read_bytes())).equals(table)


def test_a_folder_without_videos_writes_no_manifest(tmp_path, capsys):
    """An empty manifest would make the next run remove every row of its output."""
    root = tmp_path / "lib"
    root.mkdir()
    manifest = tmp_path / "m.parquet"
    manifest.write_bytes(b"yesterday's manifest")
    assert main(["manifest", "build", str(root), "-o", str(manifest)]) == 2
    assert f"no videos under {str(root)!r} (it is empty)" in capsys.readouterr().err
    (root / "cover.png").write_bytes(b"png")
    assert main(["manifest", "build", str(root), "-o", str(manifest)]) == 2
    assert "(1 other objects, none with a video extension" in capsys.readouterr().err
    assert manifest.read_bytes() == b"yesterday's manifest"  # left as it was


def test_a_folder_given_as_the_manifest_names_what_is_not_parquet(tmp_path):
    from vidbatch.errors import JobError
    from vidbatch.manifest import read_manifest

    folder = tmp_path / "lib"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(b"video")
    pq.write_table(pa.table({"video_id": ["a"], "uri": [str(folder / "a.mp4")]}), folder / "manifest.parquet")
    with pytest.raises(JobError, match=r"is a folder with files that are not Parquet \(a\.mp4\); give the manifest file itself"):
        read_manifest(str(folder), StorageConfig())
    (folder / "a.mp4").unlink()  # a folder of Parquet files (as Spark writes one) is a manifest
    assert read_manifest(str(folder), StorageConfig()).column("video_id").to_pylist() == ["a"]


def test_an_output_bucket_that_does_not_exist_is_refused_in_one_line(s3):
    from vidbatch.errors import JobError
    from vidbatch.state import load_prior

    refusal = r"output 's3://vb-no-such-bucket/out' cannot be read \(its bucket does not exist\)"
    with pytest.raises(JobError, match=refusal) as raised:
        load_prior("s3://vb-no-such-bucket/out", StorageConfig())
    assert "\n" not in str(raised.value) and "<" not in str(raised.value)  # no XML body from the store


def test_a_manifest_on_a_store_that_cannot_be_reached_is_refused_in_one_line(monkeypatch):
    """botocore's connection errors are not OSErrors; they must still become the job's one-line refusal."""
    from botocore.exceptions import EndpointConnectionError

    import vidbatch.manifest as manifest_module
    from vidbatch.errors import JobError

    class Unreachable:
        def exists(self, path):
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:5999/bucket/m.parquet")

    monkeypatch.setattr(manifest_module, "filesystem", lambda uri, storage: (Unreachable(), "bucket/m.parquet"))
    refusal = r"manifest 's3://bucket/m.parquet' cannot be read \(nothing answers at the endpoint\)"
    with pytest.raises(JobError, match=refusal) as raised:
        read_manifest("s3://bucket/m.parquet", StorageConfig())
    assert "storage.endpoint_url" in str(raised.value)


def test_video_ids_must_be_strings_or_integers():
    """A float id column ('1.0' where an integer column gave '1') would re-key the whole library."""
    from vidbatch.config import InputPolicy
    from vidbatch.errors import JobError

    def ids(values: pa.Array) -> pa.Table:
        return pa.table({"video_id": values, "uri": pa.array(["/lib/a.mp4"] * len(values), pa.string())})

    assert plan(ids(pa.array([7], pa.int64())), InputPolicy()).to_process.column("video_id").to_pylist() == ["7"]
    with pytest.raises(JobError, match="manifest column 'video_id' must be strings .*got double; write the ids as strings"):
        plan(ids(pa.array([7.0], pa.float64())), InputPolicy())


def test_an_s3_manifest_folder_keeps_columns_only_later_files_hold(s3):
    """A Spark table on S3 whose later part files gained a column: read with every file's columns
    (before, the first file's only), through the same listing of the prefix as before."""
    bucket = s3.new_bucket("sparktable")
    parts = [
        pa.table({"video_id": ["a"], "uri": ["s3://b/a.mp4"]}),
        pa.table({"video_id": ["b"], "uri": ["s3://b/b.mp4"], "label": ["dog"]}),
    ]
    for i, part in enumerate(parts):
        sink = io.BytesIO()
        pq.write_table(part, sink)
        s3.client.put_object(Bucket=bucket, Key=f"table/date=2026-12-0{i + 1}/part-{i:04d}.parquet", Body=sink.getvalue())
    s3.client.put_object(Bucket=bucket, Key="table/_SUCCESS", Body=b"")
    read = read_manifest(f"s3://{bucket}/table", StorageConfig())
    assert plan(read, InputPolicy()).extras.to_pylist() == [
        {"date": "2026-12-01", "label": None},
        {"date": "2026-12-02", "label": "dog"},
    ]


def test_an_s3_delta_table_given_as_the_manifest_is_read_as_its_current_snapshot(s3):
    """The endpoint and credentials come from where the output's come from (delta_storage_options)."""
    from deltalake import write_deltalake

    bucket = s3.new_bucket("deltamanifest")
    uri = f"s3://{bucket}/manifest"
    options = {"AWS_ENDPOINT_URL": s3.endpoint, "AWS_ALLOW_HTTP": "true", "conditional_put": "etag"}
    write_deltalake(uri, pa.table({"video_id": ["a", "gone"], "uri": ["s3://b/a.mp4", "s3://b/g.mp4"]}), storage_options=options)
    write_deltalake(uri, pa.table({"video_id": ["a"], "uri": ["s3://b/a.mp4"]}), mode="overwrite", storage_options=options)
    assert read_manifest(uri, StorageConfig()).column("video_id").to_pylist() == ["a"]


def _bucket_rows(media_bucket: str) -> pa.Table:
    return pa.table(
        {
            "video_id": ["a", "root", "root-slash", "no-such-bucket"],
            "uri": [f"s3://{media_bucket}/a.mp4", f"s3://{media_bucket}", f"s3://{media_bucket}/", "s3://vb-no-such-bucket/"],
        }
    )


def _manifest_at_a_bucket_root(s3, media_bucket: str) -> str:
    bucket = s3.new_bucket("mroot")
    sink = io.BytesIO()
    pq.write_table(_bucket_rows(media_bucket), sink)
    s3.client.put_object(Bucket=bucket, Key="part-0000.parquet", Body=sink.getvalue())
    return bucket


_NAMES_A_BUCKET = "the uri names a bucket, not a video (write s3://BUCKET/path/to/video); fix the manifest row"


def test_rows_naming_a_bucket_are_refused_from_a_manifest_at_a_bucket_root(s3):
    """The rows were planned, then `not_found` ("the uri names a directory", or "no object at this uri" for a
    bucket that does not exist). A manifest at a bucket's root (a folder of Parquet files) is read as any folder."""
    media_bucket = s3.new_bucket("media")
    manifest_bucket = _manifest_at_a_bucket_root(s3, media_bucket)
    for manifest in (f"s3://{manifest_bucket}", f"s3://{manifest_bucket}/"):
        planned = plan(read_manifest(manifest, StorageConfig()), InputPolicy())
        assert planned.to_process.column("video_id").to_pylist() == ["a"]
        assert [(r.video_id, r.status, r.message) for r in planned.refused] == [
            (video_id, "invalid_uri", _NAMES_A_BUCKET) for video_id in ("root", "root-slash", "no-such-bucket")
        ]


# Two runs: extended (~25 s on 2 cores). The default case is
# test_rows_naming_a_bucket_are_refused_from_a_manifest_at_a_bucket_root (the rows and the manifest, no run, no output).
@extended
def test_a_row_naming_a_bucket_is_invalid_uri_while_manifest_and_output_may_be_bucket_roots(s3, ray_s3, tmp_path):
    """A row `s3://bucket` or `s3://bucket/` was `not_found` ("the uri names a directory"), one naming a bucket that
    does not exist "no object at this uri". A manifest (a folder of Parquet files) and an output (the tables'
    root) at a bucket's root are places like any folder: read, written, and read again by the next run."""
    import media
    from deltalake import DeltaTable

    from vidbatch.config import parse_job
    from vidbatch.pipeline import run_job

    media_bucket, out_bucket = s3.new_bucket("media"), s3.new_bucket("oroot")
    video = media.write_video(tmp_path / "a.mp4", num_frames=20, fps=10)
    s3.client.upload_file(str(video.path), media_bucket, "a.mp4")
    manifest_bucket = _manifest_at_a_bucket_root(s3, media_bucket)
    for manifest, output, expected in (
        (f"s3://{manifest_bucket}", f"s3://{out_bucket}", "new"),
        (f"s3://{manifest_bucket}/", f"s3://{out_bucket}/", "unchanged"),
    ):
        job = {
            "name": "bucket-roots",
            "manifest": manifest,
            "output": output,
            "sampling": {"mode": "fps", "fps": 1.0},
            "model": {"arch": "resnet18", "weights": "none", "task": "embed"},
            "resources": {"progress_interval_s": 60},
        }
        summary = run_job(parse_job(job), progress=lambda line: None).summary
        assert summary["table_statuses"] == {"ok": 1, "invalid_uri": 3}
        assert summary["changes"][expected] == 1  # the second run finds the first one's rows at the bucket's root
    videos = DeltaTable(f"s3://{out_bucket}/videos", storage_options=s3.delta_options()).to_pyarrow_table()
    messages = {row["video_id"]: (row["status"], row["error_message"]) for row in videos.to_pylist()}
    refused = ("invalid_uri", _NAMES_A_BUCKET)
    assert messages == {"a": ("ok", None), "root": refused, "root-slash": refused, "no-such-bucket": refused}
