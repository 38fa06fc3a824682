"""Arrow schemas of the two output tables (DESIGN.md). Plain Arrow types only, so any
Delta reader and any search system can take the embeddings."""

from __future__ import annotations

import pyarrow as pa

LABELS = pa.list_(pa.struct([("label", pa.string()), ("score", pa.float32())]))
EMBEDDING = pa.list_(pa.float32())

CLIPS = pa.schema(
    [
        ("video_id", pa.string()),
        ("clip_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("frame_pts_s", pa.list_(pa.float64())),
        ("embedding", EMBEDDING),
        ("labels", LABELS),
        ("model_id", pa.string()),
        ("sampling_id", pa.string()),
        ("run_id", pa.string()),
    ]
)

VIDEOS = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("source_fingerprint", pa.string()),
        ("status", pa.string()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
        ("duration_s", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("fps", pa.float64()),
        ("codec", pa.string()),
        ("num_clips", pa.int32()),
        ("embedding", EMBEDDING),
        ("labels", LABELS),
        ("model_id", pa.string()),
        ("sampling_id", pa.string()),
        ("run_id", pa.string()),
        ("processed_at", pa.timestamp("us", tz="UTC")),
    ]
)


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind))


def text_leaves(kind: pa.DataType) -> tuple[bool, ...]:
    """Which leaves of a (possibly nested) type are text, in order: numbers that round-trip through
    text are still a retype, in a list's items or a struct's fields as at the top (1 is not '1')."""
    if isinstance(kind, pa.DictionaryType):
        return text_leaves(kind.value_type)
    if isinstance(kind, pa.MapType):
        return text_leaves(kind.key_type) + text_leaves(kind.item_type)
    if pa.types.is_struct(kind):  # by name: a writer that orders a struct's fields otherwise changed no type
        return tuple(leaf for f in sorted(kind, key=lambda f: f.name) for leaf in text_leaves(f.type))
    if pa.types.is_nested(kind):  # lists of every kind, unions: their children in order
        return tuple(leaf for i in range(kind.num_fields) for leaf in text_leaves(kind.field(i).type))
    return (_is_text(kind),)
