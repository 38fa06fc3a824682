"""What both frame readers and the probe share about decoded frames: a frame's time and how
long it is shown, and the per-video messages for times that go back, no frame, a failed decode."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vidbatch.errors import VideoError

if TYPE_CHECKING:
    from vidbatch.decode_probe import VideoInfo

# Presentation times are rationals turned into floats (the picker allows 1e-6).
EPS_S = 1e-6
# What a person can do, said at the end of each per-video message.
DAMAGED = "the file may be damaged: re-upload or re-encode it"


def frame_duration(frame: Any, stream: Any, info: VideoInfo) -> float:
    if frame.duration:
        return float(frame.duration * (frame.time_base or stream.time_base))
    return nominal_frame_s(info)


def nominal_frame_s(info: VideoInfo) -> float:
    """How long a frame is shown when the file does not say: one period of the nominal rate."""
    return 1.0 / info.fps if info.fps else 1.0 / 30


def frame_time(frame: Any, stream: Any) -> float | None:
    if frame.pts is None:
        return None
    return float(frame.pts * (frame.time_base or stream.time_base))


def times_go_back(container: Any, at_s: float, after_s: float) -> VideoError:
    """Frames come out of the decoder in the order they are shown, so their times must not go back.
    They do when the container stores no presentation times for reordered frames (H.264 with
    B-frames in AVI: each frame then carries another frame's time), and when recordings are joined
    end to end and the second one's times start again (`cat a.ts b.ts`): sampling would pick the
    wrong frames, or write clip windows twice, and say `ok`. It is the file's doing, every night."""
    return VideoError(
        "decode_error",
        f"the frames' times go back (a frame at {at_s:.3f}s came after one at {after_s:.3f}s), so which frame is "
        "shown when cannot be told: the file may join recordings whose times start again, or its "
        f"{container.format.name} container may not store the times of reordered frames; re-encode it to MP4 "
        "(e.g. `ffmpeg -i <file> -c:v libx264 out.mp4`)",
    )


def no_frame(*, packets: int, what: str = "frame") -> VideoError:
    if not packets:
        return VideoError("too_short", "the video stream holds no frames; nothing to sample")
    return VideoError("decode_error", f"no {what} could be decoded; the video stream is damaged")


def short_reason(exc: BaseException) -> str:
    # FFmpeg's str() names the file (a path, or a URL with a query string): keep only the reason.
    text = str(getattr(exc, "strerror", None) or exc).strip() or type(exc).__name__
    return text[:200]
