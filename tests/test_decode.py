"""Decoding and sampling against media whose frame index is painted into the pixels."""

from __future__ import annotations

import struct
import time

import media
import numpy as np
import pytest

from vidbatch.config import LimitsConfig, SamplingConfig
from vidbatch.decode import iter_clips, open_video
from vidbatch.decode_probe import StreamFacts
from vidbatch.errors import VideoError
from vidbatch.preprocess import PreprocessSpec

SPEC = PreprocessSpec()


def sample(path, **sampling):
    with open_video(str(path), limits=LimitsConfig()) as (container, stream, info):
        return info, list(iter_clips(container, stream, info, sampling=SamplingConfig(**sampling), spec=SPEC))


def end_of_last_frame(video: media.GeneratedVideo) -> float:
    """The rule vidbatch documents: a video ends when its last frame stops being shown."""
    import av

    with av.open(str(video.path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        last = frames[-1]
        if last.duration:
            return float(last.time + last.duration * last.time_base)
        return float(last.time + 1 / stream.average_rate)


def expected_on_screen(video: media.GeneratedVideo, targets: list[float]) -> list[int]:
    """Index of the last frame whose pts <= t, straight from the file's own timestamps."""
    pts = video.frame_pts_s
    return [max(i for i, p in enumerate(pts) if p <= t + 1e-6) for t in targets]


@pytest.mark.parametrize("name", ["h264", "vp9", "mpeg4", "vfr", "rotated"])
@pytest.mark.parametrize("fps", [1.0, 3.0])
def test_fps_sampling_picks_the_frame_on_screen(library, name, fps):
    video = library[name]
    info, clips = sample(video.path, mode="fps", fps=fps, clip_len_s=2.0)
    end = end_of_last_frame(video)
    targets = [k / fps for k in range(10_000) if k / fps < end]
    want = expected_on_screen(video, targets)
    got_pts = [p for clip in clips for p in clip.frame_pts_s]
    got_index = [media.read_frame_index(frame) for clip in clips for frame in clip.frames]
    assert got_index == want  # the pixels prove which frame was used (and that it is upright)
    assert got_pts == pytest.approx([video.frame_pts_s[i] for i in want], abs=1e-6)
    for clip in clips:
        assert clip.frames.shape[1:] == (224, 224, 3) and clip.frames.dtype == np.uint8
        assert clip.start_s == pytest.approx(clip.index * 2.0)
        assert clip.end_s <= clip.start_s + 2.0 + 1e-9


def test_uniform_sampling_spreads_over_duration(library):
    video = library["h264"]  # 50 frames at 10 fps: 5 s
    info, clips = sample(video.path, mode="uniform", num_frames=4, clip_len_s=10.0)
    assert info.duration_s == pytest.approx(5.0, abs=0.01)
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [0, 12, 25, 37]
    assert len(clips) == 1 and clips[0].index == 0


KEYFRAME_CODECS = [(".mp4", "libx264"), (".webm", "libvpx-vp9"), (".webm", "libvpx"), (".avi", "mpeg4")]


@pytest.mark.parametrize(("suffix", "codec"), KEYFRAME_CODECS)
def test_keyframes_sampling_takes_only_key_frames_whatever_the_codec(tmp_path, suffix, codec):
    """FFmpeg's VP9 decoder ignores skip_frame and returns every frame: they must not all be samples."""
    video = media.write_video(tmp_path / f"gop{suffix}", num_frames=40, fps=10, codec=codec, gop=10)
    _, clips = sample(video.path, mode="keyframes", clip_len_s=2.0)
    indices = [media.read_frame_index(f) for c in clips for f in c.frames]
    assert indices == list(video.keyframe_indices) == [0, 10, 20, 30]


def test_keyframes_sampling_returns_exactly_the_key_frames(library):
    video = library["gop"]
    _, clips = sample(video.path, mode="keyframes", clip_len_s=2.0)
    indices = [media.read_frame_index(f) for c in clips for f in c.frames]
    assert indices == list(video.keyframe_indices) == [0, 15, 30, 45]
    assert [c.index for c in clips] == [0, 1, 2]  # 0.0 | 1.5 | 3.0 | 4.5 -> windows 0, 0, 1, 2
    assert [len(c.frame_pts_s) for c in clips] == [2, 1, 1]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_keyframes_of_an_open_gop_are_all_taken_in_time_order(tmp_path, suffix):
    """x264's --open-gop: key frames after the first are I frames, not IDR. Before, the decoder told to
    skip non-key frames returned [4.0, 2.0, 0.0] of [0, 2, 4, 6, 8] s, and the clips came out of order."""
    video = media.write_video(tmp_path / f"open{suffix}", num_frames=100, fps=10, gop=20, open_gop=True)
    _, clips = sample(video.path, mode="keyframes", clip_len_s=4.0)
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == list(video.keyframe_indices) == [0, 20, 40, 60, 80]
    assert [c.index for c in clips] == [0, 1, 2]
    assert [list(c.frame_pts_s) for c in clips] == [[0.0, 2.0], [4.0, 6.0], [8.0]]


@pytest.mark.parametrize(("suffix", "start_frames"), [(".mkv", 0), (".mkv", 20), (".webm", 0)])
def test_uniform_sampling_of_a_matroska_file_spreads_over_its_picture_not_its_longer_audio(tmp_path, suffix, start_frames):
    """4 s of picture with 8 s of audio: the Segment's duration is the audio's. Before: 4 frames 1 s
    apart (the other 4 targets fell after the picture's end); an MP4 of the same got 8, 0.5 s apart."""
    import av

    path = tmp_path / f"long_audio{suffix}"
    video_codec, audio_codec = ("libx264", "aac") if suffix == ".mkv" else ("libvpx", "libopus")
    with av.open(str(path), "w") as out:
        video = out.add_stream(video_codec, rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = out.add_stream(audio_codec, rate=48000)
        audio.layout = "mono"
        for index in range(40):
            frame = av.VideoFrame.from_ndarray(media.paint_frame(index, 64, 64), format="rgb24")
            frame.pts = start_frames + index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        sample_format = audio.codec_context.format.name
        for k in range(8 * 48000 // 960):
            silence = np.zeros((1, 960), dtype=np.float32 if "flt" in sample_format else np.int16)
            chunk = av.AudioFrame.from_ndarray(silence, format=sample_format, layout="mono")
            chunk.sample_rate, chunk.pts = 48000, k * 960
            out.mux(audio.encode(chunk))
        out.mux(audio.encode(None))
    info, clips = sample(path, mode="uniform", num_frames=8, clip_len_s=10.0)
    assert info.duration_s == pytest.approx(4.0, abs=1e-6)
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [0, 5, 10, 15, 20, 25, 30, 35]


def _painted(path, codec, width, height, pix_fmt, options=None):
    """30 painted frames at 10 fps with an encoder or container media.write_video does not offer."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=10, options=options or {})
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for index in range(30):
            frame = av.VideoFrame.from_ndarray(media.paint_frame(index, width, height), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_frames_whose_times_go_back_are_refused_not_sampled_wrong(tmp_path):
    """H.264 with B-frames in AVI: AVI stores no presentation times for reordered frames, so each frame
    came out with another's time. Before: `ok`, with painted frames [0, 0, 0, 2, 4, 4, 6, 6, ...] at fps 10
    and frame_pts_s going back inside a clip."""
    path = _painted(tmp_path / "bframes.avi", "libx264", 64, 64, "yuv420p", {"x264-params": "bframes=3:b-pyramid=normal"})
    for mode in ("fps", "uniform"):
        with pytest.raises(VideoError) as raised:
            sample(path, mode=mode, fps=10.0, num_frames=30, clip_len_s=2.0)
        assert raised.value.status == "decode_error" and "the frames' times go back" in raised.value.message
        assert "re-encode it to MP4" in raised.value.message and "reordered frames" in raised.value.message
    # An AVI whose frames are not reordered (MPEG-4 part 2 as write_video makes it) reads as before.
    ordered = media.write_video(tmp_path / "mpeg4.avi", num_frames=30, fps=10)
    _, clips = sample(ordered.path, mode="fps", fps=10.0, clip_len_s=2.0)
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == list(range(30))


def test_joined_recordings_whose_times_start_again_are_refused_in_every_mode_that_sees_it(tmp_path):
    """Two MPEG-TS recordings joined end to end (`cat a.ts b.ts`). keyframes wrote clip indexes
    0,1,2,0,1,2, which the collector took for a result lost in the pipeline: `rerun the job`, retried
    every night as 'not the file's doing'. fps blamed reordered frames and showed an AVI command."""
    one = _painted(tmp_path / "one.ts", "mpeg2video", 64, 64, "yuv420p", {"g": "10"})
    joined = tmp_path / "joined.ts"
    joined.write_bytes(one.read_bytes() * 2)
    for mode in ("fps", "keyframes"):
        with pytest.raises(VideoError) as raised:
            sample(joined, mode=mode, fps=1.0, clip_len_s=1.0)
        assert raised.value.status == "decode_error", mode
        assert "times go back" in raised.value.message and "join recordings" in raised.value.message
        assert "in.avi" not in raised.value.message


def _with_stated_length(path, real_s: float, stated_s: float):
    """A copy of a Matroska file whose Segment Duration and track DURATION tag say `stated_s`
    (a tool that cut or joined the file and kept the old header)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"\x44\x89")  # the Segment's Duration element
    assert at > 0
    size, value = data[at + 2] & 0x7F, at + 3
    form = ">d" if size == 8 else ">f"
    old = struct.unpack(form, data[value : value + size])[0]
    data[value : value + size] = struct.pack(form, old * stated_s / real_s)
    tag = data.find(b"00:00:0%d.000000000" % real_s)
    assert tag > 0
    data[tag : tag + 18] = b"00:%02d:%02d.000000000" % divmod(int(stated_s), 60)
    out = path.with_name(f"stated{stated_s:g}{path.suffix}")
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize("stated_s", [80.0, 1.0])
def test_uniform_spreads_over_the_frames_a_file_holds_not_a_header_that_lies(tmp_path, stated_s):
    """A header saying 80 s over 4 s of frames gave 1 of 8 frames (`ok`); one saying 1 s gave all 8
    from the first second and never looked at the rest."""
    video = media.write_video(tmp_path / "real.mkv", num_frames=40, fps=10, width=64, height=64)
    lying = _with_stated_length(video.path, 4.0, stated_s)
    with open_video(str(lying), limits=LimitsConfig()) as (_, _, info):
        assert info.duration_s == pytest.approx(stated_s)  # the header is what FFmpeg reports
    facts = StreamFacts()
    with open_video(str(lying), limits=LimitsConfig()) as (container, stream, info):
        sampling = SamplingConfig(mode="uniform", num_frames=8, clip_len_s=2.0)
        clips = list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC, stream_facts=facts))
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [0, 5, 10, 15, 20, 25, 30, 35]
    assert facts.end_s == pytest.approx(4.0)
    assert clips[-1].end_s == pytest.approx(4.0)


@pytest.mark.parametrize("suffix", [".webm", ".mkv", ".mp4", ".avi"])
def test_uniform_s_row_states_the_duration_its_times_were_spread_over(tmp_path, suffix):
    """A 3 s WebM at 15 fps: Matroska keeps times to the millisecond, so its stream ends at 2.999 s
    while its header says 3.0. Uniform spread its times over the header's 3.0 (within rounding) but
    the row said duration_s 2.999: a reader recomputing t_i = i * duration_s / num_frames (DESIGN's
    rule) expected the frame at 0.933 for t_2 and found 1.0."""
    from vidbatch.config import StorageConfig
    from vidbatch.video_task import DecodeSettings, decode_video

    video = media.write_video(tmp_path / f"v{suffix}", num_frames=45, fps=15, width=64, height=48)
    num_frames = 6
    settings = DecodeSettings(
        sampling=SamplingConfig(mode="uniform", num_frames=num_frames, clip_len_s=2.0),
        limits=LimitsConfig(),
        storage=StorageConfig(),
        spec=SPEC,
    )
    *clips, row = [t.to_pylist()[0] for t in decode_video("v", str(video.path), settings)]
    assert row["status"] == "ok"
    duration = row["duration_s"]
    targets = [i * duration / num_frames for i in range(num_frames)]
    used = [video.frame_pts_s.index(p) for clip in clips for p in clip["frame_pts_s"]]
    assert used == expected_on_screen(video, targets)
    assert clips[-1]["end_s"] == pytest.approx(duration)


@pytest.mark.parametrize("limits", [{"decode_timeout_s": 0.01}, {"max_duration_s": 5}])
def test_uniform_s_look_for_the_real_end_holds_the_deadline_and_the_duration_limit(tmp_path, limits, monkeypatch):
    """A header stating 1 s over 60 s of frames has the probe read on to the end: it read every packet
    (a whole object from S3) before the decode deadline or max_duration_s were looked at."""
    from fractions import Fraction

    import av

    from vidbatch import decode_limits
    from vidbatch.decode_limits import Deadline

    real = tmp_path / "long.mkv"
    with av.open(str(real), "w") as out:
        stream = out.add_stream("libx264", rate=100, options={"g": "100", "bf": "0"})
        stream.width = stream.height = 16
        stream.pix_fmt = "yuv420p"
        for index in range(6000):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), index % 255, np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 100)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    data = bytearray(real.read_bytes())
    at = data.find(b"\x44\x89")  # the Segment's Duration: 60 s stated as 1 s
    size, value = data[at + 2] & 0x7F, at + 3
    form = ">d" if size == 8 else ">f"
    data[value : value + size] = struct.pack(form, struct.unpack(form, data[value : value + size])[0] / 60)
    tag = data.find(b"00:01:00.000000000")
    data[tag : tag + 18] = b"00:00:01.000000000"
    lying = tmp_path / "stated1s.mkv"
    lying.write_bytes(bytes(data))

    read: list[int] = []
    note = decode_limits.PacketTally.note
    monkeypatch.setattr(decode_limits.PacketTally, "note", lambda self, packet: (read.append(1), note(self, packet))[1])
    config = LimitsConfig(**limits)
    with open_video(str(lying), limits=config) as (container, stream, info):
        assert info.duration_s == pytest.approx(1.0)
        with pytest.raises(VideoError) as raised:
            sampling = SamplingConfig(mode="uniform", num_frames=8, clip_len_s=2.0)
            deadline = Deadline.after(config.decode_timeout_s)
            time.sleep(0.05)  # the deadline has passed when sampling starts
            list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC, deadline=deadline, limits=config))
    assert raised.value.status == ("timeout" if "decode_timeout_s" in limits else "too_large")
    assert len(read) < 1000  # of 6000 packets


def test_uniform_spreads_over_a_vfr_mp4_with_b_frames_whole_length(tmp_path):
    """FFmpeg's duration of this file is its decode times' span, 2.86 s of the ~5.5 s shown: uniform
    took its 8 frames from the first half (frames 2.61, 4.0 and 5.5 never looked at)."""
    pts = [0, 0.1, 0.15, 0.9, 1.0, 2.5, 2.6, 2.61, 4.0, 5.5]
    video = media.write_video(tmp_path / "vfr.mp4", num_frames=len(pts), fps=10, width=64, height=64, pts_s=pts)
    with open_video(str(video.path), limits=LimitsConfig()) as (_, _, info):
        if info.duration_s > 5.0:
            pytest.skip("this FFmpeg reports the whole length; nothing to correct")
    facts = StreamFacts()
    with open_video(str(video.path), limits=LimitsConfig()) as (container, stream, info):
        sampling = SamplingConfig(mode="uniform", num_frames=8, clip_len_s=10.0)
        clips = list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC, stream_facts=facts))
    assert facts.end_s == pytest.approx(end_of_last_frame(video)) and facts.end_s > 5.5
    targets = [i * facts.end_s / 8 for i in range(8)]
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == expected_on_screen(video, targets)


def test_keyframes_follow_the_file_s_key_packets_when_the_decoder_does_not_flag_its_frames(tmp_path):
    """FFmpeg's QuickTime Animation (qtrle) decoder never sets a frame's key flag. Before: decode_error
    'no key frame could be decoded; the video stream is damaged', for a file fps sampling reads fine."""
    import av

    path = _painted(tmp_path / "animation.mov", "qtrle", 64, 48, "rgb24")
    with av.open(str(path)) as container:
        keys = [float(p.pts * p.time_base) for p in container.demux(video=0) if p.size and p.is_keyframe]
    _, clips = sample(path, mode="keyframes", clip_len_s=10.0)
    assert [list(c.frame_pts_s) for c in clips] == [keys] and keys[0] == 0.0
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [round(t * 10) for t in keys]


def test_keyframes_of_a_trimmed_copy_count_only_what_its_edit_list_shows(tmp_path):
    """A stream-copy trim keeps the hidden packets in the file. Before, keyframes mode counted them:
    a copy showing 4.7 s had duration_s 6.8 (and was too_large under a 6 s limit)."""
    from vidbatch.decode_probe import StreamFacts

    source = media.write_video(tmp_path / "src.mp4", num_frames=100, fps=10, gop=20)
    trimmed = media.trim_by_edit_list(source.path, tmp_path / "trim.mp4", start_s=1.3, length_s=4.7)
    limits = LimitsConfig(max_duration_s=6)
    with open_video(str(trimmed), limits=limits) as (container, stream, info):
        facts = StreamFacts()
        sampling = SamplingConfig(mode="keyframes", clip_len_s=10.0)
        clips = list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC, stream_facts=facts, limits=limits))
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [20, 40]  # shown at 0.7 and 2.7 s
    assert facts.end_s - info.start_s == pytest.approx(4.7, abs=1e-6)


def test_a_trimmed_copy_whose_key_frame_is_hidden_says_so_in_keyframes_mode(tmp_path):
    """`ffmpeg -ss 1.3 -c copy` of a one-GOP file: its only key frame lies in the hidden part. Before,
    decode_error 'the video stream is damaged' (permanent), for a file fps sampling reads fine."""
    source = media.write_video(tmp_path / "src.mp4", num_frames=50, fps=10, gop=300)
    trimmed = media.trim_by_edit_list(source.path, tmp_path / "trim.mp4", start_s=1.3)
    with pytest.raises(VideoError) as caught:
        sample(trimmed, mode="keyframes", clip_len_s=2.0)
    assert caught.value.status == "too_short" and "edit list hides" in caught.value.message
    _, clips = sample(trimmed, mode="fps", fps=1.0, clip_len_s=10.0)
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [13, 23, 33, 43]  # t = 0..3 of 3.7 s


def test_vfr_clip_membership_follows_sample_time(library):
    _, clips = sample(library["vfr"].path, mode="fps", fps=1.0, clip_len_s=2.0)
    # targets 0,1 | 2,3 | 4 -> frames at 0.0, 0.65 | 1.4, 2.9 | 3.5
    assert [list(c.frame_pts_s) for c in clips] == [[0.0, 0.65], [1.4, 2.9], [3.5]]


def test_rotation_is_applied(library):
    info, clips = sample(library["rotated"].path, mode="fps", fps=1.0, clip_len_s=10.0)
    assert (info.width, info.height) == (320, 240)  # stored sideways
    assert media.read_frame_index(clips[0].frames[0]) == 0  # but delivered upright


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_a_mirrored_video_is_delivered_as_it_is_shown(tmp_path, rotation):
    """A front camera's clip: the display matrix mirrors as well as turns. Before, only the turn was
    read (frame.rotation), so a mirrored clip came out upside down and a turned one unmirrored."""
    video = media.write_video(tmp_path / "selfie.mp4", num_frames=10, fps=10, width=240, height=320, rotation=rotation,
                              mirror=True)  # fmt: skip
    info, clips = sample(video.path, mode="fps", fps=2.0, clip_len_s=10.0)
    # read_frame_index refuses a turned or mirrored picture (its one white corner is elsewhere)
    assert [media.read_frame_index(frame) for frame in clips[0].frames] == [0, 5]


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
@pytest.mark.parametrize("mode", ["fps", "keyframes"])
def test_the_video_row_has_the_size_the_video_is_shown_at(tmp_path, rotation, mode):
    """A phone video stored 320x240 with a quarter turn is shown 240 wide, 320 high: the row says so."""
    from vidbatch.config import StorageConfig
    from vidbatch.video_task import DecodeSettings, decode_video

    video = media.write_video(tmp_path / "phone.mp4", num_frames=10, fps=10, width=240, height=320, rotation=rotation,
                              mirror=rotation == 270)  # fmt: skip
    settings = DecodeSettings(
        sampling=SamplingConfig(mode=mode, fps=2.0, clip_len_s=1.0), limits=LimitsConfig(), storage=StorageConfig(), spec=SPEC
    )
    row = [t.to_pylist()[0] for t in decode_video("v", str(video.path), settings)][-1]
    assert row["status"] == "ok"
    assert (row["width"], row["height"]) == (240, 320)


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda d: media.write_garbage(d / "junk.mp4", 5000, seed=3), "unreadable"),
        (lambda d: media.write_audio_only(d / "audio.m4a"), "no_video_stream"),
    ],
)
def test_bad_files_raise_video_error_with_status(tmp_path, make, status):
    path = make(tmp_path)
    with pytest.raises(VideoError) as caught:
        sample(path, mode="fps")
    assert caught.value.status == status


def test_limits_refuse_before_decoding(library):
    with (
        pytest.raises(VideoError, match="max_pixels") as caught,
        open_video(str(library["h264"].path), limits=LimitsConfig(max_pixels=1000)),
    ):
        pass
    assert caught.value.status == "too_large"
    # the row of a video refused by its limits still says what the probe found
    assert caught.value.facts["width"] == library["h264"].width and caught.value.facts["duration_s"] > 0


def test_duration_limit_message_shows_the_limit_as_set(library):
    with (
        pytest.raises(VideoError) as caught,
        open_video(str(library["h264"].path), limits=LimitsConfig(max_duration_s=0.5)),
    ):
        pass
    assert "limits.max_duration_s=0.5;" in caught.value.message
    # too_large is permanent: raising the limit alone does not redo the row
    assert "rerun with --retry-failed" in caught.value.message
    assert caught.value.facts["codec"] == "h264"


def test_truncated_file_keeps_what_decodes_or_fails_cleanly(tmp_path, library):
    data = library["h264"].path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        _, clips = sample(cut, mode="fps", fps=1.0)
    except VideoError as exc:
        assert exc.status in {"unreadable", "decode_error"}
    else:
        assert all(media.read_frame_index(f) >= 0 for c in clips for f in c.frames)


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_a_matroska_stream_starting_late_has_its_own_length_and_uniform_spreads_over_it(tmp_path, suffix):
    """Matroska's Duration runs from the segment's time 0; the stream here starts at 2.5 s."""
    video = media.write_video(tmp_path / f"late{suffix}", num_frames=40, fps=10, width=160, height=96,
                              pts_s=[2.5 + i / 10 for i in range(40)])  # fmt: skip
    info, clips = sample(video.path, mode="uniform", num_frames=7, clip_len_s=2.0)
    length = end_of_last_frame(video) - 2.5
    assert info.start_s == pytest.approx(2.5)
    assert info.duration_s == pytest.approx(length, abs=0.011)
    targets = [2.5 + i * info.duration_s / 7 for i in range(7)]
    assert [p for c in clips for p in c.frame_pts_s] == pytest.approx(
        [video.frame_pts_s[i] for i in expected_on_screen(video, targets)], abs=1e-6
    )
    assert clips[-1].end_s == pytest.approx(2.5 + info.duration_s)


def _write_stream_without_frames(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        container.start_encoding()  # header with the stream, then no frame at all
    return path


@pytest.mark.parametrize("mode", ["fps", "keyframes"])
def test_a_video_stream_without_frames_is_too_short_not_damaged(tmp_path, mode):
    path = _write_stream_without_frames(tmp_path / "empty.avi")
    with pytest.raises(VideoError, match="holds no frames") as raised:
        sample(path, mode=mode)
    assert raised.value.status == "too_short"


def test_a_file_where_no_stream_can_be_found_is_unreadable_not_audio_only(tmp_path):
    import struct

    data = bytearray(media.write_video(tmp_path / "good.mp4", num_frames=10, fps=10).path.read_bytes())
    at = data.find(b"moov")
    size = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 : at - 4 + size] = bytes(size - 8)  # the index of every track wiped
    (tmp_path / "wiped.mp4").write_bytes(data)
    with pytest.raises(VideoError, match="no stream could be found") as raised:
        sample(tmp_path / "wiped.mp4", mode="fps")
    assert raised.value.status == "unreadable"


def test_the_last_clip_and_the_duration_end_where_the_last_frame_stops_being_shown(tmp_path):
    """This mp4's metadata says 1.7 s, but its last frame is shown from 2.0 s to 2.4 s: the sample
    at t = 2 must lie inside its clip's window, and the video row must say how long it really is."""
    from vidbatch.config import StorageConfig
    from vidbatch.decode_probe import StreamFacts
    from vidbatch.video_task import DecodeSettings, decode_video

    video = media.write_video(tmp_path / "vfr.mp4", num_frames=5, pts_s=[0.0, 0.4, 0.8, 0.85, 2.0], width=64, height=48)
    real_end = end_of_last_frame(video)
    for mode in ("fps", "keyframes"):
        end = StreamFacts()
        with open_video(str(video.path), limits=LimitsConfig()) as (container, stream, info):
            assert info.duration_s < 2.0 < real_end  # the premise: the metadata understates
            sampling = SamplingConfig(mode=mode, fps=1.0, clip_len_s=1.5)
            clips = list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC, stream_facts=end))
        assert end.end_s == pytest.approx(real_end, abs=1e-3), mode
        assert clips[-1].end_s == pytest.approx(min(clips[-1].start_s + 1.5, real_end), abs=1e-3), mode
        for clip in clips:
            assert all(clip.start_s - 1e-6 <= p < clip.end_s for p in clip.frame_pts_s), (mode, clip)
    fps_clips = sample(video.path, mode="fps", fps=1.0, clip_len_s=1.5)[1]
    assert [c.frame_pts_s for c in fps_clips] == [(0.0, 0.85), (2.0,)]  # targets 0, 1 | 2
    settings = DecodeSettings(
        sampling=SamplingConfig(mode="fps", fps=1.0, clip_len_s=1.5), limits=LimitsConfig(), storage=StorageConfig(), spec=SPEC
    )
    row = [t.to_pylist()[0] for t in decode_video("v", str(video.path), settings)][-1]
    assert row["kind"] == "video" and row["status"] == "ok"
    assert row["duration_s"] == pytest.approx(real_end, abs=1e-3)


def test_a_video_refused_by_its_limits_keeps_its_probed_facts_in_its_row(library):
    from vidbatch.config import SamplingConfig, StorageConfig
    from vidbatch.preprocess import PreprocessSpec
    from vidbatch.video_task import DecodeSettings, decode_video

    settings = DecodeSettings(
        sampling=SamplingConfig(), limits=LimitsConfig(max_duration_s=0.5), storage=StorageConfig(), spec=PreprocessSpec()
    )
    *clips, video = decode_video("v", str(library["h264"].path), settings)
    row = video.to_pylist()[0]
    assert not clips and row["status"] == "too_large" and row["num_clips"] == 0
    assert row["width"] == library["h264"].width and row["codec"] == "h264" and row["duration_s"] > 0.5


def _audio_with_cover_art(path):
    import av

    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=44100)
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 128, np.uint8), format="rgb24").reformat(format="yuvj420p")
        for packet in [*cover.encode(picture), *cover.encode()]:
            container.mux(packet)
        for index in range(40):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, index * 1024
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return path


