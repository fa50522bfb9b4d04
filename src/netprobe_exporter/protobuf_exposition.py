"""Rendering the store as varint-length-delimited ``io.prometheus.client.MetricFamily`` messages.

Prometheus asks for this format to get native histograms: every histogram here carries both its
classic buckets and its native ones, as client_golang sends them. The same families and values
as the text formats, written from the same store. A family is sent as one message per chunk of
``exposition.CHUNK_TARGETS`` targets (Prometheus' parser takes each message on its own), so a
large scrape interleaves with probe I/O as the text one does.

The schema is client_model's and the protobuf package builds the family headers, the labels of
each target (cached on its series) and the reference ``histogram_message``. The parts that
dominate a large scrape (the value of each metric, the classic and native buckets of each
histogram) are encoded here in the same wire format, byte for byte what the package writes for
the same message (fields in number order): building ~40 sub-messages per histogram with the
package costs ~35 µs, these table lookups a few. A message's encodings concatenate into the
merged message, so a Metric is its labels' bytes joined with its value's.
``tests/unit/test_protobuf_exposition.py`` compares them with the package's and parses it all
back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from itertools import accumulate, chain
from operator import add, attrgetter, sub
from typing import Any

from prometheus_client import CollectorRegistry

from netprobe_exporter import exposition
from netprobe_exporter.metrics import Histogram, MetricsStore, TargetSeries, prober_families
from netprobe_exporter.model import RESULTS
from netprobe_exporter.nhist import (
    GAP_FILLED,
    ONE_SPAN_EMPTY,
    Counts,
    NativeBuckets,
    spans_and_deltas,
)
from netprobe_exporter.probes import Family
from netprobe_exporter.promproto import metrics_pb2

#: the generated message classes (the protobuf runtime has no type information)
pb: Any = metrics_pb2

CHUNK_TARGETS = exposition.CHUNK_TARGETS

Pairs = tuple[tuple[str, str], ...]
#: the encoded Metric messages of one family for a chunk of targets
ProtoRows = Callable[[list[TargetSeries]], list[bytes]]

_TYPES = {
    "counter": pb.COUNTER,
    "gauge": pb.GAUGE,
    "histogram": pb.HISTOGRAM,
    "summary": pb.SUMMARY,
    "untyped": pb.UNTYPED,
}

_ONE_BYTE = [bytes((i,)) for i in range(128)]


def varint(n: int) -> bytes:
    """``n`` (>= 0) as a protobuf varint: the length prefix of each delimited message."""
    if n < 128:
        return _ONE_BYTE[n]
    if n < 16384:
        return bytes((n & 0x7F | 0x80, n >> 7))
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def zigzag(n: int) -> int:
    """A sint32/sint64 value as the varint it is written as."""
    return n << 1 if n >= 0 else (-n << 1) - 1


#: counts below this have their encodings in the tables below (two-byte varints at most:
#: what a fresh exporter's histograms hold for hours); larger ones are encoded as they come
_TABLE = 1 << 14
#: a classic Bucket's field tag (histogram field 3), length and cumulative_count tag and
#: varint, by cumulative count; its upper_bound (tag and double) follows
_BUCKET_HEAD = [
    b"\x1a" + _ONE_BYTE[10 + len(varint(c))] + b"\x08" + varint(c) for c in range(_TABLE)
]
#: a positive_delta (histogram field 13, unpacked as the proto2 schema has it), by delta
_POSITIVE_DELTA = {d: b"\x68" + varint(zigzag(d)) for d in range(-2048, 2048)}

_DOUBLE = struct.Struct("<d").pack


def _bucket_head(c: int) -> bytes:
    return (
        _BUCKET_HEAD[c]
        if c < _TABLE
        else b"\x1a" + _ONE_BYTE[10 + len(varint(c))] + b"\x08" + varint(c)
    )


def histogram_message(h: Histogram) -> Any:
    """The reference: classic buckets (cumulative, +Inf left out as the schema allows) and
    native ones, built with the protobuf package (``histogram_bytes`` writes the same)."""
    buckets = []
    cum = 0
    for bound, c in zip(h.bounds, h.counts, strict=False):
        cum += c
        buckets.append(pb.Bucket(cumulative_count=cum, upper_bound=bound))
    nb = h.native
    pos_spans, pos_deltas = spans_and_deltas(nb.positive.as_dict())
    neg_spans, neg_deltas = spans_and_deltas({} if nb.negative is None else nb.negative.as_dict())
    if not pos_spans and not neg_spans:
        pos_spans = [(0, 0)]  # a no-op span: native even before the first observation
    return pb.Histogram(
        sample_count=h.count,
        sample_sum=h.sum,
        bucket=buckets,
        schema=nb.schema,
        zero_threshold=nb.zero_threshold,
        zero_count=nb.zero_count,
        positive_span=[pb.BucketSpan(offset=o, length=n) for o, n in pos_spans],
        positive_delta=pos_deltas,
        negative_span=[pb.BucketSpan(offset=o, length=n) for o, n in neg_spans],
        negative_delta=neg_deltas,
    )


#: per bucket bounds, each Bucket's encoded ``upper_bound`` (field 2, a double)
_bound_cache: dict[tuple[float, ...], list[bytes]] = {}


def _classic_bytes(h: Histogram) -> bytes:
    """The classic buckets (field 3), +Inf left out: table lookups joined in C while the
    counts are small, one varint at a time beyond."""
    bounds = _bound_cache.get(h.bounds)
    if bounds is None:
        bounds = _bound_cache[h.bounds] = [b"\x11" + _DOUBLE(b) for b in h.bounds]
    if h.count < _TABLE:  # no cumulative count exceeds the total
        return b"".join(map(add, map(_BUCKET_HEAD.__getitem__, accumulate(h.counts)), bounds))
    return b"".join(
        [_bucket_head(c) + b for c, b in zip(accumulate(h.counts), bounds, strict=False)]
    )


#: per (schema, zero threshold): fields 5 (schema, sint32) and 6, then field 7's tag
_native_fixed: dict[tuple[int, float], bytes] = {}


def _spans(counts: Counts) -> tuple[list[tuple[int, int]], Iterable[int]]:
    """``counts`` as ``spans_and_deltas`` has them: spans (offset from the previous span's end,
    length; gaps of up to GAP_FILLED empty buckets inside a span) and the counts the spans
    cover, in order, found with bytes searches rather than a loop over the buckets."""
    arr = counts.counts
    if len(arr) - counts.populated <= ONE_SPAN_EMPTY:  # one span: the common case
        return [(counts.start, len(arr))], arr
    mask = bytes(map(bool, arr))  # 1 where a bucket is populated
    gap = b"\x00" * (GAP_FILLED + 1)
    last = len(mask.rstrip(b"\x00"))
    spans: list[tuple[int, int]] = []
    covered: list[int] = []
    end = -1
    start = mask.find(1)
    while 0 <= start < last:
        stop = mask.find(gap, start)
        stop = last if stop < 0 else stop
        spans.append((counts.start + start if end < 0 else start - end, stop - start))
        covered += arr[start:stop]
        end = stop
        start = mask.find(1, stop)
    return spans, covered


def _span_bytes(tag: bytes, spans: list[tuple[int, int]]) -> bytes:
    out = []
    for offset, length in spans:
        span = b"\x08" + varint(zigzag(offset)) + b"\x10" + varint(length)
        out.append(tag + _ONE_BYTE[len(span)] + span)
    return b"".join(out)


def _delta_bytes(tag: bytes, populated: Iterable[int]) -> bytes:
    counts = list(populated)
    deltas = list(map(sub, counts, chain((0,), counts)))
    if tag == b"\x68":
        try:
            return b"".join(map(_POSITIVE_DELTA.__getitem__, deltas))
        except KeyError:
            pass
    return b"".join([tag + varint(zigzag(d)) for d in deltas])


#: the no-op span (offset 0, length 0) of a native histogram with no bucket populated yet
_EMPTY_SPAN = b"\x62\x04\x08\x00\x10\x00"


def _native_bytes(nb: NativeBuckets) -> bytes:
    """Fields 5 to 13: schema, zero bucket, negative and positive spans and deltas."""
    fixed = _native_fixed.get((nb.schema, nb.zero_threshold))
    if fixed is None:
        fixed = _native_fixed[(nb.schema, nb.zero_threshold)] = _fixed_bytes(nb)
    z = nb.zero_count
    out = [fixed, _ONE_BYTE[z] if z < 128 else varint(z)]
    neg = nb.negative
    if neg is not None and neg.populated:
        spans, populated = _spans(neg)
        out += (_span_bytes(b"\x4a", spans), _delta_bytes(b"\x50", populated))
    pos = nb.positive
    if pos.populated:
        spans, populated = _spans(pos)
        out += (_span_bytes(b"\x62", spans), _delta_bytes(b"\x68", populated))
    elif neg is None or not neg.populated:
        out.append(_EMPTY_SPAN)
    return b"".join(out)


def histogram_bytes(h: Histogram) -> bytes:
    """``histogram_message(h)`` encoded: the same bytes the protobuf package writes."""
    n = h.count
    nb = h.native
    pos = nb.positive
    arr = pos.counts
    if (
        n >= _TABLE
        or nb.negative is not None
        or not arr
        or len(arr) - pos.populated > ONE_SPAN_EMPTY
    ):
        return b"".join((
            b"\x08", varint(n), b"\x11", _DOUBLE(h.sum), _classic_bytes(h), _native_bytes(nb),
        ))  # fmt: skip
    # the common case in one place, every loop in C: small counts, one span, no negatives
    # (counts has no zero at its ends: only its populated buckets ever extend it)
    classic = _classic_template(h.bounds).copy()
    classic[0::2] = map(_BUCKET_HEAD.__getitem__, accumulate(h.counts[: len(h.bounds)]))
    fixed = _native_fixed.get((nb.schema, nb.zero_threshold))
    if fixed is None:
        fixed = _native_fixed[(nb.schema, nb.zero_threshold)] = _fixed_bytes(nb)
    span = _one_span.get((pos.start, len(arr)))
    if span is None:
        span = _span_bytes(b"\x62", [(pos.start, len(arr))])
        if len(_one_span) < 4096:
            _one_span[(pos.start, len(arr))] = span
    try:
        deltas = b"".join(map(_POSITIVE_DELTA.__getitem__, map(sub, arr, chain((0,), arr))))
    except KeyError:
        deltas = _delta_bytes(b"\x68", arr)
    return b"".join((
        b"\x08", _ONE_BYTE[n] if n < 128 else varint(n), b"\x11", _DOUBLE(h.sum),
        b"".join(classic), fixed, varint(nb.zero_count), span, deltas,
    ))  # fmt: skip


#: per bucket bounds, the classic buckets' parts with each head (tag, length, count) unset
_classic_templates: dict[tuple[float, ...], list[bytes]] = {}


def _classic_template(bounds: tuple[float, ...]) -> list[bytes]:
    found = _classic_templates.get(bounds)
    if found is None:
        found = _classic_templates[bounds] = [b""] * (2 * len(bounds))
        found[1::2] = [b"\x11" + _DOUBLE(b) for b in bounds]
    return found


#: the encoded span of a histogram whose populated buckets are one run, by (start, length)
_one_span: dict[tuple[int, int], bytes] = {}


def _fixed_bytes(nb: NativeBuckets) -> bytes:
    return b"\x28" + varint(zigzag(nb.schema)) + b"\x31" + _DOUBLE(nb.zero_threshold) + b"\x38"


def _histogram_field(h: Histogram) -> bytes:
    """Metric field 7 holding ``h``."""
    data = histogram_bytes(h)
    return _HISTOGRAM_TAG + varint(len(data)) + data


def label_bytes(pairs: Iterable[tuple[str, str]]) -> bytes:
    """A Metric message holding only ``pairs``; a message's encodings concatenate into the
    merged message, so a target's labels are encoded once and reused for each of its metrics."""
    labels = [pb.LabelPair(name=k, value=v) for k, v in pairs]
    data: bytes = pb.Metric(label=labels).SerializeToString()
    return data


