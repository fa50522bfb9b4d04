"""The traceroute prober in memory: error-queue parsing, the hop window and its bounds, the
options, and its continuous families as both exposition formats write them."""

from __future__ import annotations

import socket
import struct

import pytest
from twisted.internet.task import Clock as ReactorClock

from netprobe_exporter import exposition, protobuf_exposition
from netprobe_exporter.config import (
    RESERVED_LABELS,
    ConfigError,
    Target,
    parse_config,
    target_series,
)
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.probes import Clock, ProbeContext, ProbeResult
from netprobe_exporter.probes import traceroute as tr
from netprobe_exporter.probes.all import PROBERS
from tests.support.protobuf import read_families
from tests.unit.test_exposition import samples

SOL_IP, SOL_IPV6 = socket.IPPROTO_IP, socket.IPPROTO_IPV6


def _ee(origin: int, icmp_type: int, code: int, offender: bytes) -> bytes:
    return struct.pack("=IBBBBII", 113, origin, icmp_type, code, 0, 0, 0) + offender


def _sin(ip: str) -> bytes:
    return struct.pack("=HH", socket.AF_INET, 0) + socket.inet_pton(socket.AF_INET, ip) + bytes(8)


def _sin6(ip: str) -> bytes:
    addr = socket.inet_pton(socket.AF_INET6, ip)
    return struct.pack("=HHI", socket.AF_INET6, 0, 0) + addr + bytes(4)


def test_an_error_queue_entry_names_the_icmp_type_and_the_router() -> None:
    stamp = (socket.SOL_SOCKET, tr.SO_TIMESTAMPNS, struct.pack("qq", 12, 345))
    v4 = [stamp, (SOL_IP, tr.IP_RECVERR, _ee(tr.SO_EE_ORIGIN_ICMP, 11, 0, _sin("10.0.0.1")))]
    assert tr.extended_error(v4, v6=False) == (11, 0, "10.0.0.1", 12_000_000_345)
    v6 = [(SOL_IPV6, tr.IPV6_RECVERR, _ee(tr.SO_EE_ORIGIN_ICMP6, 1, 4, _sin6("fd00::2")))]
    assert tr.extended_error(v6, v6=True) == (1, 4, "fd00::2", None)


def test_a_local_error_or_a_short_message_is_no_answer() -> None:
    local = [(SOL_IP, tr.IP_RECVERR, _ee(1, 0, 0, _sin("10.0.0.1")))]  # SO_EE_ORIGIN_LOCAL
    assert tr.extended_error(local, v6=False) is None
    short = [(SOL_IP, tr.IP_RECVERR, _ee(tr.SO_EE_ORIGIN_ICMP, 11, 0, b"\x02\x00"))]
    assert tr.extended_error(short, v6=False) is None
    assert tr.extended_error([], v6=False) is None


class FakeTransport:
    """Records what a trace sends; the test answers for the network."""

    method = "errqueue"

    def __init__(self, ip: str = "10.9.9.9") -> None:
        self.ip = ip
        self.sent: list[tuple[int, int]] = []
        self.closed = 0

    def send(self, ttl: int, seq: int) -> None:
        self.sent.append((ttl, seq))

    def close(self) -> None:
        self.closed += 1


def _trace(timeout: float = 10.0, **opts: object) -> tuple[tr._Trace, FakeTransport, ReactorClock]:
    clock = ReactorClock()
    ctx = ProbeContext(
        clock,  # type: ignore[arg-type]  # callLater and seconds are all a trace uses
        resolver=None,  # type: ignore[arg-type]
        clock=Clock(clock.seconds, clock.seconds, lambda: int(clock.seconds() * 1e9)),
    )
    fake = FakeTransport()
    options = tr.TracerouteProbe(**{"packets_per_hop": 1, "hop_timeout": 1.0, **opts})  # type: ignore[arg-type]
    trace = tr._Trace(ctx, fake, options, timeout)  # type: ignore[arg-type]
    return trace, fake, clock


def _answer(trace: tr._Trace, fake: FakeTransport, ttl: int, ip: str, exceeded: bool) -> None:
    for sent_ttl, seq in fake.sent:
        if sent_ttl == ttl and seq in trace.packets:
            trace.answer(seq, tr.Answer(ip, None, exceeded))


def test_hops_go_out_a_window_at_a_time_and_stop_at_the_target() -> None:
    trace, fake, clock = _trace(max_hops=30)
    trace.start()
    assert [ttl for ttl, _ in fake.sent] == list(range(1, tr.WINDOW + 1))
    clock.advance(0.010)
    _answer(trace, fake, 1, "10.0.0.1", exceeded=True)  # hop 1 done: hop 9 goes out
    assert fake.sent[-1][0] == tr.WINDOW + 1
    _answer(trace, fake, 3, fake.ip, exceeded=False)  # the target, at hop 3
    sent = len(fake.sent)
    assert not trace.done.called  # hop 2 is still waited for
    clock.advance(1.0)  # hop 2 stays silent
    assert trace.done.called and fake.closed == 1
    assert len(fake.sent) == sent  # nothing more was sent past the target
    hops = trace.result_hops()
    assert [(h.ttl, h.address, h.sent, len(h.rtts)) for h in hops] == [
        (1, "10.0.0.1", 1, 1), (2, None, 1, 0), (3, fake.ip, 1, 1),
    ]  # fmt: skip
    assert trace.reached and hops[0].rtts == [pytest.approx(0.010)]


