"""`keyframes` mode: the key frames themselves; their sample time is their own pts.

There is no target list: only the key packets are decoded, each on its own, and each key
frame is used as is (see vidbatch.decode_keyframes, which says why FFmpeg's own skipping of
non-key frames is not used).
"""

from __future__ import annotations


def keyframe_sample_time(pts_s: float) -> float:
    return pts_s
