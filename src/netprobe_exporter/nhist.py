"""Native (sparse, exponential) histogram buckets, computed as client_golang computes them.

At schema ``s`` the bucket base is ``2^(2^-s)`` and bucket ``k`` holds the values in
``(base^(k-1), base^k]``; values within ``zero_threshold`` of 0 go to the zero bucket. The
index comes from ``math.frexp`` (a bisection in a table of ``2^s`` mantissa bounds for s > 0),
so an observation costs a frexp, a bisect and a dict update. Past ``max_buckets`` buckets the
schema is lowered by one, merging each pair of buckets, as client_golang does.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_left
from dataclasses import dataclass

SCHEMA_MIN = -4
SCHEMA_MAX = 8
#: client_golang's DefNativeHistogramZeroThreshold
DEFAULT_ZERO_THRESHOLD = 2.0**-128
DEFAULT_BUCKET_FACTOR = 1.1
DEFAULT_MAX_BUCKETS = 160
_INF = math.inf


@dataclass(frozen=True, slots=True)
class NativeSpec:
    """A target's native histogram settings (part of its series identity, like buckets)."""

    bucket_factor: float = DEFAULT_BUCKET_FACTOR
    max_buckets: int = DEFAULT_MAX_BUCKETS
    zero_threshold: float = DEFAULT_ZERO_THRESHOLD

    @property
    def schema(self) -> int:
        return pick_schema(self.bucket_factor)


DEFAULT_NATIVE = NativeSpec()


def pick_schema(bucket_factor: float) -> int:
    """The schema with the largest base ``2^(2^-schema)`` that is at most ``bucket_factor``
    (> 1), i.e. the coarsest within it, clamped to -4..8 (client_golang's pickSchema)."""
    if not bucket_factor > 1:
        raise ValueError("bucket factor must be greater than 1")
    floor = math.floor(math.log2(math.log2(bucket_factor)))
    if floor <= -SCHEMA_MAX:
        return SCHEMA_MAX
    if floor >= -SCHEMA_MIN:
        return SCHEMA_MIN
    return -floor


#: per positive schema, the mantissa bounds in [0.5, 1) of the buckets of one power of two
_BOUNDS: dict[int, list[float]] = {
    s: [2.0 ** (j / 2**s) / 2 for j in range(2**s)] for s in range(1, SCHEMA_MAX + 1)
}


def bucket_index(value: float, schema: int) -> int:
    """The index of the bucket holding ``abs(value)`` (> 0, finite) at ``schema``."""
    frac, exp = math.frexp(abs(value))
    if schema > 0:
        bounds = _BOUNDS[schema]
        return bisect_left(bounds, frac) + (exp - 1) * len(bounds)
    key = exp - 1 if frac == 0.5 else exp
    offset = (1 << -schema) - 1
    return (key + offset) >> -schema


def upper_bound(index: int, schema: int) -> float:
    """The inclusive upper bound of bucket ``index`` at ``schema`` (for tests and checks)."""
    return float(2.0 ** (index * 2.0**-schema))


class NativeBuckets:
    """The sparse buckets of one histogram: counts by index, positive and negative."""

    __slots__ = (
        "bounds",
        "max_buckets",
        "negative",
        "positive",
        "schema",
        "zero_count",
        "zero_threshold",
    )

    def __init__(self, spec: NativeSpec = DEFAULT_NATIVE) -> None:
        self.zero_threshold = spec.zero_threshold
        self.max_buckets = spec.max_buckets
        self.zero_count = 0
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self._set_schema(spec.schema)

    def _set_schema(self, schema: int) -> None:
        self.schema = schema
        #: the mantissa bounds of ``schema`` (None at schema <= 0, where no table is needed)
        self.bounds = _BOUNDS.get(schema)

    def observe(self, value: float) -> None:
        # the common case (a positive duration) inlined: a frexp, a bisect, a dict update
        bounds = self.bounds
        if value > self.zero_threshold and value < _INF and bounds is not None:
            frac, exp = math.frexp(value)
            key = bisect_left(bounds, frac) + (exp - 1) * len(bounds)
            side = self.positive
        elif abs(value) <= self.zero_threshold or value != value:
            self.zero_count += 1
            return
        else:
            side = self.positive if value > 0 else self.negative
            if value in (_INF, -_INF):  # one past the largest float's bucket
                key = bucket_index(sys.float_info.max, self.schema) + 1
            else:
                key = bucket_index(value, self.schema)
        n = side.get(key)
        if n is not None:
            side[key] = n + 1
            return
        side[key] = 1
        # client_golang halves once per new bucket; widely spread values can need more
        while len(self.positive) + len(self.negative) > self.max_buckets:
            if not self.double_width():
                break

    def double_width(self) -> bool:
        """Lower the schema by one, merging bucket pairs (client_golang's doubleBucketWidth);
        False at the coarsest schema, which stays."""
        if self.schema <= SCHEMA_MIN:
            return False
        self._set_schema(self.schema - 1)
        self.positive = _merge(self.positive)
        self.negative = _merge(self.negative)
        return True


def _merge(counts: dict[int, int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for k, n in counts.items():
        k2 = (k + 1) >> 1  # ceil(k / 2): bucket k of schema s lies in bucket k2 of s - 1
        out[k2] = out.get(k2, 0) + n
    return out


def spans_and_deltas(counts: dict[int, int]) -> tuple[list[tuple[int, int]], list[int]]:
    """The protobuf form of ``counts``: (offset, length) spans and count deltas.

    A span's offset is its gap from the previous span's end (the first's is its start index);
    each delta is a bucket's count minus the previous bucket's, across spans.
    """
    spans: list[tuple[int, int]] = []
    deltas: list[int] = []
    prev_key: int | None = None
    prev_count = 0
    for key in sorted(counts):
        n = counts[key]
        if prev_key is None:
            spans.append((key, 1))
        elif key == prev_key + 1:
            offset, length = spans[-1]
            spans[-1] = (offset, length + 1)
        else:
            spans.append((key - prev_key - 1, 1))
        deltas.append(n - prev_count)
        prev_key, prev_count = key, n
    return spans, deltas
