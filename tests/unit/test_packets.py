"""Several packets per probe: options, config errors, statistics, and the burst's sequencing."""

from __future__ import annotations

import math
import textwrap
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from netprobe_exporter import exposition, protobuf_exposition
from netprobe_exporter.blackbox import families, render
from netprobe_exporter.config import (
    ConfigError,
    Target,
    parse_config,
    target_series,
    with_extra_targets,
)
from netprobe_exporter.metrics import MetricsStore
from netprobe_exporter.model import Module, ProbeResult
from netprobe_exporter.probes import Clock, ProbeContext
from netprobe_exporter.probes import icmp as icmp_prober
from netprobe_exporter.probes.connect import ConnectInfo
from netprobe_exporter.probes.icmp import ICMPDetails, ICMPPhases, ICMPProbe
from netprobe_exporter.probes.packets import Burst, Packets, fit_error, rtt_stats
from netprobe_exporter.probes.tcp import TCPDetails, TCPProbe
from tests.support.protobuf import pb, read_families


def parse(text: str) -> Any:
    return parse_config(textwrap.dedent(text), "c.yml")


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.errors


# statistics


def test_rtt_statistics_of_a_known_list() -> None:
    lo, hi, mean, sd = rtt_stats([0.010, 0.020, 0.030, 0.040])  # type: ignore[misc]
    assert (lo, hi) == (0.010, 0.040)
    assert mean == pytest.approx(0.025)
    # population deviation: sqrt(((15² + 5² + 5² + 15²) ms²) / 4) = sqrt(125) ms
    assert sd == pytest.approx(math.sqrt(125) / 1000)


def test_rtt_statistics_of_one_reply_and_of_none() -> None:
    assert rtt_stats([0.5]) == (0.5, 0.5, 0.5, 0.0)
    assert rtt_stats([]) is None


def test_loss_ratio_and_probe_families() -> None:
    p = Packets(wanted=10, sent=10, rtts=[0.001, 0.003, 0.002, 0.002, 0.002, 0.002, 0.002])
    assert p.received == 7 and p.loss == pytest.approx(0.3)
    out: dict[str, Any] = {}
    p.blackbox(out)
    assert out["probe_packets_sent"] == [({}, 10.0)]
    assert out["probe_packets_received"] == [({}, 7.0)]
    assert out["probe_packet_loss_ratio"] == [({}, pytest.approx(0.3))]
    assert out["probe_packet_rtt_min_seconds"] == [({}, 0.001)]
    assert out["probe_packet_rtt_max_seconds"] == [({}, 0.003)]
    assert out["probe_packet_rtt_mean_seconds"] == [({}, 0.002)]
    assert out["probe_packet_rtt_stddev_seconds"][0][1] == pytest.approx(math.sqrt(2e-6 / 7))


def test_no_reply_has_no_rtt_and_nothing_sent_has_no_loss() -> None:
    out: dict[str, Any] = {}
    Packets(wanted=5, sent=5).blackbox(out)
    assert out["probe_packet_loss_ratio"] == [({}, 1.0)]
    assert not any(name.startswith("probe_packet_rtt") for name in out)
    out = {}
    Packets(wanted=5).blackbox(out)
    assert out["probe_packets_sent"] == [({}, 0.0)] and "probe_packet_loss_ratio" not in out


# options and config errors


def test_fit_of_the_packets_in_the_timeout() -> None:
    assert fit_error(5, 0.2, 1.0) is None  # exactly fits: the last packet gets one interval
    assert fit_error(1, 10.0, 0.1) is None  # one packet: the interval does not matter
    message = fit_error(5, 0.25, 1.0)
    assert message is not None
    assert "5 packets at packet_interval 250ms need 1250ms" in message
    assert "module's timeout of 1s" in message
    unset = fit_error(30, 0.2, 5.0, "the {} a module without timeout gets")
    assert unset is not None and "a module without timeout gets" in unset


def test_defaults_are_one_packet() -> None:
    assert ICMPProbe().packets == 1 and TCPProbe().packets == 1
    assert ICMPProbe().packet_interval == 0.2


def test_packets_are_read_for_icmp_and_tcp() -> None:
    cfg = parse(
        """
        modules:
          ping5:
            prober: icmp
            timeout: 3s
            icmp: {packets: 5, packet_interval: 500ms}
          syn10:
            prober: tcp
            tcp: {packets: 10, packet_interval: 100ms}
        """
    )
    assert cfg.modules["ping5"].options.packets == 5
    assert cfg.modules["ping5"].options.packet_interval == 0.5
    assert cfg.modules["syn10"].options.packets == 10
    assert cfg.modules["syn10"].options.packet_interval == 0.1


