"""Native histogram buckets: schema choice, bucket index and resolution reduction, against
worked examples of client_golang's rules."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netprobe_exporter.metrics import Histogram
from netprobe_exporter.nhist import (
    NativeBuckets,
    NativeSpec,
    bucket_index,
    pick_schema,
    spans_and_deltas,
    upper_bound,
)


@pytest.mark.parametrize(
    ("factor", "schema"),
    [(1.1, 3), (1.05, 4), (1.0905077326652577, 3), (1.09, 4), (2.0, 0), (4.0, -1),
     (1.0001, 8), (65536.0, -4), (1e300, -4), (1.5, 1)],
)  # fmt: skip
def test_schema_has_the_largest_base_within_the_factor(factor: float, schema: int) -> None:
    assert pick_schema(factor) == schema
    # its base is within the factor (unless clamped to the finest, 8), one coarser's is not
    # (unless clamped to the coarsest, -4): the widest buckets the factor allows
    assert 2.0 ** (2.0**-schema) <= factor * (1 + 1e-12) or schema == 8
    assert schema == -4 or 2.0 ** (2.0 ** -(schema - 1)) > factor * (1 - 1e-12)


def test_a_factor_of_one_or_less_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than 1"):
        pick_schema(1.0)


@pytest.mark.parametrize(
    ("value", "schema", "index"),
    [
        (1.0, 3, 0),  # 1 is the upper bound of bucket 0 at every schema
        (1.05, 3, 1),
        (1.0905077326652577, 3, 1),  # base^1, inclusive
        (1.1, 3, 2),
        (2.0, 3, 8),
        (0.5, 3, -8),
        (0.001, 3, -79),
        (3.0, 0, 2),  # (2, 4]
        (4.0, 0, 2),
        (4.5, 0, 3),
        (3.0, -1, 1),  # (1, 4]
        (17.0, -2, 2),  # (16, 256]
    ],
)
def test_bucket_index_worked_examples(value: float, schema: int, index: int) -> None:
    assert bucket_index(value, schema) == index
    assert upper_bound(index - 1, schema) < value <= upper_bound(index, schema) * (1 + 1e-12)


def test_every_value_lies_in_its_bucket_bounds() -> None:
    for schema in range(-4, 9):
        for i in range(-400, 400):
            v = 1.037**i
            k = bucket_index(v, schema)
            lo, hi = upper_bound(k - 1, schema), upper_bound(k, schema)
            assert lo * (1 - 1e-12) <= v <= hi * (1 + 1e-12), (schema, v, k)


def test_zero_bucket_takes_values_within_the_threshold() -> None:
    nb = NativeBuckets(NativeSpec(zero_threshold=0.001))
    for v in (0.0, 0.0005, 0.001, 0.002, -0.002):
        nb.observe(v)
    assert nb.zero_count == 3
    assert (
        sum(nb.positive.as_dict().values()) == 1
        and nb.negative is not None
        and sum(nb.negative.as_dict().values()) == 1
    )


def test_past_max_buckets_the_schema_drops_and_pairs_merge() -> None:
    nb = NativeBuckets(NativeSpec(bucket_factor=1.1, max_buckets=4))
    # schema 3 buckets 1, 2, 3, 4 (values just inside each)
    for k in (1, 2, 3, 4):
        nb.observe(upper_bound(k, 3) * 0.999)
    assert nb.schema == 3 and nb.positive.as_dict() == {1: 1, 2: 1, 3: 1, 4: 1}
    nb.observe(upper_bound(5, 3) * 0.999)  # a fifth bucket: schema 2, (k + 1) // 2
    assert nb.schema == 2
    assert nb.positive.as_dict() == {1: 2, 2: 2, 3: 1}
    nb.observe(upper_bound(-1, 3) * 0.999)  # bucket -1 of schema 3 -> bucket 0 of schema 2
    assert nb.positive.as_dict()[0] == 1
    total = sum(nb.positive.as_dict().values())
    assert total == 6


def test_widely_spread_values_halve_until_within_max_buckets() -> None:
    nb = NativeBuckets(NativeSpec(bucket_factor=1.5, max_buckets=3))
    for v in (0.0005, 0.05, 0.00123, 0.0031, 0.2):
        nb.observe(v)
        assert len(nb.positive.as_dict()) <= 3
    # schema -2: base 16, bucket k is (16^(k-1), 16^k]: 0.0005, 0.00123, 0.0031 in
    # (0.000244, 0.0039], 0.05 in (0.0039, 0.0625], 0.2 in (0.0625, 1]
    assert nb.schema == -2
    assert nb.positive.as_dict() == {-2: 3, -1: 1, 0: 1}


def test_merge_keeps_values_in_their_buckets() -> None:
    values = [1.013**i for i in range(-300, 300)]
    nb = NativeBuckets(NativeSpec(bucket_factor=1.01, max_buckets=20))
    for v in values:
        nb.observe(v)
    assert len(nb.positive.as_dict()) <= 20
    expected: dict[int, int] = {}
    for v in values:
        k = bucket_index(v, nb.schema)
        expected[k] = expected.get(k, 0) + 1
    assert nb.positive.as_dict() == expected


def test_infinity_counts_in_a_bucket_past_every_finite_one() -> None:
    nb = NativeBuckets()
    nb.observe(math.inf)
    nb.observe(1e308)
    (k_inf, k_max) = sorted(nb.positive.as_dict(), reverse=True)
    assert k_inf > k_max


def test_spans_and_deltas() -> None:
    assert spans_and_deltas({}) == ([], [])
    # few empty buckets: one span, the empty ones as zero counts
    assert spans_and_deltas({-2: 3, -1: 1, 0: 4, 5: 2, 6: 2}) == (
        [(-2, 9)],
        [3, -2, 3, -4, 0, 0, 0, 2, 0],
    )
    # more than ONE_SPAN_EMPTY empty: spans as client_golang makes them
    assert spans_and_deltas({-2: 3, -1: 1, 0: 4, 25: 2, 26: 2}) == (
        [(-2, 3), (24, 2)],
        [3, -2, 3, -2, 0],
    )


def test_wide_gaps_split_spans_gaps_of_one_or_two_buckets_do_not_as_client_golang_s() -> None:
    # 0 and 2: one empty bucket between, filled; 2 and 26: 23 empty, a new span
    assert spans_and_deltas({0: 1, 2: 1, 26: 2}) == ([(0, 3), (23, 1)], [1, -1, 1, 1])
    assert spans_and_deltas({0: 5, 3: 5, 30: 1}) == ([(0, 4), (26, 1)], [5, -5, 0, 5, -4])


def test_dense_counts_grow_either_way_and_match_a_dict() -> None:
    import random

    rnd = random.Random(7)
    values = [rnd.lognormvariate(-7, 2) for _ in range(3000)]
    nb = NativeBuckets()  # 160 buckets at schema 3: this spread stays within them
    for v in values:
        nb.observe(v)
    expected: dict[int, int] = {}
    for v in values:
        k = bucket_index(v, nb.schema)
        expected[k] = expected.get(k, 0) + 1
    assert nb.positive.as_dict() == expected
    assert nb.positive.populated == len(expected)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.one_of(
            st.floats(min_value=1e-6, max_value=10.0),
            st.sampled_from([0.0, -1.0, math.inf, math.nan, 1e-200]),
        ),
        max_size=80,
    ),
    factor=st.sampled_from([1.1, 2.0, 4.0]),
    max_buckets=st.sampled_from([4, 160]),
)
def test_a_histogram_s_native_buckets_are_native_buckets_fed_the_same_values(
    values: list[float], factor: float, max_buckets: int
) -> None:
    """Histogram.observe inlines the common case of NativeBuckets.observe."""
    spec = NativeSpec(factor, max_buckets, 1e-9)
    h, nb = Histogram((0.01, 0.1), spec), NativeBuckets(spec)
    for v in values * 2:
        h.observe(v)
        nb.observe(v)
    got = h.native
    assert (got.schema, got.zero_count) == (nb.schema, nb.zero_count)
    assert got.positive.as_dict() == nb.positive.as_dict()
    assert got.positive.populated == nb.positive.populated
    neg = None if got.negative is None else got.negative.as_dict()
    assert neg == (None if nb.negative is None else nb.negative.as_dict())
