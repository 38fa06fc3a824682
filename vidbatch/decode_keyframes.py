"""Decoding the key frames of `keyframes` sampling: each key packet decoded on its own, the
other packets only read (vidbatch.sampling.keyframes says which time each key frame samples)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import av
import av.error

from vidbatch.decode_frames import DAMAGED, EPS_S, frame_time, no_frame, nominal_frame_s, short_reason, times_go_back
from vidbatch.decode_limits import Deadline, FrameLimits, PacketTally, check_deadline
from vidbatch.decode_probe import StreamFacts, VideoInfo
from vidbatch.errors import VideoError
from vidbatch.sampling.keyframes import keyframe_sample_time


def keyframe_samples(
    container: Any,
    stream: Any,
    info: VideoInfo,
    deadline: Deadline | None,
    stream_facts: StreamFacts,
    *,
    guard: FrameLimits | None = None,
) -> Iterator[tuple[float, float, Any]]:
    any_frame = False
    last_pts = -math.inf
    packets = PacketTally(default_duration_s=nominal_frame_s(info))
    for frame in _decoded_key_frames(container, stream, deadline, packets=packets):
        # A frame of a key packet decoded alone is a key frame, whatever its own flag says (FFmpeg's
        # QuickTime Animation decoder never sets it: keyframes mode found none, 'damaged').
        pts = frame_time(frame, stream)
        if pts is None:
            continue
        if pts < last_pts - EPS_S:
            raise times_go_back(container, pts - info.start_s, last_pts - info.start_s)
        last_pts = pts
        if guard is not None:
            guard.check(pts, frame)
        any_frame = True
        yield keyframe_sample_time(pts), pts, frame
    if not any_frame and packets.hidden_keys and not packets.shown_keys:
        raise VideoError(
            "too_short",
            "no key frame is shown: the file's only key frames lie in the part its edit list hides (a trimmed "
            "copy); sample it with sampling.mode fps or uniform",
        )
    if not any_frame:
        raise no_frame(packets=packets.count, what="key frame")
    latest = packets.latest_pts_s
    if guard is not None and latest is not None:  # frames only demuxed (not key frames) count too
        guard.check_time(latest)
    # Every packet was read, so the end is known without decoding the last frames.
    stream_facts.end_s = packets.end_s


def _decoded_key_frames(
    container: Any, stream: Any, deadline: Deadline | None, *, packets: PacketTally
) -> Iterator[Any]:
    """The frames of the key packets, each decoded on its own: sent, drained, then the decoder reset.

    A key frame needs no other frame, so this is exact for every codec and costs what decoding the
    key frames costs (the other packets are only read). skip_frame=NONKEY was not: FFmpeg's H.264
    decoder given an open GOP (key frames that are not IDR, as x264's --open-gop writes) returned
    some key frames out of order and dropped the others; its VP9 decoder ignores it.
    """
    codec = stream.codec_context
    try:
        for packet in container.demux(stream):
            packets.note(packet)
            check_deadline(deadline)
            if not packet.size or not packet.is_keyframe:
                continue
            yield from codec.decode(packet)
            yield from codec.decode(None)
            codec.flush_buffers()
    except VideoError:
        raise
    except (av.error.FFmpegError, ValueError, MemoryError) as exc:
        raise VideoError("decode_error", f"decoding failed ({short_reason(exc)}); {DAMAGED}") from exc
