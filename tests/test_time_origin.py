"""Time 0 of a video is when its first frame is shown: the sampling grid and the clip windows start there.

The expected frames are worked out here from a plain PyAV decode of every frame (the README's rule
applied to the frames' own times), and the painted frame index proves which frame was used.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import media
import numpy as np
import pytest

from vidbatch import decode_targeted
from vidbatch.config import LimitsConfig, SamplingConfig
from vidbatch.decode import iter_clips, open_video
from vidbatch.decode_probe import StreamFacts
from vidbatch.preprocess import PreprocessSpec

CLIP_LEN_S = 1.0
SAMPLINGS = [
    SamplingConfig(mode="uniform", num_frames=8, clip_len_s=CLIP_LEN_S),
    SamplingConfig(mode="fps", fps=1.0, clip_len_s=CLIP_LEN_S),
    SamplingConfig(mode="fps", fps=5.0, clip_len_s=CLIP_LEN_S),
    SamplingConfig(mode="keyframes", clip_len_s=CLIP_LEN_S),
]


def plain_frames(path: Path) -> tuple[list[float], list[bool], float]:
    """Every frame's time and key flag, and where the last one stops being shown, by plain PyAV."""
    times, keys, _, end = plain_frames_painted(path)
    return times, keys, end


def plain_frames_painted(path: Path) -> tuple[list[float], list[bool], list[int], float]:
    """plain_frames and the index painted into each frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        times = [float(frame.time) for frame in frames]
        keys = [bool(frame.key_frame) for frame in frames]
        painted = [media.read_frame_index(media.upright_rgb(frame)) for frame in frames]
        last = frames[-1]
        shown_s = float(last.duration * last.time_base) if last.duration else 1 / float(stream.average_rate)
        return times, keys, painted, times[-1] + shown_s


def expected_pts(path: Path, sampling: SamplingConfig, *, duration_s: float) -> list[float]:
    """The README's rule: targets from the first frame shown (t0), the frame on screen at each; uniform
    spreads over `duration_s` (the video's length as vidbatch found it: README, uniform)."""
    times, keys, end = plain_frames(path)
    t0 = times[0]
    if sampling.mode == "keyframes":
        return [t for t, key in zip(times, keys, strict=True) if key]
    if sampling.mode == "fps":
        targets = [t0 + k / sampling.fps for k in range(10_000) if t0 + k / sampling.fps < end - 1e-6]
    else:
        targets = [t0 + i * duration_s / sampling.num_frames for i in range(sampling.num_frames)]
    return [max(t for t in times if t <= target + 1e-6) for target in targets]


def sampled(source: str | io.BytesIO, sampling: SamplingConfig):
    with open_video(source, limits=LimitsConfig()) as (container, stream, info):
        facts = StreamFacts()
        clips = list(iter_clips(container, stream, info, sampling=sampling, spec=PreprocessSpec(), stream_facts=facts))
    return info, clips, facts


def check_the_rule(path: Path, sampling: SamplingConfig, source: str | io.BytesIO | None = None) -> None:
    times, _, painted, end = plain_frames_painted(path)
    info, clips, facts = sampled(source if source is not None else str(path), sampling)
    # The length uniform spreads over is the real one, within uniform's tolerance of two frames (a header
    # that tells the truth is kept; an MP4 with B-frames and a 90 kHz clock states 3 ms per frame more here).
    assert info.duration_s == pytest.approx(end - times[0], abs=0.081)
    want = expected_pts(path, sampling, duration_s=info.duration_s)
    got = [p for clip in clips for p in clip.frame_pts_s]
    assert got == pytest.approx(want, abs=1e-6), sampling
    # The pixels are the frames of those times.
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [painted[times.index(p)] for p in want]
    assert info.start_s == pytest.approx(times[0], abs=1e-6)
    for clip in clips:
        assert clip.start_s == pytest.approx(times[0] + clip.index * CLIP_LEN_S, abs=1e-9)
    if facts.end_s is not None:
        assert facts.end_s - info.start_s == pytest.approx(end - times[0], abs=1e-6)


@pytest.fixture(scope="module")
def xvid_avi(tmp_path_factory) -> Path:
    """MPEG-4 Part 2 with B-frames in AVI (Xvid/DivX): the header starts at 0, the first frame at 1/25 s."""
    video = media.write_video(tmp_path_factory.mktemp("origin") / "xvid.avi", num_frames=50, fps=25, b_frames=2, gop=12)
    assert video.frame_pts_s[0] == pytest.approx(0.04)
    return video.path


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: f"{s.mode}{s.fps if s.mode == 'fps' else ''}")
def test_an_avi_with_b_frames_starts_its_grid_at_its_first_frame_not_the_header_s_zero(xvid_avi, sampling):
    with av.open(str(xvid_avi)) as container:
        assert container.streams.video[0].start_time == 0  # what the header says
    check_the_rule(xvid_avi, sampling)


