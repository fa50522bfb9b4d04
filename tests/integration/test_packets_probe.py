"""Several packets per probe on real loopback sockets: tcp connects and icmp echoes."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer

from netprobe_exporter.blackbox import families
from netprobe_exporter.modules import Module, TCPProbe
from netprobe_exporter.probes import icmp as icmp_prober
from netprobe_exporter.probes.connect import engine_of
from netprobe_exporter.probes.icmp import ICMPProbe
from netprobe_exporter.probes.packets import Packets
from tests.integration.test_tcp_probe import _ProbeTestCase
from tests.support.probe_fixtures import ICMPTestBase


def packets_of(r: Any) -> Packets:
    found = r.details.packets
    assert isinstance(found, Packets)
    return found


def tcp_packets(packets: int, interval: float) -> Module:
    return Module(
        "syn",
        "tcp",
        options=TCPProbe(preferred_ip_protocol="ip4", packets=packets, packet_interval=interval),
    )


class TCPPacketsTests(_ProbeTestCase):
    @defer.inlineCallbacks
    def test_five_connects_to_a_listener_lose_nothing(self) -> Any:
        server = self.listen()
        port = server.getsockname()[1]
        r = yield self.probe(f"127.0.0.1:{port}", tcp_packets(5, 0.05), timeout=2.0)
        self.assertEqual((r.result, r.success, r.detail), ("success", True, ""))
        got = packets_of(r)
        self.assertEqual((got.sent, got.received, got.loss), (5, 5, 0.0))
        self.assertGreaterEqual(r.duration, 4 * 0.05)  # one connect every 50 ms
        self.assertLess(r.duration, 1.5)  # all answered: the probe does not wait out its timeout
        accepted = 0
        for _ in range(10):  # the listener saw five handshakes
            try:
                conn, _ = server.accept()
            except BlockingIOError:
                break
            conn.close()
            accepted += 1
        self.assertEqual(accepted, 5)
        fams = families(r)
        self.assertEqual(fams["probe_packet_loss_ratio"], [({}, 0.0)])
        lo = fams["probe_packet_rtt_min_seconds"][0][1]
        mean = fams["probe_packet_rtt_mean_seconds"][0][1]
        hi = fams["probe_packet_rtt_max_seconds"][0][1]
        self.assertTrue(0 <= lo <= mean <= hi < 0.1, (lo, mean, hi))
        assert r.connect_duration is not None and r.connect_duration < 1.0

    @defer.inlineCallbacks
    def test_five_connects_to_a_closed_port_are_all_lost(self) -> Any:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))  # bound, not listening: every SYN gets a RST
        port = s.getsockname()[1]
        r = yield self.probe(f"127.0.0.1:{port}", tcp_packets(5, 0.02), timeout=1.0)
        self.assertEqual((r.result, r.success), ("refused", False))
        self.assertIn("ECONNREFUSED", r.detail)
        got = packets_of(r)
        self.assertEqual((got.sent, got.received, got.loss), (5, 0, 1.0))
        self.assertIsNone(r.connect_duration)
        self.assertNotIn("probe_packet_rtt_mean_seconds", families(r))
        self.assertEqual(engine_of(self.ctx).pending, 0)


class ICMPPacketsTests(ICMPTestBase):
    @defer.inlineCallbacks
    def test_five_echoes_to_loopback_lose_nothing(self) -> Any:
        for target, protocol in (("127.0.0.1", "ip4"), ("::1", "ip6")):
            module = Module(
                "ping5",
                "icmp",
                options=ICMPProbe(preferred_ip_protocol=protocol, packets=5, packet_interval=0.05),
            )
            r = yield icmp_prober.probe(self.ctx, target, module, 2.0)
            self.assertEqual((r.result, r.success), ("success", True), r.detail)
            got = packets_of(r)
            self.assertEqual((got.sent, got.received, got.loss), (5, 5, 0.0))
            self.assertTrue(all(0 < rtt < 0.05 for rtt in got.rtts), got.rtts)
            self.assertGreaterEqual(r.duration, 4 * 0.05)
            self.assertLess(r.duration, 1.5)
        for sock in icmp_prober.engine_of(self.ctx)._sockets.values():
            self.assertEqual(sock.pending, {})