def _string(tag: bytes, text: str) -> bytes:
    data = text.encode("utf-8")
    return tag + varint(len(data)) + data


def pair_bytes(name: str, value: str) -> bytes:
    """``label_bytes(((name, value),))`` written here, for values that vary per target."""
    pair = _string(b"\x0a", name) + _string(b"\x12", value)
    return b"\x0a" + varint(len(pair)) + pair


#: Metric's value fields (counter 3, gauge 2, untyped 5: a message of one double, field 1),
#: tag and length of the field and tag of the double; histogram (7) is length-delimited
_SCALAR_PREFIX = {
    pb.COUNTER: b"\x1a\x09\x09",
    pb.GAUGE: b"\x12\x09\x09",
    pb.UNTYPED: b"\x2a\x09\x09",
}
_GAUGE = _SCALAR_PREFIX[pb.GAUGE]
_COUNTER = _SCALAR_PREFIX[pb.COUNTER]
_HISTOGRAM_TAG = b"\x3a"


def _value_bytes(kind: int, value: float | Histogram) -> bytes:
    """A Metric message holding only its value (counter, gauge, untyped or histogram)."""
    if isinstance(value, Histogram):
        return _histogram_field(value)
    return _SCALAR_PREFIX[kind] + _DOUBLE(value)


