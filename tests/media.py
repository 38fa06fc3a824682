"""Synthetic test media for the vidbatch test suite.

Every generated video frame carries its own frame index as a coarse black/white
bit grid painted in the middle of the picture, so a test can check *which*
frame came out of the decoder -- even after lossy compression and after the
production preprocessing (bilinear resize of the short side to 256, centre
crop 224x224).  The rest of the frame is a colour gradient that shifts with
the index, so different frames also produce different image features.

Grid layout: 4x4 cells in a square of ``_GRID_FRACTION`` of the short side,
centred on the frame centre::

    M d d M      M = orientation marker: top-left white, other corners black
    d d d d      d = 12 index bits, row-major, most significant bit first
    d d d d
    M d d M

The single white corner moves under every rotation (90/180/270) and under both
mirror flips, so ``read_frame_index`` refuses pictures that are not upright.
There is deliberately no parity cell: a rotation only permutes cells, which
leaves any parity unchanged, so parity would not help the orientation check.
Misreads are caught instead by refusing cells that are neither clearly black
nor clearly white.

Rotation convention (checked with PyAV 18.1 / FFmpeg 8): the ``rotation``
argument of :func:`write_video` is the counter-clockwise angle that PyAV
reports back as ``VideoFrame.rotation`` -- normalised by FFmpeg to
[-180, 180], so 270 reads back as -90 and 180 as -180.  The upright picture
of a decoded frame is::

    upright = np.rot90(frame.to_ndarray(format="rgb24"), k=frame.rotation // 90)

which is what :func:`upright_rgb` does.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# --- bit grid geometry -------------------------------------------------------

_GRID_CELLS = 4
# Side of the grid as a fraction of the frame's short side.  The production
# centre crop keeps 224/256 = 87.5% of the short side (and the same number of
# pixels along the long side), so 60% leaves a margin for any aspect ratio.
_GRID_FRACTION = 0.6
# A reader cannot tell a full frame from a 224 crop of a 256-resized frame, and
# in the crop the grid is 256/224 larger relative to the short side.  Reading
# at the geometric mean of both scales keeps the worst position error at
# ~0.1 cell (outermost cell centres), well inside the sampling tolerance.
_READ_SCALE = math.sqrt(256 / 224)
# Half-width of the window sampled around each cell centre, in cells: small
# enough to stay clear of cell edges (where codecs ring and resizing blends
# neighbours) even with the scale error above.
_SAMPLE_HALF_WIDTH = 0.2
# Mean levels strictly between these are "grey": the bit cannot be trusted.
_BLACK_MAX = 80
_WHITE_MIN = 175

_LAST = _GRID_CELLS - 1
_MARKER = {(0, 0): 1, (0, _LAST): 0, (_LAST, 0): 0, (_LAST, _LAST): 0}
_DATA_CELLS = tuple((r, c) for r in range(_GRID_CELLS) for c in range(_GRID_CELLS) if (r, c) not in _MARKER)
_INDEX_BITS = len(_DATA_CELLS)  # 12
MAX_FRAMES = 1 << _INDEX_BITS  # 4096

# --- containers and codecs ---------------------------------------------------

_DEFAULT_CODEC = {
    ".mp4": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "mpeg4",
}
# The mov/mp4 muxer writes the display matrix into the track header; the
# others are not relied upon.
_ROTATION_SUFFIXES = frozenset({".mp4", ".mov"})
_ROTATIONS = (0, 90, 180, 270)
# Stream time bases: mp4/mov keep a fine 90 kHz clock; Matroska/WebM always
# store milliseconds.  AVI has no per-frame timestamps (a frame's time is its
# position / fps), so it cannot carry pts_s and is absent here.
_FINE_TIME_BASE = {
    ".mp4": Fraction(1, 90000),
    ".mov": Fraction(1, 90000),
    ".mkv": Fraction(1, 1000),
    ".webm": Fraction(1, 1000),
}
# 4:2:0 chroma needs even sizes; below 32 px the grid cells get too small to
# survive compression.
_MIN_SIDE = 32


@dataclasses.dataclass(frozen=True)
class GeneratedVideo:
    """What was written, as read back by decoding the file with PyAV.

    ``width``/``height`` are the upright (display) size, i.e. the size of the
    painted picture; with rotation 90/270 the stored frames are height x width.
    """

    path: Path
    frame_pts_s: tuple[float, ...]
    fps: Fraction
    width: int
    height: int
    codec: str
    keyframe_indices: tuple[int, ...]
    rotation: int = 0

    @property
    def num_frames(self) -> int:
        return len(self.frame_pts_s)


# --- painting and reading the index -----------------------------------------


def paint_frame(index: int, width: int, height: int) -> np.ndarray:
    """Return the upright HxWx3 uint8 RGB picture of frame ``index``."""
    rgb = _background(index, width, height)
    for (r, c), bit in _grid_bits(index).items():
        y0, y1, x0, x1 = _cell_box(r, c, width, height)
        rgb[y0:y1, x0:x1] = 255 if bit else 0
    return rgb


def _background(index: int, width: int, height: int) -> np.ndarray:
    # Smooth colour waves whose phases move with the index: every frame
    # differs everywhere outside the grid (so embeddings differ per frame),
    # yet stays cheap to encode.
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    phase = index / 16.0
    red = 0.5 + 0.5 * np.sin(2 * np.pi * (x + phase))
    green = 0.5 + 0.5 * np.sin(2 * np.pi * (y + 0.7 * phase))
    blue = 0.5 + 0.5 * np.sin(2 * np.pi * (x + y - 0.3 * phase))
    rgb = np.stack(np.broadcast_arrays(red, green, blue), axis=-1)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def _grid_bits(index: int) -> dict[tuple[int, int], int]:
    bits = dict(_MARKER)
    for position, cell in enumerate(_DATA_CELLS):
        bits[cell] = (index >> (_INDEX_BITS - 1 - position)) & 1
    return bits


def _cell_box(r: int, c: int, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel box (y0, y1, x0, x1) of grid cell (r, c) when painting."""
    cell = _GRID_FRACTION * min(width, height) / _GRID_CELLS
    top = height / 2 - cell * _GRID_CELLS / 2
    left = width / 2 - cell * _GRID_CELLS / 2
    return (
        round(top + r * cell),
        round(top + (r + 1) * cell),
        round(left + c * cell),
        round(left + (c + 1) * cell),
    )


