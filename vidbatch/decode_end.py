"""Where a video's packets really end, for `uniform` sampling, which must know the length before it decodes.

Headers can be wrong, and some count from another origin than the first frame shown (vidbatch's
time 0, see decode_start): ASF/WMV count their duration from the container's 0 (a WMV whose first
frame is at 0.4 s states 1.6 s for 1.2 s of frames: 2 of 8 uniform targets fell past its end), FLV
from its first packet's decode time (an H.264 FLV with B-frames states one reorder delay too much,
which stretched the spread), and AVI counts decode times from 0 (an Xvid AVI that starts after a gap
lost its last target). So the length is found from the packets: a seek to the key frame before the
stated end and a read of the packets from there on (no decoding), about one GOP, which the last
target usually reads anyway. Then the reader goes back to the start.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import av
import av.error

from vidbatch.decode_frames import EPS_S, nominal_frame_s
from vidbatch.decode_limits import Deadline, FrameLimits, PacketTally, check_deadline
from vidbatch.decode_probe import StreamFacts, VideoInfo, indexed_container
from vidbatch.decode_start import seek_to_start

# Containers whose header does not count the length from the first frame shown (see the module
# docstring), and that FFmpeg can seek near the end of: AVI and ASF by their index, FLV by reading
# its tags (a file without a keyframe index is read through once, packets only), NUT by its index.
# NUT's stated length is the whole file's (an audio track that runs on past the picture, or the
# container's 0 before a first frame at 0.4 s) or counts decode times (H.264 with B-frames).
_OTHER_ORIGIN_FORMATS = frozenset({"avi", "asf", "flv", "nut"})
# MPEG-PS (.mpg/.vob, FFmpeg's "mpeg"): FFmpeg estimates its length from the last packets that carry a
# time, which a pack of several frames hides (an MPEG-1 .mpg of 1.2 s states 1.02 s, an MPEG-2 one with
# B-frames 1.12 s). Its packets' times are worked out by FFmpeg's parser from the last time the stream
# carried; after a seek (by timestamp, onto no particular frame) they can be wrong up to and including
# the first key frame read (a look from the stated end of an MPEG-2 .vob with B-frames ended 0.1 s
# late, and one whose first key frame read was among the last packets 0.04-0.14 s early or late). So
# the look starts 2 s before the stated end and counts packets from the second key frame it reads, and
# starts further back when it reads fewer.
_PARSED_TIMES_FORMATS = frozenset({"mpeg"})
# How far before the stated end (s) the look at an MPEG-PS starts, tried in turn until two key frames are read.
_PARSED_TIMES_BACK_S = (2.0, 8.0, 30.0)
# The key frame read after a seek from which an MPEG-PS's packet times are counted.
_PARSED_TIMES_KEY = 2


def uniform_span(
    container: Any,
    stream: Any,
    info: VideoInfo,
    facts: StreamFacts,
    *,
    deadline: Deadline | None = None,
    guard: FrameLimits | None = None,
) -> VideoInfo:
    """`info` with the length uniform sampling spreads over: from the first frame shown to where the
    stream's packets really end.

    In MP4/MOV and Matroska/WebM the header's length is counted from the stream's start and can be
    wrong: a Matroska Duration written by a tool that cut the file (80 s stated, 4 s of frames: 1 of 8
    frames sampled, `ok`), one stating less than the file holds (every frame from the first second),
    or FFmpeg's duration of a VFR MP4 with B-frames, which is its decode times' span (2.9 s of 5.6 s:
    the second half never sampled). There a length within two frames or 1% of the header's keeps the
    header's, so targets of a file that tells the truth do not move. In AVI, ASF/WMV and FLV the
    header's length counts from another origin, so the packets' length is used unless it is the
    header's to within 1 µs. Other containers (MPEG-TS, MPEG-PS) have no index to seek by cheaply and
    keep the header's length.
    """
    indexed = indexed_container(container)
    parsed_times = _format_in(container, _PARSED_TIMES_FORMATS)
    if not stream.time_base or not (indexed or parsed_times or _format_in(container, _OTHER_ORIGIN_FORMATS)):
        return info
    if parsed_times:
        end = _parsed_packets_end(container, stream, info, deadline=deadline, guard=guard)
    else:
        end = _packets_end(container, stream, info, deadline=deadline, guard=guard, read_all_if_none=not indexed)
    seek_to_start(container)
    if end is None or end <= info.start_s:
        return info  # the look landed on nothing shown: the header is all there is to go by
    facts.end_s = end
    length = end - info.start_s
    tolerance = max(2 * nominal_frame_s(info), 0.01 * info.duration_s) if indexed else EPS_S
    if abs(length - info.duration_s) <= tolerance:
        return info
    return replace(info, duration_s=length)


def _format_in(container: Any, formats: frozenset[str]) -> bool:
    return any(part in formats for part in (container.format.name or "").split(","))


def _packets_end(
    container: Any,
    stream: Any,
    info: VideoInfo,
    *,
    deadline: Deadline | None,
    guard: FrameLimits | None,
    read_all_if_none: bool,
) -> float | None:
    """Where the last packet (in presentation order) stops being shown, read from the key frame before
    the header's stated end; None when nothing could be read. `read_all_if_none`: when that seek lands
    past the last packet (FFmpeg's FLV demuxer does on an H.264 FLV without a keyframe index), read
    every packet from the start instead (no decoding; sampling decodes every packet of such a file anyway)."""
    tb = stream.time_base
    stated_end = info.start_s + info.duration_s
    end = _end_from(container, stream, info, math.floor(stated_end / tb), deadline=deadline, guard=guard)
    if end is None and read_all_if_none:
        seek_to_start(container)
        end = _end_from(container, stream, info, None, deadline=deadline, guard=guard)
    return end


def _parsed_packets_end(
    container: Any, stream: Any, info: VideoInfo, *, deadline: Deadline | None, guard: FrameLimits | None
) -> float | None:
    """_packets_end for MPEG-PS, counted from the second key frame read after a seek 2 s before the
    stated end (about 2.5 MB of a DVD's MPEG-2 at 10 Mbit/s), or 8 then 30 s before it when that reads
    fewer than two; a start at or before the first frame reads the file from its start, every packet
    counted (a file that short). Fewer than two key frames in the last 30 s leave the header's length:
    the look does not read a long file through to find its end."""
    tb = stream.time_base
    stated_end = info.start_s + info.duration_s
    for back_s in _PARSED_TIMES_BACK_S:
        at_s = stated_end - back_s
        if at_s <= info.start_s:
            seek_to_start(container)
            return _end_from(container, stream, info, None, deadline=deadline, guard=guard)
        ticks = math.floor(at_s / tb)
        end = _end_from(container, stream, info, ticks, deadline=deadline, guard=guard, from_key=_PARSED_TIMES_KEY)
        if end is not None:
            return end
    return None


def _end_from(
    container: Any,
    stream: Any,
    info: VideoInfo,
    ticks: int | None,
    *,
    deadline: Deadline | None,
    guard: FrameLimits | None,
    from_key: int = 0,
) -> float | None:
    """The end of the packets read from the key frame at or before `ticks` (from where the reader is when
    None). `from_key`: the packets before the from_key-th key frame read are not counted (MPEG-PS, whose
    seek lands on no particular frame and whose times are only right some way after it)."""
    tb = stream.time_base
    tally = PacketTally(default_duration_s=nominal_frame_s(info))
    keys_to_skip = from_key
    try:
        if ticks is not None:
            container.seek(ticks, stream=stream, backward=True, any_frame=False)
        for packet in container.demux(stream):
            # A header that states far less than the file holds has the probe read the rest: the
            # decode deadline and max_duration_s hold for every packet, not after the last.
            check_deadline(deadline)
            if keys_to_skip and packet.size and packet.is_keyframe:
                keys_to_skip -= 1
            if keys_to_skip:
                continue
            tally.note(packet)
            if guard is not None and packet.pts is not None:
                guard.check_time(float(packet.pts * tb))
        return tally.end_s
    except av.error.FFmpegError:
        return None  # no usable answer: decoding finds what is wrong
