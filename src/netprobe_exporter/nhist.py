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
from array import array
from bisect import bisect_left
from dataclasses import dataclass

SCHEMA_MIN = -4
SCHEMA_MAX = 8
#: client_golang's DefNativeHistogramZeroThreshold
DEFAULT_ZERO_THRESHOLD = 2.0**-128
DEFAULT_BUCKET_FACTOR = 1.1
DEFAULT_MAX_BUCKETS = 160
_INF = math.inf
#: empty buckets between two populated ones that stay in one span (client_golang's rule)
GAP_FILLED = 2
#: empty buckets a histogram's one span may hold between its first and last populated ones
ONE_SPAN_EMPTY = 16


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


class Counts:
    """Bucket counts by index, held densely from ``start``: a few hundred bytes per histogram
    where a dict of the same buckets takes over a kilobyte (10,000 TCP targets with ~18 buckets
    each: +17 MB in all against +44 MB). Durations span a bounded range of indexes
    (nanoseconds to hours: about 340 at schema 3)."""

    __slots__ = ("counts", "populated", "start")

    def __init__(self) -> None:
        self.start = 0
        self.counts = array("Q")
        #: buckets with a count, what max_buckets bounds
        self.populated = 0

    def add(self, key: int) -> bool:
        """Count one in bucket ``key``; True if that bucket had none before."""
        c = self.counts
        i = key - self.start
        if 0 <= i < len(c):
            n = c[i]
            c[i] = n + 1
            if n:
                return False
        elif not c:
            self.start = key
            c.append(1)
        elif i < 0:
            grown = array("Q", bytes(8 * -i))
            grown.extend(c)
            grown[0] = 1
            self.counts, self.start = grown, key
        else:
            c.frombytes(bytes(8 * (i + 1 - len(c))))
            c[i] = 1
        self.populated += 1
        return True

    def as_dict(self) -> dict[int, int]:
        """The populated buckets: count by index."""
        start = self.start
        return {start + i: n for i, n in enumerate(self.counts) if n}

    def merged(self) -> Counts:
        """The same counts one schema coarser: bucket k lies in bucket ceil(k / 2)."""
        out = Counts()
        for k, n in self.as_dict().items():
            k2 = (k + 1) >> 1
            out.add(k2)
            out.counts[k2 - out.start] += n - 1
        return out


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
        self.positive = Counts()
        #: made by the first negative value (durations have none)
        self.negative: Counts | None = None
        self._set_schema(spec.schema)

    def _set_schema(self, schema: int) -> None:
        self.schema = schema
        #: the mantissa bounds of ``schema`` (None at schema <= 0, where no table is needed)
        self.bounds = _BOUNDS.get(schema)

    def observe(self, value: float) -> None:
        # the common case (a positive duration) inlined: a frexp, a bisect, an array update
        bounds = self.bounds
        if value > self.zero_threshold and value < _INF and bounds is not None:
            frac, exp = math.frexp(value)
            key = bisect_left(bounds, frac) + (exp - 1) * len(bounds)
            side = self.positive
        elif abs(value) <= self.zero_threshold or value != value:
            self.zero_count += 1
            return
        else:
            if value > 0:
                side = self.positive
            else:
                side = self.negative = self.negative or Counts()
            if value in (_INF, -_INF):  # one past the largest float's bucket
                key = bucket_index(sys.float_info.max, self.schema) + 1
            else:
                key = bucket_index(value, self.schema)
        if not side.add(key):
            return
        # client_golang halves once per new bucket; widely spread values can need more
        negative = 0 if self.negative is None else self.negative.populated
        while self.positive.populated + negative > self.max_buckets:
            if not self.double_width():
                break

    def double_width(self) -> bool:
        """Lower the schema by one, merging bucket pairs (client_golang's doubleBucketWidth);
        False at the coarsest schema, which stays."""
        if self.schema <= SCHEMA_MIN:
            return False
        self._set_schema(self.schema - 1)
        self.positive = self.positive.merged()
        if self.negative is not None:
            self.negative = self.negative.merged()
        return True


def spans_and_deltas(counts: dict[int, int]) -> tuple[list[tuple[int, int]], list[int]]:
    """The protobuf form of ``counts``: (offset, length) spans and count deltas.

    A span's offset is its gap from the previous span's end (the first's is its start index);
    each delta is a bucket's count minus the previous bucket's, across spans. A gap of one or
    two empty buckets is filled with zero-count buckets rather than starting a span (cheaper
    on the wire), as client_golang's makeBuckets does. When at most ONE_SPAN_EMPTY buckets
    between the first and the last are empty, they are all filled and there is one span: a
    few bytes more than client_golang's spans, and a tenth of the cost to encode here.
    """
    if counts:
        first, last = min(counts), max(counts)
        if last - first + 1 - len(counts) <= ONE_SPAN_EMPTY:
            run = [counts.get(k, 0) for k in range(first, last + 1)]
            return [(first, len(run))], [n - p for n, p in zip(run, [0, *run], strict=False)]
    spans: list[tuple[int, int]] = []
    deltas: list[int] = []
    prev_key: int | None = None
    prev_count = 0
    for key in sorted(counts):
        n = counts[key]
        if prev_key is None:
            spans.append((key, 1))
        elif key - prev_key <= GAP_FILLED + 1:
            for _ in range(key - prev_key - 1):
                deltas.append(-prev_count)
                prev_count = 0
            offset, length = spans[-1]
            spans[-1] = (offset, length + key - prev_key)
        else:
            spans.append((key - prev_key - 1, 1))
        deltas.append(n - prev_count)
        prev_key, prev_count = key, n
    return spans, deltas
