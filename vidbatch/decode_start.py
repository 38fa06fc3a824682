"""Where a video's time 0 is: the presentation time of the first frame its decoder shows.

Sampling's grid (`fps` t = start + k/fps, `uniform` start + i*duration/n) and the clip windows
start there. The header's start time is not used for it: it can lie before the first frame. An
MPEG-4 Part 2 (Xvid/DivX) AVI with B-frames states 0, while its first frame is shown one frame
later (FFmpeg gives each frame its decode time plus the reorder delay): the grid started at 0, so
`uniform`'s first target had no frame on screen and a row had one frame fewer, and every `fps`
target took the frame before the one a grid from the video's start takes.

The header's duration stays the video's length, counted from the first frame shown, when the packets
before that frame were all shown (a delay: the header counts in decode times, as AVI's does). When
the decoder dropped frames that came before it (an MPEG-TS recording that starts in the middle of a
group of pictures, whose first frames refer to pictures it does not hold), those frames' time is
in the header's duration but is never shown: the video then ends where the header says, and its
length is that end less the first frame's time (else `uniform` spread its targets past the end
and lost the last ones). `uniform` then finds where the packets end (decode_end), since some headers
(AVI, ASF/WMV, FLV) count from another origin.

Most videos start on a key frame that no frame is shown before: their first frame is told by the
first packets' times, without decoding (decoding it doubled the cost of opening a 720p H.264 video).
Otherwise only the first frame is decoded (a few packets, as many as the decoder's reorder delay and
threads hold back). Then the reader goes back to the start, and checks that it landed on the packet
it had read first: the samplers then read the file from its start as if nothing had been read.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import av
import av.error

from vidbatch.decode_frames import DAMAGED, EPS_S, frame_time, short_reason
from vidbatch.decode_probe import VideoInfo
from vidbatch.errors import VideoError

# Packets read at most to find the first frame: far more than any reorder delay plus frame threads.
# A stream whose first frame needs more is left with its header's start (decoding says what is wrong).
_MAX_PACKETS = 256
# Packets looked at before deciding whether the first frame can be told without decoding: more than
# any encoder's reorder window (H.264 allows 16 B-frames in a row).
_LOOKAHEAD = 32


def start_at_first_frame(container: Any, stream: Any, info: VideoInfo) -> VideoInfo:
    """`info` whose `start_s` is the time of the first frame shown (the header's when none decodes);
    the container is back at its start. Raises VideoError when it cannot go back."""
    first = _first_frame(container, stream)
    _rewind(container, stream, first.packet)
    if first.time_s is None or abs(first.time_s - info.start_s) <= EPS_S:
        return info
    if first.dropped_before:
        stated_end = info.start_s + info.duration_s
        return replace(info, start_s=first.time_s, duration_s=max(0.0, stated_end - first.time_s))
    return replace(info, start_s=first.time_s)


@dataclass(frozen=True)
class _FirstFrame:
    packet: Any  # the first packet holding data (None when there is none)
    time_s: float | None  # when the first frame decoded is shown (None when none was)
    dropped_before: bool  # a packet read before it held a frame shown earlier, which the decoder dropped


def _first_frame(container: Any, stream: Any) -> _FirstFrame:
    """The first frame shown and the packets read for it; the decoder is left reset."""
    packets = container.demux(stream)
    ahead = _packets_ahead(packets)
    if ahead and (shown_s := _shown_first_by_packets(ahead, stream)) is not None:
        return _FirstFrame(packet=ahead[0], time_s=shown_s, dropped_before=False)
    return _first_frame_decoded(itertools.chain(ahead, packets), stream)


def _packets_ahead(packets: Iterator[Any]) -> list[Any]:
    """The first packets holding data, up to the second key frame (or _LOOKAHEAD of them): the reorder
    window of the first group of pictures."""
    ahead: list[Any] = []
    for packet in packets:
        if not packet.size:
            continue  # the demuxer's flush packets at the end
        ahead.append(packet)
        if len(ahead) >= _LOOKAHEAD or (len(ahead) > 1 and packet.is_keyframe):
            break
    return ahead


def _shown_first_by_packets(ahead: list[Any], stream: Any) -> float | None:
    """When the first frame is shown, told by the packets alone, without decoding (~25 ms a 720p H.264
    video, as much as opening it): the stream starts on a key frame and no packet after it, in its
    reorder window, is shown before it. The key frame is then the first frame shown. None when the
    decoder must say: a start on a frame that is not a key frame (a recording cut mid-group, whose
    first frames the decoder drops), leading pictures shown before the key frame, packets an edit
    list hides, or packets without times."""
    key = ahead[0]
    if not key.is_keyframe or any(packet.pts is None or packet.is_discard for packet in ahead):
        return None
    if any(packet.pts < key.pts for packet in ahead):
        return None
    return float(key.pts * stream.time_base)


def _first_frame_decoded(packets: Iterable[Any], stream: Any) -> _FirstFrame:
    """The first frame decoded and the packets read for it; the decoder is left reset."""
    codec = stream.codec_context
    first_packet: Any = None
    found: float | None = None
    earliest_packet_s: float | None = None  # of the packets read, not hidden by an edit list
    try:
        for count, packet in enumerate(packets):
            if not packet.size:
                continue  # the demuxer's flush packets at the end
            if first_packet is None:
                first_packet = packet
            if packet.pts is not None and not packet.is_discard:
                packet_s = float(packet.pts * stream.time_base)
                earliest_packet_s = packet_s if earliest_packet_s is None else min(earliest_packet_s, packet_s)
            found = _earliest(codec.decode(packet), stream)
            if found is not None or count >= _MAX_PACKETS:
                break
        if found is None:
            found = _earliest(codec.decode(None), stream)  # a short stream: the decoder still holds its frames
    except (av.error.FFmpegError, ValueError):
        found = None  # a damaged start: the samplers decode it again and say what is wrong
    finally:
        codec.flush_buffers()
    dropped = found is not None and earliest_packet_s is not None and earliest_packet_s < found - EPS_S
    return _FirstFrame(packet=first_packet, time_s=found, dropped_before=dropped)


def _earliest(frames: Iterable[Any], stream: Any) -> float | None:
    times = [t for t in (frame_time(frame, stream) for frame in frames) if t is not None]
    return min(times) if times else None


def _rewind(container: Any, stream: Any, first_packet: Any) -> None:
    """Back to the start, checked against the first packet read: a seek that lands elsewhere would
    have the samplers miss frames (or see some twice) without a word. A stream that held no packet
    read nothing to go back over (and an AVI without frames refuses any seek)."""
    if first_packet is None:
        return
    try:
        seek_to_start(container)
        again = next((packet for packet in container.demux(stream) if packet.size), None)
        if again is None or not _same_packet(again, first_packet):
            raise VideoError(
                "decode_error",
                f"going back to the start of the file after reading its first frame landed elsewhere; {DAMAGED}",
            )
        seek_to_start(container)
    except av.error.FFmpegError as exc:
        raise VideoError("decode_error", f"seeking back to the start failed ({short_reason(exc)}); {DAMAGED}") from exc


def seek_to_start(container: Any) -> None:
    """Back to the first packet. Raises VideoError when the file cannot go back.

    A seek to 0 lands on the key frame at or before 0; an FLV whose first packet is later (a recording
    whose clock did not start at 0) has none, and FFmpeg refuses it (EPERM): every such FLV was
    `decode_error`. Then the first key frame at or after 0 is the start.
    """
    try:
        try:
            container.seek(0)
        except av.error.FFmpegError:
            container.seek(0, backward=False)
    except av.error.FFmpegError as exc:
        raise VideoError("decode_error", f"seeking back to the start failed ({short_reason(exc)}); {DAMAGED}") from exc


def _same_packet(packet: Any, first: Any) -> bool:
    # The byte position tells a packet apart; its times may not (Matroska's first dts differs after a seek).
    if packet.pos is not None and packet.pos >= 0 and first.pos is not None and first.pos >= 0:
        return bool(packet.pos == first.pos)
    return bool(packet.pts == first.pts and packet.size == first.size)
