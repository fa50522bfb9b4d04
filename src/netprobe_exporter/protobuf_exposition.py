"""Rendering the store as varint-length-delimited ``io.prometheus.client.MetricFamily`` messages.

Prometheus asks for this format to get native histograms: every histogram here carries both its
classic buckets and its native ones, as client_golang sends them. The same families and values
as the text formats, written from the same store. A family is sent as one message per chunk of
``exposition.CHUNK_TARGETS`` targets (Prometheus' parser takes each message on its own), so a
large scrape interleaves with probe I/O as the text one does.

Messages are built with the protobuf package on client_model's schema, except the parts that
dominate a large scrape, encoded here in the same wire format: a message's encodings
concatenate into the merged message, so each target's labels are encoded once (cached on its
series) and joined with each metric's value; scalar values and classic buckets are written
directly. ``tests/unit/test_protobuf_exposition.py`` parses it all back with the package.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from netprobe_exporter import exposition
from netprobe_exporter.metrics import Histogram, MetricsStore, TargetSeries, prober_families
from netprobe_exporter.nhist import spans_and_deltas
from netprobe_exporter.probes import Family
from netprobe_exporter.promproto import metrics_pb2

#: the generated message classes (the protobuf runtime has no type information)
pb: Any = metrics_pb2

CHUNK_TARGETS = exposition.CHUNK_TARGETS

Pairs = tuple[tuple[str, str], ...]
#: one target's metrics of a family: (extra label pairs, value or histogram)
ProtoRow = Callable[[TargetSeries], Iterable[tuple[Pairs, float | Histogram]]]

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


def histogram_message(h: Histogram) -> Any:
    """Classic buckets (cumulative, +Inf left out as the schema allows) and native ones."""
    buckets = []
    cum = 0
    for bound, c in zip(h.bounds, h.counts, strict=False):
        cum += c
        buckets.append(pb.Bucket(cumulative_count=cum, upper_bound=bound))
    native = _native_message(h)
    native.bucket.extend(buckets)
    return native


def _native_message(h: Histogram) -> Any:
    """A Histogram message with the count, sum and native buckets, no classic buckets."""
    nb = h.native
    pos_spans, pos_deltas = spans_and_deltas(nb.positive.as_dict())
    neg_spans, neg_deltas = spans_and_deltas({} if nb.negative is None else nb.negative.as_dict())
    if not pos_spans and not neg_spans:
        pos_spans = [(0, 0)]  # a no-op span: native even before the first observation
    return pb.Histogram(
        sample_count=h.count,
        sample_sum=h.sum,
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
    """The classic buckets as Histogram field 3, encoded here: building 16 Bucket messages
    per histogram costs most of a 10,000-target scrape, and each is two plain fields."""
    bounds = _bound_cache.get(h.bounds)
    if bounds is None:
        bounds = _bound_cache[h.bounds] = [b"\x11" + _DOUBLE.pack(b) for b in h.bounds]
    out = []
    cum = 0
    for bound, c in zip(bounds, h.counts, strict=False):
        cum += c
        bucket = b"\x08" + varint(cum) + bound  # cumulative_count (1, varint), upper_bound
        out.append(b"\x1a" + _ONE_BYTE[len(bucket)] + bucket)  # at most 20 bytes long
    return b"".join(out)


def histogram_bytes(h: Histogram) -> bytes:
    """``histogram_message(h)`` encoded (the native part by the protobuf package)."""
    native: bytes = _native_message(h).SerializeToString()
    return native + _classic_bytes(h)


def label_bytes(pairs: Iterable[tuple[str, str]]) -> bytes:
    """A Metric message holding only ``pairs``; a message's encodings concatenate into the
    merged message, so a target's labels are encoded once and reused for each of its metrics."""
    labels = [pb.LabelPair(name=k, value=v) for k, v in pairs]
    data: bytes = pb.Metric(label=labels).SerializeToString()
    return data


#: Metric's value fields (counter 3, gauge 2, untyped 5: a message of one double, field 1),
#: tag and length of the field and tag of the double; histogram (7) is length-delimited
_SCALAR_PREFIX = {
    pb.COUNTER: b"\x1a\x09\x09",
    pb.GAUGE: b"\x12\x09\x09",
    pb.UNTYPED: b"\x2a\x09\x09",
}
_HISTOGRAM_TAG = b"\x3a"
_DOUBLE = struct.Struct("<d")


def _value_bytes(kind: int, value: float | Histogram) -> bytes:
    """A Metric message holding only its value (counter, gauge, untyped or histogram)."""
    if isinstance(value, Histogram):
        h = histogram_bytes(value)
        return _HISTOGRAM_TAG + varint(len(h)) + h
    return _SCALAR_PREFIX[kind] + _DOUBLE.pack(value)