def _target_labels(s: TargetSeries) -> bytes:
    found = s.pb_labels
    if found is None:
        found = s.pb_labels = label_bytes(s.pairs)
    return found


def _metric(kind: int, pairs: Iterable[tuple[str, str]], value: float | Histogram) -> bytes:
    return label_bytes(pairs) + _value_bytes(kind, value)


def _gauge_rows(attr: str) -> ProtoRows:
    get = attrgetter(attr)

    def rows(chunk: list[TargetSeries]) -> list[bytes]:
        return [_target_labels(s) + _GAUGE + _DOUBLE(v) for s in chunk if (v := get(s)) is not None]

    return rows


#: each result's label pair and the counter field's prefix
_RESULT_PREFIXES = [pair_bytes("result", r) + _COUNTER for r in RESULTS]


def _results_rows(chunk: list[TargetSeries]) -> list[bytes]:
    out: list[bytes] = []
    for s in chunk:
        labels = _target_labels(s)
        out += [
            labels + prefix + _DOUBLE(n)
            for prefix, n in zip(_RESULT_PREFIXES, s.result_counts, strict=True)
        ]
    return out


def _hist_rows(attr: str) -> ProtoRows:
    get = attrgetter(attr)

    def rows(chunk: list[TargetSeries]) -> list[bytes]:
        return [_target_labels(s) + _histogram_field(get(s)) for s in chunk]

    return rows