def _small_track_first(path):
    import av

    with av.open(str(path), "w") as container:
        streams = [container.add_stream("libx264", rate=10) for _ in range(2)]
        for stream, (width, height) in zip(streams, [(64, 48), (320, 240)], strict=True):
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(20):
            for stream in streams:
                frame = av.VideoFrame.from_ndarray(media.paint_frame(index, stream.width, stream.height), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
        for stream in streams:
            for packet in stream.encode():
                container.mux(packet)
    return path


def test_cover_art_is_no_video_and_the_main_picture_is_the_largest_stream(tmp_path):
    """Before: an audio file's cover picture was decoded as 'the video' (decode_error, 'damaged'), and a
    small preview track that came first was embedded instead of the video."""
    with pytest.raises(VideoError, match="only a still picture") as caught:
        sample(_audio_with_cover_art(tmp_path / "song.mp4"), mode="fps")
    assert caught.value.status == "no_video_stream"
    info, clips = sample(_small_track_first(tmp_path / "two.mkv"), mode="fps", fps=1.0)
    assert (info.width, info.height) == (320, 240) and len(clips[0].frames) > 0


def test_a_jump_in_the_timestamps_holds_the_deadline_per_sample_and_converts_the_still_once(tmp_path, monkeypatch):
    """A frame shown for ten minutes settles 600 targets at once. Before, all of them were handed
    out with no look at the deadline (a 1-hour jump overran decode_timeout_s many times), each one
    converted again."""
    import time

    import vidbatch.decode as decode
    from vidbatch.decode_limits import Deadline

    video = media.write_video(tmp_path / "gap.mkv", num_frames=6, pts_s=[0.0, 0.1, 0.2, 0.3, 0.4, 600.0])
    conversions = []
    real = decode.to_model_input
    monkeypatch.setattr(decode, "to_model_input", lambda rgb, spec: conversions.append(1) or real(rgb, spec))
    sampling = SamplingConfig(mode="fps", fps=1.0, clip_len_s=2.0)
    with open_video(str(video.path), limits=LimitsConfig()) as (container, stream, info):
        clips = list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC))
    assert len(clips) == 301 and sum(len(c.frame_pts_s) for c in clips) == 601
    assert clips[150].frame_pts_s == (0.4, 0.4)  # the still, on screen at t = 300 and 301
    assert len(conversions) == 3  # frames 0.0, 0.4 and 600.0: one conversion each

    with open_video(str(video.path), limits=LimitsConfig()) as (container, stream, info):
        clips_of = iter_clips(container, stream, info, sampling=sampling, spec=SPEC, deadline=Deadline.after(1.0))
        assert next(clips_of).index == 0  # handed out in the middle of the 600 targets the jump settles
        time.sleep(1.1)
        with pytest.raises(VideoError) as raised:
            next(clips_of)
    assert raised.value.status == "timeout"
    assert "took longer than limits.decode_timeout_s=1; each run tries it again" in raised.value.message  # the value


