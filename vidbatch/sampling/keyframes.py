"""`keyframes` mode: the key frames themselves; their sample time is their own pts.

There is no target list: the decoder is told to skip every non-key frame, and each
key frame it returns is used as is (see vidbatch.decode_keyframes).
"""

from __future__ import annotations


def keyframe_sample_time(pts_s: float) -> float:
    return pts_s