def test_a_silent_path_ends_at_max_hops_and_the_deadline_bounds_it() -> None:
    trace, fake, clock = _trace(max_hops=30, timeout=2.5)
    trace.start()
    for _ in range(10):
        if trace.done.called:
            break
        clock.advance(1.0)
    assert trace.done.called
    # two windows' waits fit in 2.5 s; the third window's is cut short: those hops are not
    # reported (neither lost nor answered), and the hops past them not sent
    assert [ttl for ttl, _ in fake.sent] == list(range(1, 3 * tr.WINDOW + 1))
    assert [h.ttl for h in trace.result_hops()] == list(range(1, 2 * tr.WINDOW + 1))
    assert {h.lost for h in trace.result_hops()} == {1}
    assert not trace.reached and trace.end_hop is None


def test_an_unreachable_from_a_router_ends_the_path_unreached() -> None:
    trace, fake, _ = _trace(max_hops=5, first_hop=2, packets_per_hop=2)
    trace.start()
    assert [ttl for ttl, _ in fake.sent] == [2, 2, 3, 3, 4, 4, 5, 5]
    _answer(trace, fake, 2, "10.0.0.2", exceeded=True)
    _answer(trace, fake, 3, "10.0.0.3", exceeded=False)  # host unreachable from a router
    assert trace.done.called
    assert [h.ttl for h in trace.result_hops()] == [2, 3]
    assert not trace.reached and trace.end_hop == 3


def test_answers_to_unknown_or_finished_packets_are_ignored() -> None:
    trace, fake, clock = _trace(max_hops=2)
    trace.start()
    trace.answer(999, tr.Answer("10.0.0.1", None, True))
    clock.advance(1.0)
    assert trace.done.called
    trace.answer(fake.sent[0][1], tr.Answer("10.0.0.1", None, True))
    assert [h.address for h in trace.result_hops()] == [None, None]


MODULES = """
modules:
  t:
    prober: traceroute
    traceroute: {{{opts}}}
"""