def _encode(path, fmt: str, codec: str, pix_fmt: str, frames: int = 3) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def _mp3(path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libmp3lame", rate=44100)
        for _ in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 2304), np.int16), format="s16", layout="stereo")
            frame.sample_rate = 44100
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


@pytest.mark.parametrize(
    ("name", "make", "status", "said"),
    [
        ("a.gif", lambda p: _encode(p, "gif", "gif", "rgb8"), "unreadable", "the file is a GIF image"),
        ("a.mp4", lambda p: _encode(p, "apng", "apng", "rgb24"), "unreadable", "the file is a PNG or APNG image"),
        ("a.mjpeg", lambda p: _encode(p, "mjpeg", "mjpeg", "yuvj420p"), "unreadable", "a JPEG image or a raw Motion-JPEG"),
        ("a.y4m", lambda p: _encode(p, "yuv4mpegpipe", "rawvideo", "yuv420p"), "unreadable", "a YUV4MPEG (.y4m) raw video"),
        ("a.h264", lambda p: _encode(p, "h264", "libx264", "yuv420p"), "unreadable", "a raw H.264 stream with no container"),
        ("cover.mp3", _mp3, "no_video_stream", "the file is an MP3 audio file; it has no video stream"),
        ("a.hevc", lambda p: _encode(p, "hevc", "libx265", "yuv420p"), "unreadable", "raw HEVC (H.265) stream"),
        ("a.m2v", lambda p: _encode(p, "mpeg2video", "mpeg2video", "yuv420p"), "unreadable", "a raw MPEG-1/2 video stream"),
        ("a.m4v", lambda p: _encode(p, "m4v", "mpeg4", "yuv420p"), "unreadable", "a raw MPEG-4 Part 2 stream with no container"),
        ("list.m3u8", lambda p: p.write_text("#EXTM3U\n#EXTINF:4,\nseg0.ts\n"), "unreadable", "an HLS playlist; it names other"),
        ("cat.ffconcat", lambda p: p.write_text("ffconcat version 1.0\nfile a.mp4\n"), "unreadable", "an FFmpeg concat list"),
    ],
)
def test_files_of_kinds_that_are_not_read_say_what_they_are(tmp_path, name, make, status, said):
    """Before: "not a readable media file (Invalid argument)" for each, and the raw H.264 stream a
    decode_error with a traceback (a seek its demuxer does not allow)."""
    path = tmp_path / name
    make(path)
    with pytest.raises(VideoError) as raised, open_video(str(path), limits=LimitsConfig()):
        pass
    assert raised.value.status == status and said in str(raised.value), str(raised.value)
    # As an object store's reader hands it to FFmpeg: a file object.
    with path.open("rb") as handle, pytest.raises(VideoError) as from_a_file_object, open_video(handle, limits=LimitsConfig()):
        pass
    assert str(from_a_file_object.value) == str(raised.value)


