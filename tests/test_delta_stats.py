"""Delta file statistics' bounds (vidbatch.delta_stats): pure functions, plain unit tests.
Tests that read the statistics back with deltalake are in test_delta_files."""

from __future__ import annotations

import pyarrow as pa


def test_a_cut_string_bound_stays_on_its_side_of_every_value():
    from vidbatch.delta_stats import _lower_bound, _string_above, _upper_bound

    long = "m" * 70
    assert _lower_bound(pa.scalar(long)) == "m" * 64 <= long
    assert _upper_bound(pa.scalar(long)) == "m" * 63 + "n" > long
    assert _string_above("a" * 63 + "\U0010ffff" + "z") == "a" * 62 + "b"  # the highest character cannot be raised
    assert _string_above("\ud7ff" * 65) == "\ud7ff" * 63 + "\ue000"  # surrogates are not characters
    assert _string_above("\U0010ffff" * 65) == "\U0010ffff" * 65  # nothing shorter is above
    assert _string_above("short") == "short"


def test_a_decimal_bound_no_float_holds_is_widened_outward():
    from decimal import Decimal

    from vidbatch.delta_stats import _json_bound

    kind = pa.decimal128(20, 19)
    value = Decimal("0.1000000000000000000")  # 0.1 as a float is a little above it
    assert Decimal(_json_bound(value, kind, upper=False)) <= value <= Decimal(_json_bound(value, kind, upper=True))
    assert _json_bound(Decimal("1.25"), pa.decimal128(5, 2), upper=True) == 1.25  # exact: not moved
