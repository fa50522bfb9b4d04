"""The protobuf exposition, read back with the ``protobuf`` package: the same families and values
as the text output, native histograms beside the classic buckets, and the Accept negotiation."""

from __future__ import annotations

import gzip
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from netprobe_exporter import exposition, protobuf_exposition
from netprobe_exporter.config import Target
from netprobe_exporter.metrics import Histogram, MetricsStore
from netprobe_exporter.nhist import NativeSpec, bucket_index
from netprobe_exporter.probes import ProbeResult
from netprobe_exporter.probes.connect import ConnectInfo
from netprobe_exporter.probes.dns import DNSDetails, DNSPhases
from netprobe_exporter.probes.tcp import TCPDetails
from tests.support.protobuf import SampleKey, native_counts, read_families, text_samples
from tests.unit.test_exposition import samples, varied_store

A = Target("127.0.0.1:80", "tcp_connect", 1.0, (("team", 'st"or\\age\n'),), (0.001, 0.01, 0.1))
B = Target("[::1]:22", "tcp_connect", 1.0)
D = Target("127.0.0.1:53", "dns_udp", 1.0, (), (0.001, 0.01))
C = Target(
    "127.0.0.1:81", "tcp_connect", 1.0, native_histogram_bucket_factor=1.5,
    native_histogram_max_buckets=3, native_histogram_zero_threshold=0.0001,
)  # fmt: skip
CONNECTS = [0.0005, 0.05, 0.00123, 0.0031, 0.0031, 0.2]


def _store() -> MetricsStore:
    s = MetricsStore()
    s.sync([A, B, C, D])
    for i, connect in enumerate(CONNECTS):
        for t in (A, C):
            s.observe(t, ProbeResult(
                True, "success", connect + 0.0001, connect_duration=connect, ip="127.0.0.1",
                details=TCPDetails(connect=ConnectInfo(connect / 2)),
            ), 1000.0 + i)  # fmt: skip
    s.observe(B, ProbeResult(False, "refused", 0.0002, ip="::1", details=TCPDetails()), 1.0)
    answered = DNSDetails(phases=DNSPhases(0.0, 0.0, 0.004), query_succeeded=True)
    s.observe(D, ProbeResult(True, "success", 0.005, details=answered), 1.0)
    s.stats.lag.observe(0.002)
    s.stats.skipped = 3
    s.stats.reload_successful = 1.0
    return s


def _registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    Counter("demo_events", "Events.", ["kind"], registry=reg).labels("a").inc(4)
    Gauge("demo_level", "Level.", registry=reg).set(2.5)
    Info("demo", "Demo info.", registry=reg).info({"version": "1"})
    return reg


def _normal(got: dict[SampleKey, float]) -> dict[SampleKey, float]:
    """``le`` as a float, so that ``1e-05`` and ``1.0e-05`` compare equal."""
    out = {}
    for (name, labels), v in got.items():
        fixed = frozenset((k, repr(float(x)) if k == "le" else x) for k, x in labels)
        out[(name, fixed)] = v
    return out


def _proto(store: MetricsStore, reg: CollectorRegistry | None = None) -> bytes:
    return b"".join(protobuf_exposition.render(store, reg))


def test_every_family_and_sample_of_the_text_output_is_in_the_protobuf_one() -> None:
    store, reg = _store(), _registry()
    text = "".join(exposition.render(store, exposition.TEXT, reg))
    fams = read_families(_proto(store, reg))
    want = _normal(samples(text))
    got = _normal(text_samples(fams))
    # prometheus_client's counters also carry a _created sample, which protobuf leaves out
    want = {k: v for k, v in want.items() if not k[0].endswith("_created")}
    assert got == want
    text_types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            if not name.endswith("_created"):
                text_types[name] = kind.upper()
    proto_types = {f.name: protobuf_exposition.pb.MetricType.Name(f.type) for f in fams}
    assert proto_types == text_types
    helps = {f.name: f.help for f in fams}
    assert helps["netprobe_up"] == "1 if the last probe of the target succeeded, else 0."