@pytest.mark.parametrize("mode", ["fps", "uniform", "keyframes"])
def test_an_upload_cut_short_whose_index_is_first_is_a_decode_error_in_every_mode(tmp_path, mode):
    """An MP4 written for streaming (index first) still opens when cut short and says its whole
    duration. Before: fps sampling ended early as `ok`, uniform gave 1 of 8 frames as `ok`, and
    keyframes said decode_error."""
    import av

    whole = tmp_path / "whole.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(whole), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for _ in range(200):  # noise: the bytes grow with the time, so a cut at an eighth keeps ~2 of 20 s
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 8])
    sampling = SamplingConfig(mode=mode, num_frames=8, clip_len_s=4.0)
    with pytest.raises(VideoError) as raised, open_video(str(cut), limits=LimitsConfig()) as (container, stream, info):
        list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC))
    assert raised.value.status == "decode_error"
    assert str(raised.value).startswith("the file is cut short: it holds") and "of its 20.0 s); re-upload it" in str(raised.value)
    with open_video(str(whole), limits=LimitsConfig()) as (container, stream, info):  # the whole file is fine
        assert list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC))  # (one key frame: x264's GOP is 250)


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".avi"])
def test_a_matroska_or_avi_upload_cut_short_is_a_decode_error_whether_read_from_a_path_or_a_file_object(tmp_path, suffix):
    """Before: `ok` with the part before the cut (a 6 s file cut at half its bytes: duration_s 2.7,
    8 of 16 uniform samples), so the rest was never processed. A Matroska Segment, and an AVI
    file's RIFF chunk, state the file's size."""
    whole = media.write_video(tmp_path / f"whole{suffix}", num_frames=60, fps=10).path
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    sampling = SamplingConfig(mode="uniform", num_frames=16, clip_len_s=10.0)
    with pytest.raises(VideoError) as raised, open_video(str(cut), limits=LimitsConfig()) as (container, stream, info):
        list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC))
    assert raised.value.status == "decode_error"
    from vidbatch.decode_probe import _bytes

    stated = f"the file is cut short: it holds {_bytes(len(data) // 2)} of the {_bytes(len(data))} its header states"
    assert str(raised.value) == f"{stated}; re-upload it"
    with cut.open("rb") as handle, pytest.raises(VideoError, match="the file is cut short"), open_video(
        handle, limits=LimitsConfig()
    ):
        pass
    with whole.open("rb") as handle, open_video(handle, limits=LimitsConfig()) as (container, stream, info):
        clips = list(iter_clips(container, stream, info, sampling=sampling, spec=SPEC))  # read on after the check
    # t_i = i * 6 s / 16: the frame on screen is floor(t_i * 10)
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [i * 60 // 16 for i in range(16)]


def test_the_stated_end_of_a_matroska_file_is_read_from_its_first_bytes():
    from vidbatch.media_kinds import matroska_stated_end

    ebml = b"\x1a\x45\xdf\xa3" + b"\x84" + b"abcd"  # a 4-byte EBML header
    assert matroska_stated_end(ebml + b"\x18\x53\x80\x67" + b"\x42\x00") == 9 + 4 + 2 + 0x200  # 2-byte size
    assert matroska_stated_end(ebml + b"\x18\x53\x80\x67" + b"\x01\xff\xff\xff\xff\xff\xff\xff") is None  # unknown: live
    assert matroska_stated_end(ebml + b"\x18\x53\x80") is None  # cut inside the header
    assert matroska_stated_end(b"\x00\x00\x00\x20ftypisom") is None  # not Matroska


def test_the_stated_end_of_an_avi_file_is_read_from_its_riff_header():
    from vidbatch.media_kinds import avi_stated_end

    assert avi_stated_end(b"RIFF" + (34_774).to_bytes(4, "little") + b"AVI LIST") == 34_782
    assert avi_stated_end(b"RIFF" + bytes(4) + b"AVI LIST") is None  # left unwritten by a capture cut off
    assert avi_stated_end(b"RIFF" + b"\xff" * 4 + b"AVI LIST") is None
    assert avi_stated_end(b"RIFF" + (100).to_bytes(4, "little") + b"WAVEfmt ") is None  # RIFF, but not AVI


def test_sizes_in_messages_tell_two_close_sizes_apart():
    """A cut-short file said 'it holds 0.1 MB of the 0.1 MB its index lists' (helper-21)."""
    from vidbatch.decode_probe import _bytes

    assert (_bytes(61_234), _bytes(102_345)) == ("61.2 KB", "102 KB")
    assert (_bytes(999), _bytes(4_500_000), _bytes(7_250_000_000)) == ("999 bytes", "4.5 MB", "7.25 GB")


@pytest.mark.parametrize("cut_in", ["media", "index"])
def test_an_mp4_cut_short_before_its_index_says_so(tmp_path, cut_in):
    """An MP4 with its index (moov) at the end, cut short: FFmpeg says only "Invalid data" (helper-21)."""
    from vidbatch.decode import open_video

    whole = media.write_video(tmp_path / "whole.mp4", num_frames=30, fps=10).path
    data = whole.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")  # index last, as a plain mux writes it
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2 if cut_in == "media" else data.find(b"moov") + 200])
    with pytest.raises(VideoError) as raised, open_video(str(cut), limits=LimitsConfig()):
        pass
    assert raised.value.status == "decode_error"
    message = str(raised.value)
    assert message.startswith("the file is cut short: its ") and message.endswith("; re-upload it")
    assert ("mdat box needs" in message) if cut_in == "media" else ("index (moov box) needs" in message)
    # Garbage with no boxes stays "not a readable media file".
    junk = media.write_garbage(tmp_path / "junk.mp4", 5000, seed=3)
    with pytest.raises(VideoError, match="not a readable media file"), open_video(str(junk), limits=LimitsConfig()):
        pass