def read_frame_index(rgb: np.ndarray) -> int:
    """Read the painted frame index from an upright HxWx3 uint8 RGB image.

    Accepts the full frame at any scale, or the 224x224 centre crop of the
    frame resized to short side 256.  Raises ValueError if the picture is not
    upright (orientation marker mismatch) or a cell is neither black nor white.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {rgb.shape!r}")
    cells = [(r, c) for r in range(_GRID_CELLS) for c in range(_GRID_CELLS)]
    levels = {cell: _cell_level(rgb, *cell) for cell in cells}
    grey = {cell: round(v) for cell, v in levels.items() if _BLACK_MAX < v < _WHITE_MIN}
    if grey:
        raise ValueError(f"unreadable grid cells (neither black nor white): {grey}")
    bits = {cell: int(level >= _WHITE_MIN) for cell, level in levels.items()}
    marker = {cell: bits[cell] for cell in _MARKER}
    if marker != _MARKER:
        raise ValueError(f"orientation marker {marker} != {_MARKER}: image is not upright")
    index = 0
    for cell in _DATA_CELLS:
        index = (index << 1) | bits[cell]
    return index


def _cell_level(rgb: np.ndarray, r: int, c: int) -> float:
    """Mean level of a small window around the centre of cell (r, c)."""
    height, width = rgb.shape[:2]
    cell = _READ_SCALE * _GRID_FRACTION * min(width, height) / _GRID_CELLS
    cy = height / 2 + (r + 0.5 - _GRID_CELLS / 2) * cell
    cx = width / 2 + (c + 0.5 - _GRID_CELLS / 2) * cell
    half = max(1.0, _SAMPLE_HALF_WIDTH * cell)
    window = rgb[round(cy - half) : round(cy + half) + 1, round(cx - half) : round(cx + half) + 1]
    if window.size == 0:
        raise ValueError(f"image of shape {rgb.shape!r} is too small to hold the grid")
    return float(window.mean())


def upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    """Decoded frame -> upright RGB array, applying the display-matrix rotation.

    ``frame.rotation`` is the counter-clockwise angle the picture must be
    turned for display, and ``np.rot90`` with positive k turns counter-
    clockwise too, so the signs agree.
    """
    rgb = frame.to_ndarray(format="rgb24")
    return np.ascontiguousarray(np.rot90(rgb, k=frame.rotation // 90))


# --- validation --------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _DEFAULT_CODEC:
        raise ValueError(f"unsupported video suffix {suffix!r} in {str(path)!r}; use one of {sorted(_DEFAULT_CODEC)}")
    return suffix


def _validate_num_frames(num_frames: int) -> int:
    if not _is_int(num_frames) or not 1 <= num_frames <= MAX_FRAMES:
        raise ValueError(f"num_frames must be an int in [1, {MAX_FRAMES}], got {num_frames!r}")
    return num_frames


def _validate_fps(fps: float | Fraction) -> Fraction:
    numeric = isinstance(fps, (int, float, Fraction)) and not isinstance(fps, bool)
    if not numeric or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    # A denominator <= 1001 keeps NTSC rates exact (30000/1001) and keeps 1/fps
    # a valid mpeg4 time base (whose denominator must fit in 16 bits).
    return Fraction(fps).limit_denominator(1001)


def _validate_size(width: int, height: int) -> tuple[int, int]:
    for name, value in (("width", width), ("height", height)):
        if not _is_int(value) or value < _MIN_SIDE or value % 2:
            raise ValueError(f"{name} must be an even int >= {_MIN_SIDE}, got {value!r}")
    return width, height


def _validate_codec(codec: str | None, suffix: str) -> str:
    name = _DEFAULT_CODEC[suffix] if codec is None else codec
    try:
        encoder = av.codec.Codec(name, "w")
    except (av.codec.codec.UnknownCodecError, ValueError, TypeError):
        raise ValueError(f"no encoder named {name!r} in this PyAV build") from None
    if encoder.type != "video":
        raise ValueError(f"codec {name!r} is a {encoder.type} encoder, not a video encoder")
    return name


def _validate_pix_fmt(pix_fmt: str | None, codec: str) -> str:
    name = "yuv420p" if pix_fmt is None else pix_fmt
    supported = {fmt.name for fmt in av.codec.Codec(codec, "w").video_formats or ()}
    if supported and name not in supported:
        raise ValueError(f"pix_fmt {name!r} is not supported by {codec!r}; choose from {sorted(supported)}")
    return name


def _validate_rotation(rotation: int, suffix: str) -> int:
    if not _is_int(rotation) or rotation not in _ROTATIONS:
        raise ValueError(f"rotation must be one of {_ROTATIONS}, got {rotation!r}")
    if rotation and suffix not in _ROTATION_SUFFIXES:
        raise ValueError(f"rotation {rotation!r} needs an .mp4/.mov file, got {suffix!r}")
    return rotation


def _validate_gop(gop: int | None) -> int | None:
    if gop is not None and (not _is_int(gop) or gop < 1):
        raise ValueError(f"gop must be None or an int >= 1, got {gop!r}")
    return gop


def _validate_pts(pts_s: Sequence[float] | None, num_frames: int, suffix: str, clock: Fraction) -> tuple[float, ...] | None:
    if pts_s is None:
        return None
    if suffix not in _FINE_TIME_BASE:
        raise ValueError(f"pts_s is not supported for {suffix!r} files (no per-frame timestamps)")
    values = tuple(float(t) for t in pts_s)
    if len(values) != num_frames:
        raise ValueError(f"pts_s has {len(values)} entries but num_frames is {num_frames!r}")
    if not all(math.isfinite(t) and t >= 0 for t in values):
        raise ValueError(f"pts_s must be finite and >= 0, got {values!r}")
    # Compare after rounding to the encoder clock: two times within one tick
    # would collide in the file even though they differ as floats.
    ticks = [round(t / clock) for t in values]
    if any(b <= a for a, b in itertools.pairwise(ticks)):
        raise ValueError(f"pts_s must be strictly increasing at {clock} s resolution, got {values!r}")
    return values


# --- writing -----------------------------------------------------------------


def write_video(
    path: str | Path,
    *,
    num_frames: int,
    fps: float | Fraction = 10,
    width: int = 320,
    height: int = 240,
    codec: str | None = None,
    pts_s: Sequence[float] | None = None,
    rotation: int = 0,
    mirror: bool = False,
    gop: int | None = None,
    pix_fmt: str | None = None,
    open_gop: bool = False,
    b_frames: int | None = None,
) -> GeneratedVideo:
    """Write a video whose frame i shows index i (see the module docstring).

    fps: nominal rate; frame i is at i/fps unless ``pts_s`` is given.
    codec: encoder name; default by suffix (mp4/mov/mkv libx264, webm
        libvpx-vp9, avi mpeg4).
    pts_s: explicit, strictly increasing presentation times in seconds
        (variable frame rate); kept to 1/90000 s in mp4/mov and 1 ms in
        mkv/webm.  Not possible for .avi.
    rotation: counter-clockwise display rotation written to the display
        matrix (.mp4/.mov only); the stored pixels are turned the other way, so
        a player honouring the matrix shows the painted picture upright.
    mirror: the display matrix also mirrors the picture left-right (a front
        camera's clip; .mp4/.mov only), and the stored pixels are mirrored back.
    gop: exact key frame interval: key frames at multiples of ``gop`` only.
    pix_fmt: encoder pixel format, default yuv420p.
    open_gop: libx264 with B-frames and an open GOP (x264's --open-gop): the key
        frames after the first are I frames that are not IDR, and B frames before
        them in display order refer across them. Needs ``gop``.
    b_frames: the encoder's maximum of consecutive B-frames (its default when None). With mpeg4 in
        .avi (Xvid/DivX style) the first frame is then shown one frame period after 0, where the header says
        the stream starts.
    """
    path = Path(path)
    suffix = _validate_suffix(path)
    num_frames = _validate_num_frames(num_frames)
    fps = _validate_fps(fps)
    width, height = _validate_size(width, height)
    codec = _validate_codec(codec, suffix)
    pix_fmt = _validate_pix_fmt(pix_fmt, codec)
    rotation = _validate_rotation(rotation, suffix)
    if mirror and suffix not in _ROTATION_SUFFIXES:
        raise ValueError(f"mirror needs an .mp4/.mov file, got {suffix!r}")
    gop = _validate_gop(gop)
    if open_gop and (codec != "libx264" or gop is None):
        raise ValueError(f"open_gop needs codec libx264 and a gop, got codec={codec!r}, gop={gop!r}")
    clock = _encoder_clock(codec, fps, suffix, variable=pts_s is not None)
    pts_s = _validate_pts(pts_s, num_frames, suffix, clock)

    times: Sequence[float | Fraction] = pts_s if pts_s is not None else [i / fps for i in range(num_frames)]
    with av.open(str(path), mode="w") as container:
        stream = _add_video_stream(container, codec, fps, clock, suffix, pix_fmt, gop, open_gop)
        if b_frames is not None:
            stream.codec_context.max_b_frames = b_frames
        stream.width, stream.height = _stored_size(width, height, rotation)
        if rotation or mirror:
            stream.set_display_rotation(rotation, hflip=mirror)  # must precede the first frame
        for index, t in enumerate(times):
            frame = _make_frame(index, round(t / clock), clock, width, height, rotation, mirror)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush frames the encoder delayed

    frame_pts_s, keyframe_indices = _probe(path)
    if len(frame_pts_s) != num_frames:
        raise RuntimeError(f"{path}: wrote {num_frames} frames but decoded {len(frame_pts_s)}")
    return GeneratedVideo(path, frame_pts_s, fps, width, height, codec, keyframe_indices, rotation)


def _encoder_clock(codec: str, fps: Fraction, suffix: str, *, variable: bool) -> Fraction:
    """Time base the frames are stamped in (the encoder's time base)."""
    if not variable:
        return 1 / fps  # constant rate: frame i is simply tick i
    clock = _FINE_TIME_BASE.get(suffix, 1 / fps)
    # MPEG-4 part 2 stores its clock in 16 bits; avcodec_open2 rejects 1/90000.
    if codec == "mpeg4" and clock.denominator > 0xFFFF:
        return Fraction(1, 1000)
    return clock


def _stored_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    # Quarter turns swap the sides of the stored frames.
    return (height, width) if rotation in (90, 270) else (width, height)


def _add_video_stream(
    container: av.container.OutputContainer,
    codec: str,
    fps: Fraction,
    clock: Fraction,
    suffix: str,
    pix_fmt: str,
    gop: int | None,
    open_gop: bool = False,
) -> av.video.stream.VideoStream:
    stream = container.add_stream(codec, rate=fps)
    assert isinstance(stream, av.video.stream.VideoStream)  # _validate_codec checked the type
    stream.pix_fmt = pix_fmt
    # PyAV rebases frame pts into the codec time base and packet pts into the
    # stream time base, so the two may differ.  The stream keeps the
    # container's fine clock so timestamps survive muxing without rounding.
    stream.codec_context.time_base = clock
    stream.time_base = _FINE_TIME_BASE.get(suffix, clock)
    options: dict[str, str] = {}
    if gop is not None:
        stream.codec_context.gop_size = gop
        options.update(_gop_options(codec, gop))
    if open_gop:
        stream.codec_context.max_b_frames = 3
        options["x264-params"] += ":open-gop=1"
    if codec.startswith("libvpx"):
        # libvpx's default "good" deadline is slow; realtime is plenty for a
        # black/white grid on a smooth gradient.
        options.update({"deadline": "realtime", "cpu-used": "8"})
    stream.codec_context.options = options
    return stream


def _gop_options(codec: str, gop: int) -> dict[str, str]:
    """Encoder options that pin key frames to exact multiples of ``gop``.

    gop_size alone is only a maximum: encoders also start a key frame on a
    scene cut, and the shifting background can look like one.
    """
    if codec == "libx264":
        return {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
    if codec.startswith("libvpx"):
        return {"keyint_min": str(gop)}  # libvpx maps this to kf_min_dist
    # mpegvideo encoders (mpeg4, ...): a huge threshold disables cut detection.
    return {"keyint_min": str(gop), "sc_threshold": "1000000000"}


# What `ffmpeg` shows for the display matrix of set_display_rotation(rotation, hflip=True), by the
# rules of fftools/ffmpeg_filter.c (matrices read back with PyAV 18.1 / FFmpeg 8): rotation 0 is
# [-1 0; 0 1] (hflip), 90 [0 -1; -1 0] (transpose=clock_flip), 180 [1 0; 0 -1] (vflip), 270
# [0 1; 1 0] (transpose=cclock_flip). Stored here: the inverse of each, applied to the painted picture.
_STORED_MIRRORED = {
    0: lambda picture: picture[:, ::-1],
    90: lambda picture: np.rot90(picture[::-1], k=1),  # clock_flip = vflip(clockwise turn)
    180: lambda picture: picture[::-1],
    270: lambda picture: picture.transpose(1, 0, 2),  # cclock_flip is the transpose, its own inverse
}


def _make_frame(
    index: int, tick: int, clock: Fraction, width: int, height: int, rotation: int, mirror: bool = False
) -> av.VideoFrame:
    painted = paint_frame(index, width, height)
    # Store the picture turned clockwise by `rotation` so that the display
    # matrix (a counter-clockwise turn by `rotation`) brings it back upright.
    stored = _STORED_MIRRORED[rotation](painted) if mirror else np.rot90(painted, k=-rotation // 90)
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored), format="rgb24")
    frame.pts = tick
    frame.time_base = clock
    # from_ndarray frames may carry pict_type I, which encoders honour as a
    # forced key frame: every frame would become one and gop would be moot.
    frame.pict_type = av.video.frame.PictureType.NONE
    return frame


def _probe(path: Path) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Decode ``path``: (pts in seconds, positions of key frames)."""
    times: list[float] = []
    keys: list[int] = []
    with av.open(str(path)) as container:
        for position, frame in enumerate(container.decode(video=0)):
            times.append(float(frame.time))
            if frame.key_frame:
                keys.append(position)
    return tuple(times), tuple(keys)


# --- inputs that are not videos ----------------------------------------------


def write_audio_only(path: str | Path, *, duration_s: float = 1.0, sample_rate: int = 44100) -> Path:
    """Write an AAC-only .m4a/.mp4/.mov (a quiet 440 Hz tone, no video stream)."""
    path = Path(path)
    if path.suffix.lower() not in {".m4a", ".mp4", ".mov"}:
        raise ValueError(f"write_audio_only needs an .m4a/.mp4/.mov path, got {str(path)!r}")
    if not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    t = np.arange(round(duration_s * sample_rate)) / sample_rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=sample_rate, layout="mono")
        frame_size = 1024  # AAC-LC consumes exactly 1024 samples per frame
        for start in range(0, len(samples), frame_size):
            chunk = samples[None, start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_garbage(path: str | Path, nbytes: int = 4096, seed: int = 0) -> Path:
    """Write ``nbytes`` seeded random bytes: an undecodable "video"."""
    if not _is_int(nbytes) or nbytes < 0:
        raise ValueError(f"nbytes must be an int >= 0, got {nbytes!r}")
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(nbytes))
    return path


def trim_by_edit_list(source: str | Path, target: str | Path, *, start_s: float, length_s: float | None = None) -> Path:
    """Copy an .mp4 written by write_video with its edit list changed to show only
    [start_s, start_s + length_s) of the media, as a stream-copy trim leaves a file (``ffmpeg -ss
    1.3 -c copy``, a phone's Photos trim): every packet stays in the file, and FFmpeg flags the
    hidden ones discard. ``length_s`` None shows the rest of the media."""
    import struct

    data = bytearray(Path(source).read_bytes())

    def box(tag: bytes) -> int:
        at = data.find(tag)
        if at < 4 or data.find(tag, at + 1) != -1:
            raise ValueError(f"{source}: expected one {tag.decode()} box (one track, as write_video writes)")
        return at - 4

    media_scale = struct.unpack(">I", data[box(b"mdhd") + 20 : box(b"mdhd") + 24])[0]
    movie_scale = struct.unpack(">I", data[box(b"mvhd") + 20 : box(b"mvhd") + 24])[0]
    elst = box(b"elst")
    if data[elst + 8] != 0 or struct.unpack(">I", data[elst + 12 : elst + 16])[0] != 1:
        raise ValueError(f"{source}: expected a version-0 edit list with one entry")
    shown, media_time = struct.unpack(">Ii", data[elst + 16 : elst + 24])
    shown = round(length_s * movie_scale) if length_s is not None else shown - round(start_s * movie_scale)
    struct.pack_into(">Ii", data, elst + 16, shown, media_time + round(start_s * media_scale))
    Path(target).write_bytes(data)
    return Path(target)
