"""The metrics store and its two exposition formats, checked with prometheus_client's parsers."""

from __future__ import annotations

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from netprobe_exporter import exposition
from netprobe_exporter.config import Target
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.probes import ProbeResult
from netprobe_exporter.probes.connect import ConnectInfo
from netprobe_exporter.probes.tcp import TCPDetails
from tests.support import text_reference

A = Target("127.0.0.1:80", "tcp_connect", 1.0, (("team", 'st"or\\age\n'),), (0.001, 0.01, 0.1))
B = Target("[::1]:22", "tcp_connect", 1.0)


def success(connect: float) -> ProbeResult:
    return ProbeResult(
        True, "success", connect + 0.0001, connect_duration=connect, ip="127.0.0.1",
        details=TCPDetails(connect=ConnectInfo(connect / 2)),
    )  # fmt: skip


def refused() -> ProbeResult:
    return ProbeResult(False, "refused", 0.0002, ip="::1", details=TCPDetails())


def render(store: MetricsStore, fmt: exposition.Format = exposition.TEXT) -> str:
    return "".join(exposition.render(store, fmt, None))


def samples(
    text: str, openmetrics: bool = False
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    parser = parse_openmetrics if openmetrics else parse_text
    return {
        (s.name, frozenset(s.labels.items())): s.value for fam in parser(text) for s in fam.samples
    }


def lbl(target: Target, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        {"target": target.address, "module": target.module, **dict(target.labels), **extra}.items()
    )


@pytest.fixture
def store() -> MetricsStore:
    s = MetricsStore()
    s.sync([A, B])
    s.observe(A, success(0.0005), 1000.0)
    s.observe(A, success(0.05), 1001.0)
    s.observe(B, refused(), 1002.0)
    return s


def test_text_format_values(store: MetricsStore) -> None:
    got = samples(render(store))
    assert got[("netprobe_up", lbl(A))] == 1.0
    assert got[("netprobe_up", lbl(B))] == 0.0
    assert got[("netprobe_probes_total", lbl(A, result="success"))] == 2
    assert got[("netprobe_probes_total", lbl(B, result="refused"))] == 1
    assert got[("netprobe_probes_total", lbl(B, result="timeout"))] == 0
    # cumulative buckets with the target's own bounds
    assert got[("netprobe_connect_duration_seconds_bucket", lbl(A, le="0.001"))] == 1
    assert got[("netprobe_connect_duration_seconds_bucket", lbl(A, le="0.01"))] == 1
    assert got[("netprobe_connect_duration_seconds_bucket", lbl(A, le="0.1"))] == 2
    assert got[("netprobe_connect_duration_seconds_bucket", lbl(A, le="+Inf"))] == 2
    assert got[("netprobe_connect_duration_seconds_count", lbl(A))] == 2
    assert got[("netprobe_connect_duration_seconds_sum", lbl(A))] == pytest.approx(0.0505)
    # a refused probe has no connect time, but has a probe duration
    assert got[("netprobe_connect_duration_seconds_count", lbl(B))] == 0
    assert got[("netprobe_probe_duration_seconds_count", lbl(B))] == 1
    assert got[("netprobe_last_connect_duration_seconds", lbl(A))] == 0.05
    # the kernel's handshake RTT, a histogram of its own; none for a refused connect
    assert got[("netprobe_tcp_handshake_rtt_seconds_count", lbl(A))] == 2
    assert got[("netprobe_tcp_handshake_rtt_seconds_sum", lbl(A))] == pytest.approx(0.02525)
    assert ("netprobe_tcp_handshake_rtt_seconds_count", lbl(B)) not in got
    assert ("netprobe_last_connect_duration_seconds", lbl(B)) not in got
    assert got[("netprobe_last_probe_timestamp_seconds", lbl(B))] == 1002.0
    assert got[("netprobe_last_success_timestamp_seconds", lbl(A))] == 1001.0
    assert ("netprobe_last_success_timestamp_seconds", lbl(B)) not in got
    assert got[("netprobe_target_info", lbl(B, ip="::1"))] == 1
    assert got[("netprobe_targets", frozenset({("module", "tcp_connect")}))] == 2
    assert got[("netprobe_config_last_reload_successful", frozenset())] == 0


def test_label_values_are_escaped(store: MetricsStore) -> None:
    text = render(store)
    assert 'team="st\\"or\\\\age\\n"' in text
    got = samples(text)
    assert ("netprobe_up", lbl(A)) in got  # the parser reads back the original value


def test_openmetrics_format(store: MetricsStore) -> None:
    text = render(store, exposition.OPENMETRICS)
    assert text.endswith("# EOF\n")
    assert "# TYPE netprobe_probes counter\n" in text
    got = samples(text, openmetrics=True)
    assert got[("netprobe_probes_total", lbl(A, result="success"))] == 2
    assert got[("netprobe_connect_duration_seconds_bucket", lbl(A, le="0.1"))] == 2


def test_sync_keeps_kept_series_and_drops_removed_ones(store: MetricsStore) -> None:
    c = Target("127.0.0.1:81", "tcp_connect", 5.0)
    relabelled_b = Target(B.address, B.module, 5.0, (("x", "y"),))
    store.sync([Target(A.address, A.module, 30.0, A.labels, A.buckets), c, relabelled_b])
    text = render(store)
    got = samples(text)
    # A kept (interval is not part of series identity): its counters continue
    assert got[("netprobe_probes_total", lbl(A, result="success"))] == 2
    # B's old series are gone, all at once; its relabelled twin starts afresh
    assert 'target="[::1]:22",module="tcp_connect"}' not in text
    assert got[("netprobe_probes_total", lbl(relabelled_b, result="refused"))] == 0
    assert got[("netprobe_probes_total", lbl(c, result="success"))] == 0
    # a result for a target that has left is dropped, not resurrected
    store.observe(B, refused(), 1003.0)
    assert 'target="[::1]:22",module="tcp_connect"}' not in render(store)


def test_render_is_chunked_and_complete() -> None:
    s = MetricsStore()
    many = [Target(f"127.0.0.1:{p}", "tcp_connect", 1.0) for p in range(1, 1001)]
    s.sync(many)
    for t in many:
        s.observe(t, success(0.001), 1.0)
    chunks = list(exposition.render(s, exposition.TEXT, None))
    assert len(chunks) > 8 * (1000 // exposition.CHUNK_TARGETS)
    got = samples("".join(chunks))
    assert sum(1 for (name, _) in got if name == "netprobe_up") == 1000


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("text/plain", False),
        ("application/openmetrics-text; version=1.0.0", True),
        # Prometheus 2.x's own header
        ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
         "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),
        ("application/openmetrics-text;q=0.2, text/plain;q=0.9", False),
        ("text/plain;q=0.2, application/openmetrics-text;q=0.9", True),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=bogus", False),
        ("image/png", False),
    ],
)  # fmt: skip
def test_negotiation_honours_q_values(accept: str | None, openmetrics: bool) -> None:
    assert exposition.negotiate(accept).openmetrics is openmetrics


