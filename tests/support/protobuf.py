"""Reading a delimited protobuf exposition back with the ``protobuf`` package."""

from __future__ import annotations

from typing import Any

from netprobe_exporter.promproto import metrics_pb2

pb: Any = metrics_pb2

SampleKey = tuple[str, frozenset[tuple[str, str]]]


def read_families(data: bytes) -> list[Any]:
    """Each varint-length-prefixed MetricFamily message of ``data``, in order."""
    out: list[Any] = []
    pos = 0
    while pos < len(data):
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        assert pos + length <= len(data), "a message runs past the end"
        family = pb.MetricFamily()
        family.ParseFromString(data[pos : pos + length])
        out.append(family)
        pos += length
    return out


def text_samples(families: list[Any]) -> dict[SampleKey, float]:
    """The samples the text format would show for ``families`` (classic histograms, +Inf)."""
    out: dict[SampleKey, float] = {}
    for fam in families:
        for m in fam.metric:
            labels = {(p.name, p.value) for p in m.label}
            if m.HasField("histogram"):
                h = m.histogram
                for b in h.bucket:
                    le = repr(b.upper_bound)
                    out[(f"{fam.name}_bucket", frozenset(labels | {("le", le)}))] = float(
                        b.cumulative_count
                    )
                inf = frozenset(labels | {("le", "+Inf")})
                out[(f"{fam.name}_bucket", inf)] = float(h.sample_count)
                out[(f"{fam.name}_count", frozenset(labels))] = float(h.sample_count)
                out[(f"{fam.name}_sum", frozenset(labels))] = h.sample_sum
            else:
                kind = next(k for k in ("counter", "gauge", "untyped") if m.HasField(k))
                out[(fam.name, frozenset(labels))] = getattr(m, kind).value
    return out


def native_counts(h: Any) -> dict[int, int]:
    """A native histogram's populated positive buckets, count by index, from its spans and
    deltas (spans may hold empty buckets in short gaps, as client_golang's do)."""
    counts: dict[int, int] = {}
    index = 0
    count = 0
    deltas = iter(h.positive_delta)
    for i, span in enumerate(h.positive_span):
        index = span.offset if i == 0 else index + span.offset
        for _ in range(span.length):
            count += next(deltas)
            if count:
                counts[index] = count
            index += 1
    return counts
