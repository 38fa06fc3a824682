"""What a file that FFmpeg may not open is, from its first bytes: for a message a person can act on.

decode.py opens only the containers of FORMAT_WHITELIST (a demuxer is attack surface, and image
sequences, playlists and concat lists would read other files). A file of another kind fails to open
with FFmpeg's "Invalid argument"; its row should say what the file is and what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO

from vidbatch.errors import Status

_CONVERT = "convert it to MP4 (H.264) or another accepted container, e.g. `ffmpeg -i {name} out.mp4`"


@dataclass(frozen=True)
class MediaKind:
    what: str  # "a GIF image"
    status: Status
    advice: str

    def message(self) -> str:
        return f"the file is {self.what}; {self.advice}"


def _image(what: str) -> MediaKind:
    return MediaKind(what, "unreadable", "images are not read; " + _CONVERT.format(name="image"))


def _audio(what: str) -> MediaKind:
    return MediaKind(what, "no_video_stream", "it has no video stream; nothing to embed")


def _container(what: str) -> MediaKind:
    return MediaKind(what, "unreadable", "that container is not accepted; " + _CONVERT.format(name="video"))


# (offset, magic, kind); checked in order, the first match wins.
_MAGIC: tuple[tuple[int, bytes, MediaKind], ...] = (
    (0, b"GIF87a", _image("a GIF image (animated GIFs too)")),
    (0, b"GIF89a", _image("a GIF image (animated GIFs too)")),
    (0, b"\x89PNG\r\n\x1a\n", _image("a PNG or APNG image")),
    (0, b"\xff\xd8\xff", _image("a JPEG image or a raw Motion-JPEG stream")),
    (8, b"WAVE", _audio("a WAV audio file")),  # RIFF; AVI is RIFF too, but opens
    (8, b"WEBP", _image("a WebP image")),
    (0, b"YUV4MPEG2", _container("a YUV4MPEG (.y4m) raw video")),
    (0, b"\x06\x0e\x2b\x34", _container("an MXF file")),
    (0, b"ID3", _audio("an MP3 audio file")),
    (0, b"fLaC", _audio("a FLAC audio file")),
    (0, b"\xff\xfb", _audio("an MP3 audio file")),
    (0, b"\xff\xf3", _audio("an MP3 audio file")),
    (0, b"\xff\xf1", _audio("an AAC (ADTS) audio file")),
    (0, b"%PDF", MediaKind("a PDF document", "unreadable", "check that the manifest row names the video")),
    # Lists that name other files: never opened, as they could reach any file or address.
    (0, b"#EXTM3U", MediaKind("an HLS playlist", "unreadable", "it names other files; list the video files themselves")),
    (0, b"ffconcat", MediaKind("an FFmpeg concat list", "unreadable", "it names other files; list the video files themselves")),
    (0, b"\x00\x00\x01\xb3", _container("a raw MPEG-1/2 video stream with no container")),
)


def sniff(head: bytes) -> MediaKind | None:
    """The kind of file these first bytes start, when it is one of the common non-video kinds."""
    for offset, magic, kind in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return kind
    return None


def read_head(source: str | IO[bytes], size: int = 64) -> bytes:
    """The first bytes of a local path or a seekable file object ('' when they cannot be read)."""
    try:
        if isinstance(source, str):
            with open(source, "rb") as handle:
                return handle.read(size)
        source.seek(0)
        head = source.read(size)
        source.seek(0)
        return head
    except Exception:  # only an explanation: the open's own failure is the news
        return b""


# ISO base media files (MP4, MOV, M4V, 3GP) start with one of these boxes.
_ISO_FIRST_BOXES = (b"ftyp", b"styp", b"moov", b"mdat", b"free", b"skip", b"wide")
_MAX_TOP_LEVEL_BOXES = 64  # a real file has a handful; bounds the walk over a hostile one


def cut_short_iso(source: str | IO[bytes]) -> str | None:
    """Why an MP4/MOV that FFmpeg could not open is cut short, or None.

    An upload cut short whose index (`moov`) comes after the media data loses its index with its
    tail: FFmpeg then only says "Invalid data". The top-level boxes tell: one of them runs past
    the end of the file, and no `moov` came before it.
    """
    try:
        if isinstance(source, str):
            with open(source, "rb") as handle:
                return _walk_top_level(handle)
        try:
            return _walk_top_level(source)
        finally:
            source.seek(0)
    except Exception:  # only an explanation: the open's own failure is the news
        return None


def _walk_top_level(handle: IO[bytes]) -> str | None:
    size = handle.seek(0, 2)
    at, seen_index = 0, False
    for _ in range(_MAX_TOP_LEVEL_BOXES):
        if at + 8 > size:
            return None
        handle.seek(at)
        header = handle.read(16)
        box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
        if at == 0 and kind not in _ISO_FIRST_BOXES:
            return None  # not an ISO base media file
        if box_size == 1:
            box_size = int.from_bytes(header[8:16], "big")
        elif box_size == 0:  # "to the end of the file"
            return None if seen_index else f"its {_name(kind)} box runs to the end and no index (moov box) was found"
        if box_size < 8:
            return None  # not boxes after all
        if at + box_size > size:
            missing = at + box_size - size
            if kind == b"moov":
                return f"its index (moov box) needs {missing} more bytes than the file holds"
            if seen_index:
                return None  # the index is whole: FFmpeg's refusal is about something else
            return (
                f"its {_name(kind)} box needs {missing} more bytes than the file holds, "
                "and the index (moov box) that follows the media data is missing"
            )
        seen_index = seen_index or kind == b"moov"
        at += box_size
    return None


def _name(kind: bytes) -> str:
    return kind.decode("latin-1") if kind.isalnum() else repr(kind)


_EBML_ID = b"\x1a\x45\xdf\xa3"
_SEGMENT_ID = b"\x18\x53\x80\x67"
MATROSKA_HEAD_BYTES = 256  # the EBML header (DocType, versions) and the Segment's size come first


def matroska_stated_end(head: bytes) -> int | None:
    """Where a Matroska/WebM file's Segment says the file ends (a byte offset), from its first bytes;
    None when it is not Matroska or the size is left unknown (a live stream, written as it went)."""
    if not head.startswith(_EBML_ID):
        return None
    header = _element_size(head, len(_EBML_ID))
    if header is None:
        return None
    at = len(_EBML_ID) + header[1] + header[0]
    if head[at : at + len(_SEGMENT_ID)] != _SEGMENT_ID:
        return None
    segment = _element_size(head, at + len(_SEGMENT_ID))
    return None if segment is None else at + len(_SEGMENT_ID) + segment[1] + segment[0]


def avi_stated_end(head: bytes) -> int | None:
    """Where an AVI file's first RIFF chunk says it ends (a byte offset), from its first 12 bytes; None
    when it is not AVI or the size was left unwritten (0, or all bits set, by a capture cut off
    before it could go back and write it). A file over 1 GB (OpenDML) goes on in RIFF 'AVIX'
    chunks after the first, so its first chunk still ends inside it."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return None
    size = int.from_bytes(head[4:8], "little")
    return None if size in (0, 0xFFFFFFFF) else 8 + size


def _element_size(data: bytes, at: int) -> tuple[int, int] | None:
    """An EBML element's data size (a variable-length integer) at `at` and its length in bytes;
    None when it cannot be read here or is the reserved 'unknown size' (every value bit set)."""
    if at >= len(data) or data[at] == 0:
        return None
    length = 9 - data[at].bit_length()
    if at + length > len(data):
        return None
    value = data[at] & ((1 << (8 - length)) - 1)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    return None if value == (1 << (7 * length)) - 1 else (value, length)