def test_uniform_gets_all_its_frames_from_an_avi_with_b_frames_read_from_a_file_object(xvid_avi):
    sampling = SAMPLINGS[0]
    check_the_rule(xvid_avi, sampling, source=io.BytesIO(xvid_avi.read_bytes()))
    _, clips, _ = sampled(str(xvid_avi), sampling)
    assert sum(len(c.frame_pts_s) for c in clips) == 8


def test_the_fast_targeted_path_agrees_with_decoding_through_on_an_avi_with_b_frames(xvid_avi):
    for sampling in SAMPLINGS[:3]:
        got = {}
        for fast in (True, False):
            with open_video(str(xvid_avi), limits=LimitsConfig()) as (container, stream, info):
                samples = decode_targeted.targeted_samples(container, stream, info, sampling, None, fast=fast)
                got[fast] = [(t, p) for t, p, _ in samples]
        assert got[True] == got[False] and got[True], sampling


def write_ts_cut_in_a_gop(path: Path) -> Path:
    """An MPEG-TS recording that starts in the middle of an open group of pictures (a capture started
    mid-broadcast): the stream's start is the time of frames the decoder cannot show."""
    whole = io.BytesIO()
    with av.open(whole, "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"x264-params": "keyint=25:min-keyint=25:scenecut=0:open-gop=1:bframes=3"}
        for i in range(100):
            frame = av.VideoFrame.from_ndarray(media.paint_frame(i, 160, 96), format="rgb24")
            frame.pts, frame.time_base = i + 35, Fraction(1, 25)  # the recording's clock starts at 1.4 s
            frame.pict_type = av.video.frame.PictureType.NONE
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = whole.getvalue()
    cut = (len(data) // 3) // 188 * 188  # whole TS packets
    path.write_bytes(data[cut:])
    return path


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: f"{s.mode}{s.fps if s.mode == 'fps' else ''}")
def test_an_mpeg_ts_cut_in_a_group_of_pictures_starts_at_its_first_frame_shown(tmp_path, sampling):
    path = write_ts_cut_in_a_gop(tmp_path / "cut.ts")
    times, _, _ = plain_frames(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert float(stream.start_time * stream.time_base) < times[0] - 0.1  # frames before the first shown
    check_the_rule(path, sampling)


@pytest.mark.parametrize(
    "make",
    [
        lambda d: media.write_video(d / "b.mp4", num_frames=30, fps=25).path,  # H.264 B-frames, MP4 edit list
        lambda d: media.write_video(d / "b.mkv", num_frames=30, fps=25).path,
        lambda d: media.write_video(d / "late.mp4", num_frames=30, pts_s=[0.5 + i / 25 for i in range(30)]).path,
        lambda d: media.write_video(d / "late.mkv", num_frames=30, pts_s=[0.5 + i / 25 for i in range(30)]).path,
        lambda d: media.write_video(d / "vp9.webm", num_frames=30, fps=25).path,
        lambda d: media.write_video(d / "nob.avi", num_frames=30, fps=25).path,
    ],
    ids=["h264-mp4", "h264-mkv", "mp4-from-0.5s", "mkv-from-0.5s", "vp9-webm", "mpeg4-avi-no-b"],
)
def test_files_whose_header_start_is_their_first_frame_keep_it(tmp_path, make):
    path = make(tmp_path)
    for sampling in SAMPLINGS:
        check_the_rule(path, sampling)


def test_a_damaged_first_key_frame_starts_the_grid_at_the_first_frame_the_decoder_shows(tmp_path):
    """Garbage in place of the first key frame of an AVI with B-frames: time 0 is still the first frame shown."""
    path = media.write_video(tmp_path / "x.avi", num_frames=30, fps=25, b_frames=2, gop=10).path
    data = bytearray(path.read_bytes())
    at = data.index(b"00dc") + 8
    data[at : at + 400] = np.random.default_rng(0).integers(0, 256, 400, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    check_the_rule(path, SamplingConfig(mode="fps", fps=5.0, clip_len_s=CLIP_LEN_S))


@pytest.mark.parametrize(
    "make",
    [
        lambda d: media.write_video(d / "xvid.avi", num_frames=30, fps=25, b_frames=2, gop=12).path,
        lambda d: write_ts_cut_in_a_gop(d / "cut.ts"),
        lambda d: media.write_video(d / "b.mp4", num_frames=30, fps=25).path,
        lambda d: media.write_video(d / "late.mkv", num_frames=30, pts_s=[0.5 + i / 25 for i in range(30)]).path,
        lambda d: media.write_video(d / "vp9.webm", num_frames=30, fps=25).path,
    ],
    ids=["xvid-avi", "ts-cut-in-a-gop", "h264-mp4", "mkv-from-0.5s", "vp9-webm"],
)
def test_the_first_frame_told_by_the_packets_is_the_one_the_decoder_shows(tmp_path, make):
    """Most videos start on a key frame that nothing is shown before: their first frame is told by the
    packets, without the decode that doubled the cost of opening a 720p H.264 video (~25 ms)."""
    from vidbatch import decode_start

    path = make(tmp_path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        told = decode_start._first_frame(container, stream)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = decode_start._first_frame_decoded(container.demux(stream), stream)
    assert (told.time_s, told.dropped_before) == (pytest.approx(decoded.time_s, abs=1e-9), decoded.dropped_before)


def test_a_video_that_starts_on_a_key_frame_is_not_decoded_to_find_its_first_frame(tmp_path, monkeypatch):
    from vidbatch import decode_start

    def no_decoding(packets, stream):
        raise AssertionError("decoded to find the first frame")

    monkeypatch.setattr(decode_start, "_first_frame_decoded", no_decoding)
    for path in (
        media.write_video(tmp_path / "b.mp4", num_frames=30, fps=25).path,  # H.264 with B-frames
        media.write_video(tmp_path / "xvid.avi", num_frames=30, fps=25, b_frames=2, gop=12).path,
    ):
        with open_video(str(path), limits=LimitsConfig()) as (container, stream, info):
            assert info.start_s == pytest.approx(plain_frames(path)[0][0], abs=1e-9)


def write_muxed(
    path: Path,
    *,
    fmt: str,
    codec: str,
    first_frame: int,
    b_frames: int | None = None,
    gop: int = 12,
    num_frames: int = 30,
    audio: tuple[str, float] | None = None,
) -> Path:
    """30 frames at 25 fps (plus `first_frame` frame periods before the first, which no frame fills) in a
    container media.write_video does not write: ASF/WMV, FLV, NUT, MPEG-PS, or an AVI that starts after a
    gap. `audio`: (encoder, seconds) of silence from 0 in a second stream, packets interleaved by time."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 25)
        stream.codec_context.gop_size = gop
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        packets = []
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(media.paint_frame(i, 160, 96), format="rgb24")
            frame.pts, frame.time_base = i + first_frame, Fraction(1, 25)
            frame.pict_type = av.video.frame.PictureType.NONE
            packets += stream.encode(frame)
        packets += stream.encode(None)
        if audio is not None:
            packets += _silence(container, *audio)
            packets.sort(key=lambda p: (p.dts if p.dts is not None else p.pts) * p.time_base)
        for packet in packets:
            container.mux(packet)
    return path


def _silence(container, codec: str, seconds: float) -> list:
    stream = container.add_stream(codec, rate=48000)
    stream.layout = "mono"
    step, total, packets = stream.codec_context.frame_size or 1024, round(seconds * 48000), []
    for at in range(0, total, step):
        frame = av.AudioFrame(format=stream.codec_context.format.name, layout="mono", samples=min(step, total - at))
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate, frame.pts, frame.time_base = 48000, at, Fraction(1, 48000)
        packets += stream.encode(frame)
    return packets + stream.encode(None)


# Files whose header does not count their length from the first frame shown (README, uniform).
OTHER_ORIGINS = {
    "wmv-from-0.4s": lambda d: write_muxed(d / "late.wmv", fmt="asf", codec="wmv2", first_frame=10),  # states 1.6 s for 1.2 s
    "asf-mpeg4-b-frames": lambda d: write_muxed(d / "b.asf", fmt="asf", codec="mpeg4", first_frame=0, b_frames=2),
    "flv-h264-b-frames": lambda d: write_muxed(d / "b.flv", fmt="flv", codec="libx264", first_frame=0),
    "flv-from-0.4s": lambda d: write_muxed(d / "late.flv", fmt="flv", codec="flv", first_frame=10),
    "xvid-avi-after-a-gap": lambda d: write_muxed(d / "gap.avi", fmt="avi", codec="mpeg4", first_frame=10, b_frames=2),
}


@pytest.mark.parametrize("make", OTHER_ORIGINS.values(), ids=OTHER_ORIGINS.keys())
def test_uniform_spreads_over_the_length_from_the_first_frame_shown_in_asf_flv_and_avi(tmp_path, make):
    """The README's rule with the video's own length (first frame shown to where the last stops): all 8
    targets inside the video, each on the frame the painted index says."""
    path = make(tmp_path)
    times, _, painted, end = plain_frames_painted(path)
    length = end - times[0]
    assert length == pytest.approx(1.2, abs=1e-9)
    sampling = SAMPLINGS[0]
    _, clips, facts = sampled(str(path), sampling)
    assert facts.spread_s == pytest.approx(length, abs=1e-6)  # the row's duration_s
    want = expected_pts(path, sampling, duration_s=length)
    assert [media.read_frame_index(f) for c in clips for f in c.frames] == [painted[times.index(p)] for p in want]
    assert [p for c in clips for p in c.frame_pts_s] == pytest.approx(want, abs=1e-6)
    assert clips[-1].end_s == pytest.approx(end, abs=1e-6)


@pytest.mark.parametrize("sampling", SAMPLINGS[1:], ids=lambda s: f"{s.mode}{s.fps if s.mode == 'fps' else ''}")
def test_an_flv_whose_first_packet_is_after_0_can_be_read(tmp_path, sampling):
    """FFmpeg refuses a seek to 0 in it (no key frame at or before 0): going back to the start after
    finding the first frame failed, and every such FLV (a recording whose clock did not start at 0)
    was decode_error."""
    check_the_rule(OTHER_ORIGINS["flv-from-0.4s"](tmp_path), sampling)


def packets_noted(monkeypatch) -> list:
    """The pts of every packet the look for a video's end counts (decode_end.PacketTally.note)."""
    from vidbatch import decode_end

    read: list = []
    note = decode_end.PacketTally.note

    def counted(self, packet):
        read.append(packet.pts)
        note(self, packet)

    monkeypatch.setattr(decode_end.PacketTally, "note", counted)
    return read


@pytest.mark.parametrize("fmt, codec, b_frames", [("avi", "mpeg4", 2), ("asf", "wmv2", None)])
def test_the_look_for_the_end_of_an_avi_or_asf_reads_its_last_group_of_pictures_only(tmp_path, monkeypatch, fmt, codec, b_frames):
    from vidbatch import decode_end

    path = write_muxed(tmp_path / f"gops.{fmt}", fmt=fmt, codec=codec, first_frame=10, gop=5, b_frames=b_frames)
    read = packets_noted(monkeypatch)
    with open_video(str(path), limits=LimitsConfig()) as (container, stream, info):
        found = decode_end.uniform_span(container, stream, info, StreamFacts())
    assert found.duration_s == pytest.approx(1.2, abs=1e-6)
    assert 0 < len(read) <= 5 + 2  # one GOP (and the demuxer's flush packets), not the 30 frames


# Files whose stated length is FFmpeg's estimate over all streams or from the packets that carry a time
# (README, uniform): NUT states the whole file's length (from the container's 0, the audio's end) or
# counts decode times; MPEG-PS states the last timed packet's time, which a pack of several frames hides.
ESTIMATED_LENGTHS = {
    "nut-h264-b-frames": lambda d: write_muxed(d / "b.nut", fmt="nut", codec="libx264", first_frame=0),  # 1.24 s
    "nut-h264-from-0.4s": lambda d: write_muxed(d / "late.nut", fmt="nut", codec="libx264", first_frame=10),  # 1.56 s
    "nut-h264-2s-of-aac": lambda d: write_muxed(d / "a.nut", fmt="nut", codec="libx264", first_frame=0, audio=("aac", 2.0)),
    "mpeg1-mpg": lambda d: write_muxed(d / "m1.mpg", fmt="mpeg", codec="mpeg1video", first_frame=0),  # 1.02 s
    "mpeg2-vob-b-frames": lambda d: write_muxed(d / "b.vob", fmt="vob", codec="mpeg2video", first_frame=0, b_frames=2),
    "mpeg2-vob-2s-of-mp2": lambda d: write_muxed(
        d / "a.vob", fmt="vob", codec="mpeg2video", first_frame=0, b_frames=2, audio=("mp2", 2.0)
    ),  # 1.12 s
}


@pytest.mark.parametrize("make", ESTIMATED_LENGTHS.values(), ids=ESTIMATED_LENGTHS.keys())
def test_uniform_spreads_over_the_video_s_own_length_in_nut_and_mpeg_ps(tmp_path, make):
    """The README's rule with the video's own length, as in ASF, FLV and AVI above."""
    path = make(tmp_path)
    with av.open(str(path)) as container:
        assert abs(container.duration / av.time_base - 1.2) > 0.03  # what FFmpeg states is not the video's length
    test_uniform_spreads_over_the_length_from_the_first_frame_shown_in_asf_flv_and_avi(tmp_path, lambda _: path)


@pytest.mark.parametrize("b_frames, gop", [(2, 12), (0, 15), (3, 12)])
def test_the_look_for_the_end_of_an_mpeg_ps_reads_its_last_seconds_only(tmp_path, monkeypatch, b_frames, gop):
    """MPEG-PS has no index: a seek goes by timestamps and the packets' times after it are the parser's
    guesses until a key frame or two; the look reads the last 2 s (not the 12 s), from its second key frame."""
    from vidbatch import decode_end

    path = write_muxed(
        tmp_path / "long.vob", fmt="vob", codec="mpeg2video", first_frame=0, b_frames=b_frames, gop=gop, num_frames=301
    )
    times, _, end = plain_frames(path)
    read = packets_noted(monkeypatch)
    with open_video(str(path), limits=LimitsConfig()) as (container, stream, info):
        found = decode_end.uniform_span(container, stream, info, StreamFacts())
    assert found.duration_s == pytest.approx(end - times[0], abs=1e-6)
    assert 0 < len(read) <= 2 * 25  # the last 2 s at most, not the 301 frames


@pytest.mark.parametrize("fmt, codec", [("vob", "mpeg2video"), ("mpeg", "mpeg1video")])
def test_the_look_at_an_mpeg_ps_counts_times_from_the_second_key_frame_after_its_seek(tmp_path, fmt, codec):
    """4 s with B-frames and a key frame every 25 frames: after a seek the parser's times were 0.1 s
    off up to and including the first key frame read (a look from there ended 3.9 s or 4.12 s)."""
    from vidbatch import decode_end

    path = write_muxed(tmp_path / f"gop25.{fmt}", fmt=fmt, codec=codec, first_frame=0, b_frames=2, gop=25, num_frames=100)
    times, _, end = plain_frames(path)
    with open_video(str(path), limits=LimitsConfig()) as (container, stream, info):
        found = decode_end.uniform_span(container, stream, info, StreamFacts())
    assert found.duration_s == pytest.approx(end - times[0], abs=1e-6) == pytest.approx(4.0)