def test_histograms_are_native_with_the_classic_buckets_alongside() -> None:
    fams = {f.name: f for f in read_families(_proto(_store()))}
    by_target = {
        dict((p.name, p.value) for p in m.label)["target"]: m.histogram
        for m in fams["netprobe_connect_duration_seconds"].metric
    }
    h = by_target["127.0.0.1:80"]
    assert h.schema == 3  # bucket factor 1.1
    assert h.zero_threshold == 2.0**-128
    assert [b.upper_bound for b in h.bucket] == [0.001, 0.01, 0.1]
    assert [b.cumulative_count for b in h.bucket] == [1, 4, 5]
    expected: dict[int, int] = {}
    for v in CONNECTS:
        expected[bucket_index(v, 3)] = expected.get(bucket_index(v, 3), 0) + 1
    assert native_counts(h) == expected
    assert h.sample_count == len(CONNECTS) and h.sample_sum == pytest.approx(sum(CONNECTS))
    # the target's own settings: factor 1.5 is schema 1; 3 buckets at most, so it coarsened
    c = by_target["127.0.0.1:81"]
    assert c.zero_threshold == 0.0001
    assert c.schema < 1 and len(native_counts(c)) <= 3
    assert sum(native_counts(c).values()) + c.zero_count == len(CONNECTS)
    # a target without connects yet still has a native histogram (a no-op span)
    b = by_target["[::1]:22"]
    assert b.sample_count == 0 and [(s.offset, s.length) for s in b.positive_span] == [(0, 0)]
    lag = fams["netprobe_scheduler_lag_seconds"].metric[0].histogram
    assert sum(native_counts(lag).values()) == 1 and lag.schema == 3


def test_labelled_histograms_keep_their_label() -> None:
    fams = {f.name: f for f in read_families(_proto(_store()))}
    rtt = [f for name, f in fams.items() if "dns" in name]
    assert rtt, "the dns target's families are present"
    for fam in rtt:
        for m in fam.metric:
            if m.HasField("histogram"):
                assert sum(native_counts(m.histogram).values()) + m.histogram.zero_count == (
                    m.histogram.sample_count
                )


def test_many_targets_are_split_into_messages_of_one_family() -> None:
    s = MetricsStore()
    targets = [Target(f"127.0.0.1:{1000 + i}", "tcp_connect", 1.0) for i in range(450)]
    s.sync(targets)
    fams = read_families(_proto(s))
    ups = [f for f in fams if f.name == "netprobe_probes_total"]
    assert [len(f.metric) for f in ups] == [200 * 8, 200 * 8, 50 * 8]


PROM_ACCEPT = (
    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,"
    "application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@pytest.mark.parametrize(
    ("accept", "protobuf"),
    [
        (PROM_ACCEPT, True),  # Prometheus 2.42 with --enable-feature=native-histograms
        ("application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; "
         "encoding=delimited", True),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
         "encoding=delimited;q=0.3,text/plain;q=0.5", False),
        ("text/plain;q=0.2,application/vnd.google.protobuf;proto=io.prometheus.client."
         "MetricFamily;encoding=delimited;q=0.4", True),
        # only the delimited MetricFamily form is what Prometheus reads
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
         "encoding=text", False),
        ("application/vnd.google.protobuf;proto=other.Message;encoding=delimited", False),
        ("application/vnd.google.protobuf", False),
        ("application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
         "encoding=delimited;q=0", False),
        (None, False),
    ],
)  # fmt: skip
def test_protobuf_negotiation(accept: str | None, protobuf: bool) -> None:
    assert exposition.negotiate(accept).protobuf is protobuf


def test_metrics_endpoint_answers_protobuf_and_gzips_it() -> None:
    from tests.unit.test_web_memory import Site, body, header

    s = Site()
    got = s.request(b"GET", "/metrics", accept=PROM_ACCEPT)
    assert header(got, "content-type") == exposition.PROTOBUF.content_type
    names = {f.name for f in read_families(body(got))}
    assert "netprobe_config_last_reload_successful" in names
    zipped = s.request(b"GET", "/metrics", accept=PROM_ACCEPT, accept_encoding="gzip")
    assert header(zipped, "content-encoding") == "gzip"
    assert gzip.decompress(body(zipped)) == body(got)
    plain = s.request(b"GET", "/metrics", accept="text/plain")
    assert str(header(plain, "content-type")).startswith("text/plain")