@pytest.mark.parametrize(
    ("header", "gzip"),
    [(None, False), ("gzip", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False),
     ("identity", False), ("GZIP", True)],
)  # fmt: skip
def test_gzip_negotiation(header: str | None, gzip: bool) -> None:
    assert exposition.wants_gzip(header) is gzip


def test_dns_lookup_histogram_counts_answered_queries() -> None:
    from netprobe_exporter.probes.dns import DNSDetails, DNSPhases

    t = Target("127.0.0.1:53", "dns_udp", 1.0, (), (0.001, 0.01))
    s = MetricsStore()
    s.sync([t])
    answered = DNSDetails(phases=DNSPhases(0.0, 0.0, 0.004), query_succeeded=True)
    s.observe(t, ProbeResult(True, "success", 0.005, details=answered), 1.0)
    s.observe(t, ProbeResult(False, "timeout", 1.0, details=DNSDetails()), 2.0)
    got = samples(render(s))
    assert got[("netprobe_dns_lookup_duration_seconds_count", lbl(t))] == 1
    assert got[("netprobe_dns_lookup_duration_seconds_bucket", lbl(t, le="0.01"))] == 1
    assert got[("netprobe_probes_total", lbl(t, result="timeout"))] == 1


def varied_store() -> MetricsStore:
    """Every kind of target family, odd values and labels, over more than one chunk."""
    s = MetricsStore()
    http = Target("http://127.0.0.1:8080/{x}", "http_2xx", 1.0, (("z", "}{"),), (0.5, 1.0))
    odd = Target("127.0.0.1:9", "tcp_connect", 1.0, (("a", "b\\n"),), (1e-5, 0.25, 1e300))
    many = [Target(f"127.0.0.1:{2000 + i}", "tcp_connect", 1.0) for i in range(450)]
    s.sync([A, B, http, odd, *many])
    for i, t in enumerate(many):
        for j in range(i % 7):
            s.observe(t, success(0.0001 * (i + 1) * (j + 1)), 1000.0 + i + j / 10)
        if i % 5 == 0:
            s.observe(t, refused(), 2000.5 + i)
    s.observe(A, success(0.0005), 1000.0)
    s.observe(odd, success(float("inf")), 3.0)
    series = {ts.target: ts for ts in s.series.values()}
    series[odd].observe(ProbeResult(False, "mystery", float("nan")), float("-inf"))
    h = series[http]
    h.observe(ProbeResult(True, "success", 0.3, connect_duration=0.01, ip="::1"), 5.0)
    for phase in range(5):
        h.histogram("netprobe_http_duration_seconds", 0.01 * phase, phase)
    h.gauge("netprobe_http_status_code", 200)
    h.gauge("netprobe_tls_cert_expiry_timestamp_seconds", 1.9e9 + 0.25)
    h.info("netprobe_tls_version_info", "TLS 1.3")
    s.stats.lag.observe(0.002)
    s.stats.skipped = 3
    return s


@pytest.mark.parametrize("fmt", [exposition.TEXT, exposition.OPENMETRICS])
def test_output_is_byte_for_byte_the_line_at_a_time_renderer_s(fmt: exposition.Format) -> None:
    store = varied_store()
    want = list(text_reference.render(store, fmt, None))
    got = list(exposition.render(store, fmt, None))
    assert "".join(got) == "".join(want)
    assert len(got) == len(want)  # the same chunks: one family's targets at a time
    text = "".join(got)
    assert 'le="1e+300"' in text and "netprobe_tls_version_info" in text and "+Inf\n" in text
    assert "NaN\n" in text and "-Inf\n" in text


def test_a_count_past_32_bits_keeps_counting() -> None:
    """Counts are held in 32-bit words until one is full, then in 64-bit ones."""
    s = MetricsStore()
    s.sync([B])
    series = next(iter(s.series.values()))
    series.probe.counts[1] = series.result_counts[2] = 2**32 - 1
    s.observe(B, refused(), 1.0)  # 0.0002 s: bucket 1 of the default buckets
    got = samples(render(s))
    assert got[("netprobe_probes_total", lbl(B, result="refused"))] == 2**32
    assert got[("netprobe_probe_duration_seconds_bucket", lbl(B, le="0.0001"))] == 0
    assert got[("netprobe_probe_duration_seconds_bucket", lbl(B, le="0.00025"))] == 2**32