#: the encoded extra labels of a sample (``result``, ``phase``: a few values each)
_extra_cache: dict[Pairs, bytes] = {(): b""}


def _extra_bytes(extra: Pairs) -> bytes:
    found = _extra_cache.get(extra)
    if found is None:
        found = label_bytes(extra)
        if len(_extra_cache) < 1024:  # ip and info values vary per target: not all kept
            _extra_cache[extra] = found
    return found


def _target_labels(s: TargetSeries) -> bytes:
    found = s.pb_labels
    if found is None:
        found = s.pb_labels = label_bytes(s.pairs)
    return found


def _metric(kind: int, pairs: Iterable[tuple[str, str]], value: float | Histogram) -> bytes:
    return label_bytes(pairs) + _value_bytes(kind, value)


def _attr(attr: str) -> ProtoRow:
    def row(s: TargetSeries) -> Iterable[tuple[Pairs, float | Histogram]]:
        value: float | Histogram | None = getattr(s, attr)
        return () if value is None else (((), value),)

    return row


def _results(s: TargetSeries) -> Iterable[tuple[Pairs, float | Histogram]]:
    return [((("result", r),), float(n)) for r, n in s.results.items()]


def _info(s: TargetSeries) -> Iterable[tuple[Pairs, float | Histogram]]:
    return () if s.ip is None else (((("ip", s.ip),), 1.0),)


def _family_row(f: Family) -> ProtoRow:
    name, label = f.name, f.label

    def histograms(s: TargetSeries) -> Iterable[tuple[Pairs, float | Histogram]]:
        found = None if s.histograms is None else s.histograms.get(name)
        if found is None:
            return ()
        if not f.label_values:
            return (((), found[0]),)
        return [(((label, v),), h) for v, h in zip(f.label_values, found, strict=False)]

    def gauge(s: TargetSeries) -> Iterable[tuple[Pairs, float | Histogram]]:
        value = None if s.gauges is None else s.gauges.get(name)
        return () if value is None else (((), value),)

    def info(s: TargetSeries) -> Iterable[tuple[Pairs, float | Histogram]]:
        value = None if s.infos is None else s.infos.get(name)
        return () if value is None else ((((label, value),), 1.0),)

    def counter(s: TargetSeries) -> Iterable[tuple[Pairs, float | Histogram]]:
        found = None if s.counters is None else s.counters.get(name)
        if found is None:
            return ()
        if not f.label_values:
            return (((), found[0]),)
        return [(((label, v),), c) for v, c in zip(f.label_values, found, strict=False)]

    return {"histogram": histograms, "info": info, "counter": counter}.get(f.kind, gauge)


def _core_rows() -> dict[str, ProtoRow]:
    return {
        "netprobe_up": _attr("up"),
        "netprobe_probes_total": _results,
        "netprobe_connect_duration_seconds": _attr("connect"),
        "netprobe_probe_duration_seconds": _attr("probe"),
        "netprobe_last_connect_duration_seconds": _attr("last_connect"),
        "netprobe_last_probe_timestamp_seconds": _attr("last_probe_ts"),
        "netprobe_last_success_timestamp_seconds": _attr("last_success_ts"),
        "netprobe_target_info": _info,
    }


def _target_families() -> list[tuple[str, str, str, ProtoRow]]:
    """The text formats' target families (same names, types, help, order), as proto rows."""
    # the text renderer owns the family order
    rows = {**_core_rows(), **{n: _family_row(f) for n, f in prober_families().items()}}
    return [(name, kind, help_text, rows[name]) for name, kind, help_text, _ in
            exposition.current_families()]  # fmt: skip


#: MetricFamily's ``metric`` field (4), length-delimited: its tag byte
_METRIC_TAG = b"\x22"


def _family(name: str, kind: str, help_text: str, metrics: list[bytes]) -> bytes:
    """One delimited MetricFamily: its header fields, then each encoded Metric as field 4."""
    head: bytes = pb.MetricFamily(name=name, help=help_text, type=_TYPES[kind]).SerializeToString()
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
    series = list(store.series.values())
    for name, kind, help_text, row in _target_families():
        t = _TYPES[kind]
        for i in range(0, len(series), CHUNK_TARGETS):
            metrics = [
                _target_labels(s) + _extra_bytes(extra) + _value_bytes(t, value)
                for s in series[i : i + CHUNK_TARGETS]
                for extra, value in row(s)
            ]
            if metrics:
                yield _family(name, kind, help_text, metrics)
    yield b"".join(_exporter_families(store))
    if registry is not None:
        yield b"".join(_registry_families(registry))