def test_varint() -> None:
    varint = protobuf_exposition.varint
    assert varint(0) == b"\x00" and varint(127) == b"\x7f" and varint(128) == b"\x80\x01"
    assert varint(300) == b"\xac\x02"
    assert varint(16383) == b"\xff\x7f" and varint(16384) == b"\x80\x80\x01"
    assert varint(2**35) == bytes([128, 128, 128, 128, 128, 1])


def test_hand_encoded_histogram_is_the_protobuf_packages_message() -> None:
    h = Histogram((0.001, 0.01, 0.1))
    for v in [0.0005] * 200 + [0.05] * 20000 + [3.0]:
        h.observe(v)
    parsed = protobuf_exposition.pb.Histogram()
    parsed.ParseFromString(protobuf_exposition.histogram_bytes(h))
    assert parsed == protobuf_exposition.histogram_message(h)
    assert [b.cumulative_count for b in parsed.bucket] == [200, 200, 20200]


_values = st.one_of(
    st.floats(min_value=1e-7, max_value=100.0),
    st.sampled_from([0.0, -0.0, -0.5, -3e-4, math.inf, -math.inf, math.nan, 1e-300, 1e300]),
)


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(_values, max_size=60),
    repeat=st.sampled_from([1, 3, 200, 20000]),
    factor=st.sampled_from([1.1, 1.5, 2.0, 4.0, 1.01]),
    max_buckets=st.sampled_from([3, 10, 160]),
    zero_threshold=st.sampled_from([2.0**-128, 0.0, 1e-4]),
)
def test_hand_encoded_histogram_is_byte_for_byte_the_packages(
    values: list[float], repeat: int, factor: float, max_buckets: int, zero_threshold: float
) -> None:
    """Native spans with gaps, negative buckets, the zero bucket, counts past the tables."""
    h = Histogram((0.001, 0.01, 0.1, 1.0), NativeSpec(factor, max_buckets, zero_threshold))
    for i, v in enumerate(values):
        for _ in range(repeat if i == 0 else 1):
            h.observe(v)
    want = protobuf_exposition.histogram_message(h).SerializeToString()
    assert protobuf_exposition.histogram_bytes(h) == want


def test_every_message_is_what_the_package_writes_for_it() -> None:
    """Each delimited message parsed and written again by the package gives the same bytes:
    the hand-written parts use the package's field order and encodings throughout."""
    store = varied_store()
    data = _proto(store, _registry())
    fams = read_families(data)
    again = b"".join(protobuf_exposition.varint(f.ByteSize()) + f.SerializeToString() for f in fams)
    assert again == data
    names = {f.name for f in fams}
    assert {"netprobe_http_duration_seconds", "netprobe_tls_version_info"} <= names


def test_every_family_of_avaried_store_has_the_text_output_s_values() -> None:
    store = varied_store()
    text = "".join(exposition.render(store, exposition.TEXT, None))
    got = _normal(text_samples(read_families(_proto(store))))
    want = _normal(samples(text))
    nan = [k for k, v in want.items() if v != v]
    assert nan and all(got[k] != got[k] for k in nan)
    assert {k: v for k, v in got.items() if k not in nan} == {
        k: v for k, v in want.items() if k not in nan
    }


def test_a_metric_of_more_than_16_kib_is_written_whole() -> None:
    big = Target("127.0.0.1:7", "tcp_connect", 1.0, (("note", "x" * 20000),))
    s = MetricsStore()
    s.sync([big, B])
    fams = {f.name: f for f in read_families(_proto(s))}
    notes = [
        dict((p.name, p.value) for p in m.label).get("note")
        for m in fams["netprobe_probe_duration_seconds"].metric
    ]
    assert sorted(notes, key=str) == [None, "x" * 20000]