def _info_rows(chunk: list[TargetSeries]) -> list[bytes]:
    return [
        _target_labels(s) + pair_bytes("ip", s.ip) + _GAUGE + _DOUBLE(1.0)
        for s in chunk
        if s.ip is not None
    ]


def _changes_rows(chunk: list[TargetSeries]) -> list[bytes]:
    return [
        _target_labels(s) + _COUNTER + _DOUBLE(s.address_changes)
        for s in chunk
        if s.shows_address_changes
    ]


def _addresses_rows(up: bool) -> ProtoRows:
    def rows(chunk: list[TargetSeries]) -> list[bytes]:
        out = []
        for s in chunk:
            if s.children is not None:
                labels = _target_labels(s)
                for family, probed, n_up in s.address_counts():
                    value = float(n_up if up else probed)
                    out.append(labels + pair_bytes("family", family) + _GAUGE + _DOUBLE(value))
        return out

    return rows


def _family_rows(f: Family) -> ProtoRows:
    name, label = f.name, f.label
    extras = [pair_bytes(label, v) for v in f.label_values] or [b""]

    def histograms(chunk: list[TargetSeries]) -> list[bytes]:
        out = []
        for s in chunk:
            found = None if s.histograms is None else s.histograms.get(name)
            if found is not None:
                labels = _target_labels(s)
                for extra, h in zip(extras, found, strict=False):  # made up to the highest seen
                    out.append(labels + extra + _histogram_field(h))
        return out

    def gauge(chunk: list[TargetSeries]) -> list[bytes]:
        out = []
        for s in chunk:
            value = None if s.gauges is None else s.gauges.get(name)
            if value is not None:
                out.append(_target_labels(s) + _GAUGE + _DOUBLE(value))
        return out

    def info(chunk: list[TargetSeries]) -> list[bytes]:
        out = []
        for s in chunk:
            value = None if s.infos is None else s.infos.get(name)
            if value is not None:
                out.append(_target_labels(s) + pair_bytes(label, value) + _GAUGE + _DOUBLE(1.0))
        return out

    def counter(chunk: list[TargetSeries]) -> list[bytes]:
        out = []
        for s in chunk:
            found = None if s.counters is None else s.counters.get(name)
            if found is not None:
                labels = _target_labels(s)
                for extra, v in zip(extras, found, strict=False):
                    out.append(labels + extra + _COUNTER + _DOUBLE(v))
        return out

    return {"histogram": histograms, "info": info, "counter": counter}.get(f.kind, gauge)