def test_packets_that_do_not_fit_the_timeout_are_a_config_error() -> None:
    errs = errors(
        """
        modules:
          ping:
            prober: icmp
            timeout: 4s
            icmp: {packets: 5, packet_interval: 1s}
        """
    )
    assert any(
        "modules.ping.icmp" in e and "5 packets at packet_interval 1s need 5s" in e for e in errs
    ), errs


def test_packets_that_do_not_fit_the_default_timeout_say_so() -> None:
    errs = errors(
        """
        modules:
          syn:
            prober: tcp
            tcp: {packets: 30}
        """
    )
    assert any("modules.syn.tcp" in e and "without timeout" in e for e in errs), errs


PING5 = """
modules:
  ping5:
    prober: icmp
    icmp: {packets: 5, packet_interval: 200ms}
"""


def test_a_target_interval_too_short_for_the_packets_is_a_config_error() -> None:
    """A continuous probe ends before the target's next slot: 5 x 200 ms need more than the
    990 ms a target every second leaves (10 ms margin); every 2 s fits."""
    errs = errors(PING5 + "targets:\n  - {address: 127.0.0.1, module: ping5, interval: 1s}\n")
    assert any(
        "targets[0].interval" in e and "need 1s" in e and 'module "ping5" has at interval 1s' in e
        for e in errs
    ), errs
    ok = parse(PING5 + "targets:\n  - {address: 127.0.0.1, module: ping5, interval: 2s}\n")
    assert [t.interval for t in ok.targets] == [2.0]


def test_target_files_and_extra_targets_are_held_to_their_interval_too() -> None:
    errs = errors(PING5 + "target_files:\n  - {files: [x.yml], module: ping5, interval: 1s}\n")
    assert any("target_files[0].interval" in e and "need 1s" in e for e in errs), errs
    cfg = parse(PING5 + "defaults: {module: ping5, interval: 1s}\n")
    with pytest.raises(ConfigError) as info:
        with_extra_targets(cfg, ["127.0.0.1"])
    assert any(e.startswith("--target: 5 packets") for e in info.value.errors), info.value.errors


@pytest.mark.parametrize(
    ("section", "want"),
    [
        ("{packets: 0}", "out of range 1-100"),
        ("{packets: 101}", "out of range 1-100"),
        ("{packets: many}", "must be an integer"),
        ("{packets: 2, packet_interval: 0s}", "too short"),
    ],
)
def test_packets_bounds(section: str, want: str) -> None:
    errs = errors(f"modules:\n  p:\n    prober: icmp\n    icmp: {section}\n")
    assert any("modules.p.icmp.packet" in e and want in e for e in errs), errs


def test_tcp_packets_are_plain_connects_only() -> None:
    errs = errors(
        """
        modules:
          tls5:
            prober: tcp
            tcp: {tls: true, packets: 5}
        """
    )
    assert any("modules.tls5.tcp.packets" in e and "plain connect" in e for e in errs), errs


def test_series_estimate_counts_the_packet_counters_only_with_packets() -> None:
    one = Module("p1", "icmp", options=ICMPProbe())
    five = Module("p5", "icmp", options=ICMPProbe(packets=5))
    assert target_series(15, five) == target_series(15, one) + 2


# the burst's sequencing, in memory


class BurstTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.sent_at: list[float] = []
        self.waiting: list[Deferred[float | None]] = []
        self.cancelled: list[int] = []

    def send(self, i: int) -> Deferred[float | None]:
        self.sent_at.append(self.reactor.seconds())
        d: Deferred[float | None] = Deferred(lambda _: self.cancelled.append(i))
        self.waiting.append(d)
        return d

    def test_packets_leave_at_the_interval_and_late_answers_are_lost(self) -> None:
        burst = Burst(self.reactor, 4, 0.25, 1.0, self.send)
        self.reactor.advance(0.1)
        self.waiting[0].callback(0.1)  # answered
        self.reactor.advance(0.2)  # a late turn: packet 1 leaves at 0.3, 2 still at 0.5
        self.reactor.pump([0.2, 0.25])
        self.assertEqual([round(t, 9) for t in self.sent_at], [0.0, 0.3, 0.5, 0.75])
        self.waiting[2].callback(None)  # lost (the prober said so)
        self.assertFalse(burst.done.called)
        self.reactor.advance(0.5)  # the deadline: 1 and 3 are given up
        got = self.successResultOf(burst.done)
        self.assertEqual((got.sent, got.rtts), (4, [0.1]))
        self.assertEqual(self.cancelled, [1, 3])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_all_answered_ends_the_burst_at_once(self) -> None:
        burst = Burst(self.reactor, 3, 0.1, 5.0, self.send)
        self.reactor.pump([0.1, 0.1])
        for i, d in enumerate(self.waiting):
            d.callback(0.01 * (i + 1))
        got = self.successResultOf(burst.done)
        self.assertEqual(got.rtts, [0.01, 0.02, 0.03])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_packet_that_cannot_be_sent_is_not_counted(self) -> None:
        errors: list[int] = []

        def send(i: int) -> Deferred[float | None]:
            if i == 1:
                raise OSError(101, "Network is unreachable")
            d: Deferred[float | None] = Deferred()
            d.callback(0.002)
            return d

        burst = Burst(self.reactor, 3, 0.1, 1.0, send, lambda i, exc: errors.append(i))
        self.reactor.pump([0.1, 0.1])
        got = self.successResultOf(burst.done)
        self.assertEqual((got.wanted, got.sent, got.received), (3, 2, 2))
        self.assertEqual(errors, [1])

    def test_packets_not_sent_by_the_deadline_are_not_counted(self) -> None:
        burst = Burst(self.reactor, 10, 0.3, 1.0, self.send)
        self.reactor.pump([0.3] * 4)
        got = self.successResultOf(burst.done)
        self.assertEqual((got.sent, got.received), (4, 0))
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_an_answer_waiting_on_the_socket_at_the_deadline_counts(self) -> None:
        """A busy reactor may run the deadline before the read: it drains the socket first."""
        drained: list[float] = []

        def drain() -> None:
            drained.append(self.reactor.seconds())
            self.waiting[1].callback(0.2)  # the reply was there, unread

        burst = Burst(self.reactor, 2, 0.1, 0.5, self.send, drain=drain)
        self.waiting[0].callback(0.01)
        self.reactor.pump([0.1, 0.4])
        got = self.successResultOf(burst.done)
        self.assertEqual((got.sent, got.rtts), (2, [0.01, 0.2]))
        self.assertEqual(drained, [0.5])
        self.assertEqual(self.cancelled, [])

    def test_cancelling_the_probe_stops_sends_and_gives_up_the_packets(self) -> None:
        burst = Burst(self.reactor, 5, 0.1, 1.0, self.send)
        self.reactor.advance(0.1)
        burst.done.cancel()
        self.failureResultOf(burst.done)
        self.reactor.advance(1.0)
        self.assertEqual(len(self.sent_at), 2)
        self.assertEqual(self.cancelled, [0, 1])
        self.assertEqual(self.reactor.getDelayedCalls(), [])


# the icmp prober's burst, in memory: a fake socket, replies fired by the test


class FakeIcmpSocket:
    raw = False

    def __init__(self) -> None:
        self.echoes: dict[int, icmp_prober._Echo] = {}
        self.forgotten: list[int] = []
        self._seq = 0

    def send(self, ip: str, opts: ICMPProbe) -> tuple[int, icmp_prober._Echo]:
        self._seq += 1
        seq = self._seq
        echo = icmp_prober._Echo(0, lambda _: self.forget(seq))
        self.echoes[seq] = echo
        return seq, echo

    def forget(self, seq: int) -> None:
        self.forgotten.append(seq)

    def doRead(self) -> None:
        """Nothing waits unread here: the test fires each reply itself."""

    def reply(self, seq: int, rtt: float, hop: int = 63) -> None:
        self.echoes[seq].deferred.callback((round(rtt * 1e9), hop))


class FakeEngine:
    def __init__(self, sock: FakeIcmpSocket) -> None:
        self.sock = sock

    def socket_for(self, family: int, source: str | None) -> FakeIcmpSocket:
        return self.sock


class IcmpBurstTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.sock = FakeIcmpSocket()
        clock = Clock(monotonic=self.reactor.seconds)
        self.ctx = ProbeContext(self.reactor, resolver=None, clock=clock)  # type: ignore[arg-type]
        self.ctx.engines["icmp"] = FakeEngine(self.sock)
        self.patch(icmp_prober, "engine_of", lambda ctx: ctx.engines["icmp"])

    def probe(self, packets: int, interval: float, timeout: float) -> Deferred[ProbeResult]:
        module = Module("p", "icmp", options=ICMPProbe(packets=packets, packet_interval=interval))
        return icmp_prober.probe(self.ctx, "127.0.0.1", module, timeout)

    def test_five_echoes_three_replies(self) -> None:
        d = self.probe(5, 0.2, 1.0)
        self.reactor.advance(0.05)
        self.sock.reply(1, 0.010)
        self.reactor.pump([0.2] * 4)
        self.assertEqual(sorted(self.sock.echoes), [1, 2, 3, 4, 5])
        self.sock.reply(2, 0.030)
        self.sock.reply(5, 0.020, hop=60)
        self.reactor.advance(0.2)  # the deadline: 3 and 4 lost
        r = self.successResultOf(d)
        self.assertEqual(r.result, "success")
        assert isinstance(r.details, ICMPDetails) and r.details.packets is not None
        self.assertEqual((r.details.packets.sent, r.details.packets.received), (5, 3))
        self.assertEqual(sorted(self.sock.forgotten), [3, 4])
        fams = families(r)
        self.assertEqual(fams["probe_packet_loss_ratio"], [({}, 0.4)])
        self.assertEqual(fams["probe_packet_rtt_mean_seconds"], [({}, 0.02)])
        self.assertEqual(fams["probe_icmp_reply_hop_limit"], [({}, 60.0)])
        self.assertIn(("probe_icmp_duration_seconds"), fams)
        self.assertIn("probe_packet_rtt_stddev_seconds", render(r))

        # continuous mode: three RTTs in the histogram, the counters 5 and 3
        store = MetricsStore()
        target = Target("127.0.0.1", "p", 1.0)
        store.sync([target])
        store.observe(target, r, 0.0)
        store.observe(target, r, 1.0)  # counters add up across probes
        text = "".join(exposition.render(store, exposition.TEXT, None))
        lbl = 'target="127.0.0.1",module="p"'
        self.assertIn(f"netprobe_icmp_rtt_seconds_count{{{lbl}}} 6\n", text)
        self.assertIn(f"netprobe_packets_sent_total{{{lbl}}} 10.0\n", text)
        self.assertIn(f"netprobe_packets_lost_total{{{lbl}}} 4.0\n", text)
        self.assertIn("# TYPE netprobe_packets_sent_total counter\n", text)
        om = "".join(exposition.render(store, exposition.OPENMETRICS, None))
        self.assertIn("# TYPE netprobe_packets_sent counter\n", om)
        self.assertIn(f"netprobe_packets_sent_total{{{lbl}}} 10.0\n", om)
        proto = b"".join(protobuf_exposition.render(store, None))
        by_name = {f.name: f for f in read_families(proto)}
        sent = by_name["netprobe_packets_sent_total"]
        self.assertEqual((sent.type, sent.metric[0].counter.value), (pb.COUNTER, 10.0))

    def test_no_reply_at_all_is_a_timeout_with_loss_one(self) -> None:
        d = self.probe(3, 0.1, 0.5)
        self.reactor.pump([0.1] * 6)
        r = self.successResultOf(d)
        self.assertEqual(r.result, "timeout")
        self.assertIn("any of 3 requests", r.detail)
        self.assertEqual(families(r)["probe_packet_loss_ratio"], [({}, 1.0)])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_a_scrape_timeout_too_short_for_the_packets_fails_clearly(self) -> None:
        d = self.probe(5, 0.5, 1.0)
        r = self.successResultOf(d)
        self.assertEqual(r.result, "error")
        self.assertIn("5 packets at packet_interval 500ms need 2500ms", r.detail)
        self.assertEqual(self.sock.echoes, {})

    def test_one_packet_is_the_probe_of_before(self) -> None:
        d = self.probe(1, 0.2, 1.0)
        self.sock.reply(1, 0.010)
        r = self.successResultOf(d)
        assert isinstance(r.details, ICMPDetails)
        self.assertIsNone(r.details.packets)
        self.assertNotIn("probe_packets_sent", render(r))


@pytest.mark.parametrize(
    ("module", "address", "details"),
    [
        ("{prober: icmp, icmp: {packets: 5}}", "127.0.0.1",
         lambda p: ICMPDetails(ICMPPhases(rtt=0.001), hop_limit=64, packets=p)),
        ("{prober: tcp, tcp: {packets: 5}}", "127.0.0.1:1",
         lambda p: TCPDetails(connect=ConnectInfo(0.001), dialed=True, packets=p)),
    ],
)  # fmt: skip
def test_the_series_estimate_is_what_a_packets_target_shows(
    module: str, address: str, details: Any
) -> None:
    cfg = parse(f"modules:\n  m: {module}\n")
    target = Target(address, "m", 1.0, (("team", "a"),), (0.01, 0.1, 1.0))
    store = MetricsStore()
    store.sync([target])
    burst = Packets(wanted=5, sent=5, rtts=[0.001, 0.002, 0.003])
    result = ProbeResult(
        True, "success", 0.5, connect_duration=0.001, ip="127.0.0.1", details=details(burst)
    )
    store.observe(target, result, 1000.0)
    text = "".join(exposition.render(store, exposition.TEXT, None))
    shown = [line for line in text.splitlines() if 'team="a"' in line]
    assert len(shown) == target_series(len(target.buckets), cfg.modules["m"])
    assert any(line.startswith("netprobe_packets_lost_total{") for line in shown)
