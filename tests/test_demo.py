"""The quick start's sample library (`vidbatch demo-library`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest

from vidbatch.demo import write_demo_library


@pytest.fixture(scope="module")
def written_once(tmp_path_factory) -> Path:
    """One demo library for the module (its 720p encode is most of these tests' time); each test
    works on a copy with the files' times kept, as a second `make demo` finds them."""
    folder = tmp_path_factory.mktemp("demo")
    write_demo_library(folder)
    return folder


def _copy(library: Path, to: Path) -> Path:
    shutil.copytree(library, to, copy_function=shutil.copy2, dirs_exist_ok=True)
    return to


def test_a_second_demo_library_keeps_the_files_it_finds(tmp_path, written_once):
    """A second `make demo` must show a nightly run over an unchanged library: the local
    fingerprint is size + mtime, so the files already there stay untouched."""
    manifest = _copy(written_once, tmp_path) / "manifest.parquet"
    rows = pq.read_table(manifest).to_pylist()
    assert [r["video_id"] for r in rows] == [
        "h264_720p", "vp9_clip", "mpeg4_avi", "h264_short", "not_a_video", "missing_file", "h264_720p",
    ]  # fmt: skip
    files = sorted(p for p in tmp_path.iterdir() if p.name != "manifest.parquet")
    assert [p.name for p in files] == ["h264_720p.mp4", "h264_short.mp4", "mpeg4_avi.avi", "notes.mp4", "vp9_clip.webm"]
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    codecs = {}
    for p in files:
        if p.name != "notes.mp4":
            with av.open(str(p)) as container:
                codecs[p.name] = container.streams.video[0].codec_context.name
    assert codecs == {"h264_720p.mp4": "h264", "h264_short.mp4": "h264", "mpeg4_avi.avi": "mpeg4", "vp9_clip.webm": "vp9"}

    write_demo_library(tmp_path)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "manifest.parquet"])  # no scratch files left


def test_a_file_under_a_demo_name_that_is_not_that_video_is_replaced(tmp_path, written_once):
    """Before: any file named h264_720p.mp4 was kept, so a leftover text file or a cut-short copy
    made the quick start show an `unreadable` row where the README promises an ok one."""
    _copy(written_once, tmp_path)
    kept = tmp_path / "vp9_clip.webm"
    kept_before = (kept.stat().st_mtime_ns, kept.read_bytes())
    (tmp_path / "h264_720p.mp4").write_text("not a video\n")
    short = tmp_path / "mpeg4_avi.avi"
    short.write_bytes(short.read_bytes()[:300])
    write_demo_library(tmp_path)
    for name, codec in (("h264_720p.mp4", "h264"), ("mpeg4_avi.avi", "mpeg4")):
        with av.open(str(tmp_path / name)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == codec
            assert next(container.decode(stream)) is not None
    assert (kept.stat().st_mtime_ns, kept.read_bytes()) == kept_before  # the good ones stay untouched