def _core_rows() -> dict[str, ProtoRows]:
    return {
        "netprobe_up": _gauge_rows("up"),
        "netprobe_probes_total": _results_rows,
        "netprobe_connect_duration_seconds": _hist_rows("connect"),
        "netprobe_probe_duration_seconds": _hist_rows("probe"),
        "netprobe_last_connect_duration_seconds": _gauge_rows("last_connect"),
        "netprobe_last_probe_timestamp_seconds": _gauge_rows("last_probe_ts"),
        "netprobe_last_success_timestamp_seconds": _gauge_rows("last_success_ts"),
        "netprobe_target_info": _info_rows,
        "netprobe_target_address_changes_total": _changes_rows,
        "netprobe_target_addresses": _addresses_rows(up=False),
        "netprobe_target_addresses_up": _addresses_rows(up=True),
    }


def _target_families() -> list[tuple[str, str, str, ProtoRows]]:
    """The text formats' target families (same names, types, help, order), as proto rows."""
    # the text renderer owns the family order
    rows = {**_core_rows(), **{n: _family_rows(f) for n, f in prober_families().items()}}
    return [(name, kind, help_text, rows[name]) for name, kind, help_text, _ in
            exposition.current_families()]  # fmt: skip


#: MetricFamily's ``metric`` field (4), length-delimited: its tag byte
_METRIC_TAG = b"\x22"


_METRIC_HEAD = [_METRIC_TAG + varint(n) for n in range(_TABLE)]


def _family(name: str, kind: str, help_text: str, metrics: list[bytes]) -> bytes:
    """One delimited MetricFamily: its header fields, then each encoded Metric as field 4."""
    head: bytes = pb.MetricFamily(name=name, help=help_text, type=_TYPES[kind]).SerializeToString()
    try:  # tag and length of each from a table, all in C
        heads = map(_METRIC_HEAD.__getitem__, map(len, metrics))
        body = b"".join(chain.from_iterable(zip(heads, metrics, strict=True)))
    except IndexError:  # a Metric of 16 KiB or more: labels near their length limits
        body = b"".join([_METRIC_TAG + varint(len(m)) + m for m in metrics])
    return varint(len(head) + len(body)) + head + body


def _exporter_families(store: MetricsStore) -> Iterator[bytes]:
    for name, kind, help_text, values in exposition.exporter_values(store):
        t = _TYPES[kind]
        yield _family(name, kind, help_text, [_metric(t, p, v) for p, v in values])


def _registry_families(registry: CollectorRegistry) -> Iterator[bytes]:
    """prometheus_client's collectors (process metrics): classic histograms only."""
    for fam in registry.collect():
        kind = fam.type if fam.type in _TYPES else "untyped"
        if kind in ("histogram", "summary"):
            continue  # the process collector has none; a classic one would need regrouping
        name = fam.name + "_total" if kind == "counter" else fam.name
        if fam.type == "info":
            name, kind = fam.name + "_info", "gauge"
        t = _TYPES[kind]
        metrics = [_metric(t, s.labels.items(), s.value) for s in fam.samples if s.name == name]
        if metrics:
            yield _family(name, kind, fam.documentation, metrics)


def render(store: MetricsStore, registry: CollectorRegistry | None) -> Iterator[bytes]:
    """Yield the exposition, one delimited message per family and chunk of targets."""
    series = store.all_series()
    for name, kind, help_text, rows in _target_families():
        for i in range(0, len(series), CHUNK_TARGETS):
            metrics = rows(series[i : i + CHUNK_TARGETS])
            if metrics:
                yield _family(name, kind, help_text, metrics)
    yield b"".join(_exporter_families(store))
    if registry is not None:
        yield b"".join(_registry_families(registry))