def test_decoding_a_video_leaves_no_frame_alive(tmp_path):
    """A frame whose display matrix was read stays in a reference cycle with its side data (PyAV 18),
    freed only by the cyclic collector. Before, the matrix was read on every sampled frame and never
    collected: a long-lived decode sandbox piled frames up until FFmpeg failed with EAGAIN from the
    second video on. Now it is read once per video and decode_video collects."""
    import gc

    import av

    from vidbatch.config import StorageConfig
    from vidbatch.video_task import DecodeSettings, decode_video

    video = media.write_video(tmp_path / "selfie.mp4", num_frames=30, fps=10, rotation=90, mirror=True)
    settings = DecodeSettings(
        sampling=SamplingConfig(mode="fps", fps=10.0, clip_len_s=1.0), limits=LimitsConfig(), storage=StorageConfig(), spec=SPEC
    )
    gc.collect()
    for _ in range(3):
        rows = [t.to_pylist()[0] for t in decode_video("v", str(video.path), settings)]
        assert rows[-1]["status"] == "ok" and rows[-1]["num_clips"] == 3
        alive = [o for o in gc.get_objects() if isinstance(o, av.VideoFrame)]
        assert not alive, f"{len(alive)} frames still alive after a video"


def test_a_decoder_short_of_threads_or_memory_is_not_blamed_on_the_file():
    """FFmpeg's EAGAIN (no thread to start) or ENOMEM is the node's state: error_type 'resources',
    which the next run retries (vidbatch.incremental.NOT_THE_FILE); other surprises stay the file's."""
    import errno

    import av

    from vidbatch.incremental import NOT_THE_FILE
    from vidbatch.video_task import _resource_shortage

    assert _resource_shortage(av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")) == "EAGAIN"
    assert _resource_shortage(OSError(errno.ENOMEM, "Cannot allocate memory")) == "ENOMEM"
    assert _resource_shortage(av.error.InvalidDataError(errno.EINVAL, "Invalid data")) is None
    assert _resource_shortage(ValueError("a bug")) is None
    assert "resources" in NOT_THE_FILE


def test_an_avi_whose_header_counts_a_few_bytes_more_than_it_holds_is_whole(tmp_path):
    """A writer that counts a pad byte or the chunk's own header: a complete file, not a cut (review finding)."""
    path = media.write_video(tmp_path / "a.avi", num_frames=20, fps=10).path
    data = bytearray(path.read_bytes())
    stated = int.from_bytes(data[4:8], "little")
    for extra, cut in ((8, False), (len(data) // 3, True)):
        data[4:8] = (stated + extra).to_bytes(4, "little")
        path.write_bytes(bytes(data))
        if cut:
            with pytest.raises(VideoError, match="the file is cut short"), open_video(str(path), limits=LimitsConfig()):
                pass
        else:
            with open_video(str(path), limits=LimitsConfig()) as (_, _, info):
                assert info.duration_s > 1.5