def _errors(opts: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(MODULES.format(opts=opts))
    return info.value.errors


def test_options_are_bounded_and_checked_together() -> None:
    m = parse_config(MODULES.format(opts="protocol: tcp, max_hops: 12, first_hop: 3")).modules["t"]
    assert isinstance(m.options, tr.TracerouteProbe)
    assert (m.options.protocol, m.options.max_hops, m.options.first_hop) == ("tcp", 12, 3)
    assert parse_config(MODULES.format(opts="")).modules["t"].options == tr.TracerouteProbe()
    assert "max_hops" in _errors("max_hops: 65")[0]
    assert "first_hop: must not be above max_hops (4)" in _errors("max_hops: 4, first_hop: 5")[0]
    assert "must be udp, icmp or tcp" in _errors("protocol: sctp")[0]
    assert "packets_per_hop" in _errors("packets_per_hop: 0")[0]


def test_targets_take_a_host_or_host_and_port() -> None:
    assert tr.split_target("10.0.0.1", "udp") == ("10.0.0.1", tr.UDP_BASE_PORT)
    assert tr.split_target("10.0.0.1", "tcp") == ("10.0.0.1", tr.TCP_DEFAULT_PORT)
    assert tr.split_target("[fd00::1]:443", "tcp") == ("fd00::1", 443)
    with pytest.raises(ValueError, match="icmp traceroute takes a host"):
        tr.split_target("10.0.0.1:80", "icmp")
    assert tr.check_address("not a host") is not None


T = Target("10.9.9.9", "t", 10.0, (("team", "a"),), (0.001, 0.01, 0.1))


def _result(*addresses: str | None, reached: bool = True) -> ProbeResult:
    hops = [
        tr.HopStats(i + 1, 2, [0.001 * (i + 1)] * (2 if ip else 0), ip)
        for i, ip in enumerate(addresses)
    ]
    details = tr.TracerouteDetails(hops, reached, "errqueue")
    return ProbeResult(reached, "success" if reached else "timeout", 0.01, ip="10.9.9.9",
                       details=details)  # fmt: skip


def _store(*results: ProbeResult) -> MetricsStore:
    store = MetricsStore()
    store.sync([T])
    for i, r in enumerate(results):
        store.observe(T, r, 1000.0 + i)
    return store


def _text(store: MetricsStore) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples("".join(exposition.render(store, exposition.TEXT, None)))


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({"target": "10.9.9.9", "module": "t", "team": "a", **labels}.items())


def test_continuous_families_per_hop_and_the_path_change_counter() -> None:
    store = _store(
        _result("10.0.0.1", None, "10.9.9.9"),
        _result("10.0.0.1", None, "10.9.9.9"),
        _result("10.0.0.1", "10.0.1.1", "10.9.9.9"),
    )
    got = _text(store)
    assert got[_key("netprobe_traceroute_hop_sent_total", hop="2")] == 6.0
    assert got[_key("netprobe_traceroute_hop_lost_total", hop="2")] == 4.0
    assert got[_key("netprobe_traceroute_hop_lost_total", hop="3")] == 0.0
    assert got[_key("netprobe_traceroute_hop_rtt_seconds_count", hop="1")] == 6.0
    assert got[_key("netprobe_traceroute_hop_rtt_seconds_count", hop="2")] == 2.0
    assert got[_key("netprobe_traceroute_hop_rtt_seconds_bucket", hop="3", le="0.01")] == 6.0
    assert got[_key("netprobe_traceroute_path_changes_total")] == 1.0
    assert got[_key("netprobe_traceroute_hops")] == 3.0
    path = "10.0.0.1 10.0.1.1 10.9.9.9"
    assert got[_key("netprobe_traceroute_path_info", path=path)] == 1.0
    assert got[_key("netprobe_traceroute_route_hash")] == float(tr.fnv32a(path))
    om = samples("".join(exposition.render(store, exposition.OPENMETRICS, None)), openmetrics=True)
    assert om[_key("netprobe_traceroute_path_changes_total")] == 1.0
    assert om[_key("netprobe_traceroute_hop_lost_total", hop="2")] == 4.0
    # hops past the path's end have no series: the label set stops at the last hop seen
    assert _key("netprobe_traceroute_hop_sent_total", hop="4") not in got
    assert not any(k[0].endswith("_bucket") and ("hop", "4") in k[1] for k in got)


def test_the_protobuf_format_has_the_same_traceroute_samples() -> None:
    store = _store(_result("10.0.0.1", None, "10.9.9.9"), _result("10.0.0.1", "10.0.1.1"))
    text = {k: v for k, v in _text(store).items() if "traceroute" in k[0]}
    data = b"".join(protobuf_exposition.render(store, None))
    got = {}
    for fam in read_families(data):
        if "traceroute" not in fam.name:
            continue
        for m in fam.metric:
            labels = frozenset((p.name, p.value) for p in m.label)
            if fam.type == 0:  # counter: the text format names its sample with the suffix
                got[(fam.name, labels)] = m.counter.value
            elif fam.type == 1:
                got[(fam.name, labels)] = m.gauge.value
            else:
                got[(fam.name + "_count", labels)] = float(m.histogram.sample_count)
    assert got == {k: v for k, v in text.items() if not k[0].endswith(("_bucket", "_sum"))}


def test_the_series_estimate_bounds_what_a_target_shows() -> None:
    cfg = parse_config(MODULES.format(opts="max_hops: 4"))
    store = MetricsStore()
    target = Target("10.9.9.9", "t", 10.0, (("team", "a"),), (0.001, 0.01, 0.1))
    store.sync([target])
    full = _result("10.0.0.1", "10.0.1.1", "10.0.2.1", "10.9.9.9")
    full.connect_duration = 0.001  # the core's last_connect gauge, as in test_labels
    store.observe(target, full, 1000.0)
    text = "".join(exposition.render(store, exposition.TEXT, None))
    shown = sum(1 for line in text.splitlines() if 'team="a"' in line)
    assert shown == target_series(len(target.buckets), cfg.modules["t"])
    default = parse_config(MODULES.format(opts="")).modules["t"]
    per_hop = (len(target.buckets) + 3) + 2  # a histogram and two counters
    assert target_series(len(target.buckets), default) - shown == (30 - 4) * per_hop


def test_probe_output_for_a_path() -> None:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    r = _result("10.0.0.1", None, "10.9.9.9")
    assert isinstance(r.details, tr.TracerouteDetails)
    r.details.blackbox(out, r)
    assert out["probe_traceroute_hops"] == [({}, 3.0)]
    assert out["probe_traceroute_destination_reached"] == [({}, 1.0)]
    assert out["probe_traceroute_hop_loss_ratio"] == [
        ({"hop": "1"}, 0.0), ({"hop": "2"}, 1.0), ({"hop": "3"}, 0.0)
    ]  # fmt: skip
    assert out["probe_traceroute_hop_info"] == [
        ({"hop": "1", "ip": "10.0.0.1"}, 1.0), ({"hop": "3", "ip": "10.9.9.9"}, 1.0)
    ]  # fmt: skip
    assert [labels for labels, _ in out["probe_traceroute_hop_rtt_seconds"]] == [
        {"hop": "1"}, {"hop": "3"}
    ]  # fmt: skip


def test_every_family_label_is_reserved_from_user_labels() -> None:
    """A target's ``labels: {hop: x}`` would give its per-hop series the label twice."""
    declared = {f.label for spec in PROBERS.values() for f in spec.families if f.label}
    assert {"hop", "path"} <= declared
    assert declared <= RESERVED_LABELS
    assert (
        "is set by the exporter"
        in _errors_of("targets:\n  - {address: 10.0.0.1, labels: {hop: a}}\n")[0]
    )


def _errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value.errors
