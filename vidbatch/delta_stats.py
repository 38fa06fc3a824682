"""Delta file statistics of a data file vidbatch writes: the row count, and min/max/null counts of
the columns readers can skip files by, in the JSON forms delta-rs writes and parses back typed.

Each bound is widened where its JSON form is coarser than the rows (a long string, a timestamp
finer than milliseconds, a decimal no float holds): a reader may skip a file only when no row can
match, so a bound that landed inside the rows' range would lose rows.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


class FileStatistics:
    """One file's statistics, gathered part by part as the file is written: strings, numbers,
    booleans, decimals, dates, timestamps, and those inside structs."""

    def __init__(self) -> None:
        self.rows = 0
        self.low: dict[tuple[str, ...], Any] = {}
        self.high: dict[tuple[str, ...], Any] = {}
        self.nulls: dict[tuple[str, ...], int] = {}
        self.kinds: dict[tuple[str, ...], pa.DataType] = {}
        self.unranged: set[tuple[str, ...]] = set()  # a bound JSON cannot hold was seen: no range

    def add(self, part: pa.Table) -> None:
        self.rows += part.num_rows
        for name in part.column_names:
            self._add((name,), part.column(name))

    def _add(self, path: tuple[str, ...], column: pa.ChunkedArray) -> None:
        kind = column.type
        if pa.types.is_struct(kind):
            # flatten() gives each field with its struct's nulls, as Delta counts them
            fields = [chunk.flatten() for chunk in column.chunks]
            for index, child in enumerate(kind):
                self._add(path + (child.name,), pa.chunked_array([f[index] for f in fields], child.type))
            return
        if not any(test(kind) for test in _RANGED_TYPES):
            return
        self.kinds[path] = kind
        self.nulls[path] = self.nulls.get(path, 0) + column.null_count
        if column.null_count == len(column) or path in self.unranged:
            return
        extremes = pc.min_max(column)
        first, last = _lower_bound(extremes["min"]), _upper_bound(extremes["max"])
        if not _representable(first, kind) or not _representable(last, kind):
            self.unranged.add(path)
            return
        self.low[path] = first if path not in self.low else min(self.low[path], first)
        self.high[path] = last if path not in self.high else max(self.high[path], last)

    def stats(self) -> str:
        low: dict[str, Any] = {}
        high: dict[str, Any] = {}
        nulls: dict[str, Any] = {}
        for path, count in self.nulls.items():
            _nest(nulls, path, count)
            if path in self.low and path not in self.unranged:
                _nest(low, path, _json_bound(self.low[path], self.kinds[path], upper=False))
                _nest(high, path, _json_bound(self.high[path], self.kinds[path], upper=True))
        return json.dumps({"numRecords": self.rows, "minValues": low, "maxValues": high, "nullCount": nulls})


_RANGED_TYPES = (
    pa.types.is_string,
    pa.types.is_integer,
    pa.types.is_floating,
    pa.types.is_boolean,
    pa.types.is_decimal,
    pa.types.is_date32,
    pa.types.is_timestamp,
)
# Strings longer than this are cut in the statistics (delta-rs cuts at the same length).
_STRING_PREFIX = 64
_EPOCH = datetime.datetime(1970, 1, 1)
_UNITS_PER_MS = {"ms": 1, "us": 1000, "ns": 1_000_000}
_FIRST_MS = (datetime.datetime.min - _EPOCH) // datetime.timedelta(milliseconds=1)
_LAST_MS = (datetime.datetime.max - _EPOCH) // datetime.timedelta(milliseconds=1)


def _lower_bound(value: pa.Scalar) -> Any:
    """A value at or below `value`, in a form `_json_bound` writes exactly."""
    if pa.types.is_timestamp(value.type):
        return _milliseconds(value, round_up=False)
    plain = value.as_py()
    return plain[:_STRING_PREFIX] if isinstance(plain, str) else plain


def _upper_bound(value: pa.Scalar) -> Any:
    """A value at or above `value`, in a form `_json_bound` writes exactly."""
    if pa.types.is_timestamp(value.type):
        return _milliseconds(value, round_up=True)
    plain = value.as_py()
    return _string_above(plain) if isinstance(plain, str) else plain


def _milliseconds(value: pa.Scalar, *, round_up: bool) -> int:
    """A timestamp as milliseconds since the epoch (UTC for a zoned one), the statistics' precision."""
    units = value.cast(pa.int64()).as_py()
    if value.type.unit == "s":
        return int(units) * 1000
    per_ms = _UNITS_PER_MS[value.type.unit]
    return -(-units // per_ms) if round_up else units // per_ms


def _string_above(text: str) -> str:
    """`text`, or when longer than _STRING_PREFIX a shorter string above it: its prefix with the last
    character that can be raised raised by one (UTF-8 byte order is code point order)."""
    if len(text) <= _STRING_PREFIX:
        return text
    for at in range(_STRING_PREFIX - 1, -1, -1):
        code = ord(text[at])
        if code < 0x10FFFF:
            return text[:at] + chr(0xE000 if 0xD800 <= code + 1 <= 0xDFFF else code + 1)
    return text  # every character of the prefix is the highest one: only the whole string is above


def _representable(value: Any, kind: pa.DataType) -> bool:
    """Whether the statistics' JSON can hold the bound: not NaN or infinity, and a timestamp within
    the years 1..9999 that its text form can write."""
    if isinstance(value, float):
        return math.isfinite(value)
    if pa.types.is_timestamp(kind):
        return _FIRST_MS <= value <= _LAST_MS
    return True


def _json_bound(value: Any, kind: pa.DataType, *, upper: bool) -> Any:
    if pa.types.is_timestamp(kind):
        text = (_EPOCH + datetime.timedelta(milliseconds=value)).isoformat(timespec="milliseconds")
        return text + "Z" if kind.tz is not None else text
    if pa.types.is_date32(kind):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        near = float(value)
        if upper and decimal.Decimal(near) < value:
            return math.nextafter(near, math.inf)
        if not upper and decimal.Decimal(near) > value:
            return math.nextafter(near, -math.inf)
        return near
    return value


def _nest(into: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for name in path[:-1]:
        into = into.setdefault(name, {})
    into[path[-1]] = value
